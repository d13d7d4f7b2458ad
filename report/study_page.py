"""`objcrop report study`: write docs/results.md from the study's records; every number in it comes
from them.

Per study record (report/record.py; a pipeline output directory works too) it reads the record's
report (`objcrop report`: report/results.md, runs.csv, plots/), the generated data's meta.json,
one pretraining run's config, the supervised bound's learnability.json, extras/
(scripts/study_extras.py: view statistics, proposal recall, view grids) and the pipeline logs
(wall time per task). Pictures are linked where they lie. The reading (Δ against random crops with
its 95 % CI, Hedges' g, Welch's and the permutation test over seeds) is computed here too
(report/study_tables.py, report/stats.py); the registered comparisons of docs/preregistration.yaml
and the re-reading of the earlier ones are read apart from the exploratory rows (report/prereg.py).
The budget sweep of the textured variants (issue 20 §2: random crops against random init by epochs, and the
smallest budget that meets the registration's amendment rule) is a section of its own, with its picture
written beside the page (results/budget_sweep.png next to --out); so is issue 20 §3's budget curve of the two
policies (report/budget_curve.py, results/budget_curve.png).
"""
import glob
import os
import re
from collections import defaultdict
from typing import List, Optional, Tuple

from objcrop.io import write_text_atomic
from objcrop.report import budget_curve
from objcrop.report import prereg as prereg_
from objcrop.report.plots import plot_budget_curve, plot_budget_sweep
from objcrop.report.record import StudyRecord
from objcrop.report.study_runs import pretext_table, recall_table, run_devices, view_pairs, view_stats_table
from objcrop.report.study_setup import machine_line, not_run, setup_summary
from objcrop.report.study_tables import (KNN, PROBE, RANDOM_INIT, OtherReferences, detection_readings, gate_table,
                                         learnability_line, reading_table, study_values)

RESULTS = os.path.join("docs", "results")
# (option, its record, help): the studies the page shows, in order
STUDIES = [
    ("study", os.path.join(RESULTS, "study"), "the default variant's record or pipeline output"),
    ("hard", os.path.join(RESULTS, "study_hard"), "the hard variant's record or pipeline output"),
    ("plain", os.path.join(RESULTS, "study_plain"),
     "the background-free control's record (eval_configs/pipeline/study_plain.yaml)"),
    ("gpu", os.path.join(RESULTS, "study_gpu"),
     "the GPU-scale study's record (scripts/study_gpu.sh), shown after the CPU study's"),
    ("plain_gpu", os.path.join(RESULTS, "study_plain_gpu"),
     "the background-free control at GPU scale (PRESET=study_plain_gpu scripts/study_gpu.sh)"),
    ("plain_detect", os.path.join(RESULTS, "study_plain_detect"),
     "detection on the background-free control's b256-100e backbones, retrained (issue 17 §4: "
     "run_pipeline.sh --preset study_plain --tags b256-100e)"),
]
# Sections of backbones retrained for another measurement: their probe rows repeat runs that a
# section above holds, so they stay out of the registered and re-read families (counted once).
RETRAINED = {"study_plain_detect"}
# Sections on another section's data (the same generator, seed and split): preset -> that section's preset
SAME_DATA = {"study_gpu": "study", "study_plain_gpu": "study_plain", "study_plain_detect": "study_plain"}


def add_arguments(p) -> None:
    for name, default, help_ in STUDIES:
        p.add_argument("--" + name.replace("_", "-"), default=default, help=f"{help_} (default: %(default)s)")
    p.add_argument("--wall-time", default="output/study_wall_time.txt",
                   help="scripts/study.sh's wall time line (default: %(default)s; left out when missing)")
    p.add_argument("--preamble", default=os.path.join("docs", "results_preamble.md"),
                   help="the hand-written part (method, commands); it holds no measured number (default: %(default)s)")
    p.add_argument("--discussion", default=os.path.join("docs", "results_discussion.md"),
                   help="the hand-written reading of the tables; it holds no measured number either "
                        "(default: %(default)s)")
    p.add_argument("--prereg", default=prereg_.PREREG,
                   help="the registration's machine-readable part: its comparisons are read apart, Holm-corrected "
                        "over their family; every other row is exploratory (default: %(default)s; none when missing)")
    p.add_argument("--detect-curve", default=os.path.join("docs", "results", "detect_curve", "curve.md"),
                   help="benchmarks/detect_curve.py's page (the detection curves and their gate), shown as the "
                        "detection benchmark's section (default: %(default)s; left out when missing)")
    p.add_argument("--out", default=os.path.join("docs", "results.md"), help="the page to write (default: %(default)s)")


