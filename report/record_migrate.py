"""Turn a legacy record directory (one file per run file, as scripts/study_records.py kept it) into
the compact record file (report/record_file.py), renaming its runs to `objcrop.records.run_name`.

    python -m objcrop.report.record_migrate docs/results/study [--remove]

A pretraining run named by the short names of before (`moco_v2_random_none_s0`) gets the key
`runs/pretrain/<run_name(Provenance.from_dict(results["pretrain"]), config PRETRAIN.BATCH_SIZE)>`,
which is what the pipeline now names it; its probe, detection and weights keys follow
(`runs/probe/<name>`, `runs/detect_voc/<name>/seed0`); reference probes (`random_init_s0`,
`supervised_s0`) keep theirs. The old keys stay findable through the record's `renamed` map.
Pictures stay where they are; with --remove the files now held by record.json are deleted.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional

from objcrop.errors import ObjcropError
from objcrop.records import Provenance, run_name
from objcrop.report import record_file
from objcrop.report.record import StudyRecord, _is_kept_as_file

# the legacy files a compact record holds (everything but pictures, the report and GPU-use logs)
LEGACY_PATTERNS = ("data/meta.json", "supervised*/learnability.json", "extras/*.json", "extras/commands.txt",
                   "logs/pipeline*.log")


def run_keys(legacy: StudyRecord) -> List[str]:
    """Every run of a legacy record: those under runs/, and any other run directory kept beside
    them (e.g. an earlier budget's probe, supervised_40k/probe/supervised_s0)."""
    import glob

    others = [os.path.relpath(os.path.dirname(p), legacy.root).replace(os.sep, "/")
              for p in glob.glob(os.path.join(legacy.root, "**", "results.json"), recursive=True)]
    return sorted(set(legacy.run_keys()) | {k for k in others if not k.startswith(("runs/", "report/"))})


def new_names(legacy: StudyRecord) -> Dict[str, str]:
    """{old pretraining run name: run_name} of a legacy record's pretraining runs."""
    names = {}
    for key in legacy.run_keys():
        parts = key.split("/")
        if len(parts) != 3 or parts[1] != "pretrain":
            continue
        results = legacy.results(key + "/results.json") or {}
        batch = ((legacy.config(key) or {}).get("PRETRAIN") or {}).get("BATCH_SIZE")
        if results.get("pretrain") and batch is not None:
            names[parts[2]] = run_name(Provenance.from_dict(results["pretrain"]), int(batch))
    if len(set(names.values())) != len(names):
        raise ObjcropError(f"{legacy.root}: two pretraining runs would get the same run_name")
    return names


def renamed_key(key: str, names: Dict[str, str]) -> str:
    """runs/<stage>/<old>/... -> runs/<stage>/<run_name>/... (a reference probe keeps its key)."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == "runs" and parts[2] in names:
        parts[2] = names[parts[2]]
    return "/".join(parts)


def _run_entry(legacy: StudyRecord, key: str) -> Dict:
    run_dir = os.path.join(legacy.root, key)
    sources = {name: os.path.join(run_dir, name) for name in record_file.RUN_FIELDS
               if os.path.isfile(os.path.join(run_dir, name))}
    return record_file.run_entry(sources)


def compact(legacy: StudyRecord) -> Dict:
    """The compact record's content of a legacy record directory."""
    data = record_file.empty()
    names = new_names(legacy)
    for key in run_keys(legacy):
        new = renamed_key(key, names)
        data["runs"][new] = _run_entry(legacy, key)
        if new != key:
            data["renamed"][key] = new
    for pattern in LEGACY_PATTERNS:
        for rel in legacy.files(pattern):
            data["files"][rel] = record_file.read_file_value(os.path.join(legacy.root, rel))
    return data


def legacy_files(legacy: StudyRecord) -> List[str]:
    """The files of a legacy record that its compact record holds (paths below the record)."""
    found = []
    for key in run_keys(legacy):
        found += [f"{key}/{name}" for name in ("results.json", "config.yaml", "metrics.jsonl", "metrics.json")
                  if os.path.isfile(os.path.join(legacy.root, key, name))]
    for pattern in LEGACY_PATTERNS:
        found += [rel for rel in legacy.files(pattern) if not _is_kept_as_file(rel)]
    return found


def migrate(path: str, remove: bool = False) -> StudyRecord:
    legacy = StudyRecord.open(path)
    if legacy.compact:
        raise ObjcropError(f"{path}: already a compact record (or no legacy record)")
    record = StudyRecord(path, compact(legacy))
    record.write()
    if remove:
        for rel in legacy_files(legacy):
            os.remove(os.path.join(path, rel))
    return record


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("records", nargs="+", help="legacy record directories (docs/results/<study>)")
    p.add_argument("--remove", action="store_true", help="delete the legacy files the record file now holds")
    args = p.parse_args(argv)
    for path in args.records:
        record = migrate(path, args.remove)
        print(f"{record.path}: {len(record.data['runs'])} runs, {len(record.data['files'])} files, "
              f"{len(record.data['renamed'])} renamed")
    return 0


if __name__ == "__main__":
    from objcrop.cli import run_stage_main

    sys.exit(run_stage_main(main, None, "python -m objcrop.report.record_migrate"))
