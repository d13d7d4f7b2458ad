"""The training step against the compute limit: objcrop's MoCo-v2 and BYOL steps (the trainer's own
`run_step`) against a bare torchvision ResNet step on the same input tensors (issue 22 §2).

The limit for MoCo-v2 is a bare step of the same ResNet: forward the queries with gradient, backward,
an SGD step, and forward the keys without gradient through a second copy. For BYOL it is the bare
pair: the online ResNet forward on both views, backward, SGD, and the target ResNet forward on both
views without gradient. Both bare models have torchvision's own `fc` (num_classes = the method's
output size); everything objcrop adds (projection head, predictor, shuffle-BN, queue, momentum
update, loss, lr schedule, metrics) counts against it. A third side per method, "bare + method",
adds to the bare step the arithmetic the method itself prescribes and any implementation pays
(MoCo-v2: the 2-layer projection head on both encoders and the momentum update of the key encoder;
BYOL: projector, predictor and the target's momentum update), as plain torch modules; objcrop's
ratio to it is what objcrop's own machinery (shuffle-BN, queue, bookkeeping) costs. `--chunked` also times MoCo-v2 on the chunked
shuffle-BN path objcrop had before the one-pass split BN (plain BN, each encoder forwarded in
BN_SPLITS chunks), for a before/after ratio measured in the same run. `--layouts` times MoCo-v2 with
the model in channels_last, as PRETRAIN.CHANNELS_LAST ran it on CPU before the trainer kept it for
CUDA (the study's shape: --arch resnet18 --batch 256 --layouts).

Sides are timed in interleaved rounds (round r: every side runs its steps, in turn), so drifting
machine load hits them alike; each ratio is the median over rounds of (limit step time / objcrop
step time), i.e. objcrop's pairs/s as a fraction of the limit's.

    python benchmarks/bench_step.py --out benchmarks/out/step.md [--quick] [--chunked]
    python benchmarks/bench_step.py --device cuda --size 224 --batch 128 --out benchmarks/gpu/step_<gpu>.md

On CUDA (issue 22 §5) both sides run as objcrop's GPU presets train: bf16 autocast and channels_last
(PRETRAIN.AMP, PRETRAIN.CHANNELS_LAST), every step timed to its end (torch.cuda.synchronize).
`--cpu-amp` (default: where the CPU has native bf16) adds, on the CPU, MoCo-v2's bare and objcrop steps under bf16 autocast in channels_last
(PRETRAIN.AMP_CPU with CHANNELS_LAST), for the speed-up over float32 and the bf16 limit ratio.
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import torch

MOCO_TARGET = 0.95  # issue 22: the objcrop step at >= 0.95x the bare-step limit, shuffle-BN on


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="", help="write the report (markdown) here as well as to stdout")
    p.add_argument("--quick", action="store_true", help="ResNet-18, batch 16, 32 px, 2 rounds (a smoke run; noisy)")
    p.add_argument("--arch", default="", help="torchvision ResNet (default resnet50; --quick resnet18)")
    p.add_argument("--batch", type=int, default=0, help="pairs per step (default 32; --quick 16)")
    p.add_argument("--size", type=int, default=0, help="view side in pixels (default 64; --quick 32)")
    p.add_argument("--K", type=int, default=256, help="MoCo queue length")
    p.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 5; --quick 2)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round (after one warm-up step each)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="cpu: fp32, contiguous; cuda: bf16 autocast and channels_last on both sides")
    p.add_argument("--layouts", action="store_true",
                   help="also time MoCo-v2 with the model in channels_last (what PRETRAIN.CHANNELS_LAST did on CPU)")
    p.add_argument("--cpu-amp", default="auto", choices=["auto", "on", "off"],
                   help="also time MoCo-v2 (bare and objcrop) under bf16 autocast in channels_last on the CPU "
                        "(PRETRAIN.AMP_CPU; needs a CPU with native bf16; auto: where the CPU has it)")
    p.add_argument("--chunked", action="store_true",
                   help="also time MoCo-v2 on the old chunked shuffle-BN path (before/after ratio), and with "
                        "--cpu-amp its bf16 channels_last step with the split BN regrouped by reshape (before)")
    p.add_argument("--compile", action="store_true",
                   help="also time MoCo-v2's bare limit with both ResNets under torch.compile (inductor; compiling "
                        "takes a minute or more before the rounds), for the compiled / eager ratio")
    p.add_argument("--methods", nargs="+", default=["moco_v2", "byol"], choices=["moco_v2", "byol"],
                   help="which methods to time against their limits")
    args = p.parse_args(argv)
    if args.device == "cuda" or args.cpu_amp == "off":
        args.cpu_amp = False
    else:
        from objcrop.pretrain.engine.optim import cpu_has_native_bf16

        if args.cpu_amp == "on" and not cpu_has_native_bf16():
            p.error("--cpu-amp on: this CPU has no native bf16 (AMX / AVX512-BF16)")
        args.cpu_amp = cpu_has_native_bf16()
    return args


def objcrop_step(method: str, arch: str, batch: int, K: int, out_dir: str, chunked: bool = False,
                 channels_last: bool = False, device: str = "cpu", cpu_amp: bool = False, regrouped: bool = False):
    """A callable running one PretrainTrainer.run_step: the trainer's own step, built without data."""
    from objcrop.pretrain.config import get_pretrain_cfg

    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["PRETRAIN.METHOD", method, "PRETRAIN.ARCH", arch, "PRETRAIN.BATCH_SIZE", batch,
                         "PRETRAIN.MOCO.K", K, "OUTPUT_DIR", out_dir, "DATA.NUM_WORKERS", 0]
                        + (["PRETRAIN.AMP_CPU", True, "PRETRAIN.CHANNELS_LAST", True] if cpu_amp else []))
    return trainer_step(cfg, device, chunked, channels_last, regrouped)


