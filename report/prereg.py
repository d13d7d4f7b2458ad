"""The study page's registered comparisons (docs/preregistration.md) and the retrospective
re-reading of the comparisons made before the registration.

The registration's machine-readable part (docs/preregistration.yaml) lists the hypotheses; an
amendment fixes each variant's learning budget (run tag, epochs) and the ranked proposal store
(one for all variants, or one per variant).
A hypothesis is a reading row (method, policy label, proposals, epochs) of its study read against
its random-crop baseline. Its p-values are printed only once both arms hold the registered number
of seeds (fixed n, no peeking) and are Holm-corrected over the registered family, a hypothesis
without a result counting as p = 1 (the family's size never shrinks). Every other row of the page
is exploratory.
"""
import os
import re
from typing import Dict, List, Optional, Pattern, Set, Tuple

from objcrop.errors import ObjcropError
from objcrop.report import stats
from objcrop.report.baseline import is_random_crop
from objcrop.report.study_tables import (KNN, PROBE, RANDOM_INIT, SUPERVISED, Row, comparison, detection_columns,
                                         fmt_delta, fmt_g, fmt_p, fmt_perm, fmt_runs, learned, reading_rows)

PREREG = os.path.join("docs", "preregistration.yaml")
KEYS = ("version", "primary_column", "secondary_columns", "alpha", "seeds_per_arm", "amendment", "hypotheses")
Studies = Dict[str, Tuple[dict, dict]]  # preset name -> (study_values, arches)
SWEEP_METHOD = "moco_v2"
SWEEP_MIN_SEEDS = 3  # the amendment's "3 seeds per point"


