"""`objcrop data …` end to end: synth, list, info, and one-line errors."""
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


def test_info(synth_dir, tmp_path, capsys):
    assert main(["info", f"synth:{synth_dir}:train", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    assert "boxes/image" in out and "object size" in out and "circle" in out
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["images"] == sum(info["boxes_per_image"]["histogram"]) and info["annotations"] > 0
    assert sum(info["object_size_histogram"]) == info["annotations"]


def test_crop_stats_points_to_views_stats(synth_dir, capsys):
    # View statistics come from the real policies now (issue 19); the old name says where they went.
    assert objcrop_main(["data", "crop-stats", f"synth:{synth_dir}:train"]) == 2
    err = capsys.readouterr().err
    assert "objcrop views stats" in err and err.startswith("objcrop data: error:")


def test_the_core_holds_no_view_sampling():
    import objcrop.datasets.stats as core_stats

    assert not any(hasattr(core_stats, name) for name in ("crop_stats", "random_resized_crop", "object_masks"))


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
