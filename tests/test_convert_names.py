"""The pure torchvision -> detectron2 name mapping and format detection (no detectron2 model built)."""
import pytest
import torch
import torchvision

from objcrop.checkpoints import detect_format, extract_backbone
from objcrop.convert.names import describe_resnet, detectron2_resnet_depth, resnet_depth, torchvision_to_detectron2
from objcrop.errors import CheckpointError


@pytest.fixture(scope="module")
def r50_state():
    return torchvision.models.resnet50(weights=None).state_dict()


def test_resnet50_names_map_one_to_one_onto_detectron2(r50_state):
    mapping = torchvision_to_detectron2(r50_state)
    assert len(set(mapping.values())) == len(mapping)
    # fc and BN counters are dropped; everything else is kept.
    kept = [k for k in r50_state if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert sorted(mapping) == sorted(kept)
    assert mapping["conv1.weight"] == "stem.conv1.weight"
    assert mapping["bn1.running_var"] == "stem.conv1.norm.running_var"
    assert mapping["layer1.0.conv3.weight"] == "res2.0.conv3.weight"
    assert mapping["layer3.5.bn2.bias"] == "res4.5.conv2.norm.bias"
    assert mapping["layer2.0.downsample.0.weight"] == "res3.0.shortcut.weight"
    assert mapping["layer4.0.downsample.1.running_mean"] == "res5.0.shortcut.norm.running_mean"


def test_resnet18_names_map_and_are_described():
    state = torchvision.models.resnet18(weights=None).state_dict()
    mapping = torchvision_to_detectron2(state)
    assert mapping["layer1.1.bn2.weight"] == "res2.1.conv2.norm.weight"
    assert describe_resnet(state) == "ResNet-18"
    assert describe_resnet(torchvision.models.resnet50(weights=None).state_dict()) == "ResNet-50"


@pytest.mark.parametrize("arch, depth", [("resnet18", 18), ("resnet34", 34), ("resnet50", 50), ("resnet101", 101)])
def test_depth_reads_the_same_from_torchvision_and_detectron2_names(arch, depth):
    names = [n for n, _ in getattr(torchvision.models, arch)(weights=None).named_parameters()]
    assert resnet_depth(names) == depth
    d2 = [f"backbone.{n}" for n in torchvision_to_detectron2(names).values()]
    assert detectron2_resnet_depth(d2) == depth
    assert detectron2_resnet_depth([n for n in d2 if ".res4." not in n]) == 0  # a missing stage is no standard depth


def test_no_backbone_keys_is_refused():
    with pytest.raises(CheckpointError, match="ckpt.pth: no ResNet backbone parameters"):
        torchvision_to_detectron2(["fc.weight", "queue", "projector.0.weight"], source="ckpt.pth")


def test_unknown_keys_are_refused_not_dropped(r50_state):
    names = list(r50_state) + ["layer1.0.se.fc1.weight"]
    with pytest.raises(CheckpointError, match=r"layer1\.0\.se\.fc1\.weight"):
        torchvision_to_detectron2(names, source="x.pth")


def _moco(state):
    sd = {f"module.encoder_q.{k}": v for k, v in state.items()}
    sd.update({f"module.encoder_k.{k}": v for k, v in state.items()})
    sd["module.queue"] = torch.zeros(8, 4)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"state_dict": sd, "epoch": 200}


@pytest.mark.parametrize("layout,expected_format", [
    ("objcrop", "objcrop"),
    ("moco", "moco"),
    ("moco_v3", "moco"),
    ("byol_lucidrains", "byol"),
    ("byol_sthalles", "byol"),
    ("mmselfsup", "backbone-prefixed"),
    ("torchvision", "torchvision"),
    ("torchvision_ddp", "torchvision"),
])
def test_formats_are_detected_and_yield_the_same_backbone(r50_state, layout, expected_format):
    no_fc = {k: v for k, v in r50_state.items() if not k.startswith("fc.")}
    children = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    obj = {
        "objcrop": {"objcrop_checkpoint": 1, "arch": "resnet50", "backbone": no_fc, "pretrain": {"method": "moco_v2"}},
        "moco": _moco(r50_state),
        "moco_v3": {"state_dict": {f"module.base_encoder.{k}": v for k, v in r50_state.items()}},
        "byol_lucidrains": {**{f"online_encoder.net.{k}": v for k, v in r50_state.items()},
                            **{f"net.{k}": v for k, v in r50_state.items()},
                            "online_encoder.projector.net.0.weight": torch.zeros(4, 2048)},
        "byol_sthalles": {"online_network_state_dict": {
            **{f"encoder.{children.index(k.split('.')[0])}.{k.split('.', 1)[1]}": v for k, v in no_fc.items()},
            "projetion.net.0.weight": torch.zeros(4, 2048)}},
        "mmselfsup": {"meta": {}, "state_dict": {**{f"backbone.{k}": v for k, v in no_fc.items()},
                                                 "neck.mlp.0.weight": torch.zeros(4, 2048)}},
        "torchvision": r50_state,
        "torchvision_ddp": {"state_dict": {f"module.{k}": v for k, v in r50_state.items()}},
    }[layout]
    fmt = detect_format(obj, "in.pth")
    assert fmt == expected_format
    backbone = extract_backbone(obj, fmt, "in.pth")
    mapping = torchvision_to_detectron2(backbone.tensors, source="in.pth")
    assert len(mapping) == 265  # every ResNet-50 weight and BN statistic, nothing else
    assert torch.equal(backbone.tensors["layer3.2.bn1.running_mean"], r50_state["layer3.2.bn1.running_mean"])
    assert torch.equal(backbone.tensors["conv1.weight"], r50_state["conv1.weight"])


def test_unknown_layout_names_the_file_and_its_keys():
    with pytest.raises(CheckpointError, match=r"weird\.pth: no ResNet backbone found.*top-level keys: optimizer, step"):
        detect_format({"optimizer": {}, "step": 3}, "weird.pth")


def test_forced_format_that_does_not_fit_fails_clearly(r50_state):
    with pytest.raises(CheckpointError, match=r"in\.pth: no ResNet backbone in the moco layout"):
        extract_backbone(r50_state, "moco", "in.pth")