def load(path: str) -> Optional[dict]:
    """The registration, or None when there is no file; a file without its keys raises, naming it."""
    if not os.path.isfile(path):
        return None
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise ObjcropError(f"{path}: unreadable preregistration: {e}") from e
    missing = [k for k in KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ObjcropError(f"{path}: the preregistration lacks {', '.join(missing)}")
    for h in data["hypotheses"]:
        if not all(k in h for k in ("id", "study", "method", "policy", "proposals", "against")):
            raise ObjcropError(f"{path}: hypothesis {h.get('id', '?')} needs id, study, method, policy, "
                               f"proposals, against")
    return data


# docs/results/<study>/missing.yaml: the registered runs recorded as missing (docs/preregistration.md: a run
# that fails twice; a backbone whose fine-tuning cannot be measured). Each entry: row (method, policy, proposals,
# epochs, as the report names it), seed, columns (registered column names, or [all]) and why.
MISSING_FILE = "missing.yaml"
ALL_COLUMNS = "all"
Missing = Dict[Tuple[Row, str], Dict[int, str]]  # (row, column or "all") -> {seed: why}


def load_missing(study_dir: str) -> Missing:
    """The missing registered runs a study's record declares (none without the file); a malformed entry
    raises, naming the file and the entry."""
    path = os.path.join(study_dir, MISSING_FILE)
    if not os.path.isfile(path):
        return {}
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            entries = yaml.safe_load(f) or []
    except (OSError, yaml.YAMLError) as e:
        raise ObjcropError(f"{path}: unreadable: {e}") from e
    out: Missing = {}
    for i, e in enumerate(entries if isinstance(entries, list) else [entries]):
        ok = (isinstance(e, dict) and isinstance(e.get("row"), list) and len(e["row"]) == 4
              and isinstance(e.get("seed"), int) and isinstance(e.get("columns"), list) and e["columns"]
              and str(e.get("why") or "").strip())
        if not ok:
            raise ObjcropError(f"{path}: entry {i} needs row [method, policy, proposals, epochs], seed (an int), "
                               f"columns (a list of registered column names, or [{ALL_COLUMNS}]) and why")
        row = tuple(str(x) for x in e["row"])
        for column in e["columns"]:
            out.setdefault((row, str(column)), {})[e["seed"]] = str(e["why"]).strip()
    return out


def missing_seeds(missing: Optional[Missing], row: Row, column: str) -> Dict[int, str]:
    """{seed: why} of a row's runs recorded as missing in one column (or in all)."""
    if not missing:
        return {}
    return {**missing.get((row, ALL_COLUMNS), {}), **missing.get((row, column), {})}


def ranked_store(amendment: dict, study: str) -> Optional[str]:
    """The ranked proposals' label in `study`'s runs (`saliency-gs-top10`): `ranked_proposals` names one
    for every variant, or one per variant ({study: label}), as scripts/proposal_choice.py's rule, applied
    to each variant's training split, may choose different methods."""
    ranked = amendment.get("ranked_proposals")
    return ranked.get(study) if isinstance(ranked, dict) else ranked


def hypothesis_row(prereg: dict, h: dict) -> Tuple[Optional[Row], Optional[str]]:
    """(its reading row, its baseline's policy label), or (None, None) while the amendment has not
    fixed the budget of its study (or the ranked proposal store it names)."""
    amend = prereg.get("amendment") or {}
    budget = amend.get(h["study"]) or {}
    proposals = ranked_store(amend, h["study"]) if h["proposals"] == "ranked" else h["proposals"]
    if budget.get("epochs") is None or proposals is None:
        return None, None
    tag = f"-{budget['tag']}" if budget.get("tag") else ""
    return (h["method"], h["policy"] + tag, str(proposals), str(budget["epochs"])), h["against"] + tag


def registered_rows(prereg: Optional[dict], study: str) -> Set[Row]:
    """The reading rows of `study` that the registration claims (left out of its exploratory tables)."""
    if not prereg:
        return set()
    return {row for h in prereg["hypotheses"] if h["study"] == study
            for row in [hypothesis_row(prereg, h)[0]] if row is not None}


def _status(prereg: dict, h: dict, studies: Studies, column: str, missing: Optional[Dict[str, Missing]] = None) -> dict:
    """A hypothesis' state in one column: complete once each arm holds every registered seed, a seed
    recorded as missing counting as in (the test then runs on the seeds present, and says so)."""
    row, against = hypothesis_row(prereg, h)
    n = int(prereg["seeds_per_arm"])
    if row is None:
        return {"status": "pending: the amendment has not fixed its budget / proposals"}
    values = studies.get(h["study"], ({}, {}))[0]
    base_row = (h["method"], against, "none", row[3])
    mine = values.get(row, {}).get(column, [])
    base = values.get(base_row, {}).get(column, [])
    gone = [missing_seeds((missing or {}).get(h["study"]), r, column) for r in (row, base_row)]
    out = {"row": row, "against": against, "n": len(mine), "n_base": len(base), "missing": [len(g) for g in gone]}
    if len(mine) + len(gone[0]) > n or len(base) + len(gone[1]) > n:
        return {**out, "status": f"{len(mine)} and {len(base)} seeds present and {len(gone[0])} and {len(gone[1])} "
                                 f"declared missing: more than {n} (a seed in {MISSING_FILE} that is in the record?)"}
    if len(mine) + len(gone[0]) < n or len(base) + len(gone[1]) < n:
        return {**out, "status": f"{len(mine)} and {len(base)} of {n} seeds: not read before all are in"}
    status = "complete"
    if any(gone):
        status += "; missing: " + "; ".join(f"{name} seed {seed} ({why})" for name, g in zip(("arm", against), gone)
                                           for seed, why in sorted(g.items()))
    return {**out, **comparison(mine, base), "status": status, "complete": True}


def interim_rows(prereg: Optional[dict], study: str, values: dict, missing: Optional[Missing] = None) -> Set[Row]:
    """The registered arms of `study` whose scores must not be shown yet (fixed n, no peeking): an arm
    holding a score in a registered column (primary or secondary) whose comparison is not complete,
    i.e. one of its two arms lacks some of the registered seeds. The report's tables and plots and the
    page's gate and pretext tables leave those scores out until then (scripts/power.py lists no
    registered arm at all); the record and the report's runs.csv keep them (they are the data, not a
    reading)."""
    if not prereg:
        return set()
    studies = {study: (values, {})}
    out = set()
    for h in prereg["hypotheses"]:
        if h["study"] != study:
            continue
        for column in [prereg["primary_column"], *prereg["secondary_columns"]]:
            r = _status(prereg, h, studies, column, {study: missing or {}})
            if r.get("n") and not r.get("complete"):
                out.add(r["row"])
    return out


def registered_table(prereg: dict, studies: Studies, column: str, primary: bool,
                     missing: Optional[Dict[str, Missing]] = None) -> str:
    rows = [(h, _status(prereg, h, studies, column, missing)) for h in prereg["hypotheses"]]
    complete = [r.get("p") if r.get("complete") else None for _, r in rows]
    # the family's size is fixed: a hypothesis without a result counts as p = 1
    holm_w = stats.holm([1.0 if p is None else p for p in complete])
    holm_perm = stats.holm([r.get("perm_p") if r.get("perm_p") is not None else 1.0 for _, r in rows])
    lines = ["| id | variant | arm | against | seeds | Δ [95 % CI] | Hedges g | Welch p | Holm p | permutation p | "
             "Holm permutation p | " + ("verdict |" if primary else "status |"),
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    alpha = float(prereg["alpha"])
    for i, (h, r) in enumerate(rows):
        arm = " ".join(r["row"][1:3]) + f" (e{r['row'][3]})" if "row" in r else f"{h['policy']} {h['proposals']}"
        if not r.get("complete"):
            lines.append(f"| {h['id']} | {h['study']} | {arm} | {r.get('against', h['against'])} | "
                         f"{r.get('n', 0)} ({r.get('n_base', 0)}) |" + " — |" * 6 + f" {r['status']} |")
            continue
        verdict = r["status"]  # "complete", and which seeds are recorded as missing, if any
        if primary:
            ok = r["delta"] > 0 and holm_w[i] < alpha and holm_perm[i] < alpha
            verdict = ("supported" if ok else "not shown") + r["status"][len("complete"):]
        lines.append(f"| {h['id']} | {h['study']} | {arm} | {r['against']} | {r['n']} ({r['n_base']}) | "
                     f"{fmt_delta(r)} | {fmt_g(r)} | {fmt_p(r['p'])} | {fmt_p(holm_w[i])} | {fmt_p(r['perm_p'])} | "
                     f"{fmt_p(holm_perm[i])} | {verdict} |")
    return "\n".join(lines)


CPU_SEEDS = 3  # the clarification's "seeds 0-2 of every arm train on the CPU"
Devices = Dict[str, Dict[Tuple[Row, int], str]]  # preset name -> (row, seed) -> kind of device (study_runs)


def device_deviations(prereg: dict, devices: Devices) -> Tuple[int, List[str]]:
    """(how many registered runs were checked, the deviations from the registration's device rule):
    seed k of every arm of a hypothesis on one kind of device, seeds 0-2 on the CPU."""
    checked, deviations = set(), []
    for h in prereg["hypotheses"]:
        row, against = hypothesis_row(prereg, h)
        if row is None:
            continue
        arms, runs = (row, (row[0], against, "none", row[3])), devices.get(h["study"], {})
        for seed in sorted({s for (r, s) in runs if r in arms}):
            kinds = {arm: runs[(arm, seed)] for arm in arms if (arm, seed) in runs}
            checked |= {(h["study"], arm, seed) for arm in kinds}
            where = ", ".join(f"{arm[1]} {arm[2]} on {kind}" for arm, kind in kinds.items())
            if len(set(kinds.values())) > 1:
                deviations.append(f"{h['id']} seed {seed}: the arms trained on different devices ({where})")
            elif seed < CPU_SEEDS and set(kinds.values()) != {"cpu"}:
                deviations.append(f"{h['id']} seed {seed}: not on the CPU ({where})")
    return len(checked), deviations


def device_line(prereg: dict, devices: Devices) -> str:
    n, deviations = device_deviations(prereg, devices)
    rule = ("**Devices** (docs/preregistration.md, clarifications: seed k of every arm of a hypothesis on one kind "
            f"of device, seeds 0-{CPU_SEEDS - 1} on the CPU), from each run's results.json: {n} registered runs")
    if not deviations:
        return f"{rule}, no deviation."
    return f"{rule}; deviations:\n\n" + "\n".join(f"* {d}" for d in deviations)


# scripts/same_training.py --json OUT/extras/second_trainings_<OUT>.json, recorded with the fine-tunings: one file
# per output folder (a record keeps one file per path, so a later folder's would replace an earlier one's)
SECOND_TRAININGS = "extras/second_trainings*.json"


def second_trainings(record) -> Dict[str, dict]:
    """run name -> same_training.py's verdict, over every second-trainings file of a record."""
    out: Dict[str, dict] = {}
    for path in record.files(SECOND_TRAININGS):
        out.update(record.read(path) or {})
    return out


def second_trainings_line(second: Dict[str, dict]) -> str:
    """docs/preregistration.md (detection): the registered runs trained again for their fine-tuning only,
    per study, and whether the second training repeated the first's recorded losses; "" when none."""
    parts = []
    for study, verdicts in second.items():
        for name, v in sorted((verdicts or {}).items()):
            how = (f"the same losses over {v.get('common')} of {v.get('recorded')} iterations" if v.get("same")
                   else f"losses differ from iteration {v.get('first_difference')} on: another training of the same "
                        f"seed and settings")
            parts.append(f"{study} `{name}` ({how})")
    if not parts:
        return ""
    return ("**Trained again for their fine-tuning only** (their probe and pretraining record are the first "
            "training's; scripts/same_training.py): " + "; ".join(parts) + ".")


def reference_line(prereg: dict, studies: Studies, column: str) -> str:
    """The reference rows of a registered column in each registered study (not tested, not withheld):
    random init (for detection: fine-tuned from scratch in the same config) and the supervised bound,
    so that the arms' numbers can be placed between a floor and a ceiling."""
    parts = []
    for study in dict.fromkeys(h["study"] for h in prereg["hypotheses"]):
        values = studies.get(study, ({}, {}))[0]
        refs = [f"{name} {fmt_runs(values.get(row, {}).get(column, []))}"
                for name, row in (("random init", RANDOM_INIT), ("supervised", SUPERVISED))]
        parts.append(f"{study}: " + ", ".join(refs))
    return "References (not tested): " + "; ".join(parts) + "."


def registered_section(prereg: Optional[dict], studies: Studies, path: str, devices: Optional[Devices] = None,
                       missing: Optional[Dict[str, Missing]] = None, second: Optional[Dict[str, dict]] = None) -> str:
    if prereg is None:
        return "## Registered comparisons\n\n_(no preregistration file)_"
    parts = [f"""## Registered comparisons (docs/preregistration.md)

The hypotheses of the registration (`{path}`), each read only when both of its arms hold all
{prereg['seeds_per_arm']} registered seeds (fixed n, no peeking). Δ: the arm minus random crops,
with its 95 % confidence interval (Welch–Satterthwaite). Holm: over the {len(prereg['hypotheses'])}
registered hypotheses, one without a result counting as p = 1. Permutation p: exact over every
relabelling of the seeds, or {stats.DRAWS} seeded Monte-Carlo relabellings beyond {stats.MAX_EXACT}
(report/stats.py). Supported: Δ > 0 and both Holm p-values below {prereg['alpha']}. A run the
registration's rules record as missing (a run that failed twice, a fine-tuning that cannot be
measured; `docs/results/<variant>/{MISSING_FILE}`) counts as in, the test runs on the seeds present, and
its row names it. These rows are left out of the sections' exploratory tables.

Primary, {prereg['primary_column']}:

{registered_table(prereg, studies, prereg['primary_column'], True, missing)}

{reference_line(prereg, studies, prereg['primary_column'])}"""]
    if devices is not None:
        parts.append(device_line(prereg, devices))
    for column in prereg["secondary_columns"]:
        parts.append(f"Secondary (Holm over the same family; cannot support a hypothesis alone), {column}:\n\n"
                     f"{registered_table(prereg, studies, column, False, missing)}\n\n{reference_line(prereg, studies, column)}")
    line = second_trainings_line(second or {})
    if line:
        parts.append(line)
    return "\n\n".join(parts)


def _reading_tests(studies: Studies, prereg: Optional[dict]) -> List[Tuple[str, str, dict]]:
    """(study, column, reading row) of every exploratory reading row with a Welch p on the page."""
    out = []
    for study, (values, _) in studies.items():
        skip = registered_rows(prereg, study)
        for column in [PROBE, KNN] + detection_columns(values):
            out += [(study, column, r) for r in reading_rows(values, column)
                    if r["p"] is not None and (r["method"], r["policy"], r["proposals"], r["epochs"]) not in skip]
    return out


def tag_pattern(budget: dict) -> Optional[Pattern]:
    """The amendment's recipe at any number of epochs: its tag with the epochs it names made a group
    (`b256-200e-bf16` -> `b256-(N)e-bf16`); None when the tag does not name its epochs."""
    tag, epochs = str(budget.get("tag") or ""), budget.get("epochs")
    head, found, tail = tag.partition(f"{epochs}e")
    if epochs is None or not found:
        return None
    return re.compile(re.escape(head) + r"(\d+)e" + re.escape(tail))


def after_registration(prereg: Optional[dict], study: str, policy: str) -> bool:
    """Is a reading row (its policy label) one of the runs made after the registration in the recipe its
    amendment fixed: that recipe at another budget (the budget curve, `b256-100e-bf16`) or a variant of
    it (a tag that ends in the amendment's, `explore-b256-200e-bf16`: the exploratory arms)? They are
    read as exploratory rows, never as part of the re-reading of what came before the registration."""
    budget = (prereg or {}).get("amendment", {}).get(study)
    pattern = tag_pattern(budget) if isinstance(budget, dict) else None
    return bool(pattern and re.search("-" + pattern.pattern + "$", policy))


def at_learning_budget(values: dict, arches: dict, r: dict, alpha: float) -> bool:
    """Is a reading row's comparison at a budget where pretraining learned: does either arm probe
    above random init (study_tables.learned)?"""
    arm = (r["method"], r["policy"], r["proposals"], r["epochs"])
    return (learned(values, arches, arm, alpha)
            or learned(values, arches, (r["method"], r["baseline"], "none", r["epochs"]), alpha))


def retrospective_section(studies: Studies, prereg: Optional[dict], alpha: float) -> str:
    """The comparisons made before the registration at budgets where pretraining learned (probe and
    kNN), Holm-corrected over themselves and over every reading test on the page."""
    tests = _reading_tests(studies, prereg)
    family = [i for i, (study, column, r) in enumerate(tests) if column in (PROBE, KNN)
              and at_learning_budget(*studies[study], r, alpha)
              and not after_registration(prereg, study, r["policy"])]
    holm_all = stats.holm([r["p"] for _, _, r in tests])
    holm_w = stats.holm([tests[i][2]["p"] for i in family])
    holm_perm = stats.holm([tests[i][2]["perm_p"] for i in family])
    k, m = len(family), len(tests)
    lines = [f"""## Before the registration: the comparisons at learning budgets, re-read (exploratory)

Every policy comparison the study ran before docs/preregistration.md at a budget where pretraining
learned — either arm probes above the random-init backbone of its study with Welch p < {alpha}
(the gate tables) — on the probe and on kNN: {k} tests. They were not registered: the seeds of some
were added while the p-value was watched, so none of them is a confirmation. Holm over these {k},
and over all {m} exploratory reading tests with a p on this page. The comparisons run after the
registration in the recipe its amendment fixed (the budget curve, the exploratory arms) are not
among these {k}: they are exploratory rows of their own sections.

| study | arm | against | epochs | score | seeds | Δ [95 % CI] | Hedges g | Welch p | Holm p (these {k}) | permutation p | Holm permutation p (these {k}) | Holm p (all {m}) |
|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"""]
    for j, i in enumerate(family):
        study, column, r = tests[i]
        score = "kNN" if column == KNN else "probe"
        lines.append(f"| {study} | {r['method']} {r['policy']} {r['proposals']} | {r['baseline']} | {r['epochs']} | "
                     f"{score} | {r['n']} ({r['n_base']}) | {fmt_delta(r)} | {fmt_g(r)} | {fmt_p(r['p'])} | "
                     f"{fmt_p(holm_w[j])} | {fmt_perm(r)} | {fmt_p(holm_perm[j])} | {fmt_p(holm_all[i])} |")
    if not family:
        lines.append("| — |" + " — |" * 12)
    return "\n".join(lines)


def sweep_rows(values: dict, arches: dict, smallest_effect: float, alpha: float) -> List[dict]:
    """Issue 20 §2's budget sweep of one variant: every MoCo-v2 random-crop setting (tagged or not)
    of the random-init reference's architecture against that reference on the probe, by epochs
    (one variant's train split, so epochs order the view pairs seen). `meets`: the amendment's rule,
    at least SWEEP_MIN_SEEDS seeds, Δ of at least the smallest effect of interest and Welch p < alpha."""
    ref = values.get(RANDOM_INIT, {}).get(PROBE, [])
    out = []
    for key, cols in values.items():
        method, policy, _, epochs = key
        if method != SWEEP_METHOD or not is_random_crop(policy) or not cols.get(PROBE) or not ref:
            continue
        if arches.get(key, "") != arches.get(RANDOM_INIT, ""):
            continue  # another architecture has no reference here (the gate tables name it)
        r = {**comparison(cols[PROBE], ref), "policy": policy, "epochs": epochs, "values": cols[PROBE],
             "n": len(cols[PROBE]), "n_base": len(ref)}
        r["meets"] = (r["n"] >= SWEEP_MIN_SEEDS and r["p"] is not None and r["p"] < alpha
                      and r["delta"] >= smallest_effect)
        out.append(r)
    return sorted(out, key=lambda r: (int(r["epochs"] or 0), r["policy"]))


def sweep_variants(studies: Studies, prereg: dict) -> List[str]:
    """The textured variants whose budget the amendment fixes, among the studies on the page."""
    return [v for v in prereg["amendment"] if v != "ranked_proposals" and v in studies]


def sweep_section(studies: Studies, prereg: Optional[dict], picture: str = "") -> str:
    """The learning budget of each textured variant the amendment fixes: the sweep table, the
    smallest budget that meets the amendment's rule (or none yet), and `picture` (a markdown link)."""
    if not prereg:
        return ""
    variants = sweep_variants(studies, prereg)
    effect, alpha = float(prereg["smallest_effect"]), float(prereg["alpha"])
    lines = [f"""## The learning budget of the textured variants (issue 20 §2; the amendment's input)

MoCo-v2 with random crops only (policy labels `random[-tag]`), every setting of each textured variant
against that variant's random-init backbone on the probe, by epochs (the view pairs seen: epochs × the
train split). The amendment (docs/preregistration.md) takes the smallest budget whose random crops
probe above random init by at least the smallest effect of interest ({effect} mAP points) with Welch
p < {alpha} over at least {SWEEP_MIN_SEEDS} seeds ("meets"). Settings that change more than the budget
(lr, colour) are listed too: they are the sweep's history, not candidates unless they meet the rule.

| variant | setting | epochs | probe mAP | Δ vs random init [95 % CI] | Hedges g | Welch p | meets |
|---|---|---:|---:|---:|---:|---:|---|"""]
    chosen = []
    for v in variants:
        rows = sweep_rows(*studies[v], effect, alpha)
        for r in rows:
            lines.append(f"| {v} | {r['policy']} | {r['epochs']} | {fmt_runs(r['values'])} | {fmt_delta(r)} | "
                         f"{fmt_g(r)} | {fmt_p(r['p'])} | {'**yes**' if r['meets'] else 'no'} |")
        first = next((r for r in rows if r["meets"]), None)
        chosen.append(f"* `{v}`: " + (f"`{first['policy']}` at {first['epochs']} epochs" if first else
                                      "no budget run so far meets it"))
    if not variants:
        lines.append("| — |" + " — |" * 7)
    text = "\n".join(lines) + "\n\nThe smallest budget that meets the rule:\n\n" + "\n".join(chosen)
    return text + (f"\n\n{picture}" if picture else "")


def sweep_panels(studies: Studies, prereg: dict) -> list:
    """(variant, sweep rows, random-init probe values, smallest effect) per variant with a random-init
    probe: what report/plots.plot_budget_sweep draws."""
    effect, alpha = float(prereg["smallest_effect"]), float(prereg["alpha"])
    return [(v, sweep_rows(*studies[v], effect, alpha), studies[v][0][RANDOM_INIT][PROBE], effect)
            for v in sweep_variants(studies, prereg) if studies[v][0].get(RANDOM_INIT, {}).get(PROBE)]
