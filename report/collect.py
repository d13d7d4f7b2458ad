"""Find and read what runs leave behind: results.json, config.yaml, metrics.jsonl — in a run
directory tree, or in a study record (report/record.py) that holds them.

The report reads files only (docs/ARCHITECTURE.md): nothing here imports a stage.
Every results.json is checked against the schema (`objcrop.records.validate_results`); one
that cannot be read or does not follow it is not skipped silently — it comes back as an
`Unreadable` entry, so the report flags it under its path.

A root is a directory (searched for results.json), a results.json file, a study record
(`record.json` or a directory holding one), or a path inside a record's runs
(`docs/results/study/runs`: every run the record holds under `runs/`).
"""
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from objcrop.errors import ObjcropError
from objcrop.io import read_json
from objcrop.records import validate_results
from objcrop.report.record import RECORD_FILE, StudyRecord
from objcrop.report.record_file import read_metrics_file, read_yaml

RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.jsonl"


@dataclass
class RunResult:
    """One run's results.json, as written by pretrain, probe or detection, and where it lies."""

    path: str  # the results.json file (in a record: where it lay in the output, below the record)
    data: Dict[str, Any]
    record: Optional[StudyRecord] = None  # the record holding the run, None for a run directory
    key: str = ""  # the run's key in the record

    @property
    def run_dir(self) -> str:
        return os.path.dirname(self.path)

    @property
    def stage(self) -> str:
        return str(self.data.get("stage", "unknown"))

    def config(self) -> Optional[dict]:
        if self.record is not None:
            return self.record.config(self.key)
        return read_yaml(os.path.join(self.run_dir, "config.yaml"))

    def config_value(self, dotted_key: str) -> Optional[Any]:
        """One value of the run's config (e.g. "PRETRAIN.MOCO.K"), or None when absent."""
        node: Any = self.config()
        for part in dotted_key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def metrics(self) -> List[Dict[str, Any]]:
        if self.record is not None:
            return self.record.metrics(self.key)
        return read_metrics_file(os.path.join(self.run_dir, METRICS_NAME))


@dataclass
class Unreadable:
    path: str
    reason: str


@dataclass
class Collection:
    runs: List[RunResult] = field(default_factory=list)
    unreadable: List[Unreadable] = field(default_factory=list)
    roots: List[str] = field(default_factory=list)


def find_results_files(roots: Iterable[str]) -> List[str]:
    """Every results.json below the given directories (or the given files), sorted, no duplicates."""
    found, seen = [], set()
    for root in roots:
        if os.path.isfile(root):
            candidates = [root]
        elif os.path.isdir(root):
            candidates = [
                os.path.join(d, RESULTS_NAME)
                for d, _, files in os.walk(root, followlinks=True)
                if RESULTS_NAME in files
            ]
        else:
            raise ObjcropError(f"{root}: no such file or directory")
        for path in candidates:
            real = os.path.realpath(path)
            if real not in seen:  # overlapping roots must not count a run twice
                seen.add(real)
                found.append(path)
    return sorted(found)


def find_record(root: str) -> Optional[Tuple[StudyRecord, str]]:
    """(record, prefix of the run keys wanted) when `root` is a study record or a path inside one
    that does not exist as a directory (the record holds those runs); None for a run tree."""
    if os.path.isfile(root) and os.path.basename(root) == RECORD_FILE:
        return StudyRecord.open(root), ""
    if os.path.isdir(root):
        return (StudyRecord.open(root), "") if os.path.isfile(os.path.join(root, RECORD_FILE)) else None
    if os.path.exists(root):
        return None
    here, rest = os.path.abspath(root), []
    while os.path.dirname(here) != here and not os.path.exists(here):
        here, rest = os.path.dirname(here), [os.path.basename(here)] + rest
    if os.path.isfile(os.path.join(here, RECORD_FILE)):
        return StudyRecord.open(here), "/".join(rest)
    return None


def _record_runs(record: StudyRecord, prefix: str, root: str) -> List[Tuple[str, Any, StudyRecord, str]]:
    """(shown path, results, record, key) of a record's runs below `prefix`; paths shown below the
    record as the root names it, so a report names a run the same way from a record or its files."""
    base = os.path.normpath(root)
    for _ in prefix.split("/") if prefix else ():
        base = os.path.dirname(base)
    if os.path.isfile(base):
        base = os.path.dirname(base)
    keys = [k for k in record.run_keys() if not prefix or k == prefix or k.startswith(prefix.rstrip("/") + "/")]
    return [(os.path.join(base, k, RESULTS_NAME), record.results(k + "/" + RESULTS_NAME), record, k) for k in keys]


def collect(roots: Iterable[str]) -> Collection:
    roots = list(roots)
    out = Collection(roots=roots)
    found, tree_roots = [], []
    for root in roots:
        in_record = find_record(root)
        if in_record is None:
            tree_roots.append(root)
        else:
            found += _record_runs(in_record[0], in_record[1], root)
    found += [(path, None, None, "") for path in find_results_files(tree_roots)]
    for path, data, record, key in sorted(found, key=lambda f: f[0]):
        try:
            data = read_json(path) if record is None else data
            validate_results(data, where=path)
        except ObjcropError as e:  # RecordError too: a record that breaks the schema is flagged
            out.unreadable.append(Unreadable(path, str(e).split(": ", 1)[-1]))
            continue
        run = RunResult(path, data, record, key)
        fill_pretrain_block(run)
        out.runs.append(run)
    return out


# pretrain block field -> the pretraining config key that holds it (objcrop/pretrain/config.py)
_PRETRAIN_CONFIG_KEYS = {"method": "PRETRAIN.METHOD", "arch": "PRETRAIN.ARCH", "epochs": "PRETRAIN.EPOCHS",
                         "policy": "VIEWS.POLICY", "dataset": "DATA.DATASET", "seed": "PRETRAIN.SEED"}


def fill_pretrain_block(run: RunResult) -> None:
    """A pretraining results.json missing a field of its "pretrain" block (an older or interrupted
    writer) gets it from the run's config, so the run still lands in its row."""
    data = run.data
    if data.get("stage") != "pretrain":
        return
    block = data.get("pretrain")
    if not isinstance(block, dict):
        block = data["pretrain"] = {}
    for name, key in _PRETRAIN_CONFIG_KEYS.items():
        if block.get(name) in (None, ""):
            value = run.config_value(key)
            if value not in (None, ""):
                block[name] = value


def loss_curve(run: RunResult) -> Tuple[List[float], List[float]]:
    """(iterations, losses) from the run's metrics, keeping finite losses only."""
    its, losses = [], []
    for i, row in enumerate(run.metrics()):
        loss = row.get("loss")
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            continue
        its.append(float(row.get("iteration", i)))
        losses.append(float(loss))
    return its, losses
