"""Real datasets' quirks: repaired and counted in one line by default, refused with strict (quirks.py)."""
import json
import logging
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from objcrop.datasets import load_dataset
from objcrop.datasets.boxes import gt_boxes
from objcrop.datasets.quirks import border_tolerance
from objcrop.errors import DatasetError

H, W = 40, 60  # every fixture image


def _jpg(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(path)


def _summary_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "objcrop.datasets"]


# --------------------------------------------------------------------- COCO


def _coco(tmp_path, annotations, n_images=3):
    for k in range(n_images):
        _jpg(str(tmp_path / "images" / f"{k}.jpg"))
    data = {"images": [{"id": k, "file_name": f"{k}.jpg", "height": H, "width": W} for k in range(n_images)],
            "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return f"coco:{path}:{tmp_path / 'images'}", str(path)


def _ann(ann_id, bbox, image_id=0, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": bbox, "iscrowd": 0, **extra}


def _crowd_rle():
    """An uncompressed RLE (counts as a list), as COCO stores its crowd regions: a 10x10 block at (20, 10)."""
    mask = np.zeros((H, W), np.uint8)
    mask[10:20, 20:30] = 1
    flat = mask.flatten(order="F")  # COCO's RLE runs down the columns
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": counts, "size": [H, W]}


COCO_QUIRKS = [
    _ann(1, [5, 5, 10, 10]),                                    # fine
    _ann(2, [50.0, 30.0, W - 50 + 1.5, H - 30 + 0.4]),          # rounding overshoot: clipped
    _ann(3, [10, 10, 0.4, 8]),                                  # tiny: dropped
    _ann(4, [10, 10, 8, 8], segmentation=[[10, 10, 18, 10]]),   # its only polygon has 2 points: dropped
    _ann(5, [10, 10, 8, 8], segmentation=[[10, 10, 18, 10, 18, 18], [1, 1, 2, 2]]),  # one of two polygons bad
    _ann(6, [20, 10, 10, 10], image_id=1, iscrowd=1, segmentation=_crowd_rle()),    # uncompressed-RLE crowd
]                                                               # image 2: no annotations


def test_coco_quirks_repaired_counted_in_one_line(tmp_path, caplog):
    name, path = _coco(tmp_path, COCO_QUIRKS)
    with caplog.at_level(logging.INFO, logger="objcrop.datasets"):
        records, meta = load_dataset(name)
    assert meta["quirks"] == {"clipped": 1, "degenerate": 1, "invalid_polygon": 2, "no_polygon": 1, "empty_image": 1}
    lines = _summary_lines(caplog)
    assert len(lines) == 1 and lines[0].startswith(path)
    for example in ("annotation 2 (image 0, 0.jpg)", "annotation 3 (image 0", "annotation 4 (image 0",
                    "image 2 (2.jpg)"):
        assert example in lines[0]
    first, crowd, empty = records
    assert [a["bbox"] for a in first["annotations"]] == [[5, 5, 10, 10], [50, 30, W - 50, H - 30], [10, 10, 8, 8]]
    assert first["annotations"][2]["segmentation"] == [[10, 10, 18, 10, 18, 18]]
    assert empty["annotations"] == []  # kept, as detectron2 keeps images without annotations
    rle = crowd["annotations"][0]
    assert rle["iscrowd"] == 1 and isinstance(rle["segmentation"]["counts"], bytes)  # compressed like detectron2
    from pycocotools import mask as mask_util

    assert int(mask_util.decode(rle["segmentation"]).sum()) == 100
    assert gt_boxes(crowd).shape == (0, 4)  # the one crowd rule: a crowd region is no object box


@pytest.mark.parametrize("ann_id, message", [(2, "outside the 60x40 image by more than 1 px"),
                                             (3, "non-positive size"), (4, "fewer than 3 points")])
def test_coco_strict_refuses_each_repair(tmp_path, ann_id, message):
    anns = [a for a in COCO_QUIRKS if a["id"] in (1, ann_id)]
    if ann_id == 3:
        anns[-1] = dict(anns[-1], bbox=[10, 10, 0, 8])  # strict keeps the old check: non-positive size
    name, path = _coco(tmp_path, anns)
    with pytest.raises(DatasetError, match=rf"annotation {ann_id} \(image 0, 0\.jpg\).*{message}") as err:
        load_dataset(name, strict=True)
    assert str(err.value).startswith(path)


@pytest.mark.parametrize("ann, message", [
    (_ann(7, [50, 5, 20, 10]), "outside the 60x40 image by more than"),
    (_ann(7, [5, 5, 10, 10], category_id=9), "annotation 7 has unknown category id 9"),
    (_ann(7, [5, 5, 10, 10], segmentation={"counts": [H * W], "size": [W, H]}), r"RLE size \[60, 40\]"),
])
def test_coco_structural_faults_stop_in_both_modes(tmp_path, ann, message):
    name, path = _coco(tmp_path, [ann])
    for strict in (False, True):
        with pytest.raises(DatasetError, match=message) as err:
            load_dataset(name, strict=strict)
        assert str(err.value).startswith(path)


def test_tolerance_is_two_pixels_or_one_percent():
    assert border_tolerance(60) == 2.0 and border_tolerance(1000) == 10.0


def test_clean_dataset_logs_nothing(tmp_path, caplog):
    name, _ = _coco(tmp_path, [_ann(1, [5, 5, 10, 10], image_id=0)], n_images=1)
    with caplog.at_level(logging.INFO, logger="objcrop.datasets"):
        _, meta = load_dataset(name)
    assert meta["quirks"] == {} and _summary_lines(caplog) == []


# --------------------------------------------------------------------- VOC


def _voc(tmp_path, objects):
    root = tmp_path / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(root / d)
    _jpg(str(root / "JPEGImages" / "000001.jpg"))
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, d, b in objects)
    (root / "Annotations" / "000001.xml").write_text(
        f"<annotation><size><width>{W}</width><height>{H}</height></size>{objs}</annotation>")
    (root / "ImageSets/Main/trainval.txt").write_text("000001\n")
    return f"voc:{root}:trainval", str(root / "Annotations" / "000001.xml")


def test_voc_difficult_kept_with_flag_overshoot_clipped_degenerate_dropped(tmp_path, caplog):
    name, xml = _voc(tmp_path, [("dog", 1, (1, 1, 10, 10)), ("cat", 0, (50, 30, W + 2, H + 2)),
                                ("cat", 0, (20, 20, 19, 30))])
    with caplog.at_level(logging.INFO, logger="objcrop.datasets"):
        records, meta = load_dataset(name)
    dog, cat = records[0]["annotations"]
    # detectron2 keeps difficult objects for training; its VOC evaluator reads the XML and ignores them.
    assert dog["difficult"] == 1 and dog["bbox"] == [0, 0, 10, 10] and cat["difficult"] == 0
    assert cat["bbox"] == [49, 29, W - 49, H - 29]
    assert meta["quirks"] == {"clipped": 1, "degenerate": 1}
    (line,) = _summary_lines(caplog)
    assert f"{xml}: object 1 (cat)" in line and f"{xml}: object 2 (cat)" in line
    with pytest.raises(DatasetError, match=r"000001\.xml: object 1 \(cat\).*outside the 60x40 image"):
        load_dataset(name, strict=True)


# --------------------------------------------------------------------- OpenImages


@pytest.fixture
def openimages(tmp_path):
    root = tmp_path / "oi"
    for image_id in ("img1", "img2", "img3"):
        _jpg(str(root / "train" / f"{image_id}.jpg"))
    (root / "oidv7-class-descriptions.csv").write_text("LabelName,DisplayName\n/m/car,Car\n/m/person,Person\n")
    (root / "train-annotations-bbox.csv").write_text(
        "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,"
        "IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside\n"
        "img1,xclick,/m/car,1,0.1,0.5,0.2,0.9,0,0,0,0,0\n"
        "img1,xclick,/m/person,1,0.5,1.0,0.0,1.0,1,0,1,0,0\n"       # group-of: iscrowd
        "img1,xclick,/m/car,1,0.2,0.6,0.1,0.5,0,1,0,1,0\n"          # truncated depiction: an object
        "img2,xclick,/m/car,1,0.5,0.505,0.1,0.5,0,0,0,0,0\n"        # 0.3 px wide: dropped
        "img2,xclick,/m/car,1,0.8,1.02,0.5,1.01,0,0,0,0,0\n")       # overshoot within 2 px: clipped
    return root


def test_openimages_flags_groupof_and_quirks(openimages, caplog):
    with caplog.at_level(logging.INFO, logger="objcrop.datasets"):
        records, meta = load_dataset(f"openimages:{openimages}:train")
    by_id = {r["image_id"]: r for r in records}
    car, group, depiction = by_id["img1"]["annotations"]
    assert (car["iscrowd"], group["iscrowd"], depiction["iscrowd"]) == (0, 1, 0)
    assert depiction["flags"] == {"IsOccluded": 0, "IsTruncated": 1, "IsGroupOf": 0, "IsDepiction": 1, "IsInside": 0}
    np.testing.assert_allclose(gt_boxes(by_id["img1"]), [[6, 8, 30, 36], [12, 4, 36, 20]], rtol=1e-6)
    (kept,) = by_id["img2"]["annotations"]
    assert kept["bbox"] == pytest.approx([0.8 * W, 0.5 * H, 0.2 * W, 0.5 * H])
    assert meta["quirks"] == {"clipped": 1, "degenerate": 1}
    (line,) = _summary_lines(caplog)
    assert "train-annotations-bbox.csv: row 5 (image img2)" in line and "train-annotations-bbox.csv: row 6" in line
    with pytest.raises(DatasetError, match=r"row 5 \(image img2\).*non-positive size|row 6 \(image img2\).*outside"):
        load_dataset(f"openimages:{openimages}:train", strict=True)


def test_openimages_box_wildly_outside_stops(openimages):
    boxes = openimages / "train-annotations-bbox.csv"
    boxes.write_text(boxes.read_text() + "img3,xclick,/m/car,1,0.5,1.2,0.1,0.5,0,0,0,0,0\n")
    with pytest.raises(DatasetError, match=r"row 7 \(image img3\).*outside the 60x40 image"):
        load_dataset(f"openimages:{openimages}:train")


# --------------------------------------------------------------------- the released code's .npy id lists


def _npy(path, value):
    np.save(path, np.array(value, dtype=object) if isinstance(value, dict) else value, allow_pickle=True)
    return path


def test_openimages_npy_dictionaries_give_the_id_list(openimages, tmp_path):
    """images_selected_new.npy / _test_40k.npy: {ImageID: [LabelName]};
    images_selected_with_all_features.npy: {ImageID: {"data": [bbox csv row]}}."""
    selected = _npy(tmp_path / "images_selected_new.npy", {"img3": ["/m/car"], "img1": ["/m/car", "/m/person"]})
    records, meta = load_dataset(f"openimages:{openimages}:train:{selected}")
    assert [r["image_id"] for r in records] == ["img3", "img1"]  # the dictionary's order
    assert records[0]["annotations"] == [] and meta["quirks"]["empty_image"] == 1  # img3: listed, no boxes
    features = _npy(tmp_path / "images_selected_with_all_features.npy",
                    {"img2": {"data": [["img2", "xclick", "/m/car", "1", "0.8", "1.0", "0.5", "1.0"]]}})
    assert [r["image_id"] for r in load_dataset(f"openimages:{openimages}:train:{features}")[0]] == ["img2"]
    plain = _npy(tmp_path / "ids.npy", np.array(["img2", "img1"]))
    assert [r["image_id"] for r in load_dataset(f"openimages:{openimages}:train:{plain}")[0]] == ["img2", "img1"]


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_openimages_npy_that_would_run_code_is_refused(openimages, tmp_path):
    target = tmp_path / "created"
    evil = tmp_path / "images_selected_new.npy"
    np.save(evil, np.array({"img1": _Touch(target)}, dtype=object), allow_pickle=True)
    refused = r"images_selected_new\.npy: refused to unpickle: the file names posix\.system"
    with pytest.raises(DatasetError, match=refused):
        load_dataset(f"openimages:{openimages}:train:{evil}")
    assert not target.exists()
    np.load(evil, allow_pickle=True)  # the control: numpy's own loader runs it
    assert target.exists()


def test_npy_not_a_dictionary_or_not_npy_names_the_file(openimages, tmp_path):
    with pytest.raises(DatasetError, match=r"grid\.npy: expected a dictionary keyed by ImageID"):
        load_dataset(f"openimages:{openimages}:train:{_npy(tmp_path / 'grid.npy', np.zeros((2, 2)))}")
    fake = tmp_path / "fake.npy"
    fake.write_bytes(pickle.dumps({"img1": 1}))
    with pytest.raises(DatasetError, match=r"fake\.npy: not a \.npy file"):
        load_dataset(f"openimages:{openimages}:train:{fake}")
