"""Seeds per arm for the pre-registered comparison (docs/preregistration.md), from the stds the
study's records hold.

    .venv/bin/python scripts/power.py                       # every docs/results/*/record.json
    .venv/bin/python scripts/power.py --records docs/results/study_plain --prereg docs/preregistration.yaml

It reads every probe run of every record through report/record.py (StudyRecord), groups the runs
by setting (study, method, policy label with its tag, proposals, epochs, architecture) and prints
each setting's probe-mAP std over seeds. The settings the plan uses are those at a *learning
budget*: a comparison of a policy with its random-crop baseline where at least one arm probes
above the random-init backbone of its study (Welch p < alpha) — below that budget every seed sits
at random init and its std says nothing about the spread of a run that learns. Their variances
are pooled (weighted by degrees of freedom), and the seeds per arm are the smallest n at which a
two-sided Welch t-test at level alpha / m (m = the registered family's size: Holm's first, and
strictest, step) has the target power against the smallest effect of interest. The effect, alpha,
the power and the family come from docs/preregistration.yaml; power is computed exactly from the
non-central t distribution with the Welch–Satterthwaite degrees of freedom.
"""
import argparse
import glob
import math
import os
import statistics
import sys
from collections import defaultdict
from typing import Dict, List, Tuple

import yaml
from scipy import stats

from objcrop.errors import ObjcropError
from objcrop.records import Provenance
from objcrop.report import prereg
from objcrop.report.aggregate import policy_shown
from objcrop.report.baseline import baseline_policy, is_random_crop
from objcrop.report.record import StudyRecord
from objcrop.report.study_page import RETRAINED

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = "runs/probe/"
Setting = Tuple[str, str, str, str, int, str]  # study, method, policy, proposals, epochs, arch


def probe_scores(record_dir: str) -> Dict[Setting, List[float]]:
    """Probe mAP (%) of every finished probe run of one study's record, by setting."""
    study = os.path.basename(os.path.normpath(record_dir))
    record = StudyRecord.open(record_dir)
    out: Dict[Setting, List[float]] = defaultdict(list)
    for key in record.run_keys():
        if not key.startswith(PROBE) or "/" in key[len(PROBE):]:
            continue
        r = record.results(key + "/results.json") or {}
        if r.get("status") != "ok" or r.get("mAP") is None:
            continue
        p = r.get("pretrain") or {}
        # the policy as the page's rows name it: a run tag joins it (a tagged row is its own setting)
        policy = policy_shown(Provenance.from_dict(p)) if p.get("policy") else "none"
        out[(study, p.get("method", "?"), policy, p.get("proposals", "none"),
             int(p.get("epochs") or 0), r.get("arch") or p.get("arch", "?"))].append(100 * float(r["mAP"]))
    return out


def _learned(scores, s: Setting, alpha: float) -> bool:
    """Does setting s probe above the random-init backbone of its study and architecture?"""
    ref = scores.get((s[0], "random_init", "none", "none", 0, s[5]), [])
    mine = scores.get(s, [])
    if len(ref) < 2 or len(mine) < 2 or statistics.mean(mine) <= statistics.mean(ref):
        return False
    return stats.ttest_ind(mine, ref, equal_var=False).pvalue < alpha


def _registered(registration, s: Setting) -> bool:
    study, method, policy, proposals, epochs, _ = s
    return (method, policy, proposals, str(epochs)) in prereg.registered_rows(registration, study)


def learning_comparisons(scores, alpha: float, registration=None) -> List[Tuple[Setting, Setting]]:
    """(policy, its random-crop baseline) pairs of settings with a test (2 seeds or more a side) where at
    least one arm learned, but the comparisons `registration` (docs/preregistration.yaml) claims (they
    are read apart, once every seed is in, never in this retrospective family) and those run after it
    in its amended recipe."""
    pairs = []
    for s in sorted(scores):
        study, method, policy, proposals, epochs, arch = s
        if method in ("random_init", "supervised") or is_random_crop(policy):
            continue
        if _registered(registration, s) or prereg.after_registration(registration, study, policy):
            continue
        candidates = [k[2] for k in scores if k[0] == study and k[1] == method and k[4] == epochs and k[5] == arch
                      and k[3] == "none"]
        base = baseline_policy(policy, candidates)
        b = (study, method, base, "none", epochs, arch)
        if base and b in scores and min(len(scores[s]), len(scores[b])) >= 2 and (
                _learned(scores, s, alpha) or _learned(scores, b, alpha)):
            pairs.append((s, b))
    return pairs


