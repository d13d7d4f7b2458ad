"""Tests that a wrong implementation of a published number fails (issue 23): each names the bug it
guards against, planted and seen to fail when it was written. Small and fast: they are also the
tests `make mutation` runs against the core modules."""
import os

import numpy as np
import pytest
import torch
import torchvision

from objcrop import eval_configs
from objcrop.convert.detectron2_model import load_config
from objcrop.pretrain.probe import get_probe_cfg
from objcrop.pretrain.probe.cli import score

# torchvision's ImageNet normalisation as torchvision itself states it (the presets of its ResNets), in
# the 0-255 scale detectron2's PIXEL_MEAN / PIXEL_STD use. RGB order: torchvision models read RGB.
_TV = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
TV_MEAN_255 = [255 * m for m in _TV.mean]
TV_STD_255 = [255 * s for s in _TV.std]
CONFIG_DIR = os.path.dirname(os.path.abspath(eval_configs.__file__))
# MoCo's and MSRA's reference modes: the MSRA leaf reads caffe-trained BGR weights on purpose and the
# verbatim MoCo base keeps detectron2's defaults (its leaves set the pixels); pinned key by key in
# tests/test_fidelity_detection.py.
REFERENCE_MODES = ("Base-RCNN-C4-BN.yaml", "_msra.yaml")


def _torchvision_configs():
    import glob

    paths = glob.glob(os.path.join(CONFIG_DIR, "*.yaml")) + [
        p for d in ("voc", "coco", "demo") for p in glob.glob(os.path.join(CONFIG_DIR, d, "*.yaml"))]
    return sorted(os.path.relpath(p, CONFIG_DIR) for p in paths if not p.endswith(REFERENCE_MODES))


def test_base_configs_normalise_rgb_input_with_torchvisions_mean_and_std():
    """Guards against a BGR-ordered PIXEL_MEAN (103.53, 116.28, 123.675) in the base configs: weights
    converted from torchvision see their input shifted by ±20 on two channels, and detection AP drops
    without any error."""
    for base in ("Base-RCNN-C4-SyncBN.yaml", "Base-RCNN-FPN-SyncBN.yaml"):
        cfg = load_config(base)
        assert cfg.INPUT.FORMAT == "RGB"
        assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(TV_MEAN_255, abs=1e-6), base
        assert list(cfg.MODEL.PIXEL_STD) == pytest.approx(TV_STD_255, abs=1e-6), base


@pytest.mark.parametrize("name", _torchvision_configs())
def test_every_torchvision_config_keeps_the_rgb_mean(name):
    """Guards against a leaf overriding the base's mean with the BGR one (detectron2's default)."""
    cfg = load_config(name)
    assert cfg.INPUT.FORMAT == "RGB"
    assert list(cfg.MODEL.PIXEL_MEAN) == pytest.approx(TV_MEAN_255, abs=1e-6)


def _split_fixture(consistent: bool):
    """Train features whose first 4 (larger) coordinates' signs are the 4 labels (separable); test features are
    fresh draws labelled the same way (consistent) or with labels shuffled across images."""
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([3.0] * 4 + [1.0] * 12)  # the labelled directions dominate the cosine (kNN)
    train_x, test_x = torch.randn(96, 16, generator=g) * scale, torch.randn(96, 16, generator=g) * scale
    train_y, test_y = (train_x[:, :4] > 0).float(), (test_x[:, :4] > 0).float()
    if not consistent:
        test_y = test_y[torch.randperm(len(test_y), generator=g)]
    return train_x, train_y, test_x, test_y


def _probe_cfg(tmp_path):
    cfg = get_probe_cfg().clone()
    cfg.OUTPUT_DIR, cfg.LINEAR.EPOCHS, cfg.LINEAR.BATCH_SIZE, cfg.KNN.K = str(tmp_path), 30, 32, 5
    return cfg


