"""Find and read the files runs leave behind: results.json, config.yaml, metrics.jsonl.

The report reads files only (DESIGN.md, "Layout"): nothing here imports a stage.
A results.json that cannot be read is not skipped silently — it comes back as an
`Unreadable` entry so the report can list it.
"""
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from objcrop.errors import ObjcropError
from objcrop.io import read_json

RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.jsonl"


@dataclass
class RunResult:
    """One run directory's results.json, as written by pretrain, probe or detection."""

    path: str  # the results.json file
    data: Dict[str, Any]

    @property
    def run_dir(self) -> str:
        return os.path.dirname(self.path)

    @property
    def stage(self) -> str:
        return str(self.data.get("stage", "unknown"))


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


def collect(roots: Iterable[str]) -> Collection:
    roots = list(roots)
    out = Collection(roots=roots)
    for path in find_results_files(roots):
        try:
            data = read_json(path)
        except ObjcropError as e:
            out.unreadable.append(Unreadable(path, str(e).split(": ", 1)[-1]))
            continue
        if not isinstance(data, dict):
            out.unreadable.append(Unreadable(path, "not a json object"))
            continue
        fill_pretrain_block(data, os.path.dirname(path))
        out.runs.append(RunResult(path, data))
    return out


# pretrain block field -> the pretraining config key that holds it (objcrop/pretrain/config.py)
_PRETRAIN_CONFIG_KEYS = {"method": "PRETRAIN.METHOD", "arch": "PRETRAIN.ARCH", "epochs": "PRETRAIN.EPOCHS",
                         "policy": "VIEWS.POLICY", "dataset": "DATA.DATASET", "seed": "PRETRAIN.SEED"}


def fill_pretrain_block(data: Dict[str, Any], run_dir: str) -> None:
    """A pretraining results.json missing a field of its "pretrain" block (an older or interrupted
    writer) gets it from the run's config.yaml, so the run still lands in its row."""
    if data.get("stage") != "pretrain":
        return
    block = data.get("pretrain")
    if not isinstance(block, dict):
        block = data["pretrain"] = {}
    for name, key in _PRETRAIN_CONFIG_KEYS.items():
        if block.get(name) in (None, ""):
            value = read_config_value(run_dir, key)
            if value not in (None, ""):
                block[name] = value


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    """metrics.jsonl of a run; a torn last line (a crash mid-write) is skipped, not fatal."""
    path = os.path.join(run_dir, METRICS_NAME)
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def loss_curve(run_dir: str) -> Tuple[List[float], List[float]]:
    """(iterations, losses) from metrics.jsonl, keeping finite losses only."""
    its, losses = [], []
    for i, row in enumerate(read_metrics(run_dir)):
        loss = row.get("loss")
        if not isinstance(loss, (int, float)) or not math.isfinite(loss):
            continue
        its.append(float(row.get("iteration", i)))
        losses.append(float(loss))
    return its, losses


def read_config_value(run_dir: str, dotted_key: str) -> Optional[Any]:
    """One value of a run's config.yaml (e.g. "SOLVER.MAX_ITER"), or None when absent.

    Used to fill a field that an older results.json does not carry; the YAML is read
    with plain PyYAML so no stage's config defaults are needed.
    """
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        return None
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            node = yaml.safe_load(f)
    except yaml.YAMLError:
        return None
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
