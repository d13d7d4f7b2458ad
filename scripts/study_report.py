"""Write docs/results.md from the study's records (scripts/study.sh): every number in it comes from them.

    python scripts/study_report.py --study docs/results/study --hard docs/results/study_hard

Reads, per study record (scripts/study_records.py; a pipeline output directory works too): the
report (`objcrop report`: report/results.md, runs.csv, plots/), the generated data's meta.json,
one pretraining run's config.yaml, the supervised bound's learnability.json, extras/
(scripts/study_extras.py: view statistics, proposal recall, view grids) and the pipeline logs
(wall time per task). Pictures are linked where they lie. The reading (Δ against random crops,
Welch's t-test over seeds) is computed here too.
"""
import argparse
import csv
import glob
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PROBE = "probe mAP (synth:test)"
KNN = "probe kNN mAP (synth:test)"


def _read_json(path: str) -> Optional[dict]:
    """objcrop.io.read_json, with None for a file a study has not written (yet)."""
    from objcrop.errors import ObjcropError
    from objcrop.io import read_json

    try:
        return read_json(path)
    except ObjcropError:
        return None


Row = Tuple[str, str, str, str]  # method, policy, proposals, epochs ("" for reference rows)


def _values(study: str) -> Tuple[Dict[Row, Dict[str, List[float]]], Dict[Row, str]]:
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
    from objcrop.report.baseline import BASELINE_POLICY, baseline_policy

    candidates = [p for (m, p, proposals, e) in values if m == method and e == epochs and proposals == "none"]
    return baseline_policy(policy, candidates) or BASELINE_POLICY


def reading_rows(values, column: str) -> List[dict]:
    """Every pretrained row against the random-crop row of its method on one column."""
    rows = []
    for (method, policy, proposals, epochs), cols in sorted(values.items()):
        if method in ("random_init", "supervised") or policy.startswith("random") or column not in cols:
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


def _run_tail(run_dir: str, last: int = 20) -> Optional[dict]:
    """Of one run's metrics: the first epoch's mean loss, the lowest epoch-mean loss after it and its
    epoch (a loss that falls and then climbs back shows here), and the mean loss and acc_top1 over the
    last `last` iterations; None when the run has no metrics."""
    from objcrop.report.collect import read_metrics

    rows = [r for r in read_metrics(run_dir) if "loss" in r]
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


