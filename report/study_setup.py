"""The study page's setup lines: the data, the pretraining settings, the time per task (from the
pipeline logs), the machine of a GPU study, and the preset's tasks the record does not hold yet.
"""
import csv
import os
import re
import statistics
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from objcrop.records import Provenance
from objcrop.report.record import StudyRecord, budget_words, held_at_other_budget, holds_all
from objcrop.report.study_runs import device_kind, learnability_budgets, pretrain_keys


def _pipeline_logs(record: StudyRecord) -> List[str]:
    """The texts of a study's pipeline logs: one per machine in a record (logs/pipeline-<id>.log),
    or an output directory's own logs/pipeline.log."""
    return [record.read(rel) or "" for rel in record.files("logs/pipeline*.log")]


def task_times(record: StudyRecord) -> Dict[str, float]:
    """Seconds per finished task, from the pipeline logs' `done TASK in N s` lines (the last
    log that finished a task wins)."""
    out = {}
    for text in _pipeline_logs(record):
        for m in re.finditer(r"done (\S+) in (\d+) s", text):
            out[m.group(1)] = float(m.group(2))
    return out


def elapsed(record: StudyRecord) -> Optional[float]:
    """Seconds from each pipeline log's first line to its last, summed over the logs (reruns
    included; times of day that go backwards are taken as the next day)."""
    total, found = 0.0, False
    for text in _pipeline_logs(record):
        stamps = [int(h) * 3600 + int(m) * 60 + int(sec) for h, m, sec in
                  re.findall(r"^\[pipeline (\d\d):(\d\d):(\d\d)\]", text, re.M)]
        found = found or bool(stamps)
        for prev, cur in zip(stamps, stamps[1:]):
            total += (cur - prev) % 86400
    return total if found else None


def task_device(record: StudyRecord, task: str) -> str:
    """The kind of device a task ran on ("cpu" or the CUDA device's name), as its record names it: a
    pretraining run in its results.json, the supervised bound's training (task
    `pretrain.supervised[_seed<K>]`) in its learnability.json, a probe in its own results.json or else
    through the run whose weights it probed. "" where nothing names it: the other stages, and results
    from before the field, which the page does not guess (the registered studies' such runs trained on
    the CPU, docs/preregistration.md, but the GPU studies' on a lent GPU)."""
    stage, _, run = task.partition(".")
    bound = record.read(f"{run}/learnability.json") if stage == "pretrain" else None
    if bound is not None:
        return _named_device(bound)
    if stage == "probe":
        probe = record.results(f"runs/probe/{run}/results.json") or {}
        return _named_device(probe) or _named_device(_training_probed(record, run, probe))
    return _named_device(record.results(f"runs/pretrain/{run}/results.json")) if stage == "pretrain" else ""


def _training_probed(record: StudyRecord, run: str, probe: dict) -> Optional[dict]:
    """The record of the training a probe's weights come from: the supervised bound's learnability.json
    (weights OUT/supervised[_seed<K>]/backbone.pth), else the pretraining run the probe is named after."""
    folder = os.path.basename(os.path.dirname(probe.get("weights") or ""))
    bound = record.read(f"{folder}/learnability.json") if folder.startswith("supervised") else None
    return bound if bound is not None else record.results(f"runs/pretrain/{run}/results.json")


def _named_device(results: Optional[dict]) -> str:
    """`device_kind` of a results.json or learnability.json that names its device; "" for one that does not."""
    return device_kind(results) if results and results.get("device") else ""


def _median_minutes(secs: List[float]) -> str:
    return f"median {statistics.median(secs) / 60:.1f} min"


def time_summary(record: StudyRecord) -> str:
    """Tasks and their median time per stage; a stage whose runs trained on more than one kind of
    device (a registered study's later seeds on a lent GPU) gets one median per device, since one
    median over a 2-core CPU and a GPU describes neither."""
    times = task_times(record)
    if not times:
        return "—"
    by_stage: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: defaultdict(list))
    for name, secs in times.items():
        by_stage[name.split(".")[0]][task_device(record, name)].append(secs)
    parts = []
    for stage, by_device in sorted(by_stage.items()):
        if len([d for d in by_device if d]) <= 1:
            secs = [t for v in by_device.values() for t in v]
            parts.append(f"{stage} {len(secs)} task(s), {_median_minutes(secs)}")
            continue
        parts.append(f"{stage} " + ", ".join(
            f"{len(v)} task(s) on {'the CPU' if d == 'cpu' else d or 'a device not recorded'}, "
            f"{_median_minutes(v)}" for d, v in sorted(by_device.items())))
    wall, logs = elapsed(record), len(record.files("logs/pipeline*.log"))
    return "; ".join(parts) + (f"; pipeline logs span {wall / 60:.0f} min ({logs} log(s), one per machine)" if wall else "")


def describing_config(record: StudyRecord) -> dict:
    """The config of the MoCo-v2 run that describes the study best: an untagged object-aware run on
    ground-truth boxes (its box keys matter; tagged runs, e.g. `-4x`, change only what their tag
    says), else plain random crops, else any."""
    def order(key: str):
        prov = Provenance.from_dict((record.results(key + "/results.json") or {}).get("pretrain"))
        return (prov.policy_label != "obj-obj-dilate" or prov.proposals != "gt",
                prov.policy_label != "random" or prov.proposals != "none", key)

    keys = [k for k in pretrain_keys(record) if record.config(k) is not None
            and Provenance.from_dict((record.results(k + "/results.json") or {}).get("pretrain")).method == "moco_v2"]
    return record.config(min(keys, key=order)) if keys else {}


