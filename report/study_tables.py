"""The study page's reading of a study's report: each backbone against random init, each policy
against its random-crop baseline (report/baseline.py): the difference with its 95 % CI, Hedges' g,
Welch's t-test and the permutation test over seeds (report/stats.py). These rows are exploratory;
the registered ones (docs/preregistration.yaml) are read apart, in report/prereg.py.

The numbers come from the report's runs.csv (`objcrop report`, one line per run and column), so
the page reads exactly the runs the report's table aggregates.
"""
import csv
import math
import os
import re
import statistics
from collections import defaultdict
from typing import Collection, Dict, Iterable, List, Optional, Tuple

from objcrop.report import stats
from objcrop.report.aggregate import row_key
from objcrop.report.baseline import BASELINE_POLICY, baseline_policy, is_random_crop

PROBE = "probe mAP (synth:test)"
KNN = "probe kNN mAP (synth:test)"

Row = Tuple[str, str, str, str]  # method, policy, proposals, epochs ("" for reference rows)
RANDOM_INIT: Row = ("random_init", "none", "none", "")  # the reference row every backbone is read against
SUPERVISED: Row = ("supervised", "none", "none", "")  # the bound: a backbone trained with labels


def pretrain_row(pretrain: object) -> Row:
    """The row of a run from its results.json "pretrain" block, as runs.csv writes it."""
    key = row_key(pretrain)
    return key.method, key.policy, key.proposals, "" if key.epochs is None else str(key.epochs)


def study_values(study: str) -> Tuple[Dict[Row, Dict[str, List[float]]], Dict[Row, str]]:
    """From the report's runs.csv (`study`/report/runs.csv; none: empty): see `runs_csv_values`."""
    path = os.path.join(study, "report", "runs.csv")
    if not os.path.isfile(path):
        return runs_csv_values([])
    with open(path, newline="", encoding="utf-8") as f:
        return runs_csv_values(f)


