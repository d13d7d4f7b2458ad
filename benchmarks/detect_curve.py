"""Detection learning curves: AP and AP50 against iterations, from scratch and from a supervised backbone.

Issue 17 §2: a detection budget must be chosen from a measured curve. This fine-tunes the study's
detection tasks (eval_configs/study/) from random init ("scratch") and from a ResNet-18 trained with
labels on the same images ("supervised"), evaluating every --eval-period iterations with the real
evaluators (detectron2's TEST.EVAL_PERIOD; PascalVOC for the VOC-style task, COCOEvaluator box and
mask for the COCO-style one), over several fine-tuning seeds. Every fine-tuning is one
`objcrop detect train` process, the product's own path. Writes to --out:

    curve.md    the command (first line), the setup, AP/AP50 mean ± std per iteration, the gate
    curve.csv   one row per task, kind (box/mask), init, seed and evaluated iteration
    curve.png   AP50 (solid) and AP (dashed) against iterations, mean ± std bands

The gate (per task and kind, at --budget): supervised beats scratch by >= 10 AP50 points and by
more than 3x the larger of the two standard deviations, over >= 3 seeds each.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/detect_curve.py --out docs/results/detect_curve \\
        --tasks voc --iters 500 --eval-period 125 --seeds 0 1 2

Every step is skipped when its output is already in --work (data, backbone, finished runs:
`objcrop detect train --resume`), so a rerun with more seeds or tasks only runs what is missing.
Each curve is one schedule of --iters iterations (lr drop at --step-frac of it): a point before the
end is that schedule's model at that iteration, not the end of a shorter schedule.
"""
import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # run from a checkout without `pip install -e .` too

from objcrop.io import atomic_path, read_json, write_text_atomic  # noqa: E402

# task -> (config file in each set's folder eval_configs/<set>/, train spec, test spec, kinds it is scored
# on); specs take the data dir.
TASKS = {
    "voc": ("faster_rcnn_R_18_FPN_voc.yaml", "voc:{d}/voc:train", "voc:{d}/voc:test", ("box",)),
    "coco": ("mask_rcnn_R_18_FPN_coco.yaml", "synth:{d}:train", "synth:{d}:test", ("box", "mask")),
}
CONFIG_SETS = ("study", "demo")
INITS = ("scratch", "supervised")
METRIC_PREFIX = {"box": "bbox", "mask": "segm"}  # detectron2's evaluator result keys
GATE_AP50_POINTS = 10.0
GATE_STD_FACTOR = 3.0
GATE_MIN_SEEDS = 3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/results/detect_curve", help="where curve.md/.csv/.png go")
    p.add_argument("--work", default="output/detect_curve",
                   help="data, supervised backbone, run directories and logs (reused by a rerun)")
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["voc", "coco"],
                   help="voc: Faster R-CNN R18-FPN, PascalVOC evaluator; coco: Mask R-CNN R18-FPN, box and mask")
    p.add_argument("--configs", choices=CONFIG_SETS, default="study",
                   help="the detection configs measured: study (eval_configs/study/, the study's) or demo "
                        "(eval_configs/demo/, `make demo`'s lighter box head); runs of each go to their own folders")
    p.add_argument("--iters", type=int, default=500, help="fine-tuning iterations (SOLVER.MAX_ITER)")
    p.add_argument("--eval-period", type=int, default=125, help="evaluate every this many iterations (TEST.EVAL_PERIOD)")
    p.add_argument("--step-frac", type=float, default=0.8, help="lr drops x0.1 at this fraction of --iters")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="fine-tuning seeds (the gate needs >= 3)")
    p.add_argument("--budget", type=int, default=None,
                   help="the iteration the gate is read at (an evaluated one; default: --iters)")
    p.add_argument("--images", type=int, default=1000,
                   help="embedded `study` images over all splits (70/15/15 %%; DESIGN.md's curve used 1000)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the embedded dataset")
    p.add_argument("--supervised-samples", type=int, default=17000,
                   help="training samples of the supervised backbone (learnability.py --samples; "
                        "DESIGN.md's 5 CPU minutes were about 17,000)")
    p.add_argument("--supervised-weights", default=None,
                   help="use this converted .pkl as the supervised backbone instead of training one")
    p.add_argument("--plot-only", action="store_true", help="train nothing: tabulate the runs already in --work")
    args = p.parse_args(argv)
    if args.eval_period <= 0 or args.iters % args.eval_period:
        p.error(f"--eval-period {args.eval_period} must divide --iters {args.iters}, so that the last point is the end")
    args.budget = args.budget or args.iters
    if args.budget % args.eval_period or not 0 < args.budget <= args.iters:
        p.error(f"--budget {args.budget} is not an evaluated iteration (multiples of {args.eval_period} up to {args.iters})")
    return args


