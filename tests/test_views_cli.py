"""`objcrop views show`: a PNG grid of images, proposals and sampled view pairs."""
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
