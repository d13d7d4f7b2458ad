"""`objcrop report study` / `objcrop report record` (report/study_*.py): the study page from the
records, the pretext table, the machine line, the gate and reading tables."""
import json
import os
import re

import pytest
from _repo_files import load_repo_module

from objcrop.io import append_jsonl, write_text_atomic
from objcrop.records import Provenance, results, write_results
from objcrop.report import study_page, study_tables
from objcrop.report.cli import main as report_main
from objcrop.report.record import StudyRecord
from objcrop.report.study_runs import pretext_table, run_tail
from objcrop.report.study_setup import machine_line, time_summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = ("study", "study_hard", "study_plain", "study_gpu", "study_plain_gpu")


def test_run_tail_finds_a_moco_loss_that_climbs_back_after_the_queue_fills():
    rows = [{"iteration": i, "epoch": e, "loss": loss, "acc_top1": 0.5}
            for i, (e, loss) in enumerate([(0, 3.0), (0, 3.1), (1, 6.5), (1, 6.4), (2, 6.8), (2, 6.9)])]
    tail = run_tail(rows, last=2)
    # the first epoch (queue filling) is not the lowest; epoch 2 is, and the end is above it
    assert tail["first"] == pytest.approx(3.05) and tail["lowest_epoch"] == 2 and tail["lowest"] == pytest.approx(6.45)
    assert tail["last"] == pytest.approx(6.85) and tail["epochs"] == 3 and tail["spread"] is None