def runs_csv_values(lines: Iterable[str]) -> Tuple[Dict[Row, Dict[str, List[float]]], Dict[Row, str]]:
    """From the lines of a report's runs.csv, in one pass: (method, policy, proposals, epochs) ->
    column -> one value per pretraining run, and the same key -> the backbone architecture(s) of its
    runs. The unit is the pretraining run (`pretraining_unit`): a checkpoint fine-tuned with several
    detection seeds gives the mean over them, since those runs share one pretraining and are not
    independent replicates."""
    units: Dict[Row, Dict[str, Dict[str, List[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    arches: Dict[Row, set] = defaultdict(set)
    for row in csv.DictReader(lines):
        key = (row["method"], row["policy"], row["proposals"], row["epochs"])
        arches[key].add(row.get("arch") or "")
        if row["status"] == "ok" and row["value"] not in ("", None) and not row["flag"]:
            unit = pretraining_unit(row)
            units[key][row["column"]][unit].append(float(row["value"]))
    out: Dict[Row, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for key, cols in units.items():
        for column, by_unit in cols.items():
            out[key][column] = [statistics.mean(v) for v in by_unit.values()]
    return out, {k: "/".join(sorted(v)) for k, v in arches.items()}


def pretraining_unit(row: Dict[str, str]) -> str:
    """The pretraining run a runs.csv line measures: its probe's folder, or the folder of its fine-tunings
    (`detect_voc/<run>` of `detect_voc/<run>/seed<k>`). Not its seed: the supervised bound trained again
    with seed 0 on another CPU is another training, probed beside the first with the same seed. A backbone
    without a pretraining seed (from scratch) has none to share: each fine-tuning is its own unit."""
    run_dir = row["run_dir"]
    if row.get("pretrain_seed") in ("", None):
        return run_dir
    if row.get("stage") == "detection" and re.fullmatch(r"seed\d+", os.path.basename(run_dir)):
        return os.path.dirname(run_dir)
    return run_dir


def _welch_p(a: List[float], b: List[float]) -> Optional[float]:
    if len(a) < 2 or len(b) < 2:
        return None
    w = stats.welch(a, b)
    return None if w is None else w.p


def fmt_runs(values: List[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def _baseline_policy(values, method: str, policy: str, epochs: str) -> str:
    """The random-crop row a policy is read against: report/baseline.py's rule."""
    candidates = [p for (m, p, proposals, e) in values if m == method and e == epochs and proposals == "none"]
    return baseline_policy(policy, candidates) or BASELINE_POLICY


def reading_rows(values, column: str) -> List[dict]:
    """Every pretrained row against the random-crop row of its method on one column."""
    rows = []
    for (method, policy, proposals, epochs), cols in sorted(values.items()):
        if method in ("random_init", "supervised") or is_random_crop(policy) or column not in cols:
            continue
        baseline = _baseline_policy(values, method, policy, epochs)
        base = values.get((method, baseline, "none", epochs), {}).get(column, [])
        mine = cols[column]
        if not base:
            continue
        noise = max([statistics.stdev(v) for v in (mine, base) if len(v) > 1] or [float("nan")])
        rows.append({"method": method, "policy": policy, "proposals": proposals, "epochs": epochs,
                     "baseline": baseline, "noise": noise, "values": mine, "base_values": base,
                     **comparison(mine, base)})
    return rows


def comparison(mine: List[float], base: List[float]) -> dict:
    """report/stats.compare where both arms have 2 or more seeds; the difference alone otherwise."""
    if len(mine) >= 2 and len(base) >= 2:
        return {**stats.compare(mine, base), "delta": statistics.mean(mine) - statistics.mean(base)}
    return {"delta": statistics.mean(mine) - statistics.mean(base), "p": None, "ci": None, "g": None,
            "perm_p": None, "perm_exact": None, "relabellings": None, "n": len(mine), "n_base": len(base)}


def fmt_p(p: Optional[float]) -> str:
    return "—" if p is None else "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_delta(r: dict) -> str:
    """"+4.7 [+1.1, +8.3]": the difference of means and its 95 % CI (Welch–Satterthwaite)."""
    ci = "" if r.get("ci") is None else f" [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}]"
    return f"{r['delta']:+.1f}{ci}"


def fmt_perm(r: dict) -> str:
    if r.get("perm_p") is None:
        return "—"
    how = f"exact, {r['relabellings']}" if r["perm_exact"] else f"{r['relabellings']} draws, seed {stats.SEED}"
    return f"{fmt_p(r['perm_p'])} ({how})"


def fmt_g(r: dict) -> str:
    return "—" if r.get("g") is None else f"{r['g']:+.2f}"


def _verdict(r: dict) -> str:
    if r["p"] is None:
        return "too few seeds to tell"
    if r["p"] < 0.05:
        return "better than random crops" if r["delta"] > 0 else "worse than random crops"
    return "within seed noise"


def reading_table(values, column: str, registered: Collection[Row] = ()) -> str:
    """The exploratory reading of one column; rows whose (method, policy, proposals, epochs) is in
    `registered` are left out (the registered comparisons are printed apart)."""
    lines = ["| method | view policy | proposals | epochs | against | Δ [95 % CI] | Hedges g | largest seed std | "
             "Welch p | permutation p | seeds (vs baseline) | reading (uncorrected) |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in reading_rows(values, column):
        if (r["method"], r["policy"], r["proposals"], r["epochs"]) in registered:
            continue
        noise = "—" if math.isnan(r["noise"]) else f"{r['noise']:.1f}"
        lines.append(f"| {r['method']} | {r['policy']} | {r['proposals']} | {r['epochs']} | {r['baseline']} | "
                     f"{fmt_delta(r)} | {fmt_g(r)} | {noise} | {fmt_p(r['p'])} | {fmt_perm(r)} | "
                     f"{r['n']} ({r['n_base']}) | {_verdict(r)} |")
    return "\n".join(lines)


def detection_columns(values) -> List[str]:
    return sorted({c for cols in values.values() for c in cols if c.startswith(("VOC", "COCO"))})


def detection_readings(values, registered: Collection[Row] = ()) -> str:
    """The reading tables of every detection column present (VOC AP50, COCO box AP, …)."""
    return "".join(f"\n{column}:\n\n{reading_table(values, column, registered)}\n"
                   for column in detection_columns(values))


# what a table prints for the score of a registered arm before its comparison is complete
WITHHELD = "withheld: registered, read once complete"


# arch -> (the random-init row's columns, where they come from): the random init of another
# architecture, from a section on the same data and probe (study_page.same_data_references)
OtherReferences = Dict[str, Tuple[Dict[str, List[float]], str]]


def gate_table(values, column: str, arches: Optional[Dict[Row, str]] = None,
               other_references: Optional[OtherReferences] = None, withheld: Collection[Row] = ()) -> str:
    """Did a backbone learn anything? Every row against the randomly initialised backbone of its
    architecture: this study's own, or for another architecture the one `other_references` holds
    (a row whose architecture has neither gets no Δ: it names the reference it lacks). A row in
    `withheld` (a registered arm not yet complete: prereg.interim_rows) shows its seed count only."""
    arches = arches or {}
    other_references = other_references or {}
    ref_key = RANDOM_INIT
    base = values.get(ref_key, {}).get(column, [])
    lines = ["| backbone | epochs | score | Δ vs random init | Welch p |", "|---|---|---:|---:|---:|"]
    if not base:
        return "_(no random-init probe)_"
    def order(kv):
        (method, policy, proposals, epochs), _ = kv
        return method != "supervised", method, policy != "random", policy, proposals, int(epochs or 0)

    for (method, policy, proposals, epochs), cols in sorted(values.items(), key=order):
        if method == "random_init" or column not in cols:
            continue
        mine = cols[column]
        name = " ".join(x for x in (method, policy, proposals) if x not in ("none", ""))
        if (method, policy, proposals, epochs) in withheld:
            lines.append(f"| {name} | {epochs or '—'} | {WITHHELD} (n={len(mine)}) | — | — |")
            continue
        arch = arches.get((method, policy, proposals, epochs), "")
        ref, against = base, ""
        if arch and arch != arches.get(ref_key, arch):
            ref_columns, source = other_references.get(arch, ({}, ""))
            ref = ref_columns.get(column, [])
            if not ref:
                lines.append(f"| {name} ({arch}) | {epochs or '—'} | {fmt_runs(mine)} | — (the reference is a "
                             f"{arches[ref_key]}) | — |")
                continue
            name, against = f"{name} ({arch})", f" (vs {source}'s {arch} random init, {fmt_runs(ref)})"
        p = _welch_p(mine, ref)
        lines.append(f"| {name} | {epochs or '—'} | {fmt_runs(mine)} | "
                     f"{statistics.mean(mine) - statistics.mean(ref):+.1f}{against} | {'—' if p is None else f'{p:.3f}'} |")
    return "\n".join(lines)


def learnability_line(values) -> str:
    rnd = values.get(RANDOM_INIT, {}).get(PROBE, [])
    sup = values.get(SUPERVISED, {}).get(PROBE, [])
    return f"supervised {fmt_runs(sup)}, random init {fmt_runs(rnd)}"


def learned(values, arches: Dict[Row, str], key: Row, alpha: float, column: str = PROBE) -> bool:
    """Did the runs of `key` learn? Their mean probes above the random-init backbone of the same
    architecture with Welch p < alpha (the gate table's test). scripts/power.py uses the same rule."""
    ref_key = RANDOM_INIT
    ref, mine = values.get(ref_key, {}).get(column, []), values.get(key, {}).get(column, [])
    if arches.get(key, "") != arches.get(ref_key, "") or len(mine) < 2 or len(ref) < 2:
        return False
    p = _welch_p(mine, ref)
    return p is not None and p < alpha and statistics.mean(mine) > statistics.mean(ref)
