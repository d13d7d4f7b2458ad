"""`objcrop data …` end to end: synth, list, info, crop-stats, and one-line errors."""
import json
import os

import pytest

from objcrop.cli import main as objcrop_main
from objcrop.datasets.cli import main


def test_synth_command_writes_a_dataset_with_the_options(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--num-images", "8", "--seed", "1", "--image-size", "64",
                 "--min-objects", "2", "--max-objects", "2", "--object-scale", "0.25", "0.3",
                 "--splits", "0.5", "0.25", "0.25", "--no-progress"]) == 0
    assert "wrote 8 images (train 4, val 2, test 2)" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["image_size"] == 64 and meta["params"]["object_scale"] == [0.25, 0.3]
    assert meta["num_objects"] == 16


def test_info_and_crop_stats(synth_dir, tmp_path, capsys):
    assert main(["info", f"synth:{synth_dir}:train", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    assert "boxes/image" in out and "object size" in out and "circle" in out
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["images"] == sum(info["boxes_per_image"]["histogram"]) and info["annotations"] > 0
    assert sum(info["object_size_histogram"]) == info["annotations"]

    assert main(["crop-stats", f"synth:{synth_dir}:train", "--samples-per-image", "4",
                 "--json", str(tmp_path / "crops.json")]) == 0
    stats = json.loads((tmp_path / "crops.json").read_text())
    for view in ("random", "gt-box", "gt-dilate"):
        s = stats[view]
        assert 0 <= s["holds_whole_object"] <= s["holds_half_object"] <= 1 and 0 < s["object_cover"] < 1
    assert stats["gt-box"]["holds_half_object"] == 1.0
    # The premise of object-aware cropping, measured on the data: object crops are mostly object.
    assert stats["gt-box"]["object_cover"] > 2 * stats["random"]["object_cover"]


def test_crop_stats_on_a_hand_made_record_is_exact():
    from objcrop.datasets.stats import crop_stats

    # One 10x10 box filling the image: every view is entirely object.
    rec = {"file_name": "x", "image_id": 0, "height": 10, "width": 10,
           "annotations": [{"bbox": [0, 0, 10, 10], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}]}
    s = crop_stats([rec], samples_per_image=20, progress=False)
    assert s["random"]["object_cover"] == 1.0 and s["gt-box"]["holds_whole_object"] == 1.0
    # A 2x2 box in a 100x100 image is at most 4 / 2000 of a random crop (>= 20 % of the area).
    rec = dict(rec, height=100, width=100, annotations=[dict(rec["annotations"][0], bbox=[49, 49, 2, 2])])
    s = crop_stats([rec], samples_per_image=50, progress=False)
    assert s["random"]["object_cover"] <= 0.002 and s["gt-box"]["object_cover"] == 1.0


def test_list_shows_dataset_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path) in out and "missing  coco_2017_val" in out


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert objcrop_main(["data", "info", f"coco:{tmp_path}/none.json:{tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("objcrop data: error:") and "none.json" in err[0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert objcrop_main(["data", "synth", "--out", str(tmp_path / "full"), "--num-images", "2"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    out = capsys.readouterr().out
    for opt in ("--out", "--num-images", "--seed", "--variant", "--image-size", "--min-objects", "--max-objects",
                "--object-scale", "--splits", "--overwrite", "--workers"):
        assert opt in out
