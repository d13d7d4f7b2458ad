"""The compact study record: one JSON file, `RECORD/record.json`.

    {"format": "objcrop-study-record", "version": 1,
     "runs": {"runs/pretrain/<run name>": {"results": {...results.json...},
                                          "config": {...config.yaml...},
                                          "metrics": {"iteration": [...], "epoch": [...], "loss": [...],
                                                      "acc_top1": [...], "embedding_spread": [...]}},
              "runs/probe/random_init_s0": {"results": {...}, "config": {...}},
              "runs/detect_voc/<run name>/seed0": {"results": {...}, "config": {...},
                                                   "metrics": {"iteration": [...], "loss": [...], "lr": [...], ...}},
              ...},
     "files": {"data/meta.json": {...}, "supervised/learnability.json": {...},
               "extras/views_random_gt.json": {...}, "logs/pipeline-<id>.log": ["line", ...]},
     "renamed": {"runs/pretrain/<old name>": "runs/pretrain/<run name>", ...}}

A run is keyed by its directory in the pipeline output. `metrics` is kept for pretraining runs,
with the columns the report and the study pages read (the loss curves and the pretext table), and
for detection fine-tunings, with their losses and learning rate: two fine-tunings of the same
weights that end far apart can then be told apart as a diverged run or as seed noise after the
machine that trained them is gone. Every logged step that has a loss is kept, so the curves and
their plots stay exact. JSON files are kept as their content, text files (pipeline logs,
commands.txt) as their lines. `renamed` maps run directories of the short names used before
`objcrop.records.run_name` to their current keys, so a lookup by the old name still finds the run.

The layout keeps text diffs readable: one key per line, lists of numbers on one line.
"""
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from objcrop.io import write_text_atomic
from objcrop.records import RecordError

RECORD_FILE = "record.json"
FORMAT = "objcrop-study-record"
VERSION = 1
# a run's file in the output -> its field in the record
RUN_FIELDS = {"results.json": "results", "config.yaml": "config", "metrics.jsonl": "metrics"}
# metrics.jsonl columns kept per stage: for pretraining, those the report reads (report/collect.py
# loss_curve, report/study_runs.py); for detection (detection/trainer.py MetricsJsonlHook), the total
# and per-head losses, the lr and the box head's accuracy, what tells a diverged fine-tuning apart
METRIC_COLUMNS = {
    "pretrain": ("iteration", "epoch", "loss", "acc_top1", "embedding_spread"),
    "detection": ("iteration", "loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc", "loss_mask",
                  "lr", "fast_rcnn/cls_accuracy"),
}


def empty() -> Dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "runs": {}, "files": {}, "renamed": {}}


def load(path: str) -> Dict[str, Any]:
    """A record file, checked: a damaged or foreign file raises RecordError naming it."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: cannot read the study record ({e})") from e
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: the study record is not valid json ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordError(f"{path}: not an objcrop study record (no \"format\": \"{FORMAT}\")")
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise RecordError(f"{path}: study record version {data.get('version')!r} is not one this objcrop reads")
    for key in ("runs", "files"):
        if not isinstance(data.get(key), dict):
            raise RecordError(f"{path}: the study record's \"{key}\" must be an object")
    for run_key, run in data["runs"].items():
        if not isinstance(run, dict) or not isinstance(run.get("results"), dict):
            raise RecordError(f"{path}: run {run_key!r} has no results object")
    data.setdefault("renamed", {})
    return data


def dump(path: str, data: Dict[str, Any]) -> str:
    write_text_atomic(path, dumps(data) + "\n")
    return path


def dumps(obj: Any, level: int = 0) -> str:
    """JSON with one key per line and lists of numbers on one line (sorted keys, so saving the
    same results twice writes the same bytes)."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, Mapping):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps(obj[k], level + 1)}" for k in sorted(obj)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if not obj or all(not isinstance(v, (str, Mapping, list, tuple)) for v in obj):
            return json.dumps(list(obj))
        return "[\n" + ",\n".join(inner + dumps(v, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


# ----------------------------------------------------------------------------- runs


def run_entry(sources: Dict[str, str]) -> Dict[str, Any]:
    """A run's record entry from its files in an output ({file name: path})."""
    from objcrop.io import read_json

    entry: Dict[str, Any] = {"results": read_json(sources["results.json"])}
    if "config.yaml" in sources:
        entry["config"] = read_yaml(sources["config.yaml"])
    columns = METRIC_COLUMNS.get(entry["results"].get("stage"))
    if "metrics.jsonl" in sources and columns:
        entry["metrics"] = metrics_summary(read_metrics_file(sources["metrics.jsonl"]), columns)
    return {k: v for k, v in entry.items() if v is not None}


def metrics_summary(rows: List[Dict[str, Any]], columns: Sequence[str]) -> Dict[str, list]:
    """The steps with a loss, as `columns` (a step's position stands in for a missing iteration)."""
    kept = [dict(r, iteration=r.get("iteration", i)) for i, r in enumerate(rows) if "loss" in r]
    return {c: [r.get(c) for r in kept] for c in columns if any(c in r for r in kept)}


def metrics_rows(summary: Optional[Mapping[str, list]]) -> List[Dict[str, Any]]:
    """The rows of a metrics summary (a value missing from a step stays missing)."""
    if not summary:
        return []
    n = max(len(v) for v in summary.values())
    return [{c: v[i] for c, v in summary.items() if i < len(v) and v[i] is not None} for i in range(n)]


def read_metrics_file(path: str) -> List[Dict[str, Any]]:
    """metrics.jsonl; a torn last line (a crash mid-write) is skipped, not fatal."""
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


def read_yaml(path: str) -> Optional[dict]:
    """A config.yaml as a dict; None when absent or not YAML (plain PyYAML: no stage's defaults)."""
    if not os.path.isfile(path):
        return None
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            node = yaml.safe_load(f)
    except yaml.YAMLError:
        return None
    return node if isinstance(node, dict) else None


# ----------------------------------------------------------------------------- other files


def read_file_value(path: str) -> Any:
    """What the record keeps of another file: a .json file's content, a text file's lines."""
    from objcrop.io import read_json

    if path.endswith(".json"):
        return read_json(path)
    with open(path, "r", encoding="utf-8") as f:
        return f.read().splitlines()


def file_value(value: Any, rel: str = "") -> Any:
    """A recorded file as `StudyRecord.read` returns it: json content, or text for a list of lines."""
    if value is None or rel.endswith(".json"):
        return value
    if isinstance(value, list):
        return "".join(line + "\n" for line in value)
    return value

