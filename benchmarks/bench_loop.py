"""The real training loop against the step alone and the bare limit, under thread / loader-worker layouts
(issue 22 §3): where time to accuracy goes once the data is included.

bench_step.py and bench_study_step.py time the step on tensors already in memory. A pretraining run
also decodes images, cuts view pairs and augments them in the loader's worker processes, and those
processes share the same cores as the step's threads. This benchmark times, at a recipe's shape
(default: the study's b256-100e recipe, bf16 where the CPU has native bf16, as bench_tta.py trains):

* **loop T/W**: the trainer's own loop (`PretrainTrainer.train`, every product hook on: metrics,
  progress bar, divergence guard) on real generated images, with T torch threads and W loader workers
  (DATA.NUM_WORKERS). Its first epoch is warm-up (worker start, first batches); the pairs/s of the next
  --epochs epochs are what it reports, epoch boundaries included. "T/W x N": N such runs started
  together, as the pipeline's --jobs N lays them out (the study runs two at one thread each): the
  machine's pairs/s over the span of their timed windows.
* **step alone**: the same trainer's `run_step` repeated on one real batch from its own loader, with
  all the cores' threads: the loop with the data for free.
* **loader alone**: the recipe's DataLoader in the main process with one thread (DATA.NUM_WORKERS 0),
  batches drawn and dropped: the pairs/s one core makes. With the step alone it gives the cores'
  limit with the data included for one run, cores / (cores / step + 1 / loader): the pairs/s if the
  loader's work and the step's shared the cores without loss. Runs side by side can beat it: a step on
  one thread uses its core better than a step on all of them (bench_layout.py measures by how much).
* **loader alone, decoded images cached**: the same with DATA.IMAGE_CACHE_MB after one untimed epoch (a
  run's first epoch decodes every image once; its later epochs read them from the cache): against the
  loader alone, what the cache saves each later epoch.
* **bare limit**: a bare torchvision step of the same ResNet and precision on tensors of the same shape
  (bench_step.bare_step: forward the queries with gradient, backward, SGD, forward the keys), all the
  cores' threads: the compute limit.

Each side runs in its own process (its thread count and loader workers set before torch starts). The
sides alternate in counterbalanced order, round by round, so drifting machine load hits them alike.
Reported: each side's pairs/s (median over rounds) and, per round, loop / limit, loop / step alone and
each layout against the first one (by default the recipe's own; median, min, max).

    python benchmarks/bench_loop.py --out benchmarks/out/loop.md [--quick] [--layouts 2:1 2:2 1:1 2:0 1:1x2]
"""
import argparse
import copy
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

