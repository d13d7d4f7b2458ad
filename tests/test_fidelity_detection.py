"""MoCo's detection configs as reference modes (issue 18 §6): key by key against MoCo's released files,
the MSRA R-50.pkl (caffe / BGR) path in a real detectron2 model, and naiveSyncBN -> BN at world size 1."""
import logging

import pytest
import torch

pytest.importorskip("detectron2")

from objcrop.convert.detectron2_model import adapt_norms_to_world_size, get_cfg, load_config  # noqa: E402

# Reference constants from the released code, facebookresearch/moco detection/configs/ (the values
# of each file as written there; tuples where detectron2 reads YAML tuples).
MOCO_BASE_RCNN_C4_BN = {  # Base-RCNN-C4-BN.yaml
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.RPN.PRE_NMS_TOPK_TEST": 6000, "MODEL.RPN.POST_NMS_TOPK_TEST": 1000,
    "MODEL.ROI_HEADS.NAME": "Res5ROIHeadsExtraNorm", "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.RESNETS.NORM": "naiveSyncBN", "TEST.PRECISE_BN.ENABLED": True,
    "SOLVER.IMS_PER_BATCH": 16, "SOLVER.BASE_LR": 0.02,
}
MOCO_PASCAL_VOC_R_50_C4_24K = {  # pascal_voc_R_50_C4_24k.yaml (_BASE_ Base-RCNN-C4-BN.yaml)
    "MODEL.MASK_ON": False, "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    "MODEL.ROI_HEADS.NUM_CLASSES": 20,
    "INPUT.MIN_SIZE_TRAIN": (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800), "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TRAIN": ("voc_2007_trainval", "voc_2012_trainval"), "DATASETS.TEST": ("voc_2007_test",),
    "SOLVER.STEPS": (18000, 22000), "SOLVER.MAX_ITER": 24000, "SOLVER.WARMUP_ITERS": 100,
}
MOCO_PASCAL_VOC_MOCO = {  # pascal_voc_R_50_C4_24k_moco.yaml (_BASE_ pascal_voc_R_50_C4_24k.yaml)
    "MODEL.PIXEL_MEAN": [123.675, 116.280, 103.530], "MODEL.PIXEL_STD": [58.395, 57.120, 57.375],
    "MODEL.WEIGHTS": "See Instructions", "MODEL.RESNETS.STRIDE_IN_1X1": False, "INPUT.FORMAT": "RGB",
}
MOCO_COCO_R_50_C4_2X = {  # coco_R_50_C4_2x.yaml (_BASE_ Base-RCNN-C4-BN.yaml)
    "MODEL.MASK_ON": True, "MODEL.WEIGHTS": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    "INPUT.MIN_SIZE_TRAIN": (640, 672, 704, 736, 768, 800), "INPUT.MIN_SIZE_TEST": 800,
    "DATASETS.TRAIN": ("coco_2017_train",), "DATASETS.TEST": ("coco_2017_val",),
    "SOLVER.STEPS": (120000, 160000), "SOLVER.MAX_ITER": 180000,
}
MOCO_COCO_MOCO = MOCO_PASCAL_VOC_MOCO  # coco_R_50_C4_2x_moco.yaml: the same five keys as the VOC _moco file
# detectron2's defaults that MoCo's MSRA file relies on (detectron2/config/defaults.py), which the
# _msra config writes out: MSRA's caffe-trained R-50.pkl expects BGR, mean-subtracted, unit-std input.
D2_MSRA_PIXELS = {"MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675], "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
                  "INPUT.FORMAT": "BGR", "MODEL.RESNETS.STRIDE_IN_1X1": True}
# Where objcrop's files differ from MoCo's, and why: weights come from a local file (objcrop never
# downloads), and the batch is stated for MoCo's 8 GPUs so that fewer devices scale it linearly.
OBJCROP_WEIGHTS = {"voc/faster_rcnn_R_50_C4_24k_msra.yaml": "weights/R-50.pkl",
                   "voc/faster_rcnn_R_50_C4_24k_moco.yaml": "",
                   "coco/mask_rcnn_R_50_C4_2x_msra.yaml": "weights/R-50.pkl",
                   "coco/mask_rcnn_R_50_C4_2x_moco.yaml": ""}
OBJCROP_ADDED = {"SOLVER.REFERENCE_WORLD_SIZE": 8}

