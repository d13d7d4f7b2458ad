"""The summary of one scripts/gpu_kit/run_gpu.sh call: steps, references, and every detection run's AP curve.

    python scripts/gpu_kit/summarise.py WORK OUT.md SECONDS

Reads only what the stages wrote under WORK (steps.tsv, supervised_*.json, pretrain/results.json,
det/<run>/seed0/results.json and metrics.json); a run cut by the budget shows the evaluations it made.
"""
import glob
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from detect_curve import read_curve  # noqa: E402  (detectron2's metrics.json -> {iterations: (AP, AP50)})

from objcrop.io import read_json, write_text_atomic  # noqa: E402


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{gpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def _steps(work: str) -> list:
    lines = ["| step | exit | seconds |", "|---|---|---:|"]
    path = os.path.join(work, "steps.tsv")
    if os.path.isfile(path):
        for row in open(path):
            if row.strip():
                lines.append("| " + " | ".join(row.rstrip("\n").split("\t")) + " |")
    return lines


def _references(work: str) -> list:
    lines = []
    for path in sorted(glob.glob(os.path.join(work, "supervised_*.json"))):
        j = read_json(path)
        lines.append(f"- supervised {j['arch']}: {j['supervised_training']['samples']} samples in "
                     f"{j['supervised_training']['train_seconds']:.0f} s on {j['device']}; probe mAP "
                     f"{j['supervised_mAP']:.3f} vs random init {j['random_init_mAP']:.3f}")
    pre = os.path.join(work, "pretrain", "results.json")
    if os.path.isfile(pre):
        r = read_json(pre)
        lines.append(f"- pretraining: {r.get('pretrain', {})}, status {r.get('status')}, final loss "
                     f"{r.get('final_loss')}, {r.get('throughput')} img/s, {r.get('wall_time_s')} s")
    return lines


def _ap(block, key) -> str:
    return "—" if not block or block.get(key) is None else f"{block[key]:.1f}"


def _detection(work: str) -> list:
    lines = ["| run | status | iterations | box AP | box AP50 | box AP75 | mask AP | mask AP50 | s/iter (with evals) "
             "| AP50 curve (iterations: box AP50) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in sorted(glob.glob(os.path.join(work, "det", "*", "seed0"))):
        name = os.path.basename(os.path.dirname(run))
        path = os.path.join(run, "results.json")
        r = read_json(path) if os.path.isfile(path) else {}
        iters = r.get("iterations") or 0
        curve = read_curve(run, "box", iters or 10 ** 9)
        points = ", ".join(f"{i}: {ap50:.1f}" for i, (_, ap50) in sorted(curve.items()))
        speed = f"{r['wall_time_s'] / iters:.3f}" if iters else "—"
        lines.append(f"| {name} | {r.get('status', 'cut (no results.json)')} | {iters or '—'} | {_ap(r.get('box'), 'AP')} | "
                     f"{_ap(r.get('box'), 'AP50')} | {_ap(r.get('box'), 'AP75')} | {_ap(r.get('mask'), 'AP')} | "
                     f"{_ap(r.get('mask'), 'AP50')} | {speed} | {points} |")
    return lines


def main(argv) -> int:
    work, out, seconds = argv[1], argv[2], argv[3]
    lines = ["# objcrop detection on a GPU machine (scripts/gpu_kit/run_gpu.sh)", "",
             f"- machine: {_machine()}; the whole call took {seconds} s",
             "- detectron2: the kit's Python sources without `_C` (scripts/gpu_kit/prepare.sh); COCO evaluation "
             "by pycocotools' COCOeval", ""] + _references(work) + ["", "## Steps", ""] + _steps(work)
    lines += ["", "## Detection (seed 0; r18_*: eval_configs/study/, r50c4_*: voc/faster_rcnn_R_50_C4_24k.yaml "
              "sized for the embedded data, --no-scale)", ""] + _detection(work) + [""]
    write_text_atomic(out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
