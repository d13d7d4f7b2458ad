"""Pretraining throughput: the objcrop trainer against a plain PyTorch MoCo-v2 loop, and the data
loader against the training step, at the demo settings (eval_configs/pretrain/demo.yaml).

1. Trainer overhead: the same MoCo-v2 model, batch and pre-computed view tensors, trained for the
   same number of steps by (a) a minimal loop (forward, zero_grad, backward, step) and (b) the objcrop
   trainer (sampler, DataLoader, lr schedule and its hooks: divergence guard, counters, metrics.jsonl,
   TensorBoard, progress bar, checkpoint at the end, model_final.pth, results.json). Compared by the median step time (the first steps are warm-up), in one
   process, alternating plain / trainer / plain so that drifting machine load shows up. Target: <= 5 %.
2. Loader vs step: images/s of the demo's DataLoader (real images, proposals, the view policy) on
   its own, against images/s of training steps. Target: ratio >= 2 (the loader is never the bottleneck).

    python benchmarks/bench_trainer.py --out benchmarks/out/bench_trainer.md [--quick]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="", help="write the report (markdown) here as well as to stdout")
    p.add_argument("--quick", action="store_true", help="few steps (a smoke run; noisy figures)")
    p.add_argument("--config-file", default="pretrain/demo.yaml", help="pretraining preset the settings come from")
    p.add_argument("--data", default="", help="a directory written by `objcrop data synth` (default: generate 600 images in a temp dir)")
    p.add_argument("--steps", type=int, default=0, help="measured steps per loop (default 20, --quick 6)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE ...")
    return p.parse_args(argv)


def load_cfg(config_file, opts, extra):
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    return merge_config(get_pretrain_cfg, config_file, list(opts) + list(extra))


def build_model(cfg):
    from objcrop.pretrain.engine.trainer import seed_all
    from objcrop.pretrain.methods import METHODS

    seed_all(cfg.PRETRAIN.SEED)
    model = METHODS[cfg.PRETRAIN.METHOD].from_config(cfg, 1, cfg.PRETRAIN.BATCH_SIZE)
    if channels_last(cfg):
        model = model.to(memory_format=torch.channels_last)
    return model.train()


def channels_last(cfg) -> bool:
    """The memory format the trainer picks on the CPU (PRETRAIN.CHANNELS_LAST applies there only under bf16
    autocast), so that the plain loop computes what the trainer computes."""
    from objcrop.pretrain.engine.optim import uses_channels_last

    return uses_channels_last(cfg, torch.device("cpu"))


def cpu_amp(cfg) -> bool:
    """Whether the trainer computes under bf16 autocast on the CPU (PRETRAIN.AMP_CPU)."""
    from objcrop.pretrain.engine.optim import uses_autocast

    return uses_autocast(cfg, torch.device("cpu"))


def cpu_autocast(cfg):
    """The trainer's autocast on the CPU: bf16 with PRETRAIN.AMP_CPU, else none."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_amp(cfg))


def plain_loop(cfg, views1, views2, steps):
    """The minimal MoCo-v2 loop (as in moco/main_moco.py's train()); returns per-step seconds."""
    model = build_model(cfg)
    lr = cfg.PRETRAIN.BASE_LR * cfg.PRETRAIN.BATCH_SIZE / cfg.PRETRAIN.BASE_BATCH_SIZE
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                          momentum=cfg.PRETRAIN.MOMENTUM, weight_decay=cfg.PRETRAIN.WEIGHT_DECAY)
    b = cfg.PRETRAIN.BATCH_SIZE
    times = []
    for i in range(steps):
        t = time.perf_counter()
        x1, x2 = views1[i * b:(i + 1) * b], views2[i * b:(i + 1) * b]
        if channels_last(cfg):
            x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        with cpu_autocast(cfg):
            loss = model(x1, x2)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times


class FixedViews(torch.utils.data.Dataset):
    def __init__(self, views1, views2):
        self.views1, self.views2 = views1, views2

    def __len__(self):
        return len(self.views1)

    def __getitem__(self, key):
        index, _ = key
        return self.views1[index], self.views2[index], True


def trainer_loop(cfg, views1, views2, out_dir):
    """The objcrop trainer on the same tensors; per-step seconds from its own metrics.jsonl."""
    import logging

    from objcrop.pretrain.engine.data import ShardedResumableSampler, build_loader
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    class TensorTrainer(PretrainTrainer):
        def build_data(self):
            sampler = ShardedResumableSampler(len(views1), self.batch_per_process, 0, 1, self.cfg.PRETRAIN.SEED)
            return None, sampler, build_loader(FixedViews(views1, views2), sampler, 0, False)

    logger = logging.getLogger("bench.trainer")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    PretrainTrainer(cfg, DistContext(), logger)  # validates the config the same way
    TensorTrainer(cfg, DistContext(), logger).train()
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [cfg.PRETRAIN.BATCH_SIZE / r["images_per_s"] for r in rows]