EXPECTED = {
    "Base-RCNN-C4-BN.yaml": MOCO_BASE_RCNN_C4_BN,
    "voc/faster_rcnn_R_50_C4_24k_msra.yaml": {**MOCO_BASE_RCNN_C4_BN, **MOCO_PASCAL_VOC_R_50_C4_24K},
    "voc/faster_rcnn_R_50_C4_24k_moco.yaml": {**MOCO_BASE_RCNN_C4_BN, **MOCO_PASCAL_VOC_R_50_C4_24K,
                                               **MOCO_PASCAL_VOC_MOCO},
    "coco/mask_rcnn_R_50_C4_2x_msra.yaml": {**MOCO_BASE_RCNN_C4_BN, **MOCO_COCO_R_50_C4_2X},
    "coco/mask_rcnn_R_50_C4_2x_moco.yaml": {**MOCO_BASE_RCNN_C4_BN, **MOCO_COCO_R_50_C4_2X, **MOCO_COCO_MOCO},
}
# MoCo's paper reports COCO at 1x as well (table 5) but ships no file for it: objcrop's 1x file is the 2x
# reference with detectron2's 1x schedule and differs from it in these keys only.
MOCO_1X_SCHEDULE = {"SOLVER.STEPS": (60000, 80000), "SOLVER.MAX_ITER": 90000}


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return list(cfg) if isinstance(cfg, list) else cfg


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_configs_equal_mocos_values_key_by_key_and_set_nothing_else(name):
    cfg = load_config(name)
    expected = {**EXPECTED[name], **OBJCROP_ADDED}
    if name in OBJCROP_WEIGHTS:
        expected["MODEL.WEIGHTS"] = OBJCROP_WEIGHTS[name]
    for key, value in expected.items():
        want = pytest.approx(value) if isinstance(value, (list, float)) else value
        assert _get(cfg, key) == want, key
    # every other key is detectron2's default (the _msra file writes out four of those, equal to them)
    defaults, merged = _flat(get_cfg()), _flat(cfg)
    differ = {k for k in merged if merged[k] != defaults.get(k)}
    assert differ <= set(expected), sorted(differ - set(expected))


def test_the_1x_reference_is_the_2x_reference_at_the_1x_schedule():
    one, two = _flat(load_config("coco/mask_rcnn_R_50_C4_1x_moco.yaml")), _flat(load_config("coco/mask_rcnn_R_50_C4_2x_moco.yaml"))
    assert {k for k in one if one[k] != two[k]} == set(MOCO_1X_SCHEDULE)
    assert {k: one[k] for k in MOCO_1X_SCHEDULE} == MOCO_1X_SCHEDULE


@pytest.mark.parametrize("name", ["voc/faster_rcnn_R_50_C4_24k_msra.yaml", "coco/mask_rcnn_R_50_C4_2x_msra.yaml"])
def test_msra_pixels_are_detectron2s_caffe_defaults(name):
    cfg, defaults = load_config(name), get_cfg()
    for key, value in D2_MSRA_PIXELS.items():
        assert _get(cfg, key) == pytest.approx(value) == _get(defaults, key)


@pytest.mark.parametrize("name,alternative", [("coco/mask_rcnn_R_50_C4_2x_moco.yaml", "coco/mask_rcnn_R_50_C4_2x.yaml"),
                                              ("coco/mask_rcnn_R_50_C4_1x_moco.yaml", "coco/mask_rcnn_R_50_C4_1x.yaml")])
def test_cocos_reference_differs_from_objcrops_syncbn_alternative_in_the_norm_only(name, alternative):
    """objcrop's COCO files stay as the named SyncBN alternative: the same model, pixels and schedule."""
    ref, alt = _flat(load_config(name)), _flat(load_config(alternative))
    assert (ref["MODEL.RESNETS.NORM"], alt["MODEL.RESNETS.NORM"]) == ("naiveSyncBN", "SyncBN")
    assert {k for k in ref if ref[k] != alt.get(k)} == {"MODEL.RESNETS.NORM"}


def test_the_paper_preset_fine_tunes_with_mocos_naive_sync_bn_configs():
    """Every detection task of the paper preset is one of MoCo's configs (the naiveSyncBN base), not objcrop's
    (paper_openimages has no detection: the paper's OpenImages table is the linear probe)."""
    import objcrop.pipeline as pipeline

    tasks = pipeline.load_preset("paper")["detection"]["tasks"]
    assert set(tasks) == {"voc", "coco"}
    for task in tasks.values():
        cfg = load_config(task["config_file"])
        assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN" and task["config_file"].endswith("_moco.yaml"), task


