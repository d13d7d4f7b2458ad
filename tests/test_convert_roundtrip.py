"""Converter round trips through a real detectron2 R50-C4 model (the VOC protocol's)."""
import pickle

import pytest
import torch
import torchvision

from objcrop.convert.cli import convert, main
from objcrop.convert.names import torchvision_to_detectron2
from objcrop.errors import CheckpointError

VOC_C4 = "voc/faster_rcnn_R_50_C4_24k.yaml"


@pytest.fixture(scope="module")
def r50_state():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    # Non-trivial BN statistics, so that a statistic left at its default is caught.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
    return model.state_dict()


def _moco_checkpoint(state, path):
    sd = {f"module.encoder_q.{k}": v for k, v in state.items()}
    sd.update({f"module.encoder_k.{k}": v.clone() for k, v in state.items()})
    sd["module.encoder_q.fc.0.weight"] = torch.randn(2048, 2048)  # MoCo-v2's MLP head hangs on fc
    sd["module.queue"] = torch.randn(128, 65)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    torch.save({"state_dict": sd, "epoch": 200, "arch": "resnet50"}, path)


def _detectron2_r50_c4_loaded_with(pkl_path):
    """An independent load: the VOC C4 model built and filled by detectron2's own checkpointer."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from objcrop.convert.detectron2_model import load_config
    from objcrop.convert.roi_heads import Res5ROIHeadsExtraNorm

    cfg = load_config(VOC_C4).clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.NORM = "BN"
    model = build_model(cfg)
    assert isinstance(model.roi_heads, Res5ROIHeadsExtraNorm) and hasattr(model.roi_heads.res5, "norm")
    DetectionCheckpointer(model).load(str(pkl_path))
    return model


def test_moco_checkpoint_round_trips_into_detectron2_exactly(tmp_path, r50_state):
    src, out = tmp_path / "moco.pth.tar", tmp_path / "moco.pkl"
    _moco_checkpoint(r50_state, src)
    summary = convert(str(src), str(out), pretrain_overrides={"method": "moco_v2"})
    assert summary["format"] == "moco" and summary["verified"] and summary["tensors"] == 265

    with open(out, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "objcrop" and data["matching_heuristics"] is True
    assert data["__objcrop__"]["method"] == "moco_v2"
    assert not [k for k in data["model"] if "fc" in k or "queue" in k or "num_batches" in k]

    model_state = _detectron2_r50_c4_loaded_with(out).state_dict()
    mapping = torchvision_to_detectron2(r50_state)
    for tv_name, d2_name in mapping.items():
        where = f"roi_heads.{d2_name}" if d2_name.startswith("res5") else f"backbone.{d2_name}"
        assert torch.equal(model_state[where], r50_state[tv_name]), f"{tv_name} -> {where} differs"
    assert len(mapping) == 265


def test_resnet18_checkpoint_against_r50_config_fails_naming_file_and_keys(tmp_path):
    src, out = tmp_path / "r18.pth", tmp_path / "r18.pkl"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    with pytest.raises(CheckpointError) as e:
        convert(str(src), str(out), config_file=VOC_C4)
    msg = str(e.value)
    assert str(src) in msg and "ResNet-18" in msg and "ResNet-50" in msg
    assert "missing" in msg and "res2.0.conv3.weight" in msg and "different" in msg
    assert not out.exists()  # nothing is written unless it verifies
    assert not list(tmp_path.glob(".r18.pkl.*"))


def test_resnet18_without_config_file_is_verified_in_a_model_of_its_depth(tmp_path, caplog):
    from objcrop.convert.cli import check

    src, out = tmp_path / "r18.pth", tmp_path / "r18.pkl"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    with caplog.at_level("INFO", logger="objcrop.convert"):
        summary = convert(str(src), str(out))
        assert summary["verified"] and summary["config_file"] == "study/faster_rcnn_R_18_FPN_voc.yaml"
        # --check reads the depth from the detectron2 names; a ResNet-34 gets the same model, deeper
        assert check(str(out)).ok
        torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
        assert convert(str(tmp_path / "r34.pth"), str(tmp_path / "r34.pkl"))["verified"]
    assert "picked for a ResNet-18" in caplog.text and "MODEL.RESNETS.DEPTH 34" in caplog.text


def test_missing_layers_fail_with_the_missing_keys(tmp_path, r50_state, capsys):
    from objcrop.cli import run_stage_main

    src, out = tmp_path / "partial.pth", tmp_path / "partial.pkl"
    torch.save({k: v for k, v in r50_state.items() if not k.startswith("layer3.5.")}, src)
    assert run_stage_main(main, [str(src), str(out)], "objcrop convert") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(src) in err
    assert "15 missing (res4.5.conv1.norm.bias" in err and "unexpected" not in err
    assert not out.exists()


def test_objcrop_and_torchvision_formats_convert_and_check(tmp_path, r50_state, capsys):
    from objcrop.cli import run_stage_main

    no_fc = {k: v for k, v in r50_state.items() if not k.startswith("fc.")}
    pretrain = {"method": "moco_v2", "policy": "obj-obj-dilate", "proposals": "gt", "epochs": 2,
                "arch": "resnet50", "dataset": "synth:x:train", "seed": 0}
    torch.save({"objcrop_checkpoint": 1, "arch": "resnet50", "method": "moco_v2", "backbone": no_fc,
                "model": {}, "pretrain": pretrain}, tmp_path / "model_final.pth")
    # Conversion without verification here: the MoCo test above covers it; --check below verifies.
    summary = convert(str(tmp_path / "model_final.pth"), str(tmp_path / "objcrop.pkl"), verify=False)
    assert summary["format"] == "objcrop" and summary["pretrain"] == pretrain

    torch.save(r50_state, tmp_path / "resnet50_imagenet.pth")
    rc = run_stage_main(main, [str(tmp_path / "resnet50_imagenet.pth"), str(tmp_path / "sup.pkl"), "--no-verify",
                               "--pretrain", "method=supervised", "--pretrain", "dataset=imagenet"], "objcrop convert")
    assert rc == 0
    with open(tmp_path / "sup.pkl", "rb") as f:
        sup = pickle.load(f)
    assert sup["__objcrop__"]["method"] == "supervised" and sup["__objcrop__"]["arch"] == "resnet50"

    # The same tensors came out of both layouts, and --check proves the file loads.
    with open(tmp_path / "objcrop.pkl", "rb") as f:
        ours = pickle.load(f)
    assert sorted(ours["model"]) == sorted(sup["model"])
    assert all((ours["model"][k] == sup["model"][k]).all() for k in ours["model"])
    assert run_stage_main(main, ["--check", str(tmp_path / "objcrop.pkl")], "objcrop convert") == 0


def test_check_refuses_a_caffe2_style_file(tmp_path, capsys):
    from objcrop.cli import run_stage_main

    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": torch.zeros(1).numpy()}}, f)
    assert run_stage_main(main, ["--check", str(path)], "objcrop convert") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("objcrop convert: error: ") and str(path) in err and "Caffe2" in err
    assert len(err.splitlines()) == 1