def _pictures(pattern: str, doc_dir: str) -> str:
    """Markdown links, relative to the document, to the pictures a glob finds."""
    paths = sorted(glob.glob(pattern))
    return "\n".join(f"![{os.path.basename(p)}]({os.path.relpath(p, doc_dir)})" for p in paths)


def report_table(study: str) -> str:
    path = os.path.join(study, "report", "results.md")
    if not os.path.isfile(path):
        return "_(no report: the study has not run)_"
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    # drop the report's title and its picture links (the plots are shown below); keep its
    # provenance line, the table and its notes
    return "\n".join(line for line in text.splitlines() if not line.startswith(("# ", "!["))).strip()


def _views_part(record: StudyRecord, doc_dir: str, same_data_as: str) -> str:
    if same_data_as:
        return f"""The data, the views' contents and the proposals are those of the {same_data_as} (the same
generator, seed and crops): see there.
"""
    grids = _pictures(os.path.join(record.root, "extras", "views_*.png"), doc_dir)
    return f"""### What the views contain (`objcrop views stats`, the policies as pretraining ran them)

{view_stats_table(record)}

Sampled view pairs (per image: proposals; then each pair's crop boxes — view 1 green, view 2 magenta,
the chosen box yellow — and the two augmented views):

{grids or '_(none)_'}

### Proposal recall (`objcrop proposals stats`, train split)

{recall_table(record)}
"""


def section(title: str, study: str, preset: str, doc_dir: str, record: StudyRecord, loaded: tuple,
            same_data_as: str = "", registered=frozenset(), other_references: Optional[OtherReferences] = None,
            withheld=frozenset(), elsewhere=()) -> str:
    """One study's part of docs/results.md. `same_data_as`: the title of a section whose data this
    study shares; its view statistics and proposal recall are not repeated here. `record` and
    `loaded` (its study_values) are the study's, read once by write_page. `registered`: its
    reading rows that the registration claims (printed apart, not in its exploratory tables).
    `other_references`: random-init rows of other architectures on the same data (the gate reads
    this study's rows of those architectures against them). `withheld`: registered rows whose
    comparison is not complete; their scores are not shown (prereg.interim_rows). `elsewhere`: (title,
    record) of the sections that retrain this preset's rows (run_elsewhere)."""
    values, arches = loaded
    s = setup_summary(record)
    plots = _pictures(os.path.join(study, "report", "plots", "*.png"), doc_dir)
    machine = machine_line(study)
    machine = f"\n* **Machine**: {machine}." if machine else ""
    return f"""## {title}

* **Data**: variant `{s['variant']}`: {s['data']}.
* **Pretraining**: {s['pretrain']}.
* **Learnable?** Suite's probe (mAP %, test split): {learnability_line(values)}. {s['learnability']}.
* **Time per task** (from the pipeline logs): {s['times']}.{machine}

### Results (`objcrop report`)

{report_table(study)}

{not_run(record, preset, elsewhere)}

### Did pretraining learn anything? Each backbone against random init

Probe mAP:

{gate_table(values, PROBE, arches, other_references, withheld)}

kNN mAP:

{gate_table(values, KNN, arches, other_references, withheld)}

### Reading (exploratory): each policy against random crops of the same method

Not registered: each p is uncorrected, and a p below 0.05 here is a lead, not a finding (see
"Registered comparisons" and docs/preregistration.md). Δ: the difference of means with its 95 %
CI (Welch–Satterthwaite); permutation p: exact over every relabelling of the seeds. The unit is
the pretraining run: detection scores are averaged over its fine-tuning seeds first.

Probe mAP:

{reading_table(values, PROBE, registered)}

kNN mAP:

{reading_table(values, KNN, registered)}
{detection_readings(values, registered)}
### Did the pretext task learn? (each run's metrics.jsonl)

BYOL's loss is a regression loss (no chance level, no ranking).

{pretext_table(record, withheld)}

### Plots

{plots or '_(none)_'}

{_views_part(record, doc_dir, same_data_as)}"""


