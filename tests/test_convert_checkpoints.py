"""objcrop.checkpoints (the core's one backbone finder) against what `objcrop convert` writes, per layout."""
import pickle

import pytest
import torch
import torchvision

from objcrop.checkpoints import FORMATS, load_checkpoint, read_backbone, save_checkpoint
from objcrop.convert.cli import convert
from objcrop.convert.names import torchvision_to_detectron2
from objcrop.errors import CheckpointError
from objcrop.records import Provenance

PRETRAIN = {"method": "moco_v2", "policy": "obj-obj-dilate", "proposals": "gt", "epochs": 2,
            "arch": "resnet18", "dataset": "synth:x:train", "seed": 1}
_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]


@pytest.fixture(scope="module")
def r18_state():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    for m in model.modules():  # non-default statistics, so that one read from the wrong place shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def _layouts(state):
    """{layout: (checkpoint object, expected format)}: one of each layout objcrop.checkpoints documents."""
    no_fc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    other = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}  # a second network
    return {
        "objcrop": ({"objcrop_checkpoint": 1, "arch": "resnet18", "method": "moco_v2", "backbone": no_fc,
                     "model": {}, "pretrain": PRETRAIN}, "objcrop"),
        "moco_v2": ({"state_dict": {**{f"module.encoder_q.{k}": v for k, v in state.items()},
                                    **{f"module.encoder_k.{k}": v for k, v in other.items()},
                                    "module.queue": torch.zeros(8, 4)}, "epoch": 200}, "moco"),
        "moco_v3": ({"state_dict": {f"module.base_encoder.{k}": v for k, v in state.items()}}, "moco"),
        "byol_lucidrains": ({**{f"online_encoder.net.{k}": v for k, v in state.items()},
                             **{f"target_encoder.net.{k}": v for k, v in other.items()}}, "byol"),
        "byol_sthalles": ({"online_network_state_dict": {
            **_sequential("encoder.", no_fc), "projetion.net.0.weight": torch.zeros(4, 512)}}, "byol"),
        "backbone_prefixed": ({"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in no_fc.items()},
                                                          "neck.mlp.0.weight": torch.zeros(4, 512)}},
                              "backbone-prefixed"),
        "torchvision": (state, "torchvision"),
        "torchvision_ddp": ({"model": {f"module.{k}": v for k, v in state.items()}}, "torchvision"),
        "lightly_lightning": ({"epoch": 9, "state_dict": {**_sequential("backbone.", no_fc),
                                                          **_sequential("backbone_momentum.", other),
                                                          "projection_head.layers.0.weight": torch.zeros(4, 512)}},
                              "lightly"),
        "lightly_backbone": (_sequential("", no_fc), "lightly"),
    }


def _sequential(prefix, state):
    """Keys of nn.Sequential(*resnet.children()[:-1]): conv1 -> 0, bn1 -> 1, layer1 -> 4, ..."""
    return {f"{prefix}{_CHILDREN.index(k.split('.')[0])}.{k.split('.', 1)[1]}": v for k, v in state.items()
            if not k.startswith("fc.")}


def test_every_documented_format_has_a_layout_here(r18_state):
    assert {fmt for _, fmt in _layouts(r18_state).values()} == set(FORMATS)


@pytest.mark.parametrize("layout", ["objcrop", "moco_v2", "moco_v3", "byol_lucidrains", "byol_sthalles",
                                    "backbone_prefixed", "torchvision", "torchvision_ddp", "lightly_lightning",
                                    "lightly_backbone"])
def test_core_reader_and_converter_read_the_same_backbone(tmp_path, r18_state, layout):
    obj, fmt = _layouts(r18_state)[layout]
    src = tmp_path / f"{layout}.pth"
    torch.save(obj, src)

    found = read_backbone(str(src))
    assert found.format == fmt
    for name, tensor in r18_state.items():  # the online/query network, never the momentum one
        if name in found.tensors:
            assert torch.equal(found.tensors[name], tensor), name
    mapping = torchvision_to_detectron2(found.tensors, source=str(src))
    assert len(mapping) == len(torchvision_to_detectron2(r18_state))

    summary = convert(str(src), str(tmp_path / "out.pkl"), verify=False)
    with open(tmp_path / "out.pkl", "rb") as f:
        data = pickle.load(f)
    assert summary["format"] == fmt and sorted(data["model"]) == sorted(mapping.values())
    for tv_name, d2_name in mapping.items():
        assert torch.equal(torch.from_numpy(data["model"][d2_name]), found.tensors[tv_name]), tv_name
    if fmt == "objcrop":
        assert found.provenance == Provenance.from_dict(PRETRAIN)
        assert data["__objcrop__"] == PRETRAIN  # the .pkl's block keeps the checkpoint's dict shape
    else:
        assert found.provenance is None
        assert data["__objcrop__"]["arch"] == "resnet18" and data["__objcrop__"]["policy"] == "unknown"


