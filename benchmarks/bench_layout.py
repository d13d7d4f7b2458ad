"""Thread layout for `--jobs 2` (issue 22 §3): two pretraining runs side by side with half the cores'
threads each, as the pipeline lays them out (OMP_NUM_THREADS = cores / tasks; one thread each on 2
cores), against the same work done one run after the other with all the cores' threads.

Each side runs the trainer's own MoCo-v2 step (`run_step`, built as bench_step.py builds it) at the
study's recipe shape by default (ResNet-18, batch 256, 64-px views, K 1024), in worker processes that
warm up, report ready and wait, so that only steps are timed: side by side, two workers of --steps
steps each start together, and the window runs from the first start to the last end; one after the
other, one worker runs 2 x --steps steps (what two sequential runs would do). The two
layouts alternate in counterbalanced order, round by round. Reported: the machine's pairs/s under each
layout and their ratio per round.

    python benchmarks/bench_layout.py --out benchmarks/out/layout.md [--quick] [--cpu-amp on]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="", help="write the report (markdown) here as well as to stdout")
    p.add_argument("--quick", action="store_true", help="batch 32, 32-px views, 1 round of 2 steps (a smoke run)")
    p.add_argument("--arch", default="resnet18", help="torchvision ResNet")
    p.add_argument("--batch", type=int, default=0, help="pairs per step (default 256; --quick 32)")
    p.add_argument("--size", type=int, default=0, help="view side in pixels (default 64; --quick 32)")
    p.add_argument("--K", type=int, default=1024, help="MoCo queue length")
    p.add_argument("--rounds", type=int, default=0, help="rounds, each layout once per round (default 3; --quick 1)")
    p.add_argument("--steps", type=int, default=0, help="timed steps per side-by-side worker (default 3; --quick 2)")
    p.add_argument("--cpu-amp", choices=("on", "off"), default="off",
                   help="bf16 autocast in channels_last (PRETRAIN.AMP_CPU) on both layouts")
    p.add_argument("--worker", nargs=3, metavar=("THREADS", "STEPS", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch = args.batch or (32 if args.quick else 256)
    args.size = args.size or (32 if args.quick else 64)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.steps = args.steps or (2 if args.quick else 3)
    return args


def worker(args) -> None:
    """One worker: build the step, warm up, say ready, wait for go, time the steps, write them down."""
    threads, steps, folder = int(args.worker[0]), int(args.worker[1]), args.worker[2]
    import torch

    torch.set_num_threads(threads)
    from bench_step import objcrop_step

    step, _ = objcrop_step("moco_v2", args.arch, args.batch, args.K, os.path.join(folder, f"run{os.getpid()}"),
                           cpu_amp=args.cpu_amp == "on")
    g = torch.Generator().manual_seed(os.getpid())
    x1 = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    x2 = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    step(x1, x2)
    open(os.path.join(folder, f"ready.{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(folder, "go")):
        time.sleep(0.005)
    start = time.time()
    for _ in range(steps):
        step(x1, x2)
    with open(os.path.join(folder, f"done.{os.getpid()}.json"), "w") as f:
        json.dump({"start": start, "end": time.time(), "steps": steps}, f)


def run_layout(args, threads: int, workers: int, steps: int) -> float:
    """The machine's pairs/s while `workers` workers of `threads` threads run `steps` steps each together."""
    with tempfile.TemporaryDirectory(prefix="objcrop_bench_layout_") as folder:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(threads), str(steps), folder,
               "--arch", args.arch, "--batch", str(args.batch), "--size", str(args.size), "--K", str(args.K),
               "--cpu-amp", args.cpu_amp]
        procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
        while sum(name.startswith("ready.") for name in os.listdir(folder)) < workers:
            if any(p.poll() not in (None, 0) for p in procs):
                raise SystemExit(f"bench_layout.py: a worker failed: {' '.join(cmd)}")
            time.sleep(0.01)
        open(os.path.join(folder, "go"), "w").close()
        if any(p.wait() != 0 for p in procs):
            raise SystemExit(f"bench_layout.py: a worker failed: {' '.join(cmd)}")
        done = [json.load(open(os.path.join(folder, n))) for n in os.listdir(folder) if n.startswith("done.")]
    window = max(d["end"] for d in done) - min(d["start"] for d in done)
    return sum(d["steps"] for d in done) * args.batch / window


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    side_name, seq_name = f"side by side, {half} thread(s) each", f"one after the other, {cores} thread(s)"
    layouts = {side_name: (half, 2, args.steps), seq_name: (cores, 1, 2 * args.steps)}
    per_round = {name: [] for name in layouts}
    for r in range(args.rounds):
        order = list(layouts) if r % 2 == 0 else list(reversed(layouts))
        for name in order:
            per_round[name].append(run_layout(args, *layouts[name]))
        print(f"[bench_layout] round {r + 1}/{args.rounds}: "
              + ", ".join(f"{n} {v[-1]:.1f} pairs/s" for n, v in per_round.items()), flush=True)
    side, seq = per_round[side_name], per_round[seq_name]
    ratios = [a / b for a, b in zip(side, seq)]
    lines = [
        "# bench_layout: two pretraining runs, side by side or one after the other",
        "",
        f"command: `python benchmarks/bench_layout.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"settings: objcrop MoCo-v2 step, {args.arch}, batch {args.batch} pairs, {args.size}-px views, K {args.K}, "
        f"{'bf16 autocast, channels_last' if args.cpu_amp == 'on' else 'float32'}; {args.rounds} round(s), "
        f"{args.steps} timed steps per side-by-side worker; {cores} logical CPUs; load average at the end "
        f"{os.getloadavg()[0]:.2f}",
        "",
        "| layout | pairs/s of the machine (median over rounds) |",
        "|---|---:|",
        f"| {side_name} (the pipeline's --jobs 2) | {statistics.median(side):.1f} |",
        f"| {seq_name} | {statistics.median(seq):.1f} |",
        "",
        f"side by side / one after the other, per round: median **{statistics.median(ratios):.3f}** "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})",
    ]
    from _report import emit_markdown

    emit_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