def test_probe_scores_the_test_features_against_the_test_labels(tmp_path, one_torch_thread):
    """Guards against the probe's split: scoring mAP (or the kNN vote) on the training features, or
    against the training labels, instead of the test set's. Consistent test labels must score near 1
    where the training features against the test labels score at chance; labels shuffled across the
    test images must score near chance where the training set scores near 1."""
    from objcrop.pretrain.probe.scores import mean_average_precision

    train_x, train_y, test_x, test_y = _split_fixture(consistent=True)
    good = score(_probe_cfg(tmp_path), train_x, train_y, test_x, test_y, torch.device("cpu"))
    # the fixture discriminates: the test labels do not follow the training features
    chance, _ = mean_average_precision(train_x[:, :4].numpy(), test_y.numpy())
    assert chance < 0.7
    assert good["mAP"] > 0.95 and good["knn_mAP"] > 0.8

    train_x, train_y, test_x, shuffled_y = _split_fixture(consistent=False)
    bad = score(_probe_cfg(tmp_path), train_x, train_y, test_x, shuffled_y, torch.device("cpu"))
    prevalence = float(shuffled_y.mean())
    assert abs(bad["mAP"] - prevalence) < 0.15 and abs(bad["knn_mAP"] - prevalence) < 0.15
    assert good["mAP"] - bad["mAP"] > 0.3
    assert good["classes_scored"] == bad["classes_scored"] == 4
    assert np.isfinite(good["features"]["effective_rank"])


def test_byol_loss_normalises_each_embedding_and_averages_over_the_batch():
    """Guards against byol_loss normalising or summing along the batch axis instead of the feature
    axis (dim -2 for -1): rows of different norms, a batch size unlike the width, against 2 - 2 cos
    computed row by row."""
    from objcrop.pretrain.methods.losses import byol_loss

    g = torch.Generator().manual_seed(3)
    p = torch.randn(4, 6, generator=g) * torch.tensor([[0.5], [1.0], [3.0], [7.0]])
    z = torch.randn(4, 6, generator=g) * torch.tensor([[2.0], [0.3], [1.0], [5.0]])
    rows = [2 - 2 * torch.dot(p[i], z[i]) / (p[i].norm() * z[i].norm()) for i in range(4)]
    assert float(byol_loss(p, z)) == pytest.approx(float(sum(rows) / 4), rel=1e-5)


# ---- report/stats.py: what the study page prints for a comparison ----------------------------------

def test_compare_reports_every_field_of_welch_and_the_permutation_test():
    """Guards against compare() dropping or renaming a field, or filling Welch's fields when no t exists."""
    from objcrop.report.stats import compare, hedges_g, permutation_p, welch

    a, b = [0.52, 0.55, 0.61], [0.41, 0.47, 0.45]
    w, perm = welch(a, b), permutation_p(a, b)
    got = compare(a, b)
    assert got.pop("ci") == pytest.approx((w.ci_low, w.ci_high))
    assert got == pytest.approx({"n": 3, "n_base": 3, "diff": sum(a) / 3 - sum(b) / 3, "df": w.df, "p": w.p,
                                 "perm_p": perm.p, "perm_exact": True, "relabellings": 20, "g": hedges_g(a, b)})
    flat = compare([0.5, 0.5], [0.4, 0.4])  # no spread: no t, but the permutation test still exists
    assert (flat["ci"], flat["df"], flat["p"], flat["g"]) == (None, None, None, None)
    assert flat["perm_p"] == pytest.approx(1 / 3) and flat["diff"] == pytest.approx(0.1)


def test_welch_exists_when_one_group_has_spread_and_p_and_ci_agree_with_scipy():
    """Guards against welch() giving up when only one group is constant."""
    from scipy import stats as st

    from objcrop.report.stats import welch

    a, b = [1.0, 1.0, 1.0], [0.2, 0.5, 0.3]
    w = welch(a, b)
    ref = st.ttest_ind(a, b, equal_var=False)
    assert w is not None and w.p == pytest.approx(ref.pvalue) and w.t == pytest.approx(ref.statistic)
    assert w.ci_low < w.diff < w.ci_high and w.diff == pytest.approx(1.0 - 1 / 3)


