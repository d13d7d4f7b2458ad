"""The GPU kit's path (issue 17 §5): detectron2 without its compiled `_C`, trained and evaluated by objcrop.

The lent GPU machine gets detectron2's Python sources only (scripts/gpu_kit/prepare.sh): `_C`, built
for another Python and torch, is left out. detectron2 needs it only for deformable convolution,
rotated boxes and the fast COCOeval; objcrop must train and evaluate without it. Here a meta-path
finder makes `import detectron2._C` fail as it does there, in a fresh interpreter, and
`objcrop detect train` runs a few iterations of the study's Faster R-CNN (PascalVOC evaluator, with a
periodic evaluation) and Mask R-CNN (COCOEvaluator, which must fall back to pycocotools' COCOeval).
"""
import json
import math
import os
import subprocess
import sys

import pytest

BLOCK_C = '''
import importlib.abc, sys

class NoCompiledOps(importlib.abc.MetaPathFinder):
    """As on the GPU machine: the compiled extension is absent."""
    def find_spec(self, name, path=None, target=None):
        if name == "detectron2._C":
            raise ImportError("detectron2._C is blocked (no compiled ops, as in scripts/gpu_kit)")
        return None

sys.meta_path.insert(0, NoCompiledOps())
'''

RUN = BLOCK_C + '''
from objcrop.detection.cli import main
from objcrop.detection.trainer import compiled_coco_eval_available

try:
    import detectron2._C  # noqa: F401
    raise SystemExit("the block failed: detectron2._C imported")
except ImportError:
    pass
assert not compiled_coco_eval_available()
tiny = ["SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "1", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(2,)",
        "SOLVER.CHECKPOINT_PERIOD", "100", "DATALOADER.NUM_WORKERS", "0", "TEST.PRECISE_BN.NUM_ITER", "1",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64"]
data, out = sys.argv[1], sys.argv[2]
rc_voc = main(["train", "--config-file", "study/faster_rcnn_R_18_FPN_voc.yaml", "--weights", "none",
               "--output-dir", out + "/voc", "--dataset-train", "voc:" + data + "/voc:train",
               "--dataset-test", "voc:" + data + "/voc:test", "--opts", "TEST.EVAL_PERIOD", "2"] + tiny)
# After 3 iterations from random init the box head's foreground scores can underflow to exactly 0 (on
# an AMD EPYC the background's softmax was 1.0 for every proposal), and detectron2 keeps only scores
# strictly above SCORE_THRESH_TEST (0 in the study config): no detection would reach COCOeval at all.
# A negative threshold keeps every scored box, so that the pycocotools fallback is what is tested.
rc_coco = main(["train", "--config-file", "study/mask_rcnn_R_18_FPN_coco.yaml", "--weights", "none",
                "--output-dir", out + "/coco", "--dataset-train", "synth:" + data + ":train",
                "--dataset-test", "synth:" + data + ":test",
                "--opts"] + tiny + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "-1.0"])
assert "detectron2._C" not in sys.modules
print("no-_C runs:", rc_voc, rc_coco)
sys.exit(rc_voc or rc_coco)
'''


def _finite(block):
    return block is not None and all(isinstance(block[k], float) and math.isfinite(block[k]) for k in ("AP", "AP50"))


@pytest.mark.timeout(240)
def test_detect_train_and_evaluate_without_compiled_ops(synth_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", RUN, synth_dir, str(tmp_path)], capture_output=True, text=True,
                          timeout=230, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with open(tmp_path / "voc" / "seed0" / "results.json") as f:
        voc = json.load(f)
    with open(tmp_path / "coco" / "seed0" / "results.json") as f:
        coco = json.load(f)
    assert voc["status"] == "ok" and voc["task"] == "voc_det" and voc["iterations"] == 3 and _finite(voc["box"])
    assert coco["status"] == "ok" and coco["task"] == "coco_instseg" and coco["iterations"] == 3
    assert _finite(coco["box"]) and _finite(coco["mask"])
    # The periodic evaluation ran too (TEST.EVAL_PERIOD 2): detectron2's EvalHook logged it at iteration 1.
    with open(tmp_path / "voc" / "seed0" / "metrics.json") as f:
        evals = [json.loads(line) for line in f if '"bbox/AP50"' in line]
    assert [e["iteration"] for e in evals][:1] == [1]
    with open(tmp_path / "coco" / "seed0" / "log.txt") as f:
        assert "evaluating with pycocotools' COCOeval" in f.read()

