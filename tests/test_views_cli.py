"""`objcrop views show` (a PNG grid of images, proposals and view pairs) and `objcrop views stats`."""
import json

import cv2
import numpy as np
import pytest

from objcrop.errors import ConfigError
from objcrop.pretrain.views import cli


@pytest.mark.parametrize("policy,extra,mode", [("obj-obj-dilate", [], "shared"), ("obj-scene", ["--copy-paste"], "shared"),
                                               ("obj-obj", ["--copy-paste"], "dilo")])
def test_views_show_writes_the_grid(synth_dir, tmp_path, policy, extra, mode):
    out = str(tmp_path / "grid.png")
    argv = ["show", "--dataset", f"synth:{synth_dir}:train", "--policy", policy, "--out", out, "--num-images", "2",
            "--pairs", "2", "--cell", "64"] + extra + ["--opts", "VIEWS.CROP_SIZE", "32", "VIEWS.COPY_PASTE.PROB", "1.0",
                                                      "VIEWS.COPY_PASTE.MODE", mode]
    assert cli.main(argv) == 0
    img = cv2.imread(out)
    # 2 rows; 1 image cell + 2 pairs x (crops drawn + 2 views) = 7 cells of 64 px with 4 px padding
    assert img.shape[:2] == (2 * 68 + 4, 7 * 68 + 4)
    views = img[4:68, 4 + 2 * 68: 4 + 2 * 68 + 64]
    assert views.std() > 3  # a real view, not an empty cell


def test_views_show_rejects_an_unknown_policy(synth_dir, tmp_path):
    with pytest.raises(ConfigError, match="VIEWS.POLICY"):
        cli.main(["show", "--dataset", f"synth:{synth_dir}:train", "--policy", "nope", "--out", str(tmp_path / "x.png")])


def _view_stats(synth_dir, tmp_path, policy):
    out = tmp_path / f"{policy}.json"
    assert cli.main(["stats", "--dataset", f"synth:{synth_dir}:train", "--policy", policy, "--proposals", "gt",
                     "--pairs", "4", "--json", str(out), "--no-progress",
                     "--opts", "VIEWS.MIN_BOX_SIZE", "0", "VIEWS.MIN_BOX_FRACTION", "0.25"]) == 0
    import json

    return json.loads(out.read_text())


def test_views_stats_measures_the_real_policies(synth_dir, tmp_path, capsys):
    rnd = _view_stats(synth_dir, tmp_path, "random")
    obj = _view_stats(synth_dir, tmp_path, "obj-obj")
    assert rnd["proposals"] == "none" and obj["proposals"] == "gt"
    assert rnd["pairs"] == obj["pairs"] == 4 * rnd["images"] > 0
    for s in (rnd, obj):
        assert all(0.0 <= s[k] <= 1.0 for k in s if k.startswith(("view", "pair_")))
        assert s["pair_same_object"] <= min(s["view1_holds_half_object"], s["view2_holds_half_object"])
    # crops inside a box grown from an object are mostly object; whole-image crops mostly background
    assert obj["view1_object_cover"] > rnd["view1_object_cover"] + 0.1
    assert obj["fallback_to_random"] == 0.0  # every training image has a box
    assert "| obj-obj (gt) |" in capsys.readouterr().out