def _scale(cpu_study: str, gpu_study: str) -> str:
    """", Nx the view pairs per run" of a GPU study against the CPU study on the same data."""
    if not (os.path.isdir(cpu_study) and os.path.isdir(gpu_study)):
        return ""
    cpu_pairs, gpu_pairs = view_pairs(StudyRecord.open(cpu_study)), view_pairs(StudyRecord.open(gpu_study))
    return f", {gpu_pairs / cpu_pairs:.0f}x the view pairs per run" if cpu_pairs and gpu_pairs else ""


def detection_section(curve_md: str, doc_dir: str) -> Optional[str]:
    """benchmarks/detect_curve.py's page, one heading level down, its pictures relative to docs/results.md:
    whether the detection benchmark tells a supervised backbone from scratch, read before any method."""
    body = _read(curve_md)
    if body is None:
        return None
    folder = os.path.relpath(os.path.dirname(os.path.abspath(curve_md)), doc_dir)
    body = re.sub(r"\]\((?!https?:|/)([^)]+)\)", lambda m: f"]({folder}/{m.group(1)})", body)
    lines = ["#" + line if line.startswith("#") else line for line in body.splitlines()]
    title = next((i for i, line in enumerate(lines) if line.startswith("#")), 0)
    return "\n".join([lines[title]] + lines[:title] + lines[title + 1:])  # its title first, then its command


def _read(path: str) -> Optional[str]:
    if not os.path.isfile(path):
        return None
    with open(path, "r", encoding="utf-8") as f:
        return f.read().rstrip()


def _sections(args) -> List[Tuple[str, str, str, str]]:
    """(title, record, preset, the section whose data it shares) of every study whose record exists."""
    scale, plain_scale = _scale(args.study, args.gpu), _scale(args.plain, args.plain_gpu)
    all_ = [("Default variant (`study`)", args.study, "study", ""),
            ("Hard variant (`study-hard`)", args.hard, "study_hard", ""),
            ("No background to match views by (`study-plain`)", args.plain, "study_plain", ""),
            (f"GPU scale (`study_gpu`): ResNet-50{scale}", args.gpu, "study_gpu", "default variant"),
            (f"The background-free control at GPU scale (`study_plain_gpu`): ResNet-18{plain_scale}",
             args.plain_gpu, "study_plain_gpu", "background-free control (`study-plain`)"),
            ("Detection on backbones that learned (`study_plain`, tag `b256-100e`, retrained)",
             args.plain_detect, "study_plain_detect", "background-free control (`study-plain`)")]
    return [s for s in all_ if os.path.isdir(s[1])]


def same_data_references(loaded: dict) -> dict:
    """preset -> OtherReferences: for each section (`loaded`: preset -> its study_values), the
    random-init rows of the sections on the same data (SAME_DATA) whose architecture differs from its
    own: the CPU study's ResNet-50 runs are read against the GPU section's ResNet-50 random init
    (same images, same probe)."""
    out = {}
    for preset, (_, arches) in loaded.items():
        group = SAME_DATA.get(preset, preset)
        own, refs = arches.get(RANDOM_INIT, ""), {}
        for other, (values, other_arches) in loaded.items():
            arch = other_arches.get(RANDOM_INIT, "")
            if other != preset and SAME_DATA.get(other, other) == group and arch and arch != own \
                    and values.get(RANDOM_INIT):
                refs[arch] = (values[RANDOM_INIT], f"`{other}`")
        out[preset] = refs
    return out