def pretext_table(study: str) -> str:
    """How well each run learned its own task: MoCo's loss against ln(K+1) (the loss of a
    network that cannot tell its positive key from the queue) and how often the positive wins."""
    from objcrop.report.collect import read_config_value

    lines = ["| run | iterations | loss, first epoch (queue filling) | lowest epoch loss after it (epoch) | loss, last 20 it. | "
             "chance loss ln(K+1) | positive key ranked first, last 20 it. (chance 1/(K+1)) | "
             "embedding spread, last 20 it. (about 1: spread; 0: collapsed) | probe mAP % | "
             "probe features: effective rank / top principal component's variance share |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    found = False
    for run_dir in sorted(glob.glob(os.path.join(study, "runs", "pretrain", "*"))):
        results = _read_json(os.path.join(run_dir, "results.json")) or {}
        if results.get("status") != "ok":
            continue
        tail = _run_tail(run_dir)
        if tail is None:
            continue
        first, loss, acc = tail["first"], tail["last"], tail["acc"]
        name = os.path.basename(run_dir)
        probe = _read_json(os.path.join(study, "runs", "probe", name, "results.json")) or {}
        mAP = probe.get("mAP")
        iters = results.get("iterations", "—")
        moco = read_config_value(run_dir, "PRETRAIN.METHOD") == "moco_v2"
        k = read_config_value(run_dir, "PRETRAIN.MOCO.K") if moco else None
        chance = f"{math.log(k + 1):.2f}" if k else "—"
        acc_txt = "—" if acc is None else f"{acc:.3f} (1/{k + 1})" if k else f"{acc:.3f}"
        lowest = f"{tail['lowest']:.2f} ({tail['lowest_epoch']} of {tail['epochs']})"
        spread_txt = "—" if tail["spread"] is None else f"{tail['spread']:.2f}"
        lines.append(f"| {name} | {iters} | {'—' if first is None else f'{first:.2f}'} | {lowest} | {loss:.2f} | {chance} | "
                     f"{acc_txt} | {spread_txt} | {'—' if mAP is None else f'{100 * mAP:.1f}'} | "
                     f"{_spectrum_text(probe.get('features'))} |")
        found = True
    if not found:
        return "_(no finished pretraining run)_"
    # the references' probe features, to read the last column against
    references = [d for pattern in ("random_init*", "supervised*")
                  for d in glob.glob(os.path.join(study, "runs", "probe", pattern))]
    for probe_dir in sorted(references):
        name = os.path.basename(probe_dir)
        probe = _read_json(os.path.join(probe_dir, "results.json")) or {}
        if probe.get("status") == "ok":
            lines.append(f"| {name} (reference, no pretext task) |" + " — |" * 7 +
                         f" {100 * probe['mAP']:.1f} | {_spectrum_text(probe.get('features'))} |")
    return "\n".join(lines)


def report_table(study: str) -> str:
    path = os.path.join(study, "report", "results.md")
    if not os.path.isfile(path):
        return "_(no report: the study has not run)_"
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    # drop the report's title and its picture links (the plots are shown below); keep its
    # provenance line, the table and its notes
    return "\n".join(line for line in text.splitlines() if not line.startswith(("# ", "!["))).strip()


def view_stats_table(study: str) -> str:
    rows = []
    for path in sorted(glob.glob(os.path.join(study, "extras", "views_*.json"))):
        s = _read_json(path)
        if s:
            rows.append(s)
    if not rows:
        return "_(no view statistics: run scripts/study_extras.py)_"
    from objcrop.pretrain.views.stats import format_view_stats

    order = {"random": 0, "obj-obj": 1, "obj-obj-dilate": 2, "obj-scene": 3}
    rows.sort(key=lambda s: (order.get(s["policy"], 9), s["proposals"] != "gt", _source_name(s["proposals"])))
    return format_view_stats({f"{s['policy']} ({_source_name(s['proposals'])})": s for s in rows})


def _source_name(proposals: str) -> str:
    """'gt', 'none', or a store's method name (its file name without the extension)."""
    return os.path.splitext(os.path.basename(proposals))[0] if os.sep in proposals else proposals


def recall_table(study: str) -> str:
    lines = ["| proposals | boxes per image (mean) | recall@0.5 | recall@0.7 |", "|---|---:|---:|---:|"]
    found = False
    for path in sorted(glob.glob(os.path.join(study, "extras", "proposals_*.json"))):
        s = _read_json(path) or {}
        name = os.path.basename(path)[len("proposals_"):-len(".json")]
        per = s.get("boxes_per_image") or {}
        mean = per.get("mean") if isinstance(per, dict) else per
        r5, r7 = s.get("recall@0.5"), s.get("recall@0.7")
        lines.append(f"| {name} | {mean if mean is None else f'{float(mean):.1f}'} | "
                     f"{'—' if r5 is None else f'{r5:.3f}'} | {'—' if r7 is None else f'{r7:.3f}'} |")
        found = True
    return "\n".join(lines) if found else "_(no proposal statistics)_"


def _pipeline_logs(study: str) -> List[str]:
    """The pipeline logs of a study: one per machine in a record (logs/pipeline-<id>.log), or an
    output directory's own logs/pipeline.log."""
    return sorted(glob.glob(os.path.join(study, "logs", "pipeline*.log")))


def task_times(study: str) -> Dict[str, float]:
    """Seconds per finished task, from the pipeline logs' `done TASK in N s` lines (the last
    log that finished a task wins)."""
    out = {}
    for path in _pipeline_logs(study):
        for m in re.finditer(r"done (\S+) in (\d+) s", open(path, encoding="utf-8").read()):
            out[m.group(1)] = float(m.group(2))
    return out


def elapsed(study: str) -> Optional[float]:
    """Seconds from each pipeline log's first line to its last, summed over the logs (reruns
    included; times of day that go backwards are taken as the next day)."""
    total, found = 0.0, False
    for path in _pipeline_logs(study):
        stamps = [int(h) * 3600 + int(m) * 60 + int(sec) for h, m, sec in
                  re.findall(r"^\[pipeline (\d\d):(\d\d):(\d\d)\]", open(path, encoding="utf-8").read(), re.M)]
        found = found or bool(stamps)
        for prev, cur in zip(stamps, stamps[1:]):
            total += (cur - prev) % 86400
    return total if found else None


def time_summary(study: str) -> str:
    times = task_times(study)
    if not times:
        return "—"
    by_stage = defaultdict(list)
    for name, secs in times.items():
        by_stage[name.split(".")[0]].append(secs)
    parts = [f"{stage} {len(v)} task(s), median {statistics.median(v) / 60:.1f} min"
             for stage, v in sorted(by_stage.items())]
    wall, logs = elapsed(study), len(_pipeline_logs(study))
    return "; ".join(parts) + (f"; pipeline logs span {wall / 60:.0f} min ({logs} log(s), one per machine)" if wall else "")


def setup_summary(study: str) -> Dict[str, str]:
    meta = _read_json(os.path.join(study, "data", "meta.json")) or {}
    params = meta.get("params", {})
    # an untagged object-aware run describes the study best (its box keys matter; tagged runs,
    # e.g. `-4x`, change only what their tag says); else the baseline
    configs = sorted(glob.glob(os.path.join(study, "runs", "pretrain", "moco_v2_*", "config.yaml")),
                     key=lambda c: ("_obj-obj-dilate_gt_" not in c, "_random_none_" not in c, c))
    cfg_path = configs[0] if configs else None
    cfg = {}
    if cfg_path:
        import yaml

        with open(cfg_path, "r", encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    pre, views = cfg.get("PRETRAIN", {}), cfg.get("VIEWS", {})
    return {
        "variant": str(meta.get("variant", "?")),
        "data": (f"{meta.get('num_images', '?')} images ({', '.join(f'{k} {v}' for k, v in meta.get('splits', {}).items())}), "
                 f"{params.get('image_size', '?')} px, {len(meta.get('classes', []))} classes "
                 f"({', '.join(meta.get('classes', []))}), {params.get('min_objects', '?')}–{params.get('max_objects', '?')} "
                 f"objects of {params.get('object_scale', '?')} of the side, clutter {params.get('clutter', '?')}"),
        "pretrain": (f"{pre.get('ARCH', '?')}, {pre.get('EPOCHS', '?')} epochs, batch {pre.get('BATCH_SIZE', '?')}, "
                     f"base lr {pre.get('BASE_LR', '?')} per {pre.get('BASE_BATCH_SIZE', '?')}, MoCo K "
                     f"{pre.get('MOCO', {}).get('K', '?')}, m {pre.get('MOCO', {}).get('M', '?')}, "
                     f"T {pre.get('MOCO', {}).get('T', '?')}; {views.get('CROP_SIZE', '?')}-px crops, boxes grown to "
                     f"min({views.get('MIN_BOX_SIZE', '?')} (-1 = crop size), {views.get('MIN_BOX_FRACTION', '?')} × side)"),
        "learnability": learnability_budgets(study),
        "times": time_summary(study),
    }


def learnability_budgets(study: str) -> str:
    """The supervised bound's own probe (benchmarks/learnability.py) at every budget that was tried:
    OUT/supervised/ is the preset's, OUT/supervised_*/ earlier or other budgets kept beside it."""
    parts = []
    for path in sorted(glob.glob(os.path.join(study, "supervised*", "learnability.json")),
                       key=lambda p: (os.path.basename(os.path.dirname(p)) != "supervised", p)):
        learn = _read_json(path)
        if not learn:
            continue
        train = learn.get("supervised_training") or {}
        secs = float(train.get("train_seconds", float("nan")))
        took = f"{secs:.0f} s" if secs < 120 else f"{secs / 60:.0f} min"
        parts.append(f"{train.get('samples', '?')} samples ({train.get('epochs', float('nan')):.0f} epochs, "
                     f"{took} on {learn.get('device', 'cpu')}; "
                     f"`{os.path.relpath(path, study)}`): supervised {learn['supervised_mAP']:.3f}, "
                     f"random init {learn['random_init_mAP']:.3f}, chance {learn['chance_mAP']:.3f}")
    if not parts:
        return "not run"
    return "sklearn logistic-regression probe of benchmarks/learnability.py — " + "; ".join(parts)


def not_run(study: str, preset: str) -> str:
    """The preset's tasks whose results the study does not hold: what rerunning it runs next."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("objcrop_pipeline_for_report", os.path.join(HERE, "pipeline.py"))
    pipeline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = pipeline
    spec.loader.exec_module(pipeline)
    tasks = pipeline.build_plan(pipeline.load_preset(preset), study)
    missing = defaultdict(list)
    for t in tasks:
        if t.results and not all(pipeline._result_recorded(r) for r in t.results):
            missing[t.stage].append(t.name.split(".", 1)[1] if "." in t.name else t.name)
    if not missing:
        return "Every task of the preset has its result."
    lines = [f"Not run yet — `{preset}` preset tasks without a result ({sum(map(len, missing.values()))}), "
             f"in the order a rerun takes them:", ""]
    for stage in pipeline.STAGE_ORDER:
        if missing.get(stage):
            lines.append(f"* {stage} ({len(missing[stage])}): " + ", ".join(f"`{n}`" for n in missing[stage]))
    return "\n".join(lines)


def view_pairs(study: str) -> Optional[float]:
    """Median view pairs (images_seen) of a study's untagged MoCo random-crop runs: its budget."""
    seen = []
    for path in glob.glob(os.path.join(study, "runs", "pretrain", "moco_v2_random_none_s*", "results.json")):
        r = _read_json(path) or {}
        if r.get("status") == "ok" and r.get("images_seen"):
            seen.append(float(r["images_seen"]))
    return statistics.median(seen) if seen else None


def _scale(cpu_study: str, gpu_study: str) -> str:
    """", Nx the view pairs per run" of a GPU study against the CPU study on the same data."""
    cpu_pairs, gpu_pairs = view_pairs(cpu_study), view_pairs(gpu_study)
    return f", {gpu_pairs / cpu_pairs:.0f}x the view pairs per run" if cpu_pairs and gpu_pairs else ""


def machine_line(study: str) -> str:
    """The machine of a study run elsewhere (scripts/study_gpu.sh): its wall_time.txt and the GPU use
    nvidia-smi sampled every 5 s (gpu_use.csv); empty when the record has neither."""
    parts = []
    wall = os.path.join(study, "wall_time.txt")
    if os.path.isfile(wall):
        parts.append(f"last run of scripts/study_gpu.sh: {open(wall, encoding='utf-8').read().strip()}")
    history = os.path.join(study, "wall_times.txt")
    if os.path.isfile(history):
        seconds = [int(m.group(1)) for line in open(history, encoding="utf-8")
                   for m in [re.search(r"UTC (\d+) s on", line)] if m]
        parts.append(f"{len(seconds)} runs of it recorded in wall_times.txt, {sum(seconds)} s in all")
    use = os.path.join(study, "gpu_use.csv")
    if os.path.isfile(use):
        util, mem = [], []
        with open(use, newline="", encoding="utf-8") as f:
            for row in list(csv.reader(f))[1:]:
                if len(row) >= 3:
                    util.append(float(row[1].strip().rstrip("%").strip() or 0))
                    mem.append(float(row[2].strip().split()[0] or 0))
        busy = [u for u in util if u > 0]
        if util:
            parts.append(f"GPU use sampled every 5 s over that run ({len(util)} samples): mean {statistics.mean(util):.0f} % "
                         f"({statistics.mean(busy) if busy else 0:.0f} % while busy), at most {max(mem):.0f} MiB of memory")
    return "; ".join(parts)


def _pictures(pattern: str, doc_dir: str) -> str:
    """Markdown links, relative to the document, to the pictures a glob finds."""
    paths = sorted(glob.glob(pattern))
    return "\n".join(f"![{os.path.basename(p)}]({os.path.relpath(p, doc_dir)})" for p in paths)


def section(title: str, study: str, preset: str, doc_dir: str, same_data_as: str = "") -> str:
    """One study's part of docs/results.md. `same_data_as`: the title of a section whose data this
    study shares; its view statistics and proposal recall are not repeated here."""
    values, arches = _values(study)
    s = setup_summary(study)
    plots = _pictures(os.path.join(study, "report", "plots", "*.png"), doc_dir)
    grids = _pictures(os.path.join(study, "extras", "views_*.png"), doc_dir)
    machine = machine_line(study)
    machine = f"\n* **Machine**: {machine}." if machine else ""
    views = (f"""### What the views contain (`objcrop views stats`, the policies as pretraining ran them)

{view_stats_table(study)}

Sampled view pairs (per image: proposals; then each pair's crop boxes — view 1 green, view 2 magenta,
the chosen box yellow — and the two augmented views):

{grids or '_(none)_'}

### Proposal recall (`objcrop proposals stats`, train split)

{recall_table(study)}
""" if not same_data_as else f"""The data, the views' contents and the proposals are those of the {same_data_as} (the same
generator, seed and crops): see there.
""")
    return f"""## {title}

* **Data**: variant `{s['variant']}`: {s['data']}.
* **Pretraining**: {s['pretrain']}.
* **Learnable?** Suite's probe (mAP %, test split): {learnability_line(values)}. {s['learnability']}.
* **Time per task** (from the pipeline logs): {s['times']}.{machine}

### Results (`objcrop report`)

{report_table(study)}

{not_run(study, preset)}

### Did pretraining learn anything? Each backbone against random init

Probe mAP:

{gate_table(values, PROBE, arches)}

kNN mAP:

{gate_table(values, KNN, arches)}

### Reading: each policy against random crops of the same method

Probe mAP:

{reading_table(values, PROBE)}

kNN mAP:

{reading_table(values, KNN)}
{detection_readings(values)}
### Did the pretext task learn? (each run's metrics.jsonl)

BYOL's loss is a regression loss (no chance level, no ranking).

{pretext_table(study)}

### Plots

{plots or '_(none)_'}

{views}"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default=os.path.join(REPO, "docs", "results", "study"),
                   help="the default variant's record (scripts/study_records.py) or pipeline output")
    p.add_argument("--hard", default=os.path.join(REPO, "docs", "results", "study_hard"),
                   help="the hard variant's record or pipeline output")
    p.add_argument("--plain", default=os.path.join(REPO, "docs", "results", "study_plain"),
                   help="the background-free control's record (eval_configs/pipeline/study_plain.yaml)")
    p.add_argument("--gpu", default=os.path.join(REPO, "docs", "results", "study_gpu"),
                   help="the GPU-scale study's record (scripts/study_gpu.sh), shown after the CPU study's")
    p.add_argument("--plain-gpu", default=os.path.join(REPO, "docs", "results", "study_plain_gpu"),
                   help="the background-free control at GPU scale (PRESET=study_plain_gpu scripts/study_gpu.sh)")
    p.add_argument("--wall-time", default="output/study_wall_time.txt", help="written by scripts/study.sh")
    p.add_argument("--preamble", default=os.path.join(REPO, "docs", "results_preamble.md"),
                   help="the hand-written part (method, commands, discussion); it holds no measured number")
    p.add_argument("--discussion", default=os.path.join(REPO, "docs", "results_discussion.md"),
                   help="the hand-written reading of the tables; it holds no measured number either")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "results.md"))
    args = p.parse_args(argv)
    doc_dir = os.path.dirname(os.path.abspath(args.out))
    wall = open(args.wall_time, encoding="utf-8").read().strip() if os.path.isfile(args.wall_time) else ""
    with open(args.preamble, "r", encoding="utf-8") as f:
        preamble = f.read().rstrip()
    parts = [preamble]
    if os.path.isfile(args.discussion):
        with open(args.discussion, "r", encoding="utf-8") as f:
            parts.append(f.read().rstrip())
    if wall:
        parts.append(f"**Wall time of scripts/study.sh**: {wall}.")
    scale, plain_scale = _scale(args.study, args.gpu), _scale(args.plain, args.plain_gpu)
    for title, study, preset, same in (("Default variant (`study`)", args.study, "study", ""),
                                       ("Hard variant (`study-hard`)", args.hard, "study_hard", ""),
                                       ("No background to match views by (`study-plain`)", args.plain,
                                        "study_plain", ""),
                                       (f"GPU scale (`study_gpu`): ResNet-50{scale}", args.gpu,
                                        "study_gpu", "default variant"),
                                       (f"The background-free control at GPU scale (`study_plain_gpu`): ResNet-18{plain_scale}",
                                        args.plain_gpu, "study_plain_gpu", "background-free control (`study-plain`)")):
        if os.path.isdir(study):
            parts.append(section(title, os.path.abspath(study), preset, doc_dir, same_data_as=same))
    text = "\n\n".join(parts) + "\n"
    from objcrop.io import write_text_atomic

    write_text_atomic(args.out, text)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
