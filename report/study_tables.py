"""The study page's reading of a study's report: each backbone against random init, each policy
against its random-crop baseline (report/baseline.py), with Welch's t-test over seeds.

The numbers come from the report's runs.csv (`objcrop report`, one line per run and column), so
the page reads exactly the runs the report's table aggregates.
"""
import csv
import math
import os
import statistics
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

from objcrop.report.baseline import BASELINE_POLICY, baseline_policy, is_random_crop

PROBE = "probe mAP (synth:test)"
KNN = "probe kNN mAP (synth:test)"

Row = Tuple[str, str, str, str]  # method, policy, proposals, epochs ("" for reference rows)


def study_values(study: str) -> Tuple[Dict[Row, Dict[str, List[float]]], Dict[Row, str]]:
    """From the report's runs.csv, in one pass: (method, policy, proposals, epochs) -> column ->
    per-run values, and the same key -> the backbone architecture(s) of its runs."""
    out: Dict[Row, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    arches: Dict[Row, set] = defaultdict(set)
    path = os.path.join(study, "report", "runs.csv")
    if os.path.isfile(path):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                key = (row["method"], row["policy"], row["proposals"], row["epochs"])
                arches[key].add(row.get("arch") or "")
                if row["status"] == "ok" and row["value"] not in ("", None) and not row["flag"]:
                    out[key][row["column"]].append(float(row["value"]))
    return out, {k: "/".join(sorted(v)) for k, v in arches.items()}


def _welch_p(a: List[float], b: List[float]) -> Optional[float]:
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    if statistics.stdev(a) == 0 and statistics.stdev(b) == 0:
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _fmt(values: List[float]) -> str:
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
        delta = statistics.mean(mine) - statistics.mean(base)
        p = _welch_p(mine, base)
        noise = max([statistics.stdev(v) for v in (mine, base) if len(v) > 1] or [float("nan")])
        rows.append({"method": method, "policy": policy, "proposals": proposals, "epochs": epochs, "delta": delta, "p": p,
                     "baseline": baseline,
                     "noise": noise, "n": len(mine), "n_base": len(base)})
    return rows


def _verdict(r: dict) -> str:
    if r["p"] is None:
        return "too few seeds to tell"
    if r["p"] < 0.05:
        return "better than random crops" if r["delta"] > 0 else "worse than random crops"
    return "within seed noise"


def reading_table(values, column: str) -> str:
    lines = ["| method | view policy | proposals | epochs | against | Δ | largest seed std | Welch p | seeds (vs baseline) | reading |",
             "|---|---|---|---|---|---:|---:|---:|---|---|"]
    for r in reading_rows(values, column):
        p = "—" if r["p"] is None else f"{r['p']:.2f}"
        noise = "—" if math.isnan(r["noise"]) else f"{r['noise']:.1f}"
        lines.append(f"| {r['method']} | {r['policy']} | {r['proposals']} | {r['epochs']} | {r['baseline']} | {r['delta']:+.1f} | {noise} | {p} | "
                     f"{r['n']} ({r['n_base']}) | {_verdict(r)} |")
    return "\n".join(lines)


def detection_readings(values) -> str:
    """The reading tables of every detection column present (VOC AP50, COCO box AP, …)."""
    columns = sorted({c for cols in values.values() for c in cols if c.startswith(("VOC", "COCO"))})
    return "".join(f"\n{column}:\n\n{reading_table(values, column)}\n" for column in columns)


def gate_table(values, column: str, arches: Optional[Dict[Row, str]] = None) -> str:
    """Did a backbone learn anything? Every row against the randomly initialised backbone of its
    architecture (a row of another architecture than the reference gets no Δ: it names its own)."""
    arches = arches or {}
    ref_key = ("random_init", "none", "none", "")
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
        arch = arches.get((method, policy, proposals, epochs), "")
        if arch and arch != arches.get(ref_key, arch):
            lines.append(f"| {name} ({arch}) | {epochs or '—'} | {_fmt(mine)} | — (the reference is a "
                         f"{arches[ref_key]}) | — |")
            continue
        p = _welch_p(mine, base)
        lines.append(f"| {name} | {epochs or '—'} | {_fmt(mine)} | "
                     f"{statistics.mean(mine) - statistics.mean(base):+.1f} | {'—' if p is None else f'{p:.3f}'} |")
    return "\n".join(lines)


def learnability_line(values) -> str:
    rnd = values.get(("random_init", "none", "none", ""), {}).get(PROBE, [])
    sup = values.get(("supervised", "none", "none", ""), {}).get(PROBE, [])
    return f"supervised {_fmt(sup)}, random init {_fmt(rnd)}"
