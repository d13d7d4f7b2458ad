"""The embedded dataset: layout, determinism, atomicity, and that real COCO/VOC tooling reads it."""
import os

import numpy as np
import pytest

from objcrop.datasets import load_dataset, multilabel_targets
from objcrop.datasets.synth import generate
from objcrop.errors import DatasetError
from objcrop.io import read_json


def _tree(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def test_layout_matches_the_contract(synth_dir):
    meta = read_json(os.path.join(synth_dir, "meta.json"))
    assert len(meta["classes"]) >= 10 and meta["num_images"] == 24
    assert sum(meta["splits"].values()) == 24
    for split in ("train", "val", "test"):
        n = meta["splits"][split]
        assert n > 0
        assert len(os.listdir(os.path.join(synth_dir, "images", split))) == n
        assert os.path.isfile(os.path.join(synth_dir, "annotations", f"instances_{split}.json"))
        with open(os.path.join(synth_dir, "voc", "ImageSets", "Main", f"{split}.txt")) as f:
            assert len(f.read().split()) == n
        with open(os.path.join(synth_dir, "labels", f"{split}.txt")) as f:
            lines = f.read().splitlines()
        assert len(lines) == n
        for line in lines:
            path, *classes = line.split()
            assert os.path.isfile(os.path.join(synth_dir, path)) and classes
            assert all(0 <= int(c) < len(meta["classes"]) for c in classes)
    assert len(os.listdir(os.path.join(synth_dir, "voc", "JPEGImages"))) == 24


def test_labels_files_agree_with_multilabel_targets(synth_dir):
    records, metadata = load_dataset(f"synth:{synth_dir}:train")
    targets = multilabel_targets(records, len(metadata["thing_classes"]))
    with open(os.path.join(synth_dir, "labels", "train.txt")) as f:
        lines = f.read().splitlines()
    by_file = {os.path.join(synth_dir, line.split()[0]): sorted(int(c) for c in line.split()[1:]) for line in lines}
    for r, t in zip(records, targets):
        assert sorted(np.nonzero(t)[0].tolist()) == by_file[r["file_name"]]


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    a = generate(str(tmp_path / "a"), num_images=6, seed=3, progress=False)
    generate(str(tmp_path / "b"), num_images=6, seed=3, progress=False)
    generate(str(tmp_path / "c"), num_images=6, seed=4, progress=False)
    ta, tb, tc = (_tree(str(tmp_path / x)) for x in "abc")
    assert ta == tb
    assert ta.keys() == tc.keys() and ta != tc
    assert a["num_images"] == 6


def test_generation_is_atomic(tmp_path, monkeypatch):
    from objcrop.datasets import synth

    out = tmp_path / "data"
    generate(str(out), num_images=3, seed=0, progress=False)
    with pytest.raises(DatasetError, match="not empty.*--overwrite"):
        generate(str(out), num_images=3, seed=1, progress=False)
    before = _tree(str(out))

    calls = {"n": 0}
    real = synth.render_image

    def dies_on_third(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(synth, "render_image", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate(str(out), num_images=5, seed=1, overwrite=True, progress=False)
    assert _tree(str(out)) == before  # the old dataset is untouched
    assert sorted(os.listdir(tmp_path)) == ["data"]  # and no temporary directory is left behind
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        generate(str(tmp_path / "fresh"), num_images=5, seed=1, progress=False)
    assert not (tmp_path / "fresh").exists()


def test_hard_variant_has_more_smaller_objects(tmp_path):
    d = generate(str(tmp_path / "hard"), num_images=10, seed=0, variant="hard", splits=(1, 0, 0), progress=False)
    assert d["params"]["image_size"] == 160
    records, _ = load_dataset(f"synth:{tmp_path / 'hard'}:train")
    sides = [max(a["bbox"][2], a["bbox"][3]) / 160 for r in records for a in r["annotations"]]
    counts = [len(r["annotations"]) for r in records]
    # Sizes are drawn before rotation: a rotated, stretched square spans up to 1.15 * sqrt(2) of it.
    assert max(sides) <= 0.18 * 1.15 * 1.42 + 2 / 160 and np.median(sides) < 0.2 and np.mean(counts) >= 2


@pytest.mark.parametrize("variant, size", [("study", 96), ("study-hard", 128), ("study-plain", 96)])
def test_study_variants_keep_objects_the_same_size_in_pixels(tmp_path, variant, size):
    d = generate(str(tmp_path / variant), num_images=12, seed=0, variant=variant, splits=(1, 0, 0), progress=False)
    assert d["params"]["image_size"] == size and len(d["classes"]) == 6
    records, _ = load_dataset(f"synth:{tmp_path / variant}:train")
    counts = [len(r["annotations"]) for r in records]
    sides_px = [max(a["bbox"][2], a["bbox"][3]) for r in records for a in r["annotations"]]
    assert 1 <= min(counts) and max(counts) <= 3
    # both variants draw objects of about 23-38 px (before rotation and occlusion), whatever the scene size
    assert 15 <= np.median(sides_px) <= 60


def test_plain_variant_shares_one_flat_background_and_keeps_the_objects(tmp_path):
    """study-plain: every pixel outside the objects is the same grey up to sensor noise (and JPEG), in
    every image, so no view pair can be matched by its background; study's backgrounds differ."""
    from PIL import Image

    def background_pixels(variant):
        generate(str(tmp_path / variant), num_images=8, seed=0, variant=variant, splits=(1, 0, 0), progress=False)
        records, _ = load_dataset(f"synth:{tmp_path / variant}:train")
        means = []
        for r in records:
            img = np.asarray(Image.open(r["file_name"]).convert("RGB"), np.float32)
            outside = np.ones(img.shape[:2], bool)
            for a in r["annotations"]:  # boxes grown by 2 px: anti-aliased edges stay out
                x, y, w, h = (int(v) for v in a["bbox"])
                outside[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = False
            means.append(img[outside].mean(0))
        return np.array(means), records

    plain, records = background_pixels("study-plain")
    textured, _ = background_pixels("study")
    assert np.abs(plain - 128).max() < 3 and all(r["annotations"] for r in records)
    assert textured.std(0).mean() > 10


def test_bad_options_are_named(tmp_path):
    with pytest.raises(DatasetError, match="--variant"):
        generate(str(tmp_path / "x"), num_images=2, variant="nope")
    with pytest.raises(DatasetError, match="--object-scale"):
        generate(str(tmp_path / "x"), num_images=2, object_scale=(0.5, 0.2))
    with pytest.raises(DatasetError, match="--min-objects"):
        generate(str(tmp_path / "x"), num_images=2, min_objects=3, max_objects=2)
    with pytest.raises(DatasetError, match="--background"):
        generate(str(tmp_path / "x"), num_images=2, background="stripes")


def test_coco_json_loads_in_pycocotools_and_detectron2(synth_dir):
    from detectron2.data.datasets import load_coco_json
    from pycocotools.coco import COCO

    json_file = os.path.join(synth_dir, "annotations", "instances_train.json")
    coco = COCO(json_file)
    ours, _ = load_dataset(f"synth:{synth_dir}:train")
    d2 = load_coco_json(json_file, os.path.join(synth_dir, "images", "train"), dataset_name="objcrop_test_synth_json")
    assert len(coco.getImgIds()) == len(ours) == len(d2)
    assert len(coco.getAnnIds()) == sum(len(r["annotations"]) for r in ours) == sum(len(r["annotations"]) for r in d2)
    for a, b in zip(sorted(ours, key=lambda r: r["image_id"]), sorted(d2, key=lambda r: r["image_id"])):
        assert a["file_name"] == b["file_name"]
        assert [x["bbox"] for x in a["annotations"]] == [x["bbox"] for x in b["annotations"]]
        assert [x["category_id"] for x in a["annotations"]] == [x["category_id"] for x in b["annotations"]]
    # Masks from the polygons match the boxes they come with.
    for ann in coco.loadAnns(coco.getAnnIds()):
        m = coco.annToMask(ann)
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h


def test_ground_truth_as_predictions_scores_ap_100(synth_dir, tmp_path):
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, BoxMode, Instances
    from pycocotools import mask as mask_util

    from objcrop.detection.datasets import register

    name = register(f"synth:{synth_dir}:val")
    assert register(name) == name  # idempotent
    records = DatasetCatalog.get(name)
    evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    for r in records:
        h, w = r["height"], r["width"]
        anns = r["annotations"]
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns],
                                             dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        masks = [mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w))) for a in anns]
        inst.pred_masks = torch.from_numpy(np.stack(masks).astype(bool)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        evaluator.process([{"image_id": r["image_id"], "height": h, "width": w}], [{"instances": inst}])
    results = evaluator.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)


def test_voc_copy_reads_like_detectron2_reads_it(synth_dir):
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    records, metadata = load_dataset(f"voc:{synth_dir}/voc:train")
    assert metadata["evaluator_type"] == "pascal_voc" and metadata["split"] == "train"
    d2 = load_voc_instances(os.path.join(synth_dir, "voc"), "train", metadata["thing_classes"])
    assert len(records) == len(d2)
    coco_records, _ = load_dataset(f"synth:{synth_dir}:train")
    for ours, theirs, coco in zip(records, d2, coco_records):
        assert [a["category_id"] for a in ours["annotations"]] == [a["category_id"] for a in theirs["annotations"]]
        for a, b, c in zip(ours["annotations"], theirs["annotations"], coco["annotations"]):
            x0, y0, x1, y1 = b["bbox"]  # detectron2: XYXY_ABS
            assert a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
            assert a["bbox"] == pytest.approx(c["bbox"])  # the VOC copy has the COCO boxes