# ----------------------------------------------------------------------------- running the product


def _objcrop(argv: List[str], log: str) -> None:
    """One `objcrop ...` command in its own process, its output in `log`; a failure stops the curve."""
    os.makedirs(os.path.dirname(log), exist_ok=True)
    cmd = [sys.executable, "-m", "objcrop"] + argv
    print(f"[curve] {' '.join(cmd)}  (log {log})", flush=True)
    t0 = time.time()
    with open(log, "a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    print(f"[curve]   exit {rc} after {time.time() - t0:.0f} s", flush=True)
    if rc != 0:
        raise SystemExit(f"detect_curve.py: `{' '.join(argv[:2])}` failed (exit {rc}); see {log}")


def prepare_data(args) -> str:
    data = os.path.join(args.work, "data")
    if not os.path.isfile(os.path.join(data, "meta.json")):
        _objcrop(["data", "synth", "--out", data, "--num-images", str(args.images), "--variant", "study",
                  "--seed", str(args.data_seed), "--no-progress"], os.path.join(args.work, "logs", "data.log"))
    return os.path.abspath(data)


def prepare_supervised(args, data: str) -> str:
    """A ResNet-18 trained with labels on the train split (learnability.py), converted by `objcrop convert`."""
    if args.supervised_weights:
        return os.path.abspath(args.supervised_weights)
    pkl = os.path.join(args.work, "supervised.pkl")
    backbone = os.path.join(args.work, "supervised_backbone.pth")
    logs = os.path.join(args.work, "logs")
    if not os.path.isfile(backbone):
        os.makedirs(logs, exist_ok=True)
        cmd = [sys.executable, os.path.join(HERE, "learnability.py"), "--data", data, "--samples",
               str(args.supervised_samples), "--minutes", "120", "--json", os.path.join(args.work, "learnability.json"),
               "--save-backbone", backbone]
        print(f"[curve] {' '.join(cmd)}", flush=True)
        with open(os.path.join(logs, "learnability.log"), "a") as f:
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode:
                raise SystemExit(f"detect_curve.py: learnability.py failed; see {logs}/learnability.log")
    if not os.path.isfile(pkl):
        _objcrop(["convert", backbone, pkl, "--format", "torchvision", "--pretrain", "method=supervised",
                  "--pretrain", f"dataset=synth:{data}:train", "--pretrain", "arch=resnet18"],
                 os.path.join(logs, "convert.log"))
    return os.path.abspath(pkl)


def run_dir(args, task: str, init: str) -> str:
    return os.path.join(args.work, "runs", schedule_name(args, task), init)


def schedule_name(args, task: str) -> str:
    """The folder of one task's schedule; the demo's configs get their own (their runs are other models)."""
    return f"{task}_{args.iters}it" + ("" if args.configs == "study" else f"_{args.configs}")


def task_config(args, task: str) -> str:
    """The config file of `task` in the chosen set (a path inside eval_configs/)."""
    return f"{args.configs}/{TASKS[task][0]}"


def finetune(args, task: str, init: str, seed: int, data: str, weights: str) -> None:
    _, train, test, _ = TASKS[task]
    config = task_config(args, task)
    out = run_dir(args, task, init)
    results = os.path.join(out, f"seed{seed}", "results.json")
    if os.path.isfile(results) and read_json(results).get("status") == "ok":
        return
    opts = ["SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({int(args.iters * args.step_frac)},)",
            "TEST.EVAL_PERIOD", str(args.eval_period), "SOLVER.CHECKPOINT_PERIOD", str(args.eval_period)]
    _objcrop(["detect", "train", "--config-file", config, "--weights", weights, "--seeds", str(seed),
              "--output-dir", out, "--dataset-train", train.format(d=data), "--dataset-test", test.format(d=data),
              "--resume", "--opts"] + opts, os.path.join(args.work, "logs", f"{schedule_name(args, task)}_{init}_s{seed}.log"))


# ----------------------------------------------------------------------------- reading the curves


def read_curve(seed_dir: str, kind: str, max_iter: int) -> Dict[int, Tuple[float, float]]:
    """{iterations run: (AP, AP50)} from detectron2's metrics.json, where its EvalHook puts each evaluation.

    The hook evaluates after the 0-based iteration k*period - 1 (k*period have run), except the
    last, which it runs after training, logged at iteration max_iter. A resumed run appends to the
    file: the last value for an iteration wins.
    """
    prefix = METRIC_PREFIX[kind]
    path = os.path.join(seed_dir, "metrics.json")
    points = {}
    if not os.path.isfile(path):
        return points
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            if f"{prefix}/AP50" in row:
                points[min(int(row["iteration"]) + 1, max_iter)] = (float(row[f"{prefix}/AP"]), float(row[f"{prefix}/AP50"]))
    return points


def collect(args) -> List[dict]:
    rows = []
    for task in args.tasks:
        for init in INITS:
            for seed in args.seeds:
                seed_dir = os.path.join(run_dir(args, task, init), f"seed{seed}")
                results = os.path.join(seed_dir, "results.json")
                if not os.path.isfile(results) or read_json(results).get("status") != "ok":
                    continue  # unfinished or failed: a partial curve would mix seeds across iterations
                for kind in TASKS[task][3]:
                    for it, (ap, ap50) in sorted(read_curve(seed_dir, kind, args.iters).items()):
                        rows.append({"task": task, "kind": kind, "init": init, "seed": seed, "iteration": it,
                                     "AP": round(ap, 2), "AP50": round(ap50, 2)})
    return rows


def summarise(rows: List[dict]) -> Dict[tuple, dict]:
    """(task, kind, init, iteration) -> {n, AP, AP_std, AP50, AP50_std} (std: sample std, None for n=1)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["kind"], r["init"], r["iteration"])].append(r)
    out = {}
    for key, rs in groups.items():
        entry = {"n": len(rs)}
        for m in ("AP", "AP50"):
            values = [r[m] for r in rs]
            entry[m] = statistics.mean(values)
            entry[m + "_std"] = statistics.stdev(values) if len(values) > 1 else None
        out[key] = entry
    return out


def gate(summary: Dict[tuple, dict], task: str, kind: str, budget: int) -> dict:
    sc, su = summary.get((task, kind, "scratch", budget)), summary.get((task, kind, "supervised", budget))
    if not sc or not su:
        return {"ok": False, "why": f"no evaluation at iteration {budget} for both inits"}
    diff = su["AP50"] - sc["AP50"]
    stds = [s for s in (sc["AP50_std"], su["AP50_std"]) if s is not None]
    larger = max(stds) if len(stds) == 2 else None
    n = min(sc["n"], su["n"])
    checks = [(diff >= GATE_AP50_POINTS, f"Δ AP50 {diff:+.1f} {'≥' if diff >= GATE_AP50_POINTS else '<'} {GATE_AP50_POINTS:g}")]
    if larger is None:
        checks.append((False, "std undefined (one seed)"))
    else:
        checks.append((diff > GATE_STD_FACTOR * larger,
                       f"{'>' if diff > GATE_STD_FACTOR * larger else '≤'} {GATE_STD_FACTOR:g} × larger std {larger:.1f} = {GATE_STD_FACTOR * larger:.1f}"))
    checks.append((n >= GATE_MIN_SEEDS, f"n = {n} {'≥' if n >= GATE_MIN_SEEDS else '<'} {GATE_MIN_SEEDS} seeds"))
    return {"ok": all(c for c, _ in checks), "why": "; ".join(t for _, t in checks), "diff": diff,
            "scratch": sc, "supervised": su}


# ----------------------------------------------------------------------------- writing


def _cell(entry: Optional[dict], metric: str) -> str:
    if not entry:
        return "—"
    std = entry[metric + "_std"]
    return f"{entry[metric]:.1f}" + (f" ± {std:.1f}" if std is not None else "") + f" (n={entry['n']})"


def curve_table(summary: Dict[tuple, dict], task: str, kind: str) -> List[str]:
    iterations = sorted({k[3] for k in summary if k[:2] == (task, kind)})
    lines = ["| iteration | scratch AP50 | supervised AP50 | Δ AP50 | scratch AP | supervised AP |",
             "|---:|---:|---:|---:|---:|---:|"]
    for it in iterations:
        sc, su = summary.get((task, kind, "scratch", it)), summary.get((task, kind, "supervised", it))
        diff = f"{su['AP50'] - sc['AP50']:+.1f}" if sc and su else "—"
        lines.append(f"| {it} | {_cell(sc, 'AP50')} | {_cell(su, 'AP50')} | {diff} | {_cell(sc, 'AP')} | {_cell(su, 'AP')} |")
    wide = [it for it in iterations if gate(summary, task, kind, it).get("diff", float("-inf")) >= GATE_AP50_POINTS]
    lines += ["", f"First evaluated iteration with a mean gap of ≥ {GATE_AP50_POINTS:g} AP50: "
              f"{wide[0] if wide else 'none'}."]
    return lines


def timings(args) -> List[str]:
    """Median wall time of a fine-tuning (training, periodic evaluations, PreciseBN) from results.json."""
    lines = []
    for task in args.tasks:
        for init in INITS:
            walls = []
            for seed in args.seeds:
                path = os.path.join(run_dir(args, task, init), f"seed{seed}", "results.json")
                if os.path.isfile(path) and read_json(path).get("status") == "ok":
                    walls.append(read_json(path)["wall_time_s"])
            if walls:
                w = statistics.median(walls)
                lines.append(f"{task} {init}: {w:.0f} s per fine-tuning ({w / args.iters:.2f} s/iter with its "
                             f"evaluations; median of {len(walls)})")
    return lines


def _command() -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={threads} " if threads else "") + "python " + " ".join(
        [os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])


def _setup_lines(args) -> List[str]:
    lines = [f"- data: embedded `study` variant, {args.images} images (70/15/15 % train/val/test), seed {args.data_seed}",
             f"- schedule: {args.iters} iterations, lr ×0.1 at {int(args.iters * args.step_frac)}, evaluated every "
             f"{args.eval_period} (detectron2's TEST.EVAL_PERIOD, with PreciseBN before each); the rest as in "
             + ", ".join(f"`eval_configs/{task_config(args, t)}`" for t in args.tasks),
             f"- fine-tuning seeds: {' '.join(map(str, args.seeds))}; std is the sample std over seeds",
             f"- machine: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
             "(1/5/15 min) when this was written: the times below depend on it"]
    learn = os.path.join(args.work, "learnability.json")
    if not args.supervised_weights and os.path.isfile(learn):
        j = read_json(learn)
        lines.append(f"- supervised backbone: ResNet-18 trained with labels (benchmarks/learnability.py, "
                     f"{j['supervised_training']['samples']} samples), probe mAP {j['supervised_mAP']:.3f} against "
                     f"random init {j['random_init_mAP']:.3f}; converted with `objcrop convert --format torchvision`")
    elif args.supervised_weights:
        lines.append(f"- supervised backbone: {args.supervised_weights}")
    return lines


def write_markdown(args, summary: Dict[tuple, dict]) -> bool:
    lines = [f"Command: `{_command()}`", "", "# Detection learning curves: scratch against supervised", ""]
    if args.plot_only:
        lines += ["(--plot-only: the tables read the finished runs that the same command without --plot-only "
                  f"trained in `{args.work}`; a seed whose run had not finished is left out.)", ""]
    lines += _setup_lines(args) + [f"- time: {t}" for t in timings(args)] + [""]
    gates = []
    for task in args.tasks:
        for kind in TASKS[task][3]:
            lines += [f"## {task} {kind} ({task_config(args, task)})", ""] + curve_table(summary, task, kind) + [""]
            gates.append((task, kind, gate(summary, task, kind, args.budget)))
    passed = all(g["ok"] for _, _, g in gates)
    lines += [f"## Gate at {args.budget} iterations: **{'PASS' if passed else 'FAIL'}**", "",
              f"Supervised must beat scratch by ≥ {GATE_AP50_POINTS:g} AP50 points and by more than "
              f"{GATE_STD_FACTOR:g}× the larger std, over ≥ {GATE_MIN_SEEDS} fine-tuning seeds, on every task and kind.", "",
              "| task | kind | scratch AP50 | supervised AP50 | gate | why |", "|---|---|---:|---:|---|---|"]
    for task, kind, g in gates:
        lines.append(f"| {task} | {kind} | {_cell(g.get('scratch'), 'AP50')} | {_cell(g.get('supervised'), 'AP50')} | "
                     f"{'PASS' if g['ok'] else 'FAIL'} | {g['why']} |")
    lines += ["", "![AP50 and AP against iterations](curve.png)", ""]
    write_text_atomic(os.path.join(args.out, "curve.md"), "\n".join(lines))
    return passed


def write_csv(path: str, rows: List[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["task", "kind", "init", "seed", "iteration", "AP", "AP50"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_plot(path: str, args, summary: Dict[tuple, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(t, k) for t in args.tasks for k in TASKS[t][3]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, kind) in zip(axes[0], panels):
        for init, colour in zip(INITS, ("tab:grey", "tab:blue")):
            its = sorted(k[3] for k in summary if k[:3] == (task, kind, init))
            for metric, style in (("AP50", "-"), ("AP", "--")):
                mean = [summary[(task, kind, init, i)][metric] for i in its]
                std = [summary[(task, kind, init, i)][metric + "_std"] or 0.0 for i in its]
                ax.plot(its, mean, style, marker="o", ms=3, color=colour, label=f"{init} {metric}")
                ax.fill_between(its, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=colour, alpha=0.15, lw=0)
        ax.axvline(args.budget, color="k", lw=0.6, ls=":")
        ax.set(title=f"{task} {kind}", xlabel="iterations", ylabel="AP (%)", ylim=(0, None))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = prepare_data(args) if not args.plot_only else os.path.abspath(os.path.join(args.work, "data"))
    if not args.plot_only:
        weights = {"scratch": "none", "supervised": prepare_supervised(args, data)}
        for seed in args.seeds:  # seed by seed: a cut run still leaves whole pairs to compare
            for task in args.tasks:
                for init in INITS:
                    finetune(args, task, init, seed, data, weights[init])
    rows = collect(args)
    if not rows:
        raise SystemExit(f"detect_curve.py: no evaluations found under {args.work}/runs")
    summary = summarise(rows)
    write_csv(os.path.join(args.out, "curve.csv"), rows)
    write_plot(os.path.join(args.out, "curve.png"), args, summary)
    passed = write_markdown(args, summary)
    print(open(os.path.join(args.out, "curve.md")).read())
    print(f"gate: {'PASS' if passed else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
