"""The pretraining sampler (sharding, resume position, per-sample seeds) and the image pre-shrink."""
import os

import numpy as np
import torch

from objcrop.datasets.boxes import gt_boxes as gt_boxes_xyxy
from objcrop.pretrain.engine.data import ShardedResumableSampler, shrink_to_short_side
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


def test_ranked_proposals_name_their_top_k():
    """A store's k best-scored boxes (DATA.PROPOSALS_TOPK) are not the store: the run is named for them,
    so that the registration's ranked arm and an unranked run of the same method get rows of their own."""
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.results import default_run_dir, pretrain_provenance

    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["PRETRAIN.ARCH", "resnet18", "PRETRAIN.EPOCHS", "2", "PRETRAIN.BATCH_SIZE", "8",
                         "VIEWS.POLICY", "obj-obj-dilate", "DATA.DATASET", "synth:/d/data:train"])
    assert pretrain_provenance(cfg, "saliency-gs").proposals == "saliency-gs"
    cfg.merge_from_list(["DATA.PROPOSALS_TOPK", "10"])
    assert pretrain_provenance(cfg, "saliency-gs").proposals == "saliency-gs-top10"
    assert os.path.basename(default_run_dir(cfg, "saliency-gs")) == \
        "moco_v2_obj-obj-dilate_saliency-gs-top10_r18_b8_e2_data-train_s0"
    # annotated boxes have no score to rank by: BoxSource ignores the top-k for them, and so does the name
    assert pretrain_provenance(cfg, "gt").proposals == "gt" and pretrain_provenance(cfg, "none").proposals == "none"


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
    """The pipeline names pretraining runs before any runs, with these (objcrop.pipeline.naming imports
    pretrain_provenance): neither may load torch."""
    import subprocess
    import sys

    code = ("import sys, objcrop.pretrain.engine.results, objcrop.pipeline.naming; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------- one item per box (VIEWS.GEOMETRY released)
TINY_RELEASED = ["PRETRAIN.ARCH", "resnet18", "PRETRAIN.MOCO.K", "16", "PRETRAIN.MOCO.MLP_HIDDEN", "64",
                 "PRETRAIN.MOCO.DIM", "32", "VIEWS.CROP_SIZE", "32", "VIEWS.POLICY", "obj-obj-dilate",
                 "VIEWS.GEOMETRY", "released", "PRETRAIN.BATCH_SIZE", "4", "DATA.NUM_WORKERS", "0"]


def _top2_store(tmp_path, records):
    """A real proposal store of the ground-truth boxes (scores falling), missing the first image."""
    from objcrop.pretrain.proposals import ProposalStore

    items = {r["image_id"]: (gt_boxes_xyxy(r), list(range(len(r["annotations"]), 0, -1))) for r in records[1:]}
    return ProposalStore.write(str(tmp_path / "top.store"), items, meta={"method": "gt-test"})


def test_boxes_mode_an_epoch_is_a_pass_over_the_boxes_each_handed_alone(synth_dir, tmp_path):
    from objcrop.config import merge_config
    from objcrop.datasets import load_dataset
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.data import BoxSource, ViewPairDataset, box_items, item_mode
    from objcrop.pretrain.views import build_view_policy

    records, _ = load_dataset(f"synth:{synth_dir}:train")
    store = _top2_store(tmp_path, records)
    source = BoxSource(store, topk=2)
    items = box_items(records, source)
    expected = [(i, b) for i, r in enumerate(records[1:], 1) for b in range(min(2, len(gt_boxes_xyxy(r))))]
    assert [tuple(it) for it in items.tolist()] == expected  # every kept box once; the image without boxes: none
    assert len(items) < sum(len(gt_boxes_xyxy(r)) for r in records)  # PROPOSALS_TOPK applies first

    cfg = merge_config(get_pretrain_cfg, None, TINY_RELEASED + ["DATA.PROPOSALS", store])
    assert item_mode(cfg) == "boxes"
    for change in (["VIEWS.GEOMETRY", "objcrop"], ["VIEWS.POLICY", "random"], ["DATA.PROPOSALS", ""]):
        assert item_mode(merge_config(get_pretrain_cfg, None, TINY_RELEASED + ["DATA.PROPOSALS", store] + change)) == "images"

    policy = build_view_policy(cfg)
    handed = []
    real_sample_boxes = policy.sample_boxes

    def sample_boxes(image_size, boxes=None, generator=None):  # the real policy, its input noted
        handed.append(boxes.clone())
        return real_sample_boxes(image_size, boxes, generator)

    policy.sample_boxes = sample_boxes
    dataset = ViewPairDataset(records, policy, source, 0, items)
    assert len(dataset) == len(items)
    for k in (0, len(items) // 2, len(items) - 1):
        _, _, has_boxes = dataset[(k, 7)]
        record_index, box_index = items[k]
        want = source.boxes(records[record_index])[box_index:box_index + 1]
        assert has_boxes and handed[-1].numpy().tolist() == want.tolist()


def test_boxes_mode_resumes_mid_epoch_on_exactly_the_remaining_items(synth_dir, tmp_path):
    """The real trainer, interrupted inside an epoch and resumed from its checkpoint, trains the same
    items with the same losses as the uninterrupted run; an epoch is len(boxes) // batch steps."""
    import json

    import pytest

    from objcrop.config import merge_config
    from objcrop.datasets import load_dataset
    from objcrop.logger import setup_logger
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.data import BoxSource, box_items
    from objcrop.pretrain.engine.hooks import HookBase
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    records, _ = load_dataset(f"synth:{synth_dir}:train")
    store = _top2_store(tmp_path, records)
    n_boxes = len(box_items(records, BoxSource(store, topk=2)))

    def trainer(out, interrupt_at=None):
        cfg = merge_config(get_pretrain_cfg, None, TINY_RELEASED + [
            "DATA.DATASET", f"synth:{synth_dir}:train", "DATA.PROPOSALS", store, "DATA.PROPOSALS_TOPK", "2",
            "PRETRAIN.EPOCHS", "1", "CHECKPOINT.PERIOD", "2", "OUTPUT_DIR", str(out)])

        class Interrupt(HookBase):
            def after_step(self):
                if self.trainer.state.iteration == interrupt_at:
                    raise KeyboardInterrupt  # the process dies here: the last checkpoint is the one before

        class T(PretrainTrainer):
            def build_hooks(self):
                return super().build_hooks() + [Interrupt()]

        return T(cfg, DistContext(), setup_logger(f"objcrop.pretrain.test.{out.name}", str(out)))

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    whole = trainer(tmp_path / "whole")
    whole.train()
    assert whole.per_epoch == n_boxes // 4 >= 5 and whole.sampler.num_items == n_boxes
    cut = trainer(tmp_path / "cut", interrupt_at=5)
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    resumed = trainer(tmp_path / "cut")
    resumed.train(resume=True)
    assert "resumed from" in (tmp_path / "cut" / "log.txt").read_text()
    assert resumed.sampler.start_batch == 4 and len(resumed.sampler) == (n_boxes // 4 - 4) * 4
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "whole"), rel=1e-5)


def test_dilo_copy_paste_gets_the_stores_continuous_saliency_map(synth_dir, tmp_path):
    """MODE dilo: the store's saliency map reaches the copy-paste as a float alpha, shrunk bilinearly
    (intermediate values kept, not binarised); MODE shared still gets the binary mask."""
    import numpy as np
    from torchvision.transforms.v2 import functional as F

    from objcrop.config import merge_config
    from objcrop.datasets import load_dataset, read_image
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.data import BoxSource, ViewPairDataset, shrink_to_short_side
    from objcrop.pretrain.proposals import ProposalStore
    from objcrop.pretrain.proposals.store import SaliencyMask
    from objcrop.pretrain.views import build_view_policy

    records, _ = load_dataset(f"synth:{synth_dir}:train")
    record = records[0]
    h, w = read_image(record["file_name"]).shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    saliency = np.clip(255 - 4 * np.hypot(ys - h / 2, xs - w / 2), 0, 255).astype(np.uint8)  # a soft blob
    store = ProposalStore.write(str(tmp_path / "sal.store"), {record["image_id"]: ([[10, 10, 60, 60]], [1.0])},
                                {"method": "saliency-test"},
                                masks={record["image_id"]: SaliencyMask((saliency > 128).astype(np.uint8), saliency)})
    size = min(h, w) * 2 // 3  # the loader's pre-shrink resizes the alpha too
    for mode, soft in (("dilo", True), ("shared", False)):
        cfg = merge_config(get_pretrain_cfg, None, ["VIEWS.CROP_SIZE", "32", "VIEWS.POLICY", "obj-obj-dilate",
                                                    "VIEWS.COPY_PASTE.ENABLED", "True", "VIEWS.COPY_PASTE.MODE", mode,
                                                    "VIEWS.COPY_PASTE.PROB", "1.0"])
        policy = build_view_policy(cfg)
        seen = []
        real_sample = policy.sample

        def sample(image, boxes=None, mask=None, generator=None, render_image=False):  # the real one, noted
            seen.append(mask)
            return real_sample(image, boxes, mask, generator, render_image)

        policy.sample = sample
        source = BoxSource(store, with_masks=True, soft_alpha=mode == "dilo")
        ViewPairDataset([record], policy, source, size)[(0, 3)]
        alpha = seen[-1]
        if soft:
            shape = shrink_to_short_side(torch.zeros(3, h, w), torch.zeros(0, 4), None, size)[0].shape[-2:]
            want = F.resize(torch.from_numpy(saliency.astype(np.float32) / 255)[None], list(shape),
                            interpolation=F.InterpolationMode.BILINEAR, antialias=True)[0]
            assert alpha.dtype == torch.float32 and alpha.shape == want.shape
            torch.testing.assert_close(alpha, want)
            inside = ((alpha > 0.05) & (alpha < 0.95)).float().mean()
            assert inside > 0.2  # a continuous map, not a 0/1 mask
        else:
            assert alpha.dtype == torch.uint8 and set(alpha.unique().tolist()) <= {0, 1}


def test_run_names_tell_the_modes_apart_and_every_preset_run_keeps_its_name():
    """`@released` marks the released geometry and `+copy-paste-dilo` DiLo's mode (CopyPaste.name's suffix);
    every run of the presets (as planned before the leaf files) keeps the policy it was named by, and every
    pretraining run a study record holds is one of them."""
    import json

    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.results import pretrain_provenance, view_policy
    from objcrop.pretrain.views import build_view_policy
    from objcrop.records import Provenance, run_name

    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "test_pipeline_presets_before.json")) as f:
        presets = json.load(f)
    released = 0
    for preset, runs in presets.items():
        policies = set()
        for run in runs:
            cfg = merge_config(get_pretrain_cfg, run["config_file"], run["opts"])
            v = cfg.VIEWS
            name = view_policy(cfg)
            before = str(v.POLICY) + ("+copy-paste" if v.COPY_PASTE.ENABLED else "")  # the names records carry
            same_crops = v.GEOMETRY == "objcrop" or v.POLICY == "random"  # random crops use no boxes
            if same_crops and (v.COPY_PASTE.MODE == "shared" or not v.COPY_PASTE.ENABLED):
                assert name == before, (preset, run)
            else:  # the paper preset's released runs and DiLo's per-view runs (the study's too): their own rows
                assert (preset == "paper" or v.COPY_PASTE.MODE == "dilo") and name != before
                released += v.POLICY != "random"
            policies.add(pretrain_provenance(cfg, "any").policy_label)
        record = os.path.join(os.path.dirname(here), "docs", "results", preset, "record.json")
        if os.path.exists(record):
            with open(record) as f:
                runs_recorded = json.load(f)["runs"]
            for key, run in runs_recorded.items():
                if key.startswith("runs/pretrain/"):
                    stored = Provenance.from_dict(run["results"]["pretrain"]).policy_label  # with its tag
                    assert stored in policies, (preset, key, stored)
    assert released  # the paper preset holds released runs

    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["VIEWS.POLICY", "obj-obj-dilate", "VIEWS.GEOMETRY", "released", "PRETRAIN.ARCH", "resnet18",
                         "VIEWS.COPY_PASTE.ENABLED", "True", "VIEWS.COPY_PASTE.MODE", "dilo"])
    prov = pretrain_provenance(cfg, "gt")
    assert prov.policy == "obj-obj-dilate@released+copy-paste-dilo"
    assert build_view_policy(cfg).name.endswith("+copy-paste-dilo")  # the views' own name of the mode
    assert run_name(prov, 8).startswith("moco_v2_obj-obj-dilate@released+copy-paste-dilo_gt_r18_b8_")
    cfg.merge_from_list(["VIEWS.POLICY", "random", "VIEWS.COPY_PASTE.ENABLED", "False"])
    assert view_policy(cfg) == "random"  # no boxes, no geometry