def trainer_step(cfg, device: str = "cpu", chunked: bool = False, channels_last: bool = False, regrouped: bool = False):
    """objcrop_step for a whole pretraining config (a preset's, as bench_loop.py times it)."""
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.optim import build_optimisation, scaled_lr
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    batch = cfg.PRETRAIN.BATCH_SIZE
    logger = logging.getLogger("bench.step")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    t = PretrainTrainer(cfg, DistContext(device=torch.device(device)), logger)
    t.method = t.build_method()
    if chunked:
        use_chunked_shuffle_bn(t.method)
    if regrouped:
        use_regrouped_channels_last(t.method)
    if channels_last:  # the inputs need not follow: the first convolution's output takes the weights' format
        t.method.to(memory_format=torch.channels_last)
    t.model = t.method
    t.optimizer, t.scaler, t.autocast = build_optimisation(t.method, cfg, torch.device(device))
    t.max_iter, t.peak_lr, t.warmup = 10**9, scaled_lr(cfg), 0  # a long cosine: lr ~ constant
    t.method.train()
    has_boxes = torch.ones(batch, dtype=torch.bool, device=device)
    return lambda x1, x2: t.run_step(x1, x2, has_boxes), getattr(t.method, "bn_splits", None)


def use_chunked_shuffle_bn(method) -> None:
    """MoCo-v2 as it was before the one-pass split BN: plain BN layers, each encoder forwarded as
    x.chunk(bn_splits) one chunk after another (the same statistics; tests/test_pretrain_methods.py)."""
    from objcrop.pretrain.methods.split_bn import SplitBatchNorm1d, SplitBatchNorm2d

    for module in method.modules():
        if isinstance(module, (SplitBatchNorm1d, SplitBatchNorm2d)):
            module.num_splits = 1
    s = method.bn_splits
    method._encode_in_bn_groups = lambda enc, x: torch.cat([enc(c) for c in x.chunk(s)], dim=0) if s > 1 else enc(x)


