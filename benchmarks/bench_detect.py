"""Detection fine-tuning speed: `objcrop detect train` against detectron2's own DefaultTrainer.

Issue 17 §6. (A) is the product: `objcrop detect train`, one process. (B) is detectron2 as
tools/train_net.py runs it: get_cfg() -> merge_from_file -> default_setup -> DefaultTrainer(cfg)
.resume_or_load() -> .train(), with train_net.py's evaluator choice, in its own process (this file
run with --plain-worker). B merges the very config.yaml that A's first run wrote (after objcrop's
norm adaption and scaling; objcrop's own OBJCROP node dropped, which plain detectron2 does not know),
so config, weights, data (the same dataset readers, registered in detectron2's catalog) and
iteration count are the same. The pairs run in counterbalanced order, A B, B A, A B, B A ..., in one
benchmark, so that machine load drifting over time hits both sides, and so does whatever running
second in a pair brings (warm page cache, a machine still busy with the first run's exit). Reported per run and as medians:

* s/iter: detectron2's own "Overall training speed" of the training loop (IterationTimer: the
  first iterations and hook time excluded), read from each run's log.txt. Target A/B <= 1.02.
* hooks: the loop's time in hooks (PreciseBN, checkpoints, writers, objcrop's metrics.jsonl).
* wall: the whole command (imports, setup, weights, training, final evaluation).

    python benchmarks/bench_detect.py --out benchmarks/out/detect.md [--quick]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # run from a checkout without `pip install -e .` too
sys.path.insert(0, HERE)

from _report import emit_markdown  # noqa: E402

TARGET = 1.02
SPEED = re.compile(r"Overall training speed: (\d+) iterations in \S+ \(([\d.]+) s / it\)")
TOTAL = re.compile(r"Total training time: (\S+) \((\S+) on hooks\)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="", help="write the report (markdown) here as well as to stdout")
    p.add_argument("--quick", action="store_true", help="fewer iterations and pairs (a smoke run; noisy figures)")
    p.add_argument("--config-file", default="study/faster_rcnn_R_18_FPN_voc.yaml",
                   help="detection config (a path or a file in eval_configs/); its test set must be VOC or COCO style")
    p.add_argument("--weights", default="none", help="converted .pkl for both sides, or 'none' (random init)")
    p.add_argument("--data", default="", help="a directory written by `objcrop data synth` "
                                              "(default: 200 `study` images generated in a temp dir)")
    p.add_argument("--iters", type=int, default=0, help="iterations per run (default 200, --quick 40)")
    p.add_argument("--pairs", type=int, default=0, help="A/B pairs, in the order A B, B A, ... (default 4, --quick 2)")
    p.add_argument("--work", default="", help="keep the runs here (default: a temp dir, removed)")
    p.add_argument("--plain-worker", nargs=2, metavar=("CONFIG", "OUTPUT_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.iters = args.iters or (40 if args.quick else 200)
    args.pairs = args.pairs or (2 if args.quick else 4)
    return args


# ----------------------------------------------------------------------------- B: plain detectron2


def plain_train_net(config_file: str, output_dir: str) -> None:
    """tools/train_net.py's setup() and main(), nothing of objcrop but its dataset readers."""
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.engine import DefaultTrainer, default_setup
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    from objcrop.detection.datasets import register

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            evaluator_type = MetadataCatalog.get(dataset_name).evaluator_type
            if evaluator_type == "pascal_voc":
                return PascalVOCDetectionEvaluator(dataset_name)
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file=config_file, eval_only=False, opts=[]))
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            register(name)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()


def plain_config(objcrop_config: str, out: str) -> str:
    """objcrop's merged config.yaml without the OBJCROP node (plain get_cfg() would refuse the key)."""
    import yaml

    with open(objcrop_config) as f:
        cfg = yaml.safe_load(f)
    cfg.pop("OBJCROP", None)
    from objcrop.io import write_text_atomic

    write_text_atomic(out, yaml.safe_dump(cfg))
    return out


# ----------------------------------------------------------------------------- runs


def _seconds(hms: str) -> float:
    parts = [float(x) for x in hms.split(":")]
    return sum(v * 60 ** i for i, v in enumerate(reversed(parts)))


def timed(cmd: List[str], log_txt: str, console: str) -> dict:
    t0 = time.perf_counter()
    with open(console, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"bench_detect.py: {' '.join(cmd[:4])} ... failed (exit {rc}); see {console}")
    text = open(log_txt).read()
    speed, total = SPEED.findall(text), TOTAL.findall(text)
    if not speed or not total:
        raise SystemExit(f"bench_detect.py: no 'Overall training speed' / 'Total training time' in {log_txt}")
    return {"s_per_iter": float(speed[-1][1]), "timed_iters": int(speed[-1][0]),
            "hooks_s": _seconds(total[-1][1]), "wall_s": wall}


