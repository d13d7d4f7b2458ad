"""The study page's tables made from a record's runs and extras: how each pretraining run learned its
pretext task, what the views contain, the proposals' recall, the supervised bound's budgets.

Every function takes a `StudyRecord` (report/record.py): the compact record and a legacy record
directory (or a pipeline output directory) give the same tables.
"""
import math
import os
import statistics
from collections import defaultdict
from typing import Any, Collection, Dict, List, Optional, Tuple

from objcrop.records import Provenance
from objcrop.report.record import BOUND_PATTERN, StudyRecord
from objcrop.report.study_tables import WITHHELD, Row, pretrain_row
from objcrop.view_stats import format_view_stats

PRETRAIN = "runs/pretrain/"
PROBE = "runs/probe/"
REFERENCE_PROBES = ("random_init", "supervised")


def pretrain_keys(record: StudyRecord) -> List[str]:
    """The record's pretraining runs (`runs/pretrain/<name>`), sorted."""
    return [k for k in record.run_keys() if k.startswith(PRETRAIN) and "/" not in k[len(PRETRAIN):]]


def _config_value(record: StudyRecord, key: str, dotted: str) -> Optional[Any]:
    node: Any = record.config(key)
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def run_tail(rows: List[Dict[str, Any]], last: int = 20) -> Optional[dict]:
    """Of one run's metrics: the first epoch's mean loss, the lowest epoch-mean loss after it and its
    epoch (a loss that falls and then climbs back shows here), and the mean loss and acc_top1 over the
    last `last` iterations; None when the run has no metrics."""
    rows = [r for r in rows if "loss" in r]
    if not rows:
        return None
    by_epoch = defaultdict(list)
    for r in rows:
        by_epoch[int(r.get("epoch", 0))].append(r["loss"])
    epoch_means = {e: statistics.mean(v) for e, v in by_epoch.items()}
    # the first epoch fills the queue (a low loss against few real negatives): not a candidate
    later = [e for e in epoch_means if e > 0] or list(epoch_means)
    low_epoch = min(later, key=epoch_means.get)
    tail = rows[-last:]
    acc = [r["acc_top1"] for r in tail if "acc_top1" in r]
    spread = [r["embedding_spread"] for r in tail if "embedding_spread" in r]
    return {"first": epoch_means.get(0), "lowest": epoch_means[low_epoch], "lowest_epoch": low_epoch + 1,
            "epochs": len(epoch_means), "last": statistics.mean(r["loss"] for r in tail),
            "acc": statistics.mean(acc) if acc else None, "spread": statistics.mean(spread) if spread else None}


def _spectrum_text(features: Optional[dict]) -> str:
    """The probe's feature spectrum (objcrop probe's `features`; runs probed before it existed: —)."""
    if not features:
        return "—"
    return f"{features['effective_rank']:.0f} / {features['top_pc_share']:.2f}"


