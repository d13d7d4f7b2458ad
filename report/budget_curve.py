"""Issue 20 §3's budget curve (exploratory): do object-aware views learn sooner?

MoCo-v2 with random crops and with Obj-Obj+Dilate on ground-truth boxes, trained with the recipe the
amendment fixed for a textured variant (docs/preregistration.yaml: its tag, `b256-200e-bf16`) at other
numbers of epochs, the tag naming them (`b256-100e-bf16`, `b256-50e-bf16`): only the budget differs
between the points. At each budget the page shows both arms on the probe, whether each learned (it
probes above the variant's random-init backbone, the gate tables' rule) and the difference of the
two. Nothing here is Holm-corrected with the registered family; the amendment's own budget repeats
the registered arms, and stays withheld as long as they are (report/prereg.interim_rows).
"""
from typing import Collection, Dict, List, Optional, Tuple

from objcrop.report.prereg import sweep_variants, tag_pattern
from objcrop.report.study_tables import (PROBE, RANDOM_INIT, Row, comparison, fmt_delta, fmt_g, fmt_p, fmt_perm,
                                         fmt_runs, learned)

METHOD = "moco_v2"
BASELINE = "random"
POLICY, PROPOSALS = "obj-obj-dilate", "gt"  # the paper's best policy, on the boxes that found the objects
MIN_BUDGETS = 3  # issue 20 §3: "the two policies at >= 3 budgets"
# (variant, [budget rows], random-init probe values): what plots.plot_budget_curve draws
Panel = Tuple[str, List[dict], List[float]]


def _arm(values: dict, policy: str, proposals: str, epochs: str, withheld: Collection[Row]) -> Tuple[Row, list, bool]:
    """(its row, its probe values, whether they are withheld): a withheld arm's values stay off the page."""
    key = (METHOD, policy, proposals, epochs)
    held = key in withheld
    return key, ([] if held else values.get(key, {}).get(PROBE, [])), held


def curve_rows(values: dict, arches: Dict[Row, str], budget: dict, alpha: float,
               withheld: Collection[Row] = ()) -> List[dict]:
    """One row per budget of the recipe at which either policy ran, by epochs: each arm's probe values
    (empty when not run, or withheld: `base_held`, `obj_held`), whether it learned, and the comparison of
    the two when both are shown."""
    pattern = tag_pattern(budget)
    if pattern is None:
        return []
    tags = {}
    for method, policy, _, epochs in values:
        for prefix in (BASELINE + "-", POLICY + "-"):
            m = pattern.fullmatch(policy[len(prefix):]) if method == METHOD and policy.startswith(prefix) else None
            if m and m.group(1) == epochs:  # the tag names the run's own epochs
                tags[epochs] = policy[len(prefix):]
    rows = []
    for epochs, tag in sorted(tags.items(), key=lambda t: int(t[0])):
        base_key, base, base_held = _arm(values, f"{BASELINE}-{tag}", "none", epochs, withheld)
        obj_key, obj, obj_held = _arm(values, f"{POLICY}-{tag}", PROPOSALS, epochs, withheld)
        r = {"epochs": epochs, "tag": tag, "base": base, "obj": obj, "base_held": base_held, "obj_held": obj_held,
             "base_learned": learned(values, arches, base_key, alpha) and not base_held,
             "obj_learned": learned(values, arches, obj_key, alpha) and not obj_held}
        if base and obj:
            r.update(comparison(obj, base))
        rows.append(r)
    return rows


def _runs_cell(run: list, held: bool) -> str:
    return "withheld" if held else fmt_runs(run) if run else "not run"


def _learned_cell(run: list, did: bool) -> str:
    return "—" if not run else "**yes**" if did else "no"


def section(studies: Dict[str, Tuple[dict, dict]], prereg: Optional[dict], withheld: Dict[str, Collection[Row]],
            picture: str = "") -> str:
    """The budget curve of every textured variant the amendment fixes, as a page section ("" without a
    registration)."""
    if not prereg:
        return ""
    alpha = float(prereg["alpha"])
    variants = sweep_variants(studies, prereg)
    lines = [f"""## The budget curve (issue 20 §3; exploratory): do object-aware views learn sooner?

MoCo-v2 with random crops and with Obj-Obj+Dilate on ground-truth boxes in the recipe the amendment
fixed for each textured variant, at other numbers of epochs (the tag names them; nothing else
differs), on the probe. "Learned": the arm probes above its variant's random-init backbone with
Welch p < {alpha} (the gate tables' rule). Δ: Obj-Obj+Dilate minus random crops at that budget, with
its 95 % CI; no p-value here is corrected, and none is part of the registered family. Object-aware
views would "learn sooner" if they learned at a budget where random crops do not, or led by more at
the smaller budgets. The issue asks for both policies at {MIN_BUDGETS} budgets or more.

| variant | epochs | tag | random crops | Obj-Obj+Dilate (gt) | random learned | Obj-Obj+Dilate learned | Δ [95 % CI] | Hedges g | Welch p | permutation p |
|---|---:|---|---:|---:|---|---|---:|---:|---:|---:|"""]
    counts = []
    for v in variants:
        rows = curve_rows(*studies[v], prereg["amendment"][v], alpha, withheld.get(v, ()))
        for r in rows:
            both = bool(r["base"] and r["obj"])
            lines.append(
                f"| {v} | {r['epochs']} | {r['tag']} | {_runs_cell(r['base'], r['base_held'])} | "
                f"{_runs_cell(r['obj'], r['obj_held'])} | {_learned_cell(r['base'], r['base_learned'])} | "
                f"{_learned_cell(r['obj'], r['obj_learned'])} | {fmt_delta(r) if both else '—'} | "
                f"{fmt_g(r) if both else '—'} | {fmt_p(r.get('p'))} | {fmt_perm(r) if both else '—'} |")
        done = sum(1 for r in rows if r["base"] and r["obj"])
        counts.append(f"* `{v}`: {done} budget{'' if done == 1 else 's'} with both policies"
                      + ("" if done >= MIN_BUDGETS else f" (of the {MIN_BUDGETS} the curve needs)"))
    if not variants:
        lines.append("| — |" + " — |" * 10)
    text = "\n".join(lines) + "\n\n" + "\n".join(counts)
    return text + (f"\n\n{picture}" if picture else "")


def panels(studies: Dict[str, Tuple[dict, dict]], prereg: dict, withheld: Dict[str, Collection[Row]]) -> List[Panel]:
    """What plots.plot_budget_curve draws: the variants with a random-init probe and a point to draw."""
    alpha, out = float(prereg["alpha"]), []
    for v in sweep_variants(studies, prereg):
        values, arches = studies[v]
        ref = values.get(RANDOM_INIT, {}).get(PROBE)
        rows = [r for r in curve_rows(values, arches, prereg["amendment"][v], alpha, withheld.get(v, ()))
                if r["base"] or r["obj"]]
        if ref and rows:
            out.append((v, rows, ref))
    return out