def test_views_stats_compares_several_policies_in_one_table(synth_dir, tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert cli.main(["stats", "--dataset", f"synth:{synth_dir}:train", "--policy", "random", "obj-obj", "obj-obj-dilate",
                     "--num-images", "6", "--pairs", "3", "--json", str(out), "--no-progress",
                     "--opts", "VIEWS.MIN_BOX_SIZE", "0"]) == 0
    rows = json.loads(out.read_text())
    assert [r["policy"] for r in rows] == ["random", "obj-obj", "obj-obj-dilate"]
    table = capsys.readouterr().out
    assert "| random (none) |" in table and "| obj-obj-dilate (gt) |" in table
    # MIN_BOX_SIZE 0: obj-obj crops lie inside a ground-truth box, so every one touches an object;
    # its view 1 holds the whole object exactly when the crop holds the whole box.
    assert rows[1]["view1_object_cover"] > rows[0]["view1_object_cover"]
    for r in rows:
        assert 0 <= r["view1_holds_whole_object"] <= r["view1_holds_half_object"] <= 1


def _record(size, box):
    return {"file_name": "x", "image_id": 0, "height": size, "width": size,
            "annotations": [{"bbox": box, "bbox_mode": 1, "category_id": 0, "iscrowd": 0}]}


def test_view_stats_of_hand_made_records_are_exact():
    from objcrop.pretrain.views import build_view_policy, get_views_cfg
    from objcrop.pretrain.views.stats import policy_view_stats

    def stats(policy, record, **views):
        cfg = get_views_cfg()
        cfg.VIEWS.POLICY = policy
        for key, value in views.items():
            cfg.VIEWS[key] = value
        boxes = lambda r: np.array([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in
                                    (a["bbox"] for a in r["annotations"])], np.float32)
        return policy_view_stats([record], build_view_policy(cfg), boxes, pairs_per_image=20, progress=False)

    # One box filling the image: every view of every policy is entirely object.
    full = _record(10, [0, 0, 10, 10])
    for policy in ("random", "obj-obj", "obj-obj-dilate"):
        s = stats(policy, full, CROP_SIZE=8)
        assert s["view1_object_cover"] == s["view2_object_cover"] == 1.0
    # A 2x2 box in a 100x100 image is at most 4 / 2000 of a random crop (>= 20 % of the area) ...
    small = _record(100, [49, 49, 2, 2])
    s = stats("random", small, CROP_SIZE=8)
    assert s["view1_object_cover"] <= 4 / (0.2 * 100 * 100)
    # ... and obj-scene's object view, the box itself, is all object and holds all of it.
    s = stats("obj-scene", small, CROP_SIZE=8, MIN_BOX_SIZE=0, SWAP_PROB=0.0)
    assert s["view2_object_cover"] == 1.0 and s["view2_holds_whole_object"] == 1.0


def test_crops_past_the_image_count_as_area_without_objects():
    from objcrop.pretrain.views.stats import integral_image, pixels_inside

    ii = integral_image(np.ones((4, 4), bool))
    assert pixels_inside(ii, (-2, -2, 2, 2)) == 4 and pixels_inside(ii, (2, 2, 9, 9)) == 4


def test_views_show_draws_both_geometries_side_by_side(synth_dir, tmp_path):
    out = str(tmp_path / "both.png")
    assert cli.main(["show", "--dataset", f"synth:{synth_dir}:train", "--policy", "obj-obj-dilate", "--geometry", "both",
                     "--out", out, "--num-images", "2", "--pairs", "1", "--cell", "48",
                     "--opts", "VIEWS.CROP_SIZE", "32"]) == 0
    img = cv2.imread(out)
    # 2 images x 2 geometries = 4 rows; 1 image cell + 1 pair x 3 cells = 4 columns of 48 px with 4 px padding
    assert img.shape[:2] == (4 * 52 + 4, 4 * 52 + 4)
    objcrop_row, released_row = img[4:52], img[56:104]
    assert not np.array_equal(objcrop_row, released_row)  # the two geometries crop differently


def test_views_stats_measure_the_released_geometry(synth_dir, tmp_path):
    out = tmp_path / "released.json"
    assert cli.main(["stats", "--dataset", f"synth:{synth_dir}:train", "--policy", "obj-obj-dilate", "--num-images", "4",
                     "--pairs", "3", "--json", str(out), "--no-progress",
                     "--opts", "VIEWS.GEOMETRY", "released", "VIEWS.MIN_BOX_SIZE", "32"]) == 0
    s = json.loads(out.read_text())
    assert s["geometry"] == "released" and all(0.0 <= s[k] <= 1.0 for k in s if k.startswith(("view", "pair_")))