def run_elsewhere(sections, records: dict) -> dict:
    """preset -> (title, record) of the RETRAINED sections whose plan is that preset's: their tasks
    ran, in their own record, so the preset's section does not list them as not run."""
    out = defaultdict(list)
    for title, _, preset, _ in sections:
        plan = records[preset].read("plan.json") if preset in RETRAINED else None
        if isinstance(plan, dict) and plan.get("preset") not in (None, preset):
            out[plan["preset"]].append((title, records[preset]))
    return out


def _sweep_picture(studies, prereg, doc_dir: str) -> str:
    """Draws the budget sweep beside the page (results/budget_sweep.png); its markdown link, or ""."""
    panels = prereg_.sweep_panels(studies, prereg) if prereg else []
    if not panels:
        return ""
    path = plot_budget_sweep(panels, os.path.join(doc_dir, "results", "budget_sweep.png"))
    return f"![budget_sweep.png]({os.path.relpath(path, doc_dir)})"


def _curve_picture(studies, prereg, withheld, doc_dir: str) -> str:
    """Draws the budget curve beside the page (results/budget_curve.png); its markdown link, or ""."""
    panels = budget_curve.panels(studies, prereg, withheld) if prereg else []
    if not panels:
        return ""
    path = plot_budget_curve(panels, os.path.join(doc_dir, "results", "budget_curve.png"))
    return f"![budget_curve.png]({os.path.relpath(path, doc_dir)})"


def write_page(args) -> str:
    """docs/results.md from the records named by `args` (add_arguments); returns its path."""
    doc_dir = os.path.dirname(os.path.abspath(args.out))
    parts: List[str] = [p for p in (_read(args.preamble), _read(args.discussion)) if p is not None]
    wall = (_read(args.wall_time) or "").strip()
    if wall:
        parts.append(f"**Wall time of scripts/study.sh**: {wall}.")
    sections = _sections(args)
    prereg = prereg_.load(args.prereg)
    loaded = {preset: study_values(os.path.abspath(study)) for _, study, preset, _ in sections}
    records = {preset: StudyRecord.open(os.path.abspath(study)) for _, study, preset, _ in sections}
    studies = {preset: v for preset, v in loaded.items() if preset not in RETRAINED}
    devices = {preset: run_devices(records[preset]) for preset in studies}
    missing = {preset: prereg_.load_missing(os.path.abspath(study)) for _, study, preset, _ in sections}
    second = {preset: prereg_.second_trainings(records[preset]) for preset in studies}
    withheld = {preset: prereg_.interim_rows(prereg, preset, loaded[preset][0], missing[preset]) for preset in loaded}
    parts.append(prereg_.registered_section(prereg, studies, args.prereg, devices, missing, second))
    parts.append(prereg_.retrospective_section(studies, prereg, float(prereg["alpha"]) if prereg else 0.05))
    sweep = prereg_.sweep_section(studies, prereg, _sweep_picture(studies, prereg, doc_dir))
    if sweep:
        parts.append(sweep)
    curve = budget_curve.section(studies, prereg, withheld, _curve_picture(studies, prereg, withheld, doc_dir))
    if curve:
        parts.append(curve)
    detection = detection_section(args.detect_curve, doc_dir)
    if detection:
        parts.append(detection)
    references = same_data_references(loaded)
    elsewhere = run_elsewhere(sections, records)
    for title, study, preset, same in sections:
        parts.append(section(title, os.path.abspath(study), preset, doc_dir, records[preset], loaded[preset],
                             same_data_as=same,
                             registered=prereg_.registered_rows(prereg, preset),
                             other_references=references.get(preset),
                             withheld=withheld[preset], elsewhere=elsewhere.get(preset, ())))
    write_text_atomic(args.out, "\n\n".join(parts) + "\n")
    return args.out