def welch_power(delta: float, sd1: float, sd2: float, n: int, alpha: float) -> float:
    """Power of the two-sided Welch t-test with n runs per arm against a true difference delta."""
    v1, v2 = sd1 ** 2 / n, sd2 ** 2 / n
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n - 1) + v2 ** 2 / (n - 1))
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = delta / se
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_needed(delta: float, sd1: float, sd2: float, alpha: float, power: float, n_max: int = 1000) -> int:
    for n in range(2, n_max + 1):
        if welch_power(delta, sd1, sd2, n, alpha) >= power:
            return n
    raise ObjcropError(f"more than {n_max} seeds per arm needed (effect {delta}, sds {sd1}, {sd2})")


def pooled_sd(groups: List[List[float]]) -> Tuple[float, int]:
    """The df-weighted pooled std of several groups and its degrees of freedom."""
    df = sum(len(g) - 1 for g in groups)
    if df <= 0:
        raise ObjcropError("no setting at a learning budget has two or more seeds: nothing to pool")
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups) / df), df


def load_plan(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            plan = yaml.safe_load(f)
        return {"effect": float(plan["smallest_effect"]), "alpha": float(plan["alpha"]),
                "power": float(plan["power"]), "family": len(plan["hypotheses"])}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ObjcropError(f"{path}: not a readable preregistration (smallest_effect, alpha, power, "
                           f"hypotheses): {e}") from e


def _fmt(s: Setting) -> str:
    study, method, policy, proposals, epochs, arch = s
    return f"{study} {method} {policy} {proposals} e{epochs} {arch}"


def report(records: List[str], plan: dict) -> str:
    scores: Dict[Setting, List[float]] = {}
    for r in records:
        scores.update(probe_scores(r))
    registration = prereg.load(os.path.join(REPO, prereg.PREREG))
    lines = ["probe mAP (%) per setting with >= 2 seeds: n, mean, std"]
    # a registered arm's scores are read in the page's registered table only (fixed n, no peeking)
    for s in sorted(k for k, v in scores.items() if len(v) >= 2 and not _registered(registration, k)):
        v = scores[s]
        lines.append(f"  {_fmt(s)}: n={len(v)} mean={statistics.mean(v):.2f} std={statistics.stdev(v):.2f}")
    pairs = learning_comparisons(scores, plan["alpha"], registration)
    arms = sorted({a for pair in pairs for a in pair if len(scores[a]) >= 2})
    lines.append(f"comparisons at a learning budget (an arm above random init, Welch p < {plan['alpha']}):")
    lines += [f"  {_fmt(a)}  vs  {b[2]}" for a, b in pairs]
    sd, df = pooled_sd([scores[a] for a in arms])
    largest = max(statistics.stdev(scores[a]) for a in arms)
    level = plan["alpha"] / plan["family"]
    lines.append(f"pooled std of their {len(arms)} arms: {sd:.2f} mAP points ({df} df); largest: {largest:.2f}")
    lines.append(f"plan: smallest effect {plan['effect']} mAP points, power {plan['power']}, two-sided Welch at "
                 f"alpha {plan['alpha']} / {plan['family']} hypotheses = {level:.4f} (Holm's first step)")
    n = seeds_needed(plan["effect"], sd, sd, level, plan["power"])
    lines.append(f"seeds per arm at the pooled std: {n} "
                 f"(power {welch_power(plan['effect'], sd, sd, n, level):.3f})")
    n_big = seeds_needed(plan["effect"], largest, largest, level, plan["power"])
    lines.append(f"sensitivity: at the largest std {n_big}; at the pooled std and alpha {plan['alpha']} "
                 f"uncorrected {seeds_needed(plan['effect'], sd, sd, plan['alpha'], plan['power'])}")
    return "\n".join(lines)


def default_records() -> List[str]:
    """Every docs/results/*/ holding a record.json, but the records of retrained backbones (their runs
    repeat another record's, and would count twice in the pooled std)."""
    found = (os.path.dirname(f) for f in glob.glob(os.path.join(REPO, "docs", "results", "*", "record.json")))
    return sorted(d for d in found if os.path.basename(d) not in RETRAINED)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", nargs="*", default=None,
                   help="study record directories (default: every docs/results/*/ holding a record.json)")
    p.add_argument("--prereg", default=os.path.join(REPO, "docs", "preregistration.yaml"),
                   help="the machine-readable preregistration: smallest_effect, alpha, power, hypotheses "
                        "(default: %(default)s)")
    args = p.parse_args(argv)
    records = args.records if args.records is not None else default_records()
    try:
        print(report(records, load_plan(args.prereg)))
    except ObjcropError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
