"""Keep a study's results beside the code: copy the small result files of a pipeline output into a
record directory (docs/results/<preset>/ for the study), without checkpoints, caches or data.

    python scripts/study_records.py OUT/study docs/results/study

Why: a study that takes longer than one machine's lifetime (hours of CPU, a GPU lent for minutes)
loses its outputs with the machine. The record keeps what the tables are made of — every run's
results.json, config.yaml and training metrics, the generated data's meta.json, the supervised
bound's learnability.json, scripts/study_extras.py's measurements and each pipeline log — so that

* `objcrop report RECORD/runs` and scripts/study_report.py rebuild the tables from it, and
* `run_pipeline.sh --records RECORD` skips every task whose result it holds, on any machine,
  and runs only what is missing (or what a missing result needs, e.g. the checkpoint a
  detection fine-tuning starts from).

Copies are atomic and overwrite the record's copy of the same file: a rerun task's new result
replaces its old one. Pipeline logs are kept one per output directory (logs/pipeline-<id>.log),
so that the record's wall times add up over every machine that worked on it.
"""
import argparse
import glob
import hashlib
import os
import shutil
import sys
from typing import Iterator, List, Tuple

# beside each results.json: what the report and study_report read of a run
RUN_FILES = ("results.json", "config.yaml", "metrics.jsonl", "metrics.json")
OTHER_PATTERNS = ("data/meta.json", "supervised*/learnability.json", "extras/*.json", "extras/*.png",
                  "extras/commands.txt")


def _log_id(path: str) -> str:
    """A pipeline log's id: its first line (the run's start) never changes while the log grows."""
    with open(path, "rb") as f:
        first = f.readline()
    return hashlib.sha1(first + os.path.abspath(path).encode()).hexdigest()[:10]


def record_files(out: str) -> Iterator[Tuple[str, str]]:
    """(source, path relative to the record) of every file a record keeps of `out`."""
    for result in glob.glob(os.path.join(out, "runs", "**", "results.json"), recursive=True):
        run_dir = os.path.dirname(result)
        for name in RUN_FILES:
            src = os.path.join(run_dir, name)
            if os.path.isfile(src):
                yield src, os.path.relpath(src, out)
    for pattern in OTHER_PATTERNS:
        for src in glob.glob(os.path.join(out, pattern)):
            yield src, os.path.relpath(src, out)
    log = os.path.join(out, "logs", "pipeline.log")
    if os.path.isfile(log) and os.path.getsize(log) > 0:
        yield log, os.path.join("logs", f"pipeline-{_log_id(log)}.log")


def save(out: str, record: str) -> List[str]:
    """Copy `out`'s result files into `record`; returns the record paths written."""
    from objcrop.io import atomic_path

    if not os.path.isdir(out):
        raise SystemExit(f"study_records: {out}: no such output directory")
    written = []
    for src, rel in sorted(record_files(out)):
        with atomic_path(os.path.join(record, rel)) as tmp:
            shutil.copyfile(src, tmp)
        written.append(rel)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="a pipeline output directory (run_pipeline.sh --out)")
    p.add_argument("record", help="the record directory to update (created when missing)")
    args = p.parse_args(argv)
    written = save(args.out, args.record)
    runs = sum(1 for rel in written if rel.endswith("results.json"))
    print(f"study_records: {len(written)} files ({runs} results) from {args.out} recorded in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