def run_objcrop(args, data: str, work: str, k: int) -> dict:
    out = os.path.join(work, f"A{k}")
    cmd = [sys.executable, "-m", "objcrop", "detect", "train", "--config-file", args.config_file, "--weights",
           args.weights, "--seeds", "0", "--output-dir", out, "--dataset-train", f"voc:{data}/voc:train",
           "--dataset-test", f"voc:{data}/voc:test", "--opts", "SOLVER.MAX_ITER", str(args.iters),
           "SOLVER.STEPS", f"({int(args.iters * 0.8)},)", "TEST.EVAL_PERIOD", "0",
           "SOLVER.CHECKPOINT_PERIOD", str(args.iters)]
    if "voc" not in os.path.basename(args.config_file):
        cmd[cmd.index(f"voc:{data}/voc:train")] = f"synth:{data}:train"
        cmd[cmd.index(f"voc:{data}/voc:test")] = f"synth:{data}:test"
    r = timed(cmd, os.path.join(out, "seed0", "log.txt"), os.path.join(work, f"A{k}.console.log"))
    r["config"] = os.path.join(out, "seed0", "config.yaml")
    return r


def run_plain(config: str, work: str, k: int) -> dict:
    out = os.path.join(work, f"B{k}")
    cmd = [sys.executable, os.path.abspath(__file__), "--plain-worker", config, out]
    return timed(cmd, os.path.join(out, "log.txt"), os.path.join(work, f"B{k}.console.log"))


def make_data(args, work: str) -> str:
    if args.data:
        return os.path.abspath(args.data)
    data = os.path.join(work, "data")
    subprocess.run([sys.executable, "-m", "objcrop", "data", "synth", "--out", data, "--num-images", "200",
                    "--variant", "study", "--seed", "0", "--no-progress"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)
    return data


# ----------------------------------------------------------------------------- report


def pair_ratios(runs: List[dict]) -> List[float]:
    """A's s/iter over B's, pair by pair (the two runs of a pair are neighbours in time)."""
    by_pair = {(r["pair"], r["side"]): r["s_per_iter"] for r in runs}
    return [by_pair[k, "A"] / by_pair[k, "B"] for k in sorted({r["pair"] for r in runs})]


def report(args, runs: List[dict]) -> List[str]:
    a = [r for r in runs if r["side"] == "A"]
    b = [r for r in runs if r["side"] == "B"]
    med = {k: (statistics.median(r[k] for r in a), statistics.median(r[k] for r in b))
           for k in ("s_per_iter", "hooks_s", "wall_s")}
    ratios = pair_ratios(runs)
    ratio = statistics.median(ratios)
    lines = ["# Detection fine-tuning: objcrop detect train vs detectron2's DefaultTrainer", "",
             f"`{args.config_file}`, weights {args.weights}, {args.iters} iterations per run, {args.pairs} pairs run "
             f"A B, B A, ...; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. A = `objcrop detect train`; "
             "B = tools/train_net.py's shape (get_cfg, merge_from_file of A's config.yaml, DefaultTrainer(cfg).train()). "
             "s/iter is detectron2's IterationTimer (warm-up iterations and hooks excluded); wall is the whole command.", "",
             "| run | pair | side | s/iter | hooks (s) | wall (s) |", "|---:|---:|---|---:|---:|---:|"]
    for i, r in enumerate(runs, 1):
        lines.append(f"| {i} | {r['pair']} | {r['side']} | {r['s_per_iter']:.4f} | {r['hooks_s']:.0f} | {r['wall_s']:.1f} |")
    verdict = "meets" if ratio <= TARGET else "misses"
    lines += ["", "| median | objcrop (A) | detectron2 (B) | A / B |", "|---|---:|---:|---:|"]
    for key, label in (("s_per_iter", "s/iter"), ("hooks_s", "hooks (s)"), ("wall_s", "wall (s)")):
        x, y = med[key]
        lines.append(f"| {label} | {x:.4f} | {y:.4f} | {x / y:.3f} |" if y else f"| {label} | {x:.4f} | {y:.4f} | — |")
    lines += ["", f"**s/iter ratio A/B = {ratio:.3f}**, the median over pairs of each pair's ratio (min {min(ratios):.3f}, "
              f"max {max(ratios):.3f}; {verdict} the target ≤ {TARGET:.2f}; hooks are timed to the second by "
              "detectron2, so their ratio is coarse)."]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plain_worker:
        plain_train_net(*args.plain_worker)
        return 0
    work = args.work or tempfile.mkdtemp(prefix="bench_detect_")
    os.makedirs(work, exist_ok=True)
    data = make_data(args, work)
    runs, config = [], None
    for k in range(args.pairs):
        for side in ("AB" if k % 2 == 0 else "BA"):  # B needs A's config.yaml: pair 0 starts with A
            if side == "A":
                a = run_objcrop(args, data, work, k)
                config = config or plain_config(a["config"], os.path.join(work, "plain_config.yaml"))
                runs.append(dict(a, side="A", pair=k))
            else:
                runs.append(dict(run_plain(config, work, k), side="B", pair=k))
        a, b = (next(r for r in runs if r["pair"] == k and r["side"] == x) for x in "AB")
        print(f"pair {k}: A {a['s_per_iter']:.4f} s/iter, B {b['s_per_iter']:.4f} s/iter", flush=True)
    emit_markdown(report(args, runs), args.out)
    if not args.work:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