def use_regrouped_channels_last(method) -> None:
    """MoCo-v2's split BN as it was on a channels_last batch before the layers chunked it: reordered
    for one pass, every BN input regrouped by a copying reshape (and copied back)."""
    from objcrop.pretrain.methods.split_bn import interleave_groups

    s = method.bn_splits

    def encode(enc, x):
        if s == 1 or not enc.training or x.shape[0] % s:
            return enc(x)
        order = interleave_groups(x.shape[0], s, x.device)
        return enc(x[order])[torch.argsort(order)]

    method._encode_in_bn_groups = encode


def bare_step(method: str, arch: str, out_dim: int, lr: float, device: str = "cpu", method_work: dict = None,
              cpu_amp: bool = False, compiled: bool = False):
    """The compute limit: torchvision ResNets, SGD, fwd + bwd + no-grad fwd (MoCo) or the pair (BYOL);
    on CUDA in channels_last under bf16 autocast, as objcrop's GPU presets train.

    `method_work` (the method's config block as a dict) adds what the method prescribes on top: its
    heads in place of torchvision's `fc` and the momentum update of the second network. `compiled` runs
    both ResNets through torch.compile (inductor, its default mode): whether compiling pays here."""
    import contextlib

    import torchvision

    torch.manual_seed(0)
    cuda = device == "cuda"
    fmt = torch.channels_last if cuda or cpu_amp else torch.contiguous_format
    nets = [getattr(torchvision.models, arch)(weights=None, num_classes=out_dim) for _ in range(2)]
    predictor = None
    if method_work is not None:
        from objcrop.pretrain.models import mlp_head

        width = nets[0].fc.in_features
        for net in nets:  # MoCo-v2's head has no BN (HEAD_BN off by default); BYOL's projector has
            net.fc = (mlp_head(width, method_work["MLP_HIDDEN"], method_work["DIM"], batch_norm=method_work["HEAD_BN"])
                      if method == "moco_v2" else mlp_head(width, method_work["PROJ_HIDDEN"], method_work["PROJ_DIM"]))
        if method == "byol":
            predictor = mlp_head(method_work["PROJ_DIM"], method_work["PROJ_HIDDEN"], method_work["PROJ_DIM"])
    online, target = (n.train().to(device, memory_format=fmt) for n in nets)
    if compiled:
        online, target = torch.compile(online), torch.compile(target)
    amp = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if cuda or cpu_amp else contextlib.nullcontext
    for p in target.parameters():
        p.requires_grad = False
    head = (lambda z: predictor(z)) if predictor is not None else (lambda z: z)
    if predictor is not None:
        predictor.train().to(device)
    params = list(online.parameters()) + (list(predictor.parameters()) if predictor is not None else [])
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    online_w, target_w = list(online.parameters()), list(target.parameters())

    def momentum_update():
        if method_work is not None:
            with torch.no_grad():
                torch._foreach_lerp_(target_w, online_w, 0.001)

    def moco(x1, x2):
        with amp():
            loss = online(x1).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        momentum_update()
        with torch.no_grad(), amp():
            target(x2)
        return float(loss)

    def byol(x1, x2):
        with amp():
            loss = head(online(x1)).float().pow(2).mean() + head(online(x2)).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        momentum_update()
        with torch.no_grad(), amp():
            target(x1), target(x2)
        return float(loss)

    return moco if method == "moco_v2" else byol


def time_rounds(sides: dict, x1, x2, rounds: int, steps: int, after_round=None) -> dict:
    """{side: [median step seconds of each round]}; one untimed warm-up step per side first.
    `after_round(per_round)` runs after each round (the report so far: a killed run still leaves one).
    On CUDA each step is timed to the end of its kernels, not to the end of their launch."""
    sync = torch.cuda.synchronize if x1.is_cuda else (lambda: None)
    for fn in sides.values():
        fn(x1, x2)
    sync()
    per_round = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                fn(x1, x2)
                sync()
                times.append(time.perf_counter() - t)
            per_round[name].append(statistics.median(times))
        print(f"[bench_step] round {len(per_round[name])}/{rounds}: "
              + ", ".join(f"{n} {v[-1]:.3f} s" for n, v in per_round.items()), flush=True)
        if after_round is not None:
            after_round(per_round)
    return per_round