def _data_line(meta: dict) -> str:
    params = meta.get("params", {})
    return (f"{meta.get('num_images', '?')} images ({', '.join(f'{k} {v}' for k, v in meta.get('splits', {}).items())}), "
            f"{params.get('image_size', '?')} px, {len(meta.get('classes', []))} classes "
            f"({', '.join(meta.get('classes', []))}), {params.get('min_objects', '?')}–{params.get('max_objects', '?')} "
            f"objects of {params.get('object_scale', '?')} of the side, clutter {params.get('clutter', '?')}")


def _pretrain_line(cfg: dict) -> str:
    pre, views = cfg.get("PRETRAIN", {}), cfg.get("VIEWS", {})
    moco = pre.get("MOCO", {})
    return (f"{pre.get('ARCH', '?')}, {pre.get('EPOCHS', '?')} epochs, batch {pre.get('BATCH_SIZE', '?')}, "
            f"base lr {pre.get('BASE_LR', '?')} per {pre.get('BASE_BATCH_SIZE', '?')}, MoCo K "
            f"{moco.get('K', '?')}, m {moco.get('M', '?')}, "
            f"T {moco.get('T', '?')}; {views.get('CROP_SIZE', '?')}-px crops, boxes grown to "
            f"min({views.get('MIN_BOX_SIZE', '?')} (-1 = crop size), {views.get('MIN_BOX_FRACTION', '?')} × side)")


def setup_summary(record: StudyRecord) -> Dict[str, str]:
    meta = record.read("data/meta.json") or {}
    return {"variant": str(meta.get("variant", "?")), "data": _data_line(meta),
            "pretrain": _pretrain_line(describing_config(record)),
            "learnability": learnability_budgets(record), "times": time_summary(record)}


def not_run(record: StudyRecord, preset: str, elsewhere: Sequence[Tuple[str, StudyRecord]] = ()) -> str:
    """The preset's tasks whose results the record does not hold: what rerunning it runs next. The
    tasks come from the record's plan.json (scripts/study_extras.py writes the pipeline's plan; this
    module reads files only), which tests/test_study_page.py checks against the preset as it is now.
    `elsewhere`: (section title, record) of the page's other sections that run this preset's tasks
    (study_plain_detect retrains study_plain's b256-100e rows): a task one of them holds ran there,
    and is named apart rather than as not run. A fine-tuning recorded at another budget than the
    plan's (plan.json "budget") is named apart too: the tables keep it, a rerun trains it again."""
    plan = record.read("plan.json")
    if not isinstance(plan, dict):
        return f"_(no plan recorded: `python scripts/study_extras.py --plan-only OUT` beside the `{preset}` run)_"
    missing, held, other_budget = defaultdict(list), defaultdict(list), defaultdict(list)
    for t in plan.get("tasks", []):
        budget = t.get("budget")
        if t.get("results") and not holds_all(record, t["results"], budget):
            name = t["name"].split(".", 1)[1] if "." in t["name"] else t["name"]
            there = next((title for title, other in elsewhere if holds_all(other, t["results"], budget)), None)
            if there:
                held[there].append(name)
            elif held_at_other_budget(record, t["results"], budget):
                other_budget[budget_words(budget)].append(name)
            else:
                missing[t["stage"]].append(name)
    run_there = [_held_elsewhere(title, names) for title, names in held.items()]
    run_there += [_held_at_another_budget(words, names) for words, names in other_budget.items()]
    if not missing:
        return "\n\n".join(run_there + ["Every other task of the preset has its result." if run_there
                                     else "Every task of the preset has its result."])
    selection = " ".join(plan.get("pipeline_args") or [])
    lines = [line for text in run_there for line in (text, "")]
    lines += [f"Not run yet — `{plan.get('preset', preset)}` preset tasks{f' (`{selection}`)' if selection else ''} "
              f"without a result "
              f"({sum(map(len, missing.values()))}), in the order a rerun takes them:", ""]
    for stage in plan.get("stage_order") or sorted(missing):
        if missing.get(stage):
            lines.append(f"* {stage} ({len(missing[stage])}): " + ", ".join(f"`{n}`" for n in missing[stage]))
    return "\n".join(lines)


def _held_elsewhere(title: str, names: List[str]) -> str:
    return (f"Run in the section \"{title}\" and recorded there, not here ({len(names)}): "
            + ", ".join(f"`{n}`" for n in names))


def _held_at_another_budget(planned: str, names: List[str]) -> str:
    """Fine-tunings recorded at another budget than the preset plans now: another experiment (the
    tables give them columns of their own), so a rerun of the preset fine-tunes them again."""
    return (f"Recorded at another fine-tuning budget than the preset's {planned}, so run again by a rerun "
            f"({len(names)}): " + ", ".join(f"`{n}`" for n in names))


def _gpu_use(path: str) -> str:
    util, mem = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in list(csv.reader(f))[1:]:
            if len(row) >= 3:
                util.append(float(row[1].strip().rstrip("%").strip() or 0))
                mem.append(float(row[2].strip().split()[0] or 0))
    busy = [u for u in util if u > 0]
    if not util:
        return ""
    return (f"GPU use sampled every 5 s over that run ({len(util)} samples): mean {statistics.mean(util):.0f} % "
            f"({statistics.mean(busy) if busy else 0:.0f} % while busy), at most {max(mem):.0f} MiB of memory")


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
        parts.append(_gpu_use(use))
    return "; ".join(p for p in parts if p)
