"""The pretraining sampler (sharding, resume position, per-sample seeds) and the image pre-shrink."""
import os

import torch

from objcrop.pretrain.engine.data import ShardedResumableSampler, gt_boxes_xyxy, shrink_to_short_side
from objcrop.pretrain.engine.optim import lr_at
from objcrop.records import dataset_tag


def _batches(sampler, epoch, start=0):
    sampler.set_epoch(epoch, start)
    keys = list(sampler)
    return [keys[i:i + sampler.batch] for i in range(0, len(keys), sampler.batch)]


def test_global_batches_are_the_same_for_one_or_two_processes():
    one = _batches(ShardedResumableSampler(23, 4, 0, 1, seed=3), epoch=1)
    ranks = [_batches(ShardedResumableSampler(23, 2, r, 2, seed=3), epoch=1) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5 and len(one) == 5  # drop_last: 23 // 4 whole batches
    for b in range(5):
        two = {k for r in range(2) for k in ranks[r][b]}
        assert {k for k in one[b]} == two  # same images and the same per-sample seeds
    flat = [k for r in ranks for batch in r for k in batch]
    assert len(flat) == len(set(flat)) == 20  # no image twice in an epoch, across ranks


def test_resume_position_skips_exactly_the_trained_batches():
    s = ShardedResumableSampler(30, 4, seed=0)
    full = _batches(s, epoch=2)
    assert _batches(s, epoch=2, start=3) == full[3:] and len(s) == (7 - 3) * 4
    assert _batches(s, epoch=3) != full  # a new order every epoch
    seeds = [seed for batch in full for _, seed in batch]
    assert len(set(seeds)) == len(seeds)


def test_shrink_to_short_side_moves_boxes_and_mask():
    image = torch.zeros(3, 100, 200, dtype=torch.uint8)
    boxes = torch.tensor([[20.0, 10.0, 120.0, 60.0]])
    mask = torch.zeros(100, 200, dtype=torch.uint8)
    mask[10:60, 20:120] = 1
    small, b, m = shrink_to_short_side(image, boxes, mask, 50)
    assert small.shape == (3, 50, 100) and m.shape == (50, 100)
    torch.testing.assert_close(b, torch.tensor([[10.0, 5.0, 60.0, 30.0]]))
    assert int(m.sum()) == 25 * 50
    same, b2, _ = shrink_to_short_side(image, boxes, None, 0)
    assert same is image and b2 is boxes


def test_gt_boxes_and_names_and_schedule():
    rec = {"annotations": [{"bbox": [1, 2, 3, 4], "bbox_mode": 1}, {"bbox": [1, 2, 3, 4], "bbox_mode": 0}]}
    assert gt_boxes_xyxy(rec).tolist() == [[1, 2, 4, 6], [1, 2, 3, 4]]
    assert gt_boxes_xyxy({"annotations": []}).shape == (0, 4)
    assert dataset_tag("synth:/data/objcrop_synth:train") == "objcrop_synth-train"
    assert dataset_tag("coco_2017_train") == "coco_2017_train"
    assert lr_at(0, 100, 1.0, 0) == 1.0 and abs(lr_at(50, 100, 1.0, 0) - 0.5) < 1e-9 and lr_at(99, 100, 1.0, 0) < 0.01
    assert lr_at(0, 100, 1.0, 10) == 0.1 and lr_at(9, 100, 1.0, 10) == 1.0


def test_default_run_dir_keeps_its_name_and_the_tag_is_its_own_field():
    """The run directory is objcrop.records.run_name of the run's provenance; the name is the one runs had
    before the records module (a tagged policy reads `obj-obj-dilate-short`, copy-paste stays in the policy),
    so existing run directories resume."""
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.results import default_run_dir, pretrain_provenance
    from objcrop.records import Provenance, run_name

    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["PRETRAIN.ARCH", "resnet18", "PRETRAIN.EPOCHS", "2", "PRETRAIN.BATCH_SIZE", "8",
                         "VIEWS.POLICY", "obj-obj-dilate", "PRETRAIN.TAG", "short", "DATA.DATASET", "synth:/d/data:train"])
    prov = pretrain_provenance(cfg, "gt")
    assert (prov.policy, prov.tag, prov.policy_label) == ("obj-obj-dilate", "short", "obj-obj-dilate-short")
    assert Provenance.from_dict(prov.to_dict()) == prov
    assert default_run_dir(cfg, "gt") == os.path.join("output", "pretrain", run_name(prov, 8))
    assert default_run_dir(cfg, "gt") == os.path.join("output", "pretrain", "moco_v2_obj-obj-dilate-short_gt_r18_b8_e2_data-train_s0")
    cfg.merge_from_list(["PRETRAIN.TAG", "", "VIEWS.COPY_PASTE.ENABLED", "True"])
    prov = pretrain_provenance(cfg, "gt")
    assert prov.policy == "obj-obj-dilate+copy-paste" and "tag" not in prov.to_dict()
    assert os.path.basename(default_run_dir(cfg, "gt")) == "moco_v2_obj-obj-dilate+copy-paste_gt_r18_b8_e2_data-train_s0"


def test_gt_box_source_gives_copy_paste_the_annotated_masks_only_when_asked(synth_dir):
    from objcrop.datasets import load_dataset, read_image
    from objcrop.pretrain.engine.data import BoxSource

    records, _ = load_dataset(f"synth:{synth_dir}:train")
    record = next(r for r in records if r["annotations"])
    h, w = read_image(record["file_name"]).shape[:2]
    assert BoxSource("gt").mask(record, h, w) is None  # copy-paste off: no mask work
    mask = BoxSource("gt", with_masks=True).mask(record, h, w)
    assert mask is not None and mask.shape == (h, w)
    for x0, y0, x1, y1 in gt_boxes_xyxy(record).astype(int):
        assert mask[y0:y1 + 1, x0:x1 + 1].any()  # every annotated object is in the foreground
    assert mask.mean() < 0.9  # and the background is not


def test_the_run_record_helpers_import_without_torch():
    """The pipeline names pretraining runs before any runs; it may use these without loading torch."""
    import subprocess
    import sys

    code = ("import sys, objcrop.pretrain.engine.results; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