def ratio(limit, ours):
    """Median over rounds of limit/ours (objcrop's pairs/s as a fraction of the limit's), min, max."""
    r = [a / b for a, b in zip(limit, ours)]
    return statistics.median(r), min(r), max(r)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    arch = args.arch or ("resnet18" if args.quick else "resnet50")
    batch = args.batch or (16 if args.quick else 32)
    size = args.size or (32 if args.quick else 64)
    rounds = args.rounds or (2 if args.quick else 5)
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(batch, 3, size, size, generator=g).to(args.device) for _ in range(2))
    from objcrop.pretrain.config import get_pretrain_cfg

    defaults = get_pretrain_cfg().PRETRAIN
    out_dim = {"moco_v2": defaults.MOCO.DIM, "byol": defaults.BYOL.PROJ_DIM}
    method_work = {"moco_v2": dict(defaults.MOCO), "byol": dict(defaults.BYOL)}
    lr = defaults.BASE_LR * batch / defaults.BASE_BATCH_SIZE
    sides, splits = {}, None
    with tempfile.TemporaryDirectory(prefix="objcrop_bench_step_") as tmp:
        for m in args.methods:
            sides[f"bare {m}"] = bare_step(m, arch, out_dim[m], lr, args.device)
            sides[f"bare + method {m}"] = bare_step(m, arch, out_dim[m], lr, args.device, method_work[m])
            sides[f"objcrop {m}"], s = objcrop_step(m, arch, batch, args.K, os.path.join(tmp, m), device=args.device)
            splits = s if m == "moco_v2" else splits
            if m == "moco_v2" and args.chunked:
                sides["objcrop moco_v2 chunked"], _ = objcrop_step(m, arch, batch, args.K, os.path.join(tmp, "c"), True,
                                                                   device=args.device)
            if m == "moco_v2" and args.cpu_amp:  # (parse_args resolved "auto" to True or False)
                sides["bare moco_v2 bf16"] = bare_step(m, arch, out_dim[m], lr, cpu_amp=True)
                sides["objcrop moco_v2 bf16"], _ = objcrop_step(m, arch, batch, args.K, os.path.join(tmp, "b"), cpu_amp=True)
                if args.chunked:
                    sides["objcrop moco_v2 bf16 regrouped"], _ = objcrop_step(
                        m, arch, batch, args.K, os.path.join(tmp, "r"), cpu_amp=True, regrouped=True)
            if m == "moco_v2" and args.compile:
                sides["bare moco_v2 compiled"] = bare_step(m, arch, out_dim[m], lr, args.device, compiled=True)
            if m == "moco_v2" and args.layouts:
                sides["objcrop moco_v2 channels_last"], _ = objcrop_step(m, arch, batch, args.K, os.path.join(tmp, "l"),
                                                                         channels_last=True, device=args.device)
        from _report import emit_markdown

        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()

        def write(per_round, final=False):
            lines = report(args, arch, batch, size, len(next(iter(per_round.values()))), splits, per_round,
                           load_before, time.perf_counter() - t0, argv)
            if final:
                emit_markdown(lines, args.out)
            elif args.out:
                from objcrop.io import write_text_atomic

                write_text_atomic(args.out, "\n".join(lines) + "\n")

        write(time_rounds(sides, x1, x2, rounds, args.steps, write), final=True)
    return 0


def _precision(args) -> str:
    if args.device == "cuda":
        return f"bf16 autocast and channels_last on {torch.cuda.get_device_name()}"
    return "fp32 on CPU" + (" (the bf16 sides: bf16 autocast and channels_last on CPU)" if args.cpu_amp else "")