def test_too_few_values_and_bad_p_values_are_errors_that_say_what_was_given():
    """Guards against errors that lose their message (a bare ObjcropError names nothing to fix)."""
    from objcrop.errors import ObjcropError
    from objcrop.report.stats import holm, welch

    with pytest.raises(ObjcropError, match="at least 2 values per group, got 1 and 3"):
        welch([1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ObjcropError, match=r"must lie in \[0, 1\], got 1.5"):
        holm([0.1, 1.5])


def test_holm_accepts_the_ends_of_the_unit_interval_and_caps_at_one():
    """Guards against holm() refusing p = 0 or p = 1, or letting an adjusted p exceed 1."""
    from objcrop.report.stats import holm

    assert holm([0.0, 1.0, None]) == [0.0, 1.0, None]
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_permutation_p_exact_up_to_its_limit_and_sampled_beyond():
    """Guards against the exact/Monte-Carlo switch at max_exact, the (1 + hits) / (1 + draws) estimate,
    ties with the observed difference (>= counts them) and one value per group being refused."""
    from objcrop.report.stats import permutation_p

    a, b = [10.0, 11.0, 12.0], [0.0, 1.0, 2.0]
    exact = permutation_p(a, b, max_exact=20)  # C(6, 3) = 20 relabellings: enumerated
    assert (exact.exact, exact.relabellings) == (True, 20) and exact.p == pytest.approx(0.1)
    sampled = permutation_p(a, b, max_exact=19, draws=3000)
    assert sampled.exact is False and sampled.relabellings == 3000 and sampled.p == pytest.approx(0.1, abs=0.02)
    same = permutation_p([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], max_exact=1, draws=50)
    assert same.p == 1.0  # every relabelling ties the observed 0: (1 + 50) / (1 + 50)
    # more draws than one chunk of 20,000: the hits of every chunk count
    assert permutation_p([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], max_exact=1, draws=45_000).p == 1.0
    far = permutation_p([1000.0 + i for i in range(10)], [float(i) for i in range(10)], draws=200, seed=1)
    assert far.exact is False and far.p == pytest.approx(1 / 201)  # C(20, 10) > MAX_EXACT; none of seed 1's draws as extreme
    assert tuple(vars(permutation_p([1.0], [2.0])).values()) == (1.0, True, 2)


# ---- objcrop/datasets/boxes.py: the one ground-truth box rule ---------------------------------------

def test_gt_boxes_defaults_extra_values_and_dtype():
    """Guards against the box rule's defaults: an annotation without `iscrowd` is an object, one without
    `bbox_mode` is COCO's XYWH, a record without annotations has no boxes (not an error), values past
    the fourth are ignored, and the boxes are float32 [n, 4]."""
    from objcrop.datasets.boxes import XYXY_ABS, annotation_xyxy, gt_boxes, object_annotations, xywh_to_xyxy

    record = {"annotations": [{"bbox": [1, 2, 3, 4]}, {"bbox": [0, 0, 5, 5], "iscrowd": 1},
                              {"bbox": [2, 2, 6, 8, 0.5], "bbox_mode": XYXY_ABS}]}
    assert len(object_annotations(record)) == 2
    boxes = gt_boxes(record)
    assert boxes.dtype == np.float32 and boxes.tolist() == [[1, 2, 4, 6], [2, 2, 6, 8]]
    assert gt_boxes({}).shape == (0, 4) and gt_boxes({}).dtype == np.float32
    assert xywh_to_xyxy([1, 2, 3, 4, 0.5]) == (1.0, 2.0, 4.0, 6.0)
    assert annotation_xyxy({"bbox": [1, 2, 3, 4, 0.5], "bbox_mode": XYXY_ABS}) == (1.0, 2.0, 3.0, 4.0)


# ---- pretrain/proposals/store_format.py: masks and saliency maps on disk ----------------------------

@pytest.mark.parametrize("pixels", [[0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
def test_mask_runs_round_trip_whatever_the_first_pixels(pixels):
    """Guards against the run encoding's start (a mask beginning with 1s gets a leading 0-run) and
    its dtype (uint32, what the store writes)."""
    from objcrop.pretrain.proposals.store_format import decode_mask_rle, encode_mask_rle

    mask = np.asarray(pixels, np.uint8).reshape(2, 3)
    runs = encode_mask_rle(mask)
    assert runs.dtype == np.uint32 and int(runs.sum()) == 6
    assert (runs[0] == 0) == bool(pixels[0])
    assert np.array_equal(decode_mask_rle(runs, 2, 3), mask)


def test_empty_mask_and_saliency_copies_and_decode_errors():
    """Guards against an empty mask's encoding (no runs, uint32), a saliency map surviving on a slice of
    another shape (or lost on a copy), and decode errors that do not say what they found."""
    from objcrop.pretrain.proposals.store_format import (ProposalStoreError, SaliencyMask, decode_mask_rle,
                                                         decode_saliency, encode_mask_rle, split_runs)

    empty = encode_mask_rle(np.zeros((0, 4), np.uint8))
    assert empty.dtype == np.uint32 and empty.size == 0
    sal = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    m = SaliencyMask(sal > 100, sal)
    assert np.array_equal(m.copy().saliency, sal) and m[:2].saliency is None
    binary, words = split_runs(encode_mask_rle(m))
    assert np.array_equal(decode_mask_rle(binary, 3, 4), (sal > 100).astype(np.uint8))
    assert np.array_equal(decode_saliency(words, 3, 4), sal)
    with pytest.raises(ProposalStoreError, match="cover 12 pixels, expected 2x5"):
        decode_mask_rle(binary, 2, 5)
    with pytest.raises(ProposalStoreError, match="holds 12 pixels, expected 2x5"):
        decode_saliency(words, 2, 5)
    with pytest.raises(ProposalStoreError, match="missing its length"):
        decode_saliency(np.zeros(0, np.uint32), 3, 4)


# ---- objcrop/records.py: the names a run and a table row go by ------------------------------------

@pytest.mark.parametrize("spec,label,tag", [
    ("voc:/d/VOC2007:test", "voc:test", "VOC2007-test"),
    ("openimages:/d/oi:validation", "openimages:validation", "oi-validation"),
    ("synth:/abs/dir:val", "synth:val", "dir-val"),
    ("coco:/a/instances_val.json:/a/img", "coco:instances_val", "instances_val.json-img"),
    ("folder:/a/Photos Of Cats/", "folder:Photos Of Cats", "Photos_Of_Cats"),
    ("coco_2017_val", "coco_2017_val", "coco_2017_val"),
    ("", "", "data"), (None, "", "data")])
def test_dataset_label_and_tag_of_every_spec_kind(spec, label, tag):
    """Guards against a table row or a run directory named after the wrong part of a dataset spec
    (its folder instead of its split, the json's extension kept) or a tag that is not file-name safe."""
    from objcrop.records import dataset_label, dataset_tag

    assert dataset_label(spec) == label
    if spec is not None:
        assert dataset_tag(spec) == tag


# ---- pretrain/views/geometry.py: the box arithmetic behind the view statistics ----------------------

def test_box_iou_against_areas_computed_by_hand():
    """Guards against IoU's union (areas added, intersection subtracted once) and its zero cases."""
    from objcrop.pretrain.views.geometry import box_iou

    a, b = (10.0, 20.0, 40.0, 60.0), (30.0, 50.0, 70.0, 80.0)  # 30x40 and 40x30, overlap 10x10
    assert box_iou(a, b) == pytest.approx(100 / (1200 + 1200 - 100))
    assert box_iou(a, a) == 1.0
    assert box_iou(a, (50.0, 70.0, 60.0, 90.0)) == 0.0  # apart on both axes: no overlap, not a clamp at 1
    assert box_iou(a, (40.0, 20.0, 50.0, 60.0)) == 0.0  # touching
    assert box_iou((5.0, 5.0, 5.0, 5.0), (5.0, 5.0, 5.0, 5.0)) == 0.0  # empty boxes: no union


@pytest.mark.parametrize("edge", range(4))
def test_contains_checks_each_edge_on_its_own_and_accepts_equal_edges(edge):
    """Guards against containment that checks fewer than the four edges, or refuses an edge on the border."""
    from objcrop.pretrain.views.geometry import contains

    outer = (10.0, 20.0, 50.0, 60.0)
    assert contains(outer, outer) and contains(outer, (11.0, 21.0, 49.0, 59.0))
    poking = list((11.0, 21.0, 49.0, 59.0))
    poking[edge] += -2.0 if edge < 2 else 2.0  # one edge past the outer box
    assert not contains(outer, tuple(poking))


def test_centre_crop_in_keeps_the_ratio_range_and_centres():
    """Guards against the centred crop of a region whose aspect lies outside the allowed range."""
    from objcrop.pretrain.views.geometry import centre_crop_in

    assert centre_crop_in((0, 0, 100, 10), (0.5, 2.0)) == (40, 0, 60, 10)  # too wide: 20 x 10, centred
    assert centre_crop_in((10, 0, 20, 100), (0.5, 2.0)) == (10, 40, 20, 60)  # too tall: 10 x 20, centred
    assert centre_crop_in((0, 0, 30, 20), (0.5, 2.0)) == (0, 0, 30, 20)  # inside the range: unchanged
    assert centre_crop_in((0, 0, 40, 20), (0.5, 2.0)) == (0, 0, 40, 20)  # exactly at the bound
    assert centre_crop_in((0, 0, 20, 40), (0.5, 2.0)) == (0, 0, 20, 40)
    assert centre_crop_in((0, 0, 1, 9), (0.5, 2.0)) == (0, 3, 1, 5)  # 1 / 0.5 = 2 rows, (9 - 2) // 2 above


def test_flag_reasons_merge_only_the_per_metric_ones():
    """Guards against the table's footnote merging the wrong reasons: per-metric "X is V" lines of the
    same value merge into one "X, Y are V"; failures (status, pretraining, unreadable) stay verbatim."""
    from objcrop.report.aggregate import _merge_reasons

    reasons = ["COCO box AP is null", "status failed: the loss is nan", "COCO box AP50 is null",
               "pretraining final loss is inf", "VOC AP (one is odd) is inf", "unreadable results.json: x is y"]
    assert _merge_reasons(reasons) == [
        "status failed: the loss is nan", "pretraining final loss is inf", "unreadable results.json: x is y",
        "COCO box AP, COCO box AP50 are null", "VOC AP (one is odd) is inf"]


# ---- convert/names.py: reading a ResNet's layout from its parameter names --------------------------

def test_resnet_layout_depth_and_description_of_standard_and_unusual_names():
    """Guards against the bottleneck test being decided by the last name only (names come in any order),
    the BN-only evidence of a bottleneck, the depth of an unknown layout (0) and the messages' wording."""
    from objcrop.convert.names import _preview, describe_resnet, infer_resnet_layout, resnet_depth

    names = list(torchvision.models.resnet50(weights=None).state_dict())
    assert infer_resnet_layout(reversed(names)) == ("bottleneck", (3, 4, 6, 3))
    assert infer_resnet_layout(n for n in names if ".conv" not in n) == ("bottleneck", (3, 4, 6, 3))
    tiny = [f"layer{s}.0.conv1.weight" for s in range(1, 5)]
    assert resnet_depth(tiny) == 0 and describe_resnet(tiny) == "a ResNet with basic blocks 1-1-1-1"
    assert describe_resnet(names) == "ResNet-50" and resnet_depth(names) == 50
    letters = [chr(ord("a") + i) for i in range(10)]
    assert _preview(letters) == "a, b, c, d, e, f, g, h, … and 2 more"
    assert _preview(letters[:8]) == "a, b, c, d, e, f, g, h"


def test_released_small_box_growth_just_inside_the_border():
    """Guards against the released border rule's comparison (lo - size/2 > 0): a box whose grown left
    edge lands at 1 px keeps it; at 0 or below the box is pushed to [0, size] first."""
    from objcrop.pretrain.views.released import grow_axis

    assert grow_axis(113, 120, 1000, 224) == (1, 232)
    assert grow_axis(112, 120, 1000, 224) == (0, 336)


def test_conversion_errors_name_the_state_dict_by_default():
    """Guards against an error that names no source when the caller gives none."""
    from objcrop.convert.names import torchvision_to_detectron2
    from objcrop.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"^state dict: no ResNet backbone parameters found among 1 keys"):
        torchvision_to_detectron2(["fc.weight"])
    with pytest.raises(CheckpointError, match=r"^state dict: 1 keys are not torchvision ResNet backbone names"):
        torchvision_to_detectron2(["conv1.weight", "head.weight"])


def test_a_pretraining_run_whose_loss_diverged_flags_its_row_and_the_table_shows_what_varies():
    """Guards against a diverged pretraining run (final loss NaN/inf) passing unflagged, a finite loss
    flagged, and the table showing the arch/dataset columns or dataset headers when they do not vary
    (or hiding them when they do)."""
    from objcrop.records import Provenance, results
    from objcrop.report.aggregate import Flag, build_table, pretrain_flag

    prov = Provenance("moco_v2", "random", "none", 3, "resnet18", "synth:/d:train", 0)
    assert pretrain_flag({"status": "ok", "final_loss": float("nan")}, "/r") == Flag("/r", "pretraining final loss is nan")
    assert pretrain_flag({"status": "ok", "final_loss": 6.2}, "/r") is None
    assert pretrain_flag({"status": "ok"}, "/r") is None
    probe = results("probe", "ok", prov, dataset="synth:/d:test", mAP=0.4)
    table = build_table([(probe, "/p"), ({"stage": "pretrain", "status": "ok", "final_loss": float("inf"),
                                          "pretrain": prov.to_dict()}, "/pre")])
    assert table.row_flags[table.rows[0]] == [Flag("/pre", "pretraining final loss is inf")]
    assert table.varying_row_fields() == ["method", "policy", "proposals", "epochs"]
    assert table.columns_needing_dataset() == set()
    other = Provenance("moco_v2", "random", "none", 3, "resnet50", "synth:/d:train", 0)
    two = build_table([(probe, "/p"), (results("probe", "ok", other, dataset="synth:/d:val", mAP=0.5), "/q")])
    assert two.varying_row_fields() == ["method", "policy", "proposals", "epochs", "arch"]
    assert two.columns_needing_dataset() == {"probe"}