def test_naive_sync_bn_becomes_bn_at_world_size_one_only():
    log = logging.getLogger("test")
    cfg = load_config("voc/faster_rcnn_R_50_C4_24k_moco.yaml").clone()
    cfg.defrost()
    assert adapt_norms_to_world_size(cfg, 8, log) == [] and cfg.MODEL.RESNETS.NORM == "naiveSyncBN"
    assert adapt_norms_to_world_size(cfg, 1, log) == ["MODEL.RESNETS.NORM: naiveSyncBN -> BN"]


@pytest.mark.parametrize("name,bgr", [("voc/faster_rcnn_R_50_C4_24k_msra.yaml", True),
                                      ("voc/faster_rcnn_R_50_C4_24k_moco.yaml", False),
                                      ("coco/mask_rcnn_R_50_C4_2x_moco.yaml", False)])
def test_reference_configs_build_a_real_detectron2_model(name, bgr):
    from detectron2.modeling import build_model

    cfg = load_config(name).clone()
    cfg.defrost()
    adapt_norms_to_world_size(cfg, 1, logging.getLogger("test"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert model.input_format == ("BGR" if bgr else "RGB")
    assert torch.allclose(model.pixel_mean.flatten(), torch.tensor(cfg.MODEL.PIXEL_MEAN))
    assert torch.allclose(model.pixel_std.flatten(), torch.tensor(cfg.MODEL.PIXEL_STD))
    first_res3 = model.backbone.res3[0]
    # STRIDE_IN_1X1: MSRA's models stride in the 1x1 conv, torchvision's in the 3x3
    assert (first_res3.conv1.stride, first_res3.conv2.stride) == (((2, 2), (1, 1)) if bgr else ((1, 1), (2, 2)))
    assert isinstance(model.roi_heads.res5.norm, torch.nn.BatchNorm2d)  # MoCo's extra norm, BN at world size 1
    assert isinstance(model.backbone.res2[0].conv1.norm, torch.nn.BatchNorm2d)  # FREEZE_AT 0: nothing frozen


def _caffe2_name(d2_name):
    """MSRA R-50.pkl's Caffe2 blob name of a detectron2 backbone parameter (the inverse of detectron2's
    c2_model_loading.convert_basic_c2_names for ResNets: conv1_w, res_conv1_bn_s, res2_0_branch2a_w, ...)."""
    import re

    affine = {"weight": "s", "bias": "b"}
    m = re.match(r"stem\.conv1\.(norm\.)?(weight|bias)$", d2_name)
    if m:
        return f"res_conv1_bn_{affine[m.group(2)]}" if m.group(1) else "conv1_w"
    m = re.match(r"res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)\.(norm\.)?(weight|bias)$", d2_name)
    branch = {"conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c", "shortcut": "branch1"}[m.group(3)]
    return f"res{m.group(1)}_{m.group(2)}_{branch}_" + (f"bn_{affine[m.group(5)]}" if m.group(4) else "w")


def test_an_msra_layout_pkl_loads_into_the_msra_config_model(tmp_path):
    """A file in MSRA R-50.pkl's layout ({'blobs': Caffe2 names}, BN affine only) reaches every backbone
    weight of the _msra model through the checkpointer objcrop uses (detectron2's, restricted unpickler)."""
    import pickle

    import numpy as np
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from objcrop.convert.writer import use_restricted_pkl_reader

    cfg = load_config("voc/faster_rcnn_R_50_C4_24k_msra.yaml").clone()
    cfg.defrost()
    adapt_norms_to_world_size(cfg, 1, logging.getLogger("test"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    params = {k: v for k, v in model.backbone.named_parameters()}
    params.update({k[len("roi_heads."):]: v for k, v in model.named_parameters()
                   if k.startswith("roi_heads.res5.") and not k.startswith("roi_heads.res5.norm")})
    rng = np.random.default_rng(0)
    blobs = {_caffe2_name(k): rng.standard_normal(tuple(v.shape)).astype(np.float32) for k, v in params.items()}
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    use_restricted_pkl_reader(DetectionCheckpointer(model)).load(str(path))
    for k, v in params.items():  # the same tensors, now holding the file's values
        assert np.array_equal(v.detach().numpy(), blobs[_caffe2_name(k)]), k