def report(args, arch, batch, size, rounds, splits, per_round, load_before, wall, argv):
    """The markdown report of the rounds done so far (`rounds` of them)."""
    med = {name: statistics.median(v) for name, v in per_round.items()}
    lines = [
        "# bench_step: the training step against the compute limit",
        "",
        f"command: `python benchmarks/bench_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"settings: {arch}, batch {batch} pairs, {size}-px views, MoCo K {args.K}, shuffle-BN groups {splits}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {os.cpu_count()} CPUs, {_precision(args)}; "
        f"{rounds} interleaved rounds x {args.steps} steps per side ({wall:.0f} s); "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other work slows every side alike "
        f"only on average: the per-round ratios show the spread)",
        "",
        "| side | median step (s) | pairs/s |",
        "|---|---:|---:|",
    ] + [f"| {name} | {t:.3f} | {batch / t:.1f} |" for name, t in med.items()] + [
        "",
        "| ratio (pairs/s over pairs/s, per round) | median | min | max |",
        "|---|---:|---:|---:|",
    ]
    for m in args.methods:
        r = ratio(per_round[f"bare {m}"], per_round[f"objcrop {m}"])
        lines.append(f"| objcrop {m} / bare limit | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
        r = ratio(per_round[f"bare {m}"], per_round[f"bare + method {m}"])
        lines.append(f"| bare + {m}'s own arithmetic / bare limit (what any implementation pays) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
        r = ratio(per_round[f"bare + method {m}"], per_round[f"objcrop {m}"])
        lines.append(f"| objcrop {m} / bare + its own arithmetic (objcrop's machinery) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    if "objcrop moco_v2 chunked" in per_round:
        r = ratio(per_round["bare moco_v2"], per_round["objcrop moco_v2 chunked"])
        lines.append(f"| objcrop moco_v2, chunked shuffle-BN (before) / bare limit | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
        r = ratio(per_round["objcrop moco_v2 chunked"], per_round["objcrop moco_v2"])
        lines.append(f"| one-pass / chunked shuffle-BN (speed-up) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    if "objcrop moco_v2 channels_last" in per_round:
        r = ratio(per_round["bare moco_v2"], per_round["objcrop moco_v2 channels_last"])
        lines.append(f"| objcrop moco_v2, channels_last (before, on CPU) / bare limit | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
        r = ratio(per_round["objcrop moco_v2 channels_last"], per_round["objcrop moco_v2"])
        lines.append(f"| contiguous / channels_last (speed-up) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    if "objcrop moco_v2 bf16" in per_round:
        r = ratio(per_round["objcrop moco_v2"], per_round["objcrop moco_v2 bf16"])
        lines.append(f"| objcrop moco_v2, bf16 autocast on the CPU / float32 (speed-up) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
        r = ratio(per_round["bare moco_v2 bf16"], per_round["objcrop moco_v2 bf16"])
        lines.append(f"| objcrop moco_v2 bf16 / bare bf16 limit | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    if "objcrop moco_v2 bf16 regrouped" in per_round:
        r = ratio(per_round["bare moco_v2 bf16"], per_round["objcrop moco_v2 bf16 regrouped"])
        lines.append(f"| objcrop moco_v2 bf16, split BN regrouped by reshape (before) / bare bf16 limit | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
        r = ratio(per_round["objcrop moco_v2 bf16 regrouped"], per_round["objcrop moco_v2 bf16"])
        lines.append(f"| channels_last split BN: chunks / regrouped (speed-up) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    if "bare moco_v2 compiled" in per_round:
        r = ratio(per_round["bare moco_v2"], per_round["bare moco_v2 compiled"])
        lines.append(f"| bare moco_v2 under torch.compile / eager (speed-up) | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} |")
    if "moco_v2" in args.methods:
        r = ratio(per_round["bare moco_v2"], per_round["objcrop moco_v2"])[0]
        lines += ["", f"MoCo-v2 target >= {MOCO_TARGET}x the limit with shuffle-BN on: {'met' if r >= MOCO_TARGET else 'NOT met'} ({r:.3f})"]
    return lines


if __name__ == "__main__":
    sys.exit(main())
