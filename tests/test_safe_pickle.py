"""detectron2 .pkl files (and object .npy files) are read without running code: a restricted unpickler."""
import builtins
import collections
import os
import pickle

import numpy as np
import pytest
import torch

from objcrop.convert.writer import (load_pkl_as_detectron2, read_detectron2_pkl, to_detectron2_arrays,
                                    use_restricted_pkl_reader, write_detectron2_pkl)
from objcrop.errors import CheckpointError


class _Payload:
    """Unpickling this calls `func(*args)`: what a malicious .pkl from the internet does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_payloads(target):
    """Three ways a pickle can create `target` when executed (a shell, open(), eval), by the global it names."""
    return {f"{os.name == 'nt' and 'nt' or 'posix'}.system": _Payload(os.system, f"touch {target}"),
            "io.open": _Payload(builtins.open, str(target), "w"),
            "builtins.eval": _Payload(eval, f"open({str(target)!r}, 'w')")}


@pytest.mark.parametrize("name", ["posix.system", "io.open", "builtins.eval"])
def test_malicious_pkl_is_refused_and_never_runs(tmp_path, name):
    control, target = tmp_path / "control_created", tmp_path / "created"
    # The control: plain pickle does run the payload, so the refusal below is not vacuous.
    pickle.loads(pickle.dumps(_touch_payloads(control)[name]))
    assert control.exists()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "__author__": "x",
                                   "payload": _touch_payloads(target)[name]}))
    for reader in (read_detectron2_pkl, load_pkl_as_detectron2):
        with pytest.raises(CheckpointError) as err:
            reader(str(path))
        assert str(err.value).startswith(str(path)) and name in str(err.value)
    assert not target.exists()


def test_detectron2_checkpointer_reads_pkl_through_the_restricted_unpickler(tmp_path):
    """DetectionCheckpointer itself calls pickle.load on .pkl files: objcrop's checkpointers must not."""
    from detectron2.checkpoint import DetectionCheckpointer

    target = tmp_path / "created"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": _touch_payloads(target)["posix.system"], "__author__": "x"}))
    with pytest.raises(CheckpointError, match=r"evil\.pkl.*posix\.system"):
        use_restricted_pkl_reader(DetectionCheckpointer(torch.nn.Linear(2, 3))).load(str(evil))
    assert not target.exists()
    good = tmp_path / "linear.pkl"
    model = torch.nn.Linear(2, 3)
    write_detectron2_pkl(str(good), to_detectron2_arrays(model.state_dict(), {"weight": "weight", "bias": "bias"}),
                         {"method": "moco_v2"})
    fresh = torch.nn.Linear(2, 3)
    use_restricted_pkl_reader(DetectionCheckpointer(fresh)).load(str(good))
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)


def test_every_pkl_objcrop_writes_reads_back(tmp_path):
    import torchvision

    from objcrop.convert.names import torchvision_to_detectron2

    state = torchvision.models.resnet18(weights=None).state_dict()
    arrays = to_detectron2_arrays(state, torchvision_to_detectron2(state, source="resnet18"))
    path = tmp_path / "r18.pkl"
    pretrain = {"method": "moco_v2", "policy": "obj_obj_dilate", "epochs": 2, "seed": None}
    write_detectron2_pkl(str(path), arrays, pretrain, {"file": "/x/model_final.pth", "sha256": "ab" * 32})
    data = read_detectron2_pkl(str(path))
    assert data["__author__"] == "objcrop" and data["__objcrop__"] == pretrain
    assert data["__objcrop_source__"]["sha256"] == "ab" * 32
    assert sorted(data["model"]) == sorted(arrays)
    assert all(np.array_equal(data["model"][k], v) and data["model"][k].dtype == v.dtype for k, v in arrays.items())


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_model_zoo_and_msra_style_pkls_read(tmp_path, protocol):
    """A detectron2 Model Zoo file (model of numpy arrays, __author__) and a Caffe2/MSRA one ("blobs")."""
    rng = np.random.default_rng(0)
    model = [("backbone.bottom_up.stem.conv1.weight", rng.random((4, 3, 7, 7), np.float32)),
             ("roi_heads.box_predictor.cls_score.bias", rng.random(21).astype(np.float64))]
    zoo = {"model": collections.OrderedDict(model),
           "__author__": "Detectron2 Model Zoo", "matching_heuristics": False, "iteration": np.int64(89999)}
    path = tmp_path / f"model_final_p{protocol}.pkl"
    path.write_bytes(pickle.dumps(zoo, protocol=protocol))
    data = read_detectron2_pkl(str(path))
    assert data["__author__"] == "Detectron2 Model Zoo" and int(data["iteration"]) == 89999
    for k, v in zoo["model"].items():
        assert np.array_equal(data["model"][k], v) and data["model"][k].dtype == v.dtype
    msra = {"blobs": {"conv1_w": rng.random((4, 3, 7, 7), np.float32), "res2_0_branch1_w_momentum": np.zeros(1),
                      "conv1_b": np.zeros(4, np.float32)}}
    path = tmp_path / f"R-50_p{protocol}.pkl"
    path.write_bytes(pickle.dumps(msra, protocol=protocol))
    data = load_pkl_as_detectron2(str(path))
    assert data["__author__"] == "Caffe2" and sorted(data["model"]) == ["conv1_b", "conv1_w"]
    with pytest.raises(CheckpointError, match="no 'model' dict"):  # convert --check still refuses it
        read_detectron2_pkl(str(path))


def test_damaged_and_non_dict_pkls_name_the_file(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(100)}, "__author__": "x"})[:60])
    with pytest.raises(CheckpointError, match=r"cut\.pkl: not a readable detectron2 checkpoint"):
        read_detectron2_pkl(str(path))
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match=r"list\.pkl: not a detectron2 checkpoint \(a pickled list"):
        read_detectron2_pkl(str(path))
    with pytest.raises(CheckpointError, match=r"nope\.pkl: file not found"):
        read_detectron2_pkl(str(tmp_path / "nope.pkl"))


def test_detection_training_and_eval_read_pkl_weights_through_the_restricted_reader(tmp_path, monkeypatch):
    """Guards against `detect train` handing a .pkl to detectron2's own checkpointer, which would
    unpickle it with plain pickle.load (and run whatever it holds)."""
    from types import SimpleNamespace

    from detectron2.checkpoint import DetectionCheckpointer

    from objcrop.detection import train_net

    evil = tmp_path / "evil.pkl"
    marker = tmp_path / "pwned"
    evil.write_bytes(pickle.dumps(_Payload(os.system, f"touch {marker}")))

    class Stop(Exception):
        pass

    class RecordingTrainer:
        def __init__(self, cfg):
            self.checkpointer = DetectionCheckpointer(torch.nn.Linear(2, 3))

        def register_hooks(self, hooks):
            pass

        def resume_or_load(self, resume):
            self.checkpointer.load(str(evil))
            raise Stop  # not reached: the load must refuse

    monkeypatch.setattr(train_net, "Trainer", RecordingTrainer)
    cfg = SimpleNamespace(OUTPUT_DIR=str(tmp_path), OBJCROP=SimpleNamespace(METRICS_PERIOD=1))
    with pytest.raises(CheckpointError, match=r"evil\.pkl.*posix\.system"):
        train_net._train(cfg, resume=False)
    assert not marker.exists()