def test_cached_images_give_the_same_views_and_stop_at_the_limit(synth_dir):
    """DATA.IMAGE_CACHE_MB: a dataset that fits is decoded once (the second read returns the cached,
    read-only array), the views are equal to uncached ones, and images past the limit are not kept."""
    from objcrop.config import merge_config
    from objcrop.datasets import load_dataset, read_image
    from objcrop.pretrain.config import get_pretrain_cfg
    from objcrop.pretrain.engine.data import BoxSource, DecodedImages, ViewPairDataset
    from objcrop.pretrain.views import build_view_policy

    records, _ = load_dataset(f"synth:{synth_dir}:train")
    paths = [r["file_name"] for r in records[:4]]
    one = read_image(paths[0]).nbytes
    images = DecodedImages(limit_mb=2.5 * one / 2 ** 20)  # room for two images
    first = [images.read(p) for p in paths]
    assert len(images.cached) == 2 and images.used == 2 * one
    assert images.read(paths[0]) is first[0] and not first[0].flags.writeable
    assert images.read(paths[3]) is not first[3] and np.array_equal(images.read(paths[3]), first[3])

    cfg = merge_config(get_pretrain_cfg, None, ["VIEWS.CROP_SIZE", "32", "VIEWS.POLICY", "obj-obj-dilate"])
    plain = ViewPairDataset(records, build_view_policy(cfg), BoxSource("gt"), 0)
    cached = ViewPairDataset(records, build_view_policy(cfg), BoxSource("gt"), 0, image_cache_mb=64)
    for epoch in range(2):  # the second epoch reads from the cache
        for k in range(3):
            a, b = plain[(k, 10 * epoch + k)], cached[(k, 10 * epoch + k)]
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert len(cached.images.cached) == 3