PRETEXT_HEADER = [
    "| run | iterations | loss, first epoch (queue filling) | lowest epoch loss after it (epoch) | loss, last 20 it. | "
    "chance loss ln(K+1) | positive key ranked first, last 20 it. (chance 1/(K+1)) | "
    "embedding spread, last 20 it. (about 1: spread; 0: collapsed) | probe mAP % | "
    "probe features: effective rank / top principal component's variance share |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def _probe_text(record: StudyRecord, name: str, withheld: bool) -> str:
    """The probe's mAP and feature spectrum cells of one pretraining run."""
    if withheld:
        return f"{WITHHELD} | — |"
    probe = record.results(f"{PROBE}{name}/results.json") or {}
    mAP = probe.get("mAP")
    return f"{'—' if mAP is None else f'{100 * mAP:.1f}'} | {_spectrum_text(probe.get('features'))} |"


def _pretext_line(record: StudyRecord, key: str, results: dict, tail: dict, withheld: bool) -> str:
    first, loss, acc = tail["first"], tail["last"], tail["acc"]
    name = key[len(PRETRAIN):]
    iters = results.get("iterations", "—")
    moco = _config_value(record, key, "PRETRAIN.METHOD") == "moco_v2"
    k = _config_value(record, key, "PRETRAIN.MOCO.K") if moco else None
    chance = f"{math.log(k + 1):.2f}" if k else "—"
    acc_txt = "—" if acc is None else f"{acc:.3f} (1/{k + 1})" if k else f"{acc:.3f}"
    lowest = f"{tail['lowest']:.2f} ({tail['lowest_epoch']} of {tail['epochs']})"
    spread_txt = "—" if tail["spread"] is None else f"{tail['spread']:.2f}"
    return (f"| {name} | {iters} | {'—' if first is None else f'{first:.2f}'} | {lowest} | {loss:.2f} | {chance} | "
            f"{acc_txt} | {spread_txt} | {_probe_text(record, name, withheld)}")


def pretext_table(record: StudyRecord, withheld: Collection[Row] = ()) -> str:
    """How well each run learned its own task: MoCo's loss against ln(K+1) (the loss of a
    network that cannot tell its positive key from the queue) and how often the positive wins.
    The probe cells of a run of a row in `withheld` (a registered arm not yet complete) are withheld."""
    lines = list(PRETEXT_HEADER)
    for key in pretrain_keys(record):
        results = record.results(key + "/results.json") or {}
        tail = run_tail(record.metrics(key)) if results.get("status") == "ok" else None
        if tail is not None:
            withhold = pretrain_row(results.get("pretrain")) in withheld
            lines.append(_pretext_line(record, key, results, tail, withhold))
    if len(lines) == len(PRETEXT_HEADER):
        return "_(no finished pretraining run)_"
    # the references' probe features, to read the last column against
    for key in record.run_keys():
        name = key[len(PROBE):]
        if not key.startswith(PROBE) or "/" in name or not name.startswith(REFERENCE_PROBES):
            continue
        probe = record.results(key + "/results.json") or {}
        if probe.get("status") == "ok":
            lines.append(f"| {name} (reference, no pretext task) |" + " — |" * 7 +
                         f" {100 * probe['mAP']:.1f} | {_spectrum_text(probe.get('features'))} |")
    return "\n".join(lines)


def device_kind(results: dict) -> str:
    """The kind of device a pretraining run trained on, from its results.json: "cpu" or the CUDA
    device's name. A run recorded before results named the device trained on the CPU
    (docs/preregistration.md, clarification on the device)."""
    device = results.get("device") or "cpu"
    return "cpu" if device.startswith("cpu") else device


def run_devices(record: StudyRecord) -> Dict[Tuple[Row, int], str]:
    """(row, pretraining seed) -> the kind of device of every finished pretraining run of a record."""
    out = {}
    for key in pretrain_keys(record):
        results = record.results(key + "/results.json") or {}
        seed = (results.get("pretrain") or {}).get("seed")
        if results.get("status") == "ok" and seed is not None:
            out[(pretrain_row(results.get("pretrain")), int(seed))] = device_kind(results)
    return out


def _source_name(proposals: str) -> str:
    """'gt', 'none', or a store's method name (its file name without the extension)."""
    return os.path.splitext(os.path.basename(proposals))[0] if os.sep in proposals else proposals


def view_stats_table(record: StudyRecord) -> str:
    rows = [s for s in (record.read(rel) for rel in record.files("extras/views_*.json")) if s]
    if not rows:
        return "_(no view statistics: run scripts/study_extras.py)_"
    order = {"random": 0, "obj-obj": 1, "obj-obj-dilate": 2, "obj-scene": 3}
    rows.sort(key=lambda s: (order.get(s["policy"], 9), s["proposals"] != "gt", _source_name(s["proposals"])))
    return format_view_stats({f"{s['policy']} ({_source_name(s['proposals'])})": s for s in rows})


def recall_table(record: StudyRecord) -> str:
    lines = ["| proposals | boxes per image (mean) | recall@0.5 | recall@0.7 |", "|---|---:|---:|---:|"]
    found = False
    for rel in record.files("extras/proposals_*.json"):
        s = record.read(rel) or {}
        name = os.path.basename(rel)[len("proposals_"):-len(".json")]
        per = s.get("boxes_per_image") or {}
        mean = per.get("mean") if isinstance(per, dict) else per
        r5, r7 = s.get("recall@0.5"), s.get("recall@0.7")
        lines.append(f"| {name} | {mean if mean is None else f'{float(mean):.1f}'} | "
                     f"{'—' if r5 is None else f'{r5:.3f}'} | {'—' if r7 is None else f'{r7:.3f}'} |")
        found = True
    return "\n".join(lines) if found else "_(no proposal statistics)_"


def _is_plain_random_moco(results: dict) -> bool:
    prov = Provenance.from_dict(results.get("pretrain"))
    return prov.method == "moco_v2" and prov.policy_label == "random" and prov.proposals == "none"


def view_pairs(record: StudyRecord) -> Optional[float]:
    """Median view pairs (images_seen) of a study's untagged MoCo random-crop runs: its budget."""
    seen = []
    for key in pretrain_keys(record):
        r = record.results(key + "/results.json") or {}
        if r.get("status") == "ok" and r.get("images_seen") and _is_plain_random_moco(r):
            seen.append(float(r["images_seen"]))
    return statistics.median(seen) if seen else None


def learnability_budgets(record: StudyRecord) -> str:
    """The supervised bound's own probe (benchmarks/learnability.py) at every budget and seed that was tried:
    supervised/ is the preset's, supervised_*/ earlier or other budgets, supervised_seed<K>/ the bound trained
    again with seed K (the pipeline's --supervised-seeds), kept beside it; then, per budget trained more than
    once, the range the trainings span (one training is one draw of the bound)."""
    parts, by_budget = [], {}
    for rel in sorted(record.files(BOUND_PATTERN),
                      key=lambda p: (os.path.basename(os.path.dirname(p)) != "supervised", p)):
        learn = record.read(rel)
        if not learn:
            continue
        train = learn.get("supervised_training") or {}
        secs = float(train.get("train_seconds", float("nan")))
        took = f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.0f} min"
        parts.append(f"{train.get('samples', '?')} samples (seed {learn.get('seed', '?')}, "
                     f"{train.get('epochs', float('nan')):.0f} epochs, {took} on {learn.get('device', 'cpu')}; "
                     f"`{rel}`): supervised {learn['supervised_mAP']:.3f}, "
                     f"random init {learn['random_init_mAP']:.3f}, chance {learn['chance_mAP']:.3f}")
        by_budget.setdefault(train.get("samples", "?"), []).append(learn["supervised_mAP"])
    if not parts:
        return "not run"
    spans = [f"the {len(maps)} trainings of {samples} samples span supervised {min(maps):.3f} to {max(maps):.3f}"
             for samples, maps in by_budget.items() if len(maps) > 1]
    return ("sklearn logistic-regression probe of benchmarks/learnability.py — " + "; ".join(parts)
            + "".join(f". {span[0].upper()}{span[1:]}" for span in spans))
