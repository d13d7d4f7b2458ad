"""The training step at the study's shape, where its CPU hours go, with torch.compile's side (issue 22 §3).

bench_step.py's sides and ratios at the shape of the study's b256-100e recipe (ResNet-18, batch 256,
64-px views, MoCo K 1024; eval_configs/pretrain/study/r18_b256_e100_k1024-warmup10.yaml), plus the bare
limit compiled by torch.compile (inductor): does compiling pay on this CPU, at the shape the time-to-
accuracy benchmark trains? Its bf16 sides are those of bench_step's --cpu-amp (where the CPU has bf16).

    python benchmarks/bench_study_step.py --out benchmarks/out/study_step.md [--quick]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_step  # noqa: E402

STUDY_SHAPE = ["--arch", "resnet18", "--batch", "256", "--size", "64", "--K", "1024"]
QUICK_SHAPE = ["--arch", "resnet18", "--batch", "16", "--size", "32", "--K", "1024", "--rounds", "2"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="", help="write the report (markdown) here as well as to stdout")
    p.add_argument("--quick", action="store_true", help="batch 16, 32 px, 2 rounds (a smoke run; noisy)")
    args = p.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else STUDY_SHAPE
    return bench_step.main(shape + ["--compile", "--methods", "moco_v2"] + (["--out", args.out] if args.out else []))


if __name__ == "__main__":
    sys.exit(main())