def test_objcrop_checkpoint_without_a_pretrain_block_still_names_method_and_arch(tmp_path, r18_state):
    torch.save({"objcrop_checkpoint": 1, "arch": "resnet18", "method": "byol", "backbone": r18_state},
               tmp_path / "old.pth")
    prov = read_backbone(str(tmp_path / "old.pth")).provenance
    assert (prov.method, prov.arch, prov.policy) == ("byol", "resnet18", "unknown")


def test_forced_format_and_unreadable_files_fail_naming_the_file(tmp_path, r18_state):
    torch.save(r18_state, tmp_path / "plain.pth")
    assert read_backbone(str(tmp_path / "plain.pth"), "torchvision").location == "['*']"
    with pytest.raises(CheckpointError, match=r"plain\.pth: no ResNet backbone in the moco layout"):
        read_backbone(str(tmp_path / "plain.pth"), "moco")
    with pytest.raises(CheckpointError, match=r"plain\.pth: unknown format 'vissl'"):
        read_backbone(str(tmp_path / "plain.pth"), "vissl")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "plain.pth").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cut\.pth: cannot be read"):
        read_backbone(str(tmp_path / "cut.pth"))
    with pytest.raises(CheckpointError, match=r"gone\.pth: file not found"):
        load_checkpoint(str(tmp_path / "gone.pth"))


class _Payload:
    """A pickled Python object: weights_only loading must refuse to run its code."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_python_objects_in_a_checkpoint_are_refused(tmp_path):
    torch.save({"state_dict": _Payload()}, tmp_path / "obj.pth")
    with pytest.raises(CheckpointError, match=r"obj\.pth: cannot be read with torch\.load\(weights_only=True\)"):
        read_backbone(str(tmp_path / "obj.pth"))


def test_pretrain_overrides_are_provenance_fields(tmp_path, r18_state, capsys):
    from objcrop.cli import run_stage_main
    from objcrop.convert.cli import main

    torch.save(r18_state, tmp_path / "sup.pth")
    argv = [str(tmp_path / "sup.pth"), str(tmp_path / "sup.pkl"), "--no-verify", "--pretrain", "method=supervised",
            "--pretrain", "tag=in1k", "--pretrain", "epochs=90"]
    assert run_stage_main(main, argv, "objcrop convert") == 0
    with open(tmp_path / "sup.pkl", "rb") as f:
        block = pickle.load(f)["__objcrop__"]
    assert block == Provenance(method="supervised", arch="resnet18", epochs=90, tag="in1k").to_dict()
    # A key outside the block would vanish from the record: refused instead, naming the option.
    assert run_stage_main(main, argv + ["--pretrain", "lr=0.1"], "objcrop convert") == 2
    assert "--pretrain 'lr=0.1': 'lr' is not a pretrain field" in capsys.readouterr().err


def test_identical_contents_saved_under_different_names_have_identical_bytes(tmp_path):
    """Guards against torch.save(obj, path): it names the archive's folder after the (random temporary)
    file name, so two identical runs wrote checkpoints with different bytes and sha256 sidecars."""
    state = {"w": torch.arange(6.0).reshape(2, 3), "iteration": 3}
    a, b = tmp_path / "a" / "model_final.pth", tmp_path / "ckpt_00000003.pth"
    a.parent.mkdir()
    save_checkpoint(state, str(a))
    save_checkpoint(state, str(b))
    assert a.read_bytes() == b.read_bytes()
    assert torch.equal(load_checkpoint(str(a))["w"], state["w"])
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] != [] and not list(tmp_path.rglob("*.tmp*"))
