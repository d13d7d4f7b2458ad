"""`objcrop views show` (a PNG grid of images, proposals and view pairs) and `objcrop views stats`."""
import cv2
import pytest

from objcrop.errors import ConfigError
from objcrop.pretrain.views import cli


@pytest.mark.parametrize("policy,extra", [("obj-obj-dilate", []), ("obj-scene", ["--copy-paste"])])
def test_views_show_writes_the_grid(synth_dir, tmp_path, policy, extra):
    out = str(tmp_path / "grid.png")
    argv = ["show", "--dataset", f"synth:{synth_dir}:train", "--policy", policy, "--out", out, "--num-images", "2",
            "--pairs", "2", "--cell", "64"] + extra + ["--opts", "VIEWS.CROP_SIZE", "32", "VIEWS.COPY_PASTE.PROB", "1.0"]
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
