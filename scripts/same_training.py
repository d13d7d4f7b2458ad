#!/usr/bin/env python
"""Is a pretraining run trained again the same training as the recorded one?

docs/preregistration.md (clarifications, detection): a registered run whose checkpoint was not kept
is pretrained again with the same seed and settings for its fine-tuning only, and a second CPU
training is checked against the first's recorded losses. This is that check: for each RUN_DIR (an
output's runs/pretrain/<name>, finished or still training), the loss of every iteration its
metrics.jsonl holds is compared, bit for bit, with the recorded run of the same name. It reads
losses only, never a probe score (the registered arms' scores stay withheld until they are complete).

    python scripts/same_training.py docs/results/study output/study/runs/pretrain/<name> [...]

Prints one line per run: "same: N of M recorded iterations identical" or the first iteration whose
loss differs. Exit status 0 when every run is the same so far, 1 when one differs, 2 on bad input.
With --json OUT/extras/second_trainings_<OUT's name>.json the verdicts are kept (merged with the file's),
so that `objcrop report record OUT RECORD` records them and the results page names each second training
(one file per output folder: a record keeps one file per path).
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional


def losses(steps: List[dict]) -> Dict[int, float]:
    """iteration -> loss; a resumed run logs the iterations after its checkpoint again: the last one counts."""
    return {int(s["iteration"]): float(s["loss"]) for s in steps if "iteration" in s and "loss" in s}


def first_difference(recorded: Dict[int, float], again: Dict[int, float]) -> Optional[int]:
    """The first iteration both hold whose losses differ; None when every common one is identical."""
    return next((i for i in sorted(set(recorded) & set(again)) if recorded[i] != again[i]), None)


def compare(record, run_dir: str) -> dict:
    """The verdict on one run trained again: {"same", "common", "recorded", "first_difference"}."""
    name = os.path.basename(os.path.normpath(run_dir))
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise ValueError(f"{metrics}: no such file (a pretraining run's output folder?)")
    recorded = losses(record.metrics(f"runs/pretrain/{name}"))
    if not recorded:
        raise ValueError(f"{record.path}: holds no logged losses of runs/pretrain/{name}")
    from objcrop.report.record_file import read_metrics_file

    # the record's reader: a torn last line of a run still training is skipped, as recording skips it
    again = losses(read_metrics_file(metrics))
    common = sorted(set(recorded) & set(again))
    if not common:
        raise ValueError(f"{metrics}: no iteration in common with the recorded run")
    differs = first_difference(recorded, again)
    if differs is None:
        print(f"{name}: same: {len(common)} of {len(recorded)} recorded iterations identical")
    else:
        print(f"{name}: differs at iteration {differs} (recorded loss {recorded[differs]!r}, "
              f"this run {again[differs]!r}); {len(common)} iterations in common")
    return {"same": differs is None, "common": len(common), "recorded": len(recorded), "first_difference": differs}


def keep(path: str, verdicts: Dict[str, dict]) -> None:
    """Merge the verdicts into the JSON file at `path` (a run's newer verdict replaces its older one)."""
    from objcrop.io import read_json, write_json_atomic

    kept = read_json(path) if os.path.isfile(path) else {}
    write_json_atomic(path, {**kept, **verdicts})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("record", help="the study's record: docs/results/<study> or its record.json")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="runs/pretrain/<name> folders trained again")
    p.add_argument("--json", metavar="FILE", help="keep the verdicts in this JSON file (merged), e.g. "
                                                  "OUT/extras/second_trainings_<OUT's name>.json, which `objcrop report "
                                                  "record` records")
    args = p.parse_args(argv)
    from objcrop.report.record import StudyRecord

    try:
        record = StudyRecord.open(args.record)
        verdicts = {os.path.basename(os.path.normpath(d)): compare(record, d) for d in args.run_dirs}
        if args.json:
            keep(args.json, verdicts)
    except (OSError, ValueError) as e:
        print(f"same_training.py: {e}", file=sys.stderr)
        return 2
    return 0 if all(v["same"] for v in verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