def _pretrain_output(out, name="moco_v2_random_none_r18_b32_e2_d-train_s0"):
    prov = Provenance("moco_v2", "random", "none", 2, "resnet18", "synth:/d:train", 0)
    run = os.path.join(out, "runs", "pretrain", name)
    write_results(run, results("pretrain", "ok", prov, iterations=4, final_loss=2.0))
    write_text_atomic(os.path.join(run, "config.yaml"), "PRETRAIN:\n  METHOD: moco_v2\n  MOCO:\n    K: 63\n")
    for i in range(4):
        append_jsonl(os.path.join(run, "metrics.jsonl"), {"iteration": i, "epoch": i // 2, "loss": 5.0 - i})
    spectrum = {"effective_rank": 123.4, "top_pc_share": 0.456}
    write_results(os.path.join(out, "runs", "probe", name),
                  results("probe", "ok", prov, dataset="synth:/d:test", mAP=0.5, features=spectrum))
    write_results(os.path.join(out, "runs", "probe", "random_init_s0"),  # probed before the spectrum existed
                  results("probe", "ok", Provenance.random_init("resnet18", 0), dataset="synth:/d:test", mAP=0.5))
    return name


@pytest.mark.parametrize("compact", [False, True])
def test_pretext_table_shows_the_probe_feature_spectrum_and_the_reference_rows(tmp_path, compact):
    out = str(tmp_path / "out")
    name = _pretrain_output(out)
    record = StudyRecord.open(out)
    if compact:  # the same table from the record file the output is saved into
        assert report_main(["record", out, str(tmp_path / "rec")]) == 0
        record = StudyRecord.open(str(tmp_path / "rec"))
        assert record.compact
    table = pretext_table(record)
    mine = next(line for line in table.splitlines() if line.startswith(f"| {name} "))
    assert mine.startswith(f"| {name} | 4 | 4.50 | 2.50 (2 of 2) | 3.50 | {'%.2f' % __import__('math').log(64)} |")
    assert mine.endswith("| 50.0 | 123 / 0.46 |")
    reference = next(line for line in table.splitlines() if line.startswith("| random_init_s0 "))
    assert "reference" in reference and reference.endswith("| 50.0 | — |")


def test_not_run_lists_the_planned_tasks_the_record_lacks(tmp_path):
    from objcrop.io import write_json_atomic
    from objcrop.report.study_setup import not_run

    out = str(tmp_path / "out")
    name = _pretrain_output(out)
    record = StudyRecord.open(str(tmp_path / "rec"))
    assert not_run(record, "study").startswith("_(no plan recorded")
    tasks = [{"name": f"pretrain.{name}", "stage": "pretrain", "results": [f"runs/pretrain/{name}/results.json"]},
             {"name": f"probe.{name}", "stage": "probe", "results": [f"runs/probe/{name}/results.json"]},
             {"name": "probe.random_init_s1", "stage": "probe", "results": ["runs/probe/random_init_s1/results.json"]},
             {"name": "report", "stage": "report", "results": []}]
    write_json_atomic(os.path.join(out, "plan.json"), {"preset": "study", "stage_order": ["pretrain", "probe"],
                                                        "tasks": tasks})
    record.save_output(out)
    assert not_run(record, "study").endswith("* probe (1): `random_init_s1`")
    retrained = StudyRecord.open(str(tmp_path / "retrained"))
    assert not_run(record, "study", [("Retrained", retrained)]).endswith("* probe (1): `random_init_s1`")
    other_out = tmp_path / "other"
    (other_out / "runs/probe/random_init_s1").mkdir(parents=True)
    write_json_atomic(str(other_out / "runs/probe/random_init_s1/results.json"), {"status": "ok"})
    retrained.save_output(str(other_out))
    moved = not_run(record, "study", [("Retrained", retrained)])
    assert moved == ('Run in the section "Retrained" and recorded there, not here (1): `random_init_s1`\n\n'
                     "Every other task of the preset has its result.")
    tasks.pop(2)
    write_json_atomic(os.path.join(out, "plan.json"), {"preset": "study", "tasks": tasks})
    record.save_output(out)
    assert not_run(StudyRecord.open(str(tmp_path / "rec")), "study") == "Every task of the preset has its result."


def test_not_run_names_a_fine_tuning_recorded_at_another_budget_apart(tmp_path):
    """plan.json gives each fine-tuning the budget the preset plans; one recorded at another budget is
    another experiment (a rerun with --records trains it again) and is said so, not taken as run."""
    from objcrop.io import write_json_atomic
    from objcrop.report.study_setup import not_run

    def output(path, iterations, lr=None):
        result = os.path.join(path, "runs/detect_voc/row/seed0/results.json")
        os.makedirs(os.path.dirname(result))
        write_json_atomic(result, {"status": "ok", "iterations": iterations, "ims_per_batch": 4})
        budget = {"iterations": 500, "ims_per_batch": 4}
        if lr is not None:  # a plan.json that also plans the schedule, and the run's config.yaml
            budget.update(base_lr=0.02, steps=[400], warmup_iters=30)
            solver = {"MAX_ITER": iterations, "IMS_PER_BATCH": 4, "BASE_LR": lr, "STEPS": [400], "WARMUP_ITERS": 30}
            with open(os.path.join(os.path.dirname(result), "config.yaml"), "w") as f:
                f.write(json.dumps({"SOLVER": solver}))
        task = {"name": "detect.voc.row.seed0", "stage": "detect", "results": ["runs/detect_voc/row/seed0/results.json"],
                "budget": budget}
        write_json_atomic(os.path.join(path, "plan.json"), {"preset": "study", "tasks": [task]})
        record = StudyRecord.open(os.path.join(path + "_record"))
        record.save_output(path)
        return record

    shorter = output(str(tmp_path / "short"), 300)
    assert not_run(shorter, "study") == ("Recorded at another fine-tuning budget than the preset's 500 iterations of "
                                         "4 images, so run again by a rerun (1): `voc.row.seed0`\n\n"
                                         "Every other task of the preset has its result.")
    assert not_run(output(str(tmp_path / "planned"), 500), "study") == "Every task of the preset has its result."
    assert not_run(output(str(tmp_path / "same_lr"), 500, 0.02), "study") == "Every task of the preset has its result."
    assert not_run(output(str(tmp_path / "half_lr"), 500, 0.01), "study").startswith(
        "Recorded at another fine-tuning budget than the preset's 500 iterations of 4 images (lr 0.02, steps 400, "
        "warmup 30), so run again by a rerun (1): `voc.row.seed0`")
    retrained = output(str(tmp_path / "retrained"), 500)
    assert not_run(shorter, "study", [("Retrained", retrained)]).startswith('Run in the section "Retrained"')


def test_machine_line_summarises_a_lent_machine(tmp_path):
    assert machine_line(str(tmp_path)) == ""
    (tmp_path / "wall_time.txt").write_text("300 s on 16 cores and NVIDIA H200 (pipeline exit code 124)\n")
    (tmp_path / "gpu_use.csv").write_text("timestamp, utilization.gpu [%], memory.used [MiB]\n"
                                          "2026/11/26 04:05:33.543, 0 %, 0 MiB\n"
                                          "2026/11/26 04:05:38.547, 60 %, 4000 MiB\n"
                                          "2026/11/26 04:05:43.547, 40 %, 4500 MiB\n")
    line = machine_line(str(tmp_path))
    assert "NVIDIA H200" in line and "(3 samples): mean 33 % (50 % while busy), at most 4500 MiB" in line
    (tmp_path / "wall_times.txt").write_text("2026-11-26 06:44 UTC 480 s on 16 cores and NVIDIA H200 (pipeline exit code 124)\n"
                                             "2026-11-26 06:46 UTC 147 s on 16 cores and NVIDIA H200 (pipeline exit code 0)\n")
    assert "2 runs of it recorded in wall_times.txt, 627 s in all" in machine_line(str(tmp_path))


def test_time_per_task_gives_a_median_per_device_when_a_stage_ran_on_two(tmp_path):
    """A registered study's later seeds train on a lent GPU: one median over 2-core CPU runs and GPU
    runs would describe neither, so such a stage gets one per device (from each run's results.json;
    a run from before the field is not guessed to be on either)."""
    def run(name, device=None):
        d = tmp_path / "runs" / "pretrain" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"status": "ok", **({"device": device} if device else {})}))

    run("cpu_a"), run("cpu_b", "cpu"), run("gpu_a", "cuda: NVIDIA H200")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "pipeline-1.log").write_text(
        "[pipeline 10:00:00] done data in 60 s\n[pipeline 12:00:00] done pretrain.cpu_a in 6000 s\n"
        "[pipeline 12:00:00] done pretrain.cpu_b in 7200 s\n[pipeline 12:01:00] done probe.cpu_b in 60 s\n")
    (tmp_path / "logs" / "pipeline-2.log").write_text("[pipeline 13:00:00] done pretrain.gpu_a in 300 s\n")
    line = time_summary(StudyRecord(str(tmp_path)))
    assert "data 1 task(s), median 1.0 min" in line
    assert ("pretrain 1 task(s) on a device not recorded, median 100.0 min, 1 task(s) on the CPU, median 120.0 min, "
            "1 task(s) on cuda: NVIDIA H200, median 5.0 min") in line
    assert "probe 1 task(s), median 1.0 min" in line  # one device: one median, as before
    # a record whose runs trained on one kind of device reads as it always did
    (tmp_path / "logs" / "pipeline-2.log").unlink()
    assert "pretrain 2 task(s), median 110.0 min" in time_summary(StudyRecord(str(tmp_path)))