def loader_throughput(cfg, batches):
    """images/s of the real demo DataLoader alone (reading, proposals, views, collation)."""
    from objcrop.pretrain.distributed import DistContext
    from objcrop.pretrain.engine.trainer import PretrainTrainer

    trainer = PretrainTrainer(cfg, DistContext(), _quiet_logger())
    _, sampler, loader = trainer.build_data()
    sampler.set_epoch(0)
    it = iter(loader)
    next(it)  # worker start-up is paid once per run, not per batch
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            v1, _, _ = next(it)
        except StopIteration:
            break
        n += v1.shape[0]
    return n / (time.perf_counter() - t), n


def _quiet_logger():
    import logging

    logger = logging.getLogger("bench.quiet")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def median_after_warmup(times, warmup=2):
    return statistics.median(times[warmup:] if len(times) > warmup + 2 else times)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # The runs' checkpoints are half a gigabyte: they go when the benchmark ends, even on an error.
    with tempfile.TemporaryDirectory(prefix="objcrop_bench_trainer_") as tmp:
        return measure(args, argv, tmp)


def measure(args, argv, tmp: str) -> int:
    steps = args.steps or (6 if args.quick else 20)
    data = args.data
    if not data:
        from objcrop.datasets.synth import generate

        data = os.path.join(tmp, "synth")
        generate(data, num_images=600, seed=0)
    base = ["DATA.DATASET", f"synth:{data}:train", "DATA.PROPOSALS", "gt", "VIEWS.POLICY", "obj-obj-dilate"]

    # 1. trainer vs plain loop on identical tensors
    probe_cfg = load_cfg(args.config_file, args.opts, base)
    b, size = probe_cfg.PRETRAIN.BATCH_SIZE, probe_cfg.VIEWS.CROP_SIZE
    g = torch.Generator().manual_seed(0)
    views1 = torch.randn(steps * b, 3, size, size, generator=g)
    views2 = torch.randn(steps * b, 3, size, size, generator=g)
    run_dir = os.path.join(tmp, "trainer_run")
    cfg = load_cfg(args.config_file, args.opts, base + ["OUTPUT_DIR", run_dir, "PRETRAIN.EPOCHS", "1",
                                                         "LOG.PERIOD", "1", "LOG.PRINT_PERIOD", "1000000"])
    plain_a = plain_loop(cfg, views1, views2, steps)
    trainer = trainer_loop(cfg, views1, views2, run_dir)
    plain_b = plain_loop(cfg, views1, views2, steps)
    plain_med = median_after_warmup(plain_a + plain_b)
    trainer_med = median_after_warmup(trainer)
    overhead = trainer_med / plain_med - 1

    # 2. loader alone vs training steps
    loader_cfg = load_cfg(args.config_file, args.opts, base + ["OUTPUT_DIR", os.path.join(tmp, "loader_run")])
    loader_ips, loader_images = loader_throughput(loader_cfg, max(4, steps))
    step_ips = b / plain_med
    ratio = loader_ips / step_ips

    c = cfg.PRETRAIN
    lines = [
        "# bench_trainer: objcrop pretraining throughput",
        "",
        f"command: `python benchmarks/bench_trainer.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"settings: {args.config_file} -> {c.METHOD} {c.ARCH}, batch {b}, {size}-px views, K {c.MOCO.K}, "
        f"channels_last {channels_last(cfg)} (PRETRAIN.CHANNELS_LAST {c.CHANNELS_LAST}), bf16 autocast "
        f"{cpu_amp(cfg)}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs; load average at the end {os.getloadavg()[0]:.2f}",
        "",
        "| loop | steps | median step (s) | images/s |",
        "|---|---|---|---|",
        f"| plain PyTorch MoCo-v2 (2 passes) | {len(plain_a) + len(plain_b)} | {plain_med:.3f} | {b / plain_med:.1f} |",
        f"| objcrop trainer | {len(trainer)} | {trainer_med:.3f} | {b / trainer_med:.1f} |",
        "",
        f"trainer overhead: {overhead * 100:+.1f} % (target <= 5 %): {'met' if overhead <= 0.05 else 'NOT met'}",
        f"plain-loop passes before/after the trainer: median {median_after_warmup(plain_a):.3f} s / "
        f"{median_after_warmup(plain_b):.3f} s per step (their difference is the machine's drift)",
        "",
        "| demo data loader alone | training steps | ratio |",
        "|---|---|---|",
        f"| {loader_ips:.1f} images/s ({loader_images} images, {loader_cfg.DATA.NUM_WORKERS} worker(s)) | "
        f"{step_ips:.1f} images/s | {ratio:.2f} |",
        "",
        f"loader / step ratio: {ratio:.2f} (target >= 2): {'met' if ratio >= 2 else 'NOT met'}",
    ]
    from _report import emit_markdown

    emit_markdown(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