QUICK_RECIPE = "pretrain/study/r18_b32_e12.yaml"
# the loader-cached side's DATA.IMAGE_CACHE_MB: room for every image of the generated datasets
CACHE_MB = "1024"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="", help="write the report (markdown) here as well as to stdout")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_RECIPE}, 160 images, 1 round (a smoke run)")
    p.add_argument("--recipe", default="", help="pretraining config (default: bench_tta.py's, the study's b256-100e "
                                                "recipe, its bf16 twin where the CPU has native bf16)")
    p.add_argument("--policy", default="obj-obj-dilate", help="VIEWS.POLICY (as bench_tta.py trains)")
    p.add_argument("--proposals", default="gt", help='DATA.PROPOSALS: "gt" or "" (none, for random crops)')
    p.add_argument("--data", default="", help="an existing study-plain dataset folder (default: generate --images)")
    p.add_argument("--images", type=int, default=0, help="images to generate (default 3000, the study's; quick 160)")
    p.add_argument("--layouts", nargs="+", default=[], metavar="T:W[xN]",
                   help="loop layouts, torch threads : loader workers, xN for N runs side by side (default: the recipe's own DATA.NUM_WORKERS "
                        "with all the cores' threads first, then 0, 1 and 2 workers, one thread fewer, and two runs "
                        "side by side at half the threads each)")
    p.add_argument("--epochs", type=int, default=0, help="timed epochs of each loop after its warm-up epoch (default 2; "
                                                         "quick 1)")
    p.add_argument("--rounds", type=int, default=0, help="rounds, every side once per round (default 2; quick 1)")
    p.add_argument("--opts", nargs="*", default=[], help="pretraining config overrides KEY VALUE ...")
    p.add_argument("--side", nargs=4, metavar=("KIND", "THREADS", "WORKERS", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    if not args.recipe:
        from bench_tta import default_recipe

        args.recipe = QUICK_RECIPE if q else default_recipe(False)
    args.images = args.images or (160 if q else 3000)
    args.epochs = args.epochs or (1 if q else 2)
    args.rounds = args.rounds or (1 if q else 2)
    return args


def recipe_cfg(args, data: str, out_dir: str, workers: int):
    """bench_tta.py's training config (the same recipe, policy and data), with the layout's loader workers."""
    import bench_tta

    with_workers = copy.copy(args)
    with_workers.opts = list(args.opts) + ["DATA.NUM_WORKERS", workers]
    return bench_tta.recipe_cfg(with_workers, data, out_dir)


def default_layouts(args, cores: int):
    """The recipe's layout first (all the cores' threads, its DATA.NUM_WORKERS), then its neighbours."""
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    own = merge_config(get_pretrain_cfg, args.recipe, list(args.opts)).DATA.NUM_WORKERS
    layouts = [(cores, own, 1)] + [(cores, w, 1) for w in (0, 1, 2) if w != own] + [(max(1, cores - 1), own, 1)]
    if cores > 1:  # the pipeline's --jobs 2: two runs with half the cores' threads each (the study's layout)
        layouts.append((cores // 2, own, 2))
    return list(dict.fromkeys(layouts))


def parse_layout(text: str):
    """"T:W" (one run) or "T:WxN" (N runs side by side) -> (threads, workers, runs)."""
    threads, rest = text.split(":")
    workers, _, runs = rest.partition("x")
    return int(threads), int(workers), int(runs or 1)


# -- the sides, each in its own process ---------------------------------------------------------------
def recipe_trainer(args, data: str, folder: str, workers: int):
    """A PretrainTrainer on the recipe's config with `workers` loader workers, logging nowhere."""
    from bench_tta import quiet_logger
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    return PretrainTrainer(recipe_cfg(args, data, os.path.join(folder, "run"), workers), DistContext(),
                           quiet_logger("bench.loop"))


def timed(pairs: int, start: float) -> dict:
    """A side's result: pairs made from `start` (time.time(), one clock for sides run together) to now."""
    return {"pairs": pairs, "start": start, "end": time.time()}


class Timed(Exception):
    """Raised by the timing hook once the loop's timed epochs are over: the run has nothing more to give."""


def loop_side(args, data: str, folder: str, workers: int) -> dict:
    from objcrop.pretrain.engine.hooks import HookBase

    trainer = recipe_trainer(args, data, folder, workers)
    ends = []  # wall-clock time (time.time) so that runs side by side share one clock

    class EndOfStep(HookBase):
        def after_step(self):
            ends.append(time.time())
            if len(ends) == (1 + args.epochs) * self.trainer.per_epoch:
                raise Timed()

    base_hooks = trainer.build_hooks
    trainer.build_hooks = lambda: base_hooks() + [EndOfStep()]
    try:
        trainer.train()
        raise SystemExit(f"bench_loop.py: the recipe ended after {len(ends)} steps, before 1 + {args.epochs} epochs")
    except Timed:
        pass
    warm = trainer.per_epoch
    return {"pairs": (len(ends) - warm) * trainer.cfg.PRETRAIN.BATCH_SIZE, "start": ends[warm - 1], "end": ends[-1]}


def step_side(args, data: str, folder: str) -> dict:
    """The trainer's run_step on one real batch of its own loader, repeated for as many steps as a loop times."""
    trainer = recipe_trainer(args, data, folder, 0)
    trainer.setup(resume=False)
    batch = next(iter(trainer.loader))
    steps = args.epochs * trainer.per_epoch
    trainer.run_step(*batch)  # warm-up
    start = time.time()
    for _ in range(steps):
        trainer.run_step(*batch)
    return timed(steps * trainer.cfg.PRETRAIN.BATCH_SIZE, start)


def loader_side(args, data: str, folder: str, cached: bool = False) -> dict:
    """The recipe's loader in this process (no workers), as many batches as a loop times after one warm-up.
    cached: with DATA.IMAGE_CACHE_MB (CACHE_MB) and one untimed epoch first, which decodes every image
    once, as a run's first epoch does: what each later epoch of a run costs its loader."""
    if cached:
        args = copy.copy(args)
        args.opts = list(args.opts) + ["DATA.IMAGE_CACHE_MB", CACHE_MB]
    trainer = recipe_trainer(args, data, folder, 0)
    _, _, loader = trainer.build_data()
    if cached:
        for _ in loader:
            pass
    batches = iter(loader)
    next(batches)
    steps = min(args.epochs * len(loader), len(loader) - 1)
    start = time.time()
    for _ in range(steps):
        next(batches)
    return timed(steps * trainer.cfg.PRETRAIN.BATCH_SIZE, start)


def bare_side(args, data: str, folder: str) -> dict:
    """bench_step.bare_step at the recipe's ResNet, batch, view size and precision, on random tensors."""
    import torch
    from bench_step import bare_step
    from objcrop.pretrain.engine.optim import scaled_lr, uses_autocast

    cfg = recipe_cfg(args, data, os.path.join(folder, "run"), 0)
    p, size = cfg.PRETRAIN, cfg.VIEWS.CROP_SIZE
    step = bare_step("moco_v2", p.ARCH, p.MOCO.DIM, scaled_lr(cfg), cpu_amp=uses_autocast(cfg, torch.device("cpu")))
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(p.BATCH_SIZE, 3, size, size, generator=g) for _ in range(2))
    steps = args.epochs * iterations_of(cfg, data)
    step(x1, x2)
    start = time.time()
    for _ in range(steps):
        step(x1, x2)
    return timed(steps * p.BATCH_SIZE, start)


def iterations_of(cfg, data: str) -> int:
    """Iterations per epoch of the recipe on the data (what the loop and step sides time per epoch)."""
    from objcrop.datasets import load_dataset
    from objcrop.pretrain.engine.data import iterations_per_epoch

    records, _ = load_dataset(f"synth:{data}:train")
    return iterations_per_epoch(len(records), cfg.PRETRAIN.BATCH_SIZE, 1)


def run_side(args, data: str) -> None:
    import torch

    kind, threads, workers, folder = args.side[0], int(args.side[1]), int(args.side[2]), args.side[3]
    torch.set_num_threads(threads)
    if kind == "loop":
        result = loop_side(args, data, folder, workers)
    elif kind == "step":
        result = step_side(args, data, folder)
    elif kind in ("loader", "loader-cached"):
        result = loader_side(args, data, folder, cached=kind == "loader-cached")
    else:
        result = bare_side(args, data, folder)
    with open(os.path.join(folder, "result.json"), "w") as f:
        json.dump(result, f)


def side_pairs_per_s(args, data: str, kind: str, threads: int, workers: int, runs: int = 1) -> float:
    """The machine's pairs/s on one side: `runs` processes started together (runs side by side, as the
    pipeline's --jobs lays them out), their pairs over the span from the first timed window's start to
    the last one's end (a run that starts late lowers it, as it would a real pair of runs)."""
    with tempfile.TemporaryDirectory(prefix="objcrop_bench_loop_") as tmp:
        folders = [os.path.join(tmp, f"run{i}") for i in range(runs)]
        procs = []
        for folder in folders:
            os.makedirs(folder)
            cmd = [sys.executable, os.path.abspath(__file__), "--side", kind, str(threads), str(workers), folder,
                   "--data", data, "--recipe", args.recipe, "--policy", args.policy, "--proposals", args.proposals,
                   "--epochs", str(args.epochs)] + (["--opts", *args.opts] if args.opts else [])
            log = open(os.path.join(folder, "side.log"), "w")  # the progress bar and logs, shown if the side fails
            procs.append((subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), stdout=log,
                                           stderr=log), log, cmd, folder))
        for proc, log, cmd, folder in procs:
            rc = proc.wait()
            log.close()
            if rc != 0:
                sys.stderr.write(open(os.path.join(folder, "side.log")).read()[-4000:])
                raise SystemExit(f"bench_loop.py: the {kind} side failed (exit {rc}): {' '.join(cmd)}")
        results = [json.load(open(os.path.join(folder, "result.json"))) for folder in folders]
    return sum(r["pairs"] for r in results) / (max(r["end"] for r in results) - min(r["start"] for r in results))


# -- the rounds and the report ---------------------------------------------------------------------------
def side_names(layouts, cores: int):
    sides = {(f"loop, {t} thread(s), {w} loader worker(s)" if n == 1 else
              f"{n} loops side by side, {t} thread(s) and {w} loader worker(s) each"): ("loop", t, w, n)
             for t, w, n in layouts}
    sides[f"step alone, {cores} thread(s)"] = ("step", cores, 0, 1)
    sides["loader alone, 1 thread"] = ("loader", 1, 0, 1)
    sides["loader alone, 1 thread, decoded images cached"] = ("loader-cached", 1, 0, 1)
    sides[f"bare limit, {cores} thread(s)"] = ("bare", cores, 0, 1)
    return sides


def run_rounds(args, data: str, sides: dict) -> dict:
    per_round = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            per_round[name].append(side_pairs_per_s(args, data, *sides[name]))
        print(f"[bench_loop] round {r + 1}/{args.rounds}: "
              + ", ".join(f"{n} {v[-1]:.1f}" for n, v in per_round.items()), flush=True)
    return per_round


def ratio_cell(top, bottom) -> str:
    r = [a / b for a, b in zip(top, bottom)]
    return f"{statistics.median(r):.3f} ({min(r):.3f}–{max(r):.3f})"


def report(args, cfg, sides, per_round, n_images, argv, wall_s):
    names = list(sides)
    loops = [n for n in names if sides[n][0] == "loop"]
    by_kind = {sides[n][0]: n for n in names if sides[n][0] != "loop"}
    step, loader, bare, own = by_kind["step"], by_kind["loader"], by_kind["bare"], loops[0]
    cached = by_kind["loader-cached"]
    cores = os.cpu_count() or 1
    first = "the recipe's layout" if sides[own] == ("loop", cores, cfg.DATA.NUM_WORKERS, 1) else "the first layout"
    with_data = [cores / (cores / a + 1 / b) for a, b in zip(per_round[step], per_round[loader])]
    p = cfg.PRETRAIN
    lines = ["# bench_loop: the real training loop against the step alone and the bare limit", "",
             f"command: `python benchmarks/bench_loop.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"settings: {args.recipe} ({p.ARCH}, batch {p.BATCH_SIZE}, {cfg.VIEWS.CROP_SIZE}-px views, K {p.MOCO.K}, "
             f"{'bf16 autocast on the CPU' if p.AMP_CPU else 'float32'}), {cfg.VIEWS.POLICY}"
             f"{' on ' + cfg.DATA.PROPOSALS + ' boxes' if cfg.DATA.PROPOSALS else ''}, {n_images} "
             f"training images of {args.data or 'a generated study-plain dataset'}; "
             f"each loop timed over {args.epochs} epoch(s) after a warm-up epoch; "
             f"{args.rounds} round(s); {os.cpu_count()} logical CPUs; load average at the end "
             f"{os.getloadavg()[0]:.2f}; {wall_s:.0f} s in all", "",
             f"| side | pairs/s (median over rounds) | / bare limit | / step alone | / {first} |",
             "|---|---:|---:|---:|---:|"]
    for n in names:
        v = per_round[n]
        if n == loader:
            lines.append(f"| {n} | {statistics.median(v):.1f} | — | — | — |")
            continue
        if n == cached:
            lines.append(f"| {n} (DATA.IMAGE_CACHE_MB {CACHE_MB}, after an untimed epoch) | "
                         f"{statistics.median(v):.1f} | — | — | {ratio_cell(v, per_round[loader])} × the loader "
                         f"alone |")
            continue
        against_own = ratio_cell(v, per_round[own]) if n in loops and n != own else "—"
        lines.append(f"| {n}{' (' + first + ')' if n == own else ''} | {statistics.median(v):.1f} | "
                     f"{ratio_cell(v, per_round[bare]) if n != bare else '—'} | "
                     f"{ratio_cell(v, per_round[step]) if n in loops else '—'} | {against_own} |")
    lines.append(f"| one run's limit with the data (the step alone and the loader alone sharing {cores} cores without "
                 f"loss) | {statistics.median(with_data):.1f} | {ratio_cell(with_data, per_round[bare])} | — | — |")
    best = max(loops, key=lambda n: statistics.median(per_round[n]))
    lines += ["", "Ratios are per round, median (min–max). The loop's gap to the step alone is what the data costs "
                  "(decoding, cutting and augmenting views on the same cores); the step's gap to the bare limit is "
                  "the method's own work and objcrop's machinery (bench_step.py separates those).", "",
              f"Fastest loop layout in this run: **{best}**, {statistics.median(per_round[best]):.1f} pairs/s, "
              f"{ratio_cell(per_round[best], per_round[own])} × {first} and "
              f"{ratio_cell(per_round[best], with_data)} × one run's limit with the data (runs side by side can "
              f"exceed it: a step on one thread uses its core better than a step on two, bench_layout.py)."]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side:
        run_side(args, args.data)
        return 0
    import bench_tta
    from _report import emit_markdown

    wall = time.perf_counter()
    cores = os.cpu_count() or 1
    layouts = [parse_layout(s) for s in args.layouts] if args.layouts else default_layouts(args, cores)
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as tmp:
        data = args.data
        if not data:
            from objcrop.datasets.synth import generate

            data = os.path.join(tmp, "data")
            generate(data, args.images, seed=0, variant="study-plain", progress=False)
        sides = side_names(layouts, cores)
        per_round = run_rounds(args, data, sides)
        cfg = bench_tta.recipe_cfg(args, data, "")  # the recipe's own DATA.NUM_WORKERS, for the report
        from objcrop.datasets import load_dataset

        n_images = len(load_dataset(f"synth:{data}:train")[0])
    emit_markdown(report(args, cfg, sides, per_round, n_images, argv, time.perf_counter() - wall), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