def test_time_per_task_reads_the_bounds_device_from_its_json_and_a_probes_from_its_results(tmp_path):
    """The supervised bound's training (learnability.py) has no runs/pretrain folder: its device is in its
    learnability.json, and its probe's through the weights it probed; a probe that names its device wins
    over its weights'. A bound's json from before the field leaves the device unnamed: no guess."""
    def write(rel, data):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(json.dumps(data))

    write("supervised/learnability.json", {"supervised_mAP": 0.7})  # before the field
    write("supervised_seed1/learnability.json", {"device": "cpu: Xeon, 1 thread(s)"})
    write("runs/probe/supervised_seed1_s0/results.json", {"status": "ok", "weights": "/o/supervised_seed1/backbone.pth"})
    write("runs/pretrain/gpu_a/results.json", {"status": "ok", "device": "cuda: NVIDIA H200"})
    write("runs/probe/gpu_a/results.json", {"status": "ok", "device": "cpu: Xeon, 2 thread(s)"})  # probed on a CPU
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "pipeline-1.log").write_text(
        "[pipeline 10:00:00] done pretrain.supervised in 600 s\n[pipeline 10:10:00] done pretrain.supervised_seed1 in 1200 s\n"
        "[pipeline 10:11:00] done probe.supervised_seed1_s0 in 60 s\n[pipeline 10:12:00] done pretrain.gpu_a in 300 s\n"
        "[pipeline 10:13:00] done probe.gpu_a in 120 s\n")
    line = time_summary(StudyRecord(str(tmp_path)))
    assert ("pretrain 1 task(s) on a device not recorded, median 10.0 min, 1 task(s) on the CPU, median 20.0 min, "
            "1 task(s) on cuda: NVIDIA H200, median 5.0 min") in line
    assert "probe 2 task(s), median 1.5 min" in line  # both on the CPU: one median


def test_gate_compares_a_backbone_only_with_random_init_of_its_architecture():
    col = study_tables.PROBE
    values = {("random_init", "none", "none", ""): {col: [30.0, 32.0]},
              ("moco_v2", "random", "none", "3"): {col: [35.0, 37.0]},
              ("moco_v2", "random-r50", "none", "20"): {col: [29.0]}}
    arches = {("random_init", "none", "none", ""): "resnet18", ("moco_v2", "random", "none", "3"): "resnet18",
              ("moco_v2", "random-r50", "none", "20"): "resnet50"}
    table = study_tables.gate_table(values, col, arches)
    assert "| moco_v2 random | 3 | 36.0 ± 1.4 (n=2) | +5.0 |" in table
    assert "| moco_v2 random-r50 (resnet50) | 20 | 29.0 (n=1) | — (the reference is a resnet18) | — |" in table


def test_gate_reads_another_architecture_against_its_random_init_from_a_section_on_the_same_data():
    col = study_tables.PROBE
    values = {("random_init", "none", "none", ""): {col: [30.0, 32.0]},
              ("moco_v2", "random-r50", "none", "100"): {col: [40.0, 42.0]}}
    arches = {("random_init", "none", "none", ""): "resnet18", ("moco_v2", "random-r50", "none", "100"): "resnet50"}
    r50_init = {col: [20.0, 22.0]}
    table = study_tables.gate_table(values, col, arches, {"resnet50": (r50_init, "`study_gpu`")})
    p = study_tables._welch_p([40.0, 42.0], [20.0, 22.0])
    assert (f"| moco_v2 random-r50 (resnet50) | 100 | 41.0 ± 1.4 (n=2) | +20.0 (vs `study_gpu`'s resnet50 random "
            f"init, 21.0 ± 1.4 (n=2)) | {p:.3f} |") in table
    # a reference of another architecture than the row's is not used
    table = study_tables.gate_table(values, col, arches, {"resnet101": (r50_init, "`study_gpu`")})
    assert "— (the reference is a resnet18)" in table


def test_sections_on_the_same_data_lend_each_other_their_random_init_of_another_architecture():
    refs = study_page.same_data_references({s: study_tables.study_values(os.path.join(REPO, "docs", "results", s))
                                            for s in ("study", "study_gpu", "study_plain", "study_hard")})
    gpu_values, gpu_arches = study_tables.study_values(os.path.join(REPO, "docs", "results", "study_gpu"))
    assert gpu_arches[study_tables.RANDOM_INIT] == "resnet50"
    assert refs["study"] == {"resnet50": (gpu_values[study_tables.RANDOM_INIT], "`study_gpu`")}
    assert set(refs["study_gpu"]) == {"resnet18"}
    # other data lends nothing: the hard variant's and the control's random init are ResNet-18s on other images
    assert refs["study_hard"] == {} and refs["study_plain"] == {}


def test_reading_reads_a_tagged_run_against_the_random_crops_with_its_tag():
    col = study_tables.PROBE
    values = {("moco_v2", "random", "none", "3"): {col: [40.0, 42.0]},
              ("moco_v2", "random-grey", "none", "3"): {col: [30.0, 34.0]},
              ("moco_v2", "obj-obj-dilate-grey", "gt", "3"): {col: [36.0, 38.0]}}
    (row,) = study_tables.reading_rows(values, col)
    assert row["baseline"] == "random-grey" and row["delta"] == pytest.approx(37.0 - 32.0)


def test_results_page_is_built_from_the_compact_records_in_the_repository(tmp_path):
    for study in STUDIES:
        assert os.path.isfile(os.path.join(REPO, "docs", "results", study, "record.json")), study
        assert not os.path.isdir(os.path.join(REPO, "docs", "results", study, "runs")), study
    out = tmp_path / "results.md"
    argv = ["study", "--out", str(out), "--wall-time", str(tmp_path / "none.txt")]
    for option, study in zip(("--study", "--hard", "--plain", "--gpu", "--plain-gpu"), STUDIES):
        argv += [option, os.path.join(REPO, "docs", "results", study)]
    argv += ["--preamble", os.path.join(REPO, "docs", "results_preamble.md"),
             "--discussion", os.path.join(REPO, "docs", "results_discussion.md")]
    assert report_main(argv) == 0
    text = out.read_text()
    for title in ("## Default variant (`study`)", "## Hard variant (`study-hard`)",
                  "## No background to match views by (`study-plain`)", "## GPU scale (`study_gpu`)",
                  "## The background-free control at GPU scale (`study_plain_gpu`)"):
        assert title in text
    assert "nan" not in text.replace("nano", "")
    assert "_(no finished pretraining run)_" not in text  # every record's runs and metrics were found
    # the registered runs so far keep the registration's device rule
    assert re.search(r"from each run's results.json: [1-9]\d* registered runs, no deviation.", text)
    # issue 20 §2's budget sweep: its table, and its picture drawn beside the page
    assert "## The learning budget of the textured variants" in text
    assert "![budget_sweep.png](results/budget_sweep.png)" in text
    assert (tmp_path / "results" / "budget_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_detection_section_is_the_curve_page_titled_first_one_level_down_with_its_picture_found(tmp_path):
    """Guards against the detection gate missing from docs/results.md, or its picture linked relative to
    the curve's folder (a broken image on the results page)."""
    from objcrop.report.study_page import detection_section

    folder = tmp_path / "docs" / "results" / "detect_curve"
    folder.mkdir(parents=True)
    (folder / "curve.md").write_text("Command: `python benchmarks/detect_curve.py`\n\n# Detection learning curves\n\n"
                                     "## Gate at 250 iterations: **PASS**\n\n![AP50](curve.png)\n")
    got = detection_section(str(folder / "curve.md"), str(tmp_path / "docs")).splitlines()
    assert got[0] == "## Detection learning curves" and got[1].startswith("Command:")
    assert "### Gate at 250 iterations: **PASS**" in got and "![AP50](results/detect_curve/curve.png)" in got
    assert detection_section(str(folder / "missing.md"), str(tmp_path / "docs")) is None


def test_a_retrained_record_is_shown_but_not_counted_again_in_the_test_families(tmp_path):
    """Guards against the detection section's retrained backbones (--plain-detect) entering the registered
    and re-read families beside the runs they repeat: given the background-free control's own record as
    its retrained twin, the page shows both sections and the re-read family keeps its size."""
    plain = os.path.join(REPO, "docs", "results", "study_plain")
    base = ["study", "--study", str(tmp_path / "none"), "--hard", str(tmp_path / "none"), "--gpu", str(tmp_path / "none"),
            "--plain-gpu", str(tmp_path / "none"), "--plain", plain, "--wall-time", str(tmp_path / "none.txt"),
            "--preamble", str(tmp_path / "none.md"), "--discussion", str(tmp_path / "none.md")]
    family = re.compile(r"on the probe and on kNN: (\d+) tests")
    pages = {}
    for name, extra in (("alone", ["--plain-detect", str(tmp_path / "none")]), ("twin", ["--plain-detect", plain])):
        out = tmp_path / f"{name}.md"
        assert report_main(base + extra + ["--out", str(out)]) == 0
        pages[name] = out.read_text()
    assert "## Detection on backbones that learned" in pages["twin"]
    assert "## Detection on backbones that learned" not in pages["alone"]
    assert int(family.search(pages["alone"]).group(1)) > 0
    assert family.search(pages["twin"]).group(1) == family.search(pages["alone"]).group(1)


def test_the_preset_tasks_a_retrained_section_ran_are_not_listed_as_not_run(tmp_path):
    """study_plain's b256-100e detections ran on retrained backbones in study_plain_detect's record: the
    background-free control's section names them as run there, not as "Not run yet"."""
    none = str(tmp_path / "none")
    argv = ["study", "--study", none, "--hard", none, "--gpu", none, "--plain-gpu", none,
            "--plain", os.path.join(REPO, "docs", "results", "study_plain"),
            "--plain-detect", os.path.join(REPO, "docs", "results", "study_plain_detect"),
            "--wall-time", str(tmp_path / "none.txt"), "--preamble", none + ".md", "--discussion", none + ".md",
            "--out", str(tmp_path / "page.md")]
    assert report_main(argv) == 0
    plain = (tmp_path / "page.md").read_text().split("## No background to match views by")[1].split("\n## ")[0]
    assert 'Run in the section "Detection on backbones that learned' in plain
    assert "`voc.scratch.seed0`" in plain and "Not run yet" not in plain


def test_the_recorded_plan_applies_the_pipelines_selection(tmp_path):
    """Guards against a plan.json of the whole preset for an output made with --tags/--seeds: the study
    page would then list every untouched row of the preset as "not run yet"."""
    import json

    extras = load_repo_module("scripts/study_extras.py")
    path = extras.write_plan(str(tmp_path), "study_plain", ["--tags", "b256-100e", "--seeds", "0 1 2"])
    plan = json.load(open(path))
    pre = [t["name"] for t in plan["tasks"] if t["stage"] == "pretrain" and t["name"] != "pretrain.supervised"]
    assert len(pre) == 6 and all("-b256-100e_" in n and not n.endswith("_s3") for n in pre)
    assert plan["pipeline_args"] == ["--tags", "b256-100e", "--seeds", "0 1 2"]
    whole = json.load(open(extras.write_plan(str(tmp_path), "study_plain")))
    assert len([t for t in whole["tasks"] if t["stage"] == "pretrain"]) > len(pre) + 1


@pytest.mark.parametrize("study", ["study", "study_hard", "study_plain", "study_gpu", "study_plain_gpu",
                                   "study_plain_detect"])
def test_every_records_plan_is_its_presets_plan_as_it_is_now(study):
    """The study page's "Not run yet" reads a record against its plan.json. A row added to a preset after
    the record's last run (issue 20 §4's ResNet-50 rows, on `study` and `study_gpu`) was in no recorded
    plan, and the page said "Every task of the preset has its result". The plan must be the preset's as
    it is now (its selection flags applied); `python scripts/study_extras.py --refresh-record
    docs/results/<study>` makes it again."""
    from objcrop.pipeline import planned_results

    path = os.path.join(REPO, "docs", "results", study)
    if not os.path.exists(path):
        pytest.skip(f"{path}: no record in this checkout")
    plan = StudyRecord.open(path).read("plan.json")

    def tasks(listed):  # a fine-tuning with the budget and schedule it plans: one of another is not its result
        return sorted((t["name"], t["stage"], tuple(t["results"]), json.dumps(t.get("budget"), sort_keys=True))
                      for t in listed)

    now = planned_results(plan["preset"], plan.get("pipeline_args") or [], "/OUT")
    assert tasks(plan["tasks"]) == tasks(now), (
        f"the record's plan is not its preset's: python scripts/study_extras.py --refresh-record docs/results/{study}")


def test_refresh_record_makes_a_stale_plan_the_presets_again_with_its_selection(tmp_path):
    """`study_extras.py --refresh-record RECORD`: a record whose plan.json lists none of its preset's tasks
    gets the preset's plan as it is now, under the selection flags the old plan named (study_plain_detect's
    `--tags b256-100e --seeds ...`), and nothing else of the record changes."""
    from objcrop.io import write_json_atomic
    from objcrop.pipeline import planned_results

    extras = load_repo_module("scripts/study_extras.py")
    out, rec = str(tmp_path / "out"), str(tmp_path / "rec")
    name = _pretrain_output(out)
    selection = ["--tags", "b256-100e", "--seeds", "0"]
    write_json_atomic(os.path.join(out, "plan.json"), {"preset": "study_plain", "tasks": [],
                                                        "pipeline_args": selection})
    record = StudyRecord.open(rec)
    record.save_output(out)
    assert extras.main(["--refresh-record", rec]) == 0
    plan = StudyRecord.open(rec).read("plan.json")
    assert plan["pipeline_args"] == selection
    assert plan["tasks"] == planned_results("study_plain", selection, "/OUT") and len(plan["tasks"]) > 3
    assert StudyRecord.open(rec).results(f"runs/pretrain/{name}/results.json")["status"] == "ok"

