"""objcrop.pipeline's running side: the CLI and its wrapper, dry runs, failures naming their log,
--jobs, --keep-going and --records (objcrop.pipeline.local, .recorded, .cli)."""
import json
import re
import os
import subprocess
import sys

import pytest

import objcrop.pipeline as pipeline
from objcrop.pipeline import preflight, recorded
from objcrop.pipeline import tasks as tasks_mod
from objcrop.pipeline.naming import provenance

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PIPELINE = os.path.join(REPO, "scripts", "run_pipeline.sh")


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return env


def _plan(out, **overrides):
    args = pipeline.build_parser().parse_args(["--preset", "demo"] + [x for k, v in overrides.items()
                                                                       for x in (f"--{k.replace('_', '-')}", v)])
    return pipeline.build_plan(pipeline.apply_overrides(pipeline.load_preset("demo"), args), str(out))


def _name(tasks, prefix, seed, stage="pretrain"):
    found = [t.name for t in tasks if t.stage == stage and t.name.startswith(f"{stage}.{prefix}_")
             and t.name.endswith(f"_s{seed}")]
    assert len(found) == 1, (prefix, seed)
    return found[0]


def test_every_entry_point_explains_every_option(tmp_path):
    """scripts/run_pipeline.sh, `objcrop pipeline` and `python -m objcrop.pipeline` are one CLI."""
    texts = []
    for argv in (["bash", RUN_PIPELINE, "--help"], [sys.executable, "-m", "objcrop", "pipeline", "--help"],
                 [sys.executable, "-m", "objcrop.pipeline", "--help"]):
        r = subprocess.run(argv, capture_output=True, text=True, env=_env(), cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        texts.append(r.stdout)
    assert texts[0] == texts[1] == texts[2]
    for action in pipeline.build_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.option_strings[-1] in texts[0], action.dest
            # every option but the pure switches reads an environment variable, named in its help
            assert action.dest in ("wait", "dry_run") or "[OBJCROP_" in action.help, action.dest


def test_dry_run_lists_skips_and_environment_variables_are_defaults(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")
    env = dict(_env(), OBJCROP_PRESET="demo", OBJCROP_SEEDS="0")
    r = subprocess.run(["bash", RUN_PIPELINE, "--out", str(tmp_path), "--dry-run"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "skip data: outputs complete" in r.stdout
    assert "would run proposals.gt: objcrop proposals compute" in r.stdout
    assert os.path.isfile(tmp_path / "logs" / "pipeline.log")
    assert r.stdout.count("would run pretrain.moco_v2") == 2  # OBJCROP_SEEDS=0: one seed of each policy
    r = subprocess.run(["bash", RUN_PIPELINE, "--out", str(tmp_path), "--dry-run", "--seeds", "0 1"],
                       capture_output=True, text=True, env=env)
    assert r.stdout.count("would run pretrain.moco_v2") == 4  # the flag wins


def test_failing_stage_stops_with_its_name_and_log(tmp_path):
    preset = tmp_path / "bad.yaml"
    preset.write_text("data:\n  synth: {num_images: 0}\ndatasets: {pretrain: 'synth:{data}:train', probe_train: x, "
                      "probe_test: y}\npretrain: {policies: [random], seeds: [0]}\n")
    out = tmp_path / "out"
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", str(preset), "--out", str(out)],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 1
    log = out / "logs" / "data.log"
    assert f"stage data failed; see its log: {log}" in r.stderr
    assert "num-images" in log.read_text()  # the stage's own one-line error is in its log ...
    assert "num-images" in r.stderr  # ... and its tail is shown
    assert "run pretrain" not in r.stdout  # nothing after the failure ran


def test_bad_preset_is_one_line(tmp_path):
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "no_such_preset"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and r.stderr.startswith("objcrop pipeline: error: --preset no_such_preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {pretrain: x, probe_train: x, probe_test: y}\n"
                   "pretrain: {config_file: pretrain/no_such.yaml, policies: [random]}\n")
    r = subprocess.run([sys.executable, "-m", "objcrop", "pipeline", "--preset", str(bad), "--dry-run",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "pretrain/no_such.yaml" in r.stderr and "Traceback" not in r.stderr


def test_jobs_run_independent_tasks_side_by_side_and_respect_dependencies(tmp_path, monkeypatch):
    # stand-in stages: each writes its start and end time, so overlap and order can be checked
    script = tmp_path / "stage.py"
    script.write_text("import json, sys, time, os\nname, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]\n"
                      "t0 = time.time(); time.sleep(secs)\n"
                      "json.dump({'start': t0, 'end': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS')}, "
                      "open(os.path.join(out, name + '.json'), 'w'))\n"
                      "if name == 'a': open(os.path.join(out, 'late.json'), 'w').write('{}')\n"
                      "sys.exit(1 if name == 'bad' else 0)\n")
    monkeypatch.setattr(tasks_mod, "REPO", str(tmp_path))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def task(name, secs, deps=()):
        return pipeline.Task(name, "pretrain", ["stage.py", name, str(secs), str(tmp_path)],
                             [["file", str(tmp_path / f"{name}.json")]], deps=list(deps), raw=True)

    tasks = [task("a", 1.5), task("b", 1.5), task("c", 0.1, deps=["a"]), task("late", 5, deps=["a"])]
    assert pipeline.Pipeline(tasks, str(tmp_path / "out"), jobs=2).run() == 0
    # "late" had its output written by "a": complete by the time it could start, so skipped
    assert "skip late: outputs complete" in (tmp_path / "out" / "logs" / "pipeline.log").read_text()
    t = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in "abc"}
    assert t["a"]["start"] < t["b"]["end"] and t["b"]["start"] < t["a"]["end"]  # a and b overlapped
    assert t["c"]["start"] >= t["a"]["end"]  # c waited for a
    assert t["a"]["threads"] == str(max(1, (os.cpu_count() or 1) // 2))

    # a task that runs alone gets every core, not cores / jobs (guards against idling a core on the
    # critical path: the demo's last detection run, its supervised bound)
    (tmp_path / "solo.json").unlink(missing_ok=True)
    assert pipeline.Pipeline([task("solo", 0.1)], str(tmp_path / "out_solo"), jobs=2).run() == 0
    assert json.loads((tmp_path / "solo.json").read_text())["threads"] == str(os.cpu_count() or 1)

    # a failure stops new tasks from starting and names the task
    for n in "abc":
        (tmp_path / f"{n}.json").unlink()
    tasks = [task("bad", 0.1), task("a", 0.1, deps=["bad"]), task("b", 0.1, deps=["bad"])]
    assert pipeline.Pipeline(tasks, str(tmp_path / "out2"), jobs=2).run() == 1
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    assert "FAILED stage bad" in (tmp_path / "out2" / "logs" / "pipeline.log").read_text()

    # --keep-going: what does not need the failed task still runs; what needs it (directly or not) does not
    (tmp_path / "bad.json").unlink()  # written before its exit code 1: it would count as complete
    tasks = [task("bad", 0.1), task("a", 0.1, deps=["bad"]), task("c", 0.1, deps=["a"]), task("b", 0.1)]
    assert pipeline.Pipeline(tasks, str(tmp_path / "out3"), jobs=1, keep_going=True).run() == 1
    assert (tmp_path / "b.json").exists() and not (tmp_path / "a.json").exists() and not (tmp_path / "c.json").exists()
    log = (tmp_path / "out3" / "logs" / "pipeline.log").read_text()
    assert "not run a: it needs bad, which failed" in log and "not run c: it needs a, which failed" in log




def _record(tasks, out, record, keep=lambda t: True, status="ok"):
    """Write into `record` the result files of the tasks `keep` selects, as study_records would (a
    fine-tuning's with the budget it plans, as detect train writes it)."""
    for t in tasks:
        if not keep(t):
            continue
        budget = recorded.detection_budget(t)
        for path in t.results:
            dest = record / os.path.relpath(path, out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps({"status": status, **(budget or {})}))
            if budget:
                _write_solver(dest.parent, budget)


def _write_solver(run_dir, budget, scale=1):
    """A fine-tuning's config.yaml with the SOLVER `budget` plans, run on `scale` times the config's
    devices (detection/config.py's linear scaling rule)."""
    solver = {"MAX_ITER": round(budget["iterations"] / scale), "IMS_PER_BATCH": budget["ims_per_batch"] * scale,
              "BASE_LR": budget["base_lr"] * scale, "STEPS": [round(x / scale) for x in budget["steps"]],
              "WARMUP_ITERS": round(budget["warmup_iters"] / scale)}
    (run_dir / "config.yaml").write_text(json.dumps({"SOLVER": solver}))  # JSON is YAML


def test_a_record_skips_recorded_results_but_reruns_what_a_missing_result_needs(tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    tasks = _plan(out, seeds="0 1")  # detection fine-tunes the seed-0 checkpoints only
    rnd = {s: _name(tasks, "moco_v2_random_none", s).split(".", 1)[1] for s in (0, 1)}
    dil1 = _name(tasks, "moco_v2_obj-obj-dilate_gt", 1).split(".", 1)[1]
    _record(tasks, out, record, keep=lambda t: t.stage != "detect")
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record))
    # seed 1: pretraining and probe are recorded and nothing else needs the checkpoint
    assert {f"pretrain.{rnd[1]}", f"probe.{rnd[1]}", f"pretrain.{dil1}", f"probe.{dil1}"} <= skipped
    # seed 0: detection is missing and needs the checkpoint, which a record does not keep; the
    # rerun pretraining makes a new checkpoint, so its recorded probe is redone as well
    for name in (f"pretrain.{rnd[0]}", f"probe.{rnd[0]}", f"convert.{rnd[0]}", "data", "proposals.gt", "report"):
        assert name not in skipped
    # with detection recorded too, only the report runs
    _record(tasks, out, record, keep=lambda t: t.stage == "detect")
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record))
    assert {t.name for t in tasks} - skipped == {"report"}
    # a failed result is no result
    _record(tasks, out, record, keep=lambda t: t.name == f"probe.{rnd[1]}", status="failed")
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record))
    assert f"probe.{rnd[1]}" not in skipped and f"pretrain.{rnd[1]}" not in skipped
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "demo", "--seeds", "0 1", "--out", str(out),
                        "--records", str(record), "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert f"skip probe.{dil1}: its result is recorded in {record}" in r.stdout
    assert f"would run pretrain.{rnd[1]}" in r.stdout
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "demo", "--out", str(out), "--records", str(tmp_path / "nope"),
                        "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "--records" in r.stderr and "no such directory" in r.stderr


def test_a_recorded_fine_tuning_counts_only_at_the_budget_the_preset_plans(tmp_path):
    """A fine-tuning recorded at another budget (the preset's config changed since) is another
    experiment: --records fine-tunes it again, with the checkpoint it needs; the same images seen on
    another world size (linear scaling: more images per batch, fewer iterations) is the same budget."""
    out, record = tmp_path / "out", tmp_path / "record"
    tasks = _plan(out, seeds="0", det_tasks="voc")
    _record(tasks, out, record)
    assert {t.name for t in tasks} - pipeline.recorded_tasks(tasks, str(out), str(record)) == {"report"}
    fine_tuning = next(t for t in tasks if t.stage == "detect" and t.deps and t.deps[0].startswith("convert.moco_v2"))
    row = fine_tuning.deps[0].split(".", 1)[1]
    result = record / os.path.relpath(fine_tuning.results[0], out)
    budget = recorded.detection_budget(fine_tuning)

    def rerun_with(scale=1, **planned):
        ran = {**budget, **planned}
        result.write_text(json.dumps({"status": "ok", "iterations": round(ran["iterations"] / scale),
                                      "ims_per_batch": ran["ims_per_batch"] * scale}))
        _write_solver(result.parent, ran, scale)
        return {t.name for t in tasks} - pipeline.recorded_tasks(tasks, str(out), str(record))

    assert rerun_with(scale=4) == {"report"}
    assert budget["steps"] and budget["warmup_iters"] > 0  # so that the schedule below is compared
    shorter = {"iterations": budget["iterations"] // 2}
    for other in (shorter, {"base_lr": budget["base_lr"] / 2}, {"steps": [budget["steps"][0] // 2]},
                  {"warmup_iters": budget["warmup_iters"] * 2}, {"steps": []}):
        assert {fine_tuning.name, f"convert.{row}", f"pretrain.{row}", f"probe.{row}"} <= rerun_with(**other), other
        assert {fine_tuning.name, f"convert.{row}", f"pretrain.{row}", f"probe.{row}"} <= rerun_with(scale=4, **other)
    rerun_with(**shorter)
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "demo", "--seeds", "0", "--det-tasks", "voc", "--out", str(out),
                        "--records", str(record), "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    steps, lr, warmup = " ".join(map(str, budget["steps"])), f"{budget['base_lr']:g}", budget["warmup_iters"]
    assert (f"run {fine_tuning.name} again: the record holds it at {shorter['iterations']} iterations of "
            f"{budget['ims_per_batch']} images (lr {lr}, steps {steps}, warmup {warmup}), its config plans "
            f"{budget['iterations']} iterations of {budget['ims_per_batch']} images (lr {lr}, steps {steps}, "
            f"warmup {warmup})" in r.stdout and f"would run {fine_tuning.name}:" in r.stdout)

    def rerun_now():
        return {t.name for t in tasks} - pipeline.recorded_tasks(tasks, str(out), str(record))

    rerun_with()
    result.write_text(json.dumps({"status": "ok"}))
    assert fine_tuning.name in rerun_now()  # a result that does not say its budget is no result of this one
    rerun_with()
    (result.parent / "config.yaml").unlink()
    assert fine_tuning.name in rerun_now()  # nor one whose schedule the record cannot show
    # ... unless its results.json says it, as detect train writes it (detection/results.py: schedule_of)
    said = {"status": "ok", "iterations": budget["iterations"], "ims_per_batch": budget["ims_per_batch"],
            "schedule": {k: budget[k] for k in ("base_lr", "steps", "warmup_iters")}}
    result.write_text(json.dumps(said))
    assert fine_tuning.name not in rerun_now()
    said["schedule"]["base_lr"] /= 2
    result.write_text(json.dumps(said))
    assert fine_tuning.name in rerun_now()
    # the budget is the config's, after the task's --opts
    config_file = fine_tuning.cmd[fine_tuning.cmd.index("--config-file") + 1]
    task = tasks_mod.Task("detect.x", "detect", ["detect", "train", "--config-file", config_file], [],
                          tail=["--opts", "SOLVER.MAX_ITER", "7"])
    assert recorded.detection_budget(task)["iterations"] == 7 != budget["iterations"]


def test_a_pretraining_this_cpu_would_refuse_stops_the_run_before_anything_starts(tmp_path, monkeypatch):
    """bf16 autocast on a CPU without native bf16 is refused by objcrop pretrain (build_optimisation); the
    pipeline refuses such a run before its first task, naming the tasks (a dry run says it would)."""
    import torch

    from objcrop.pretrain.engine import optim

    out = tmp_path / "out"
    tasks = _plan(out, seeds="0", det_tasks="voc")
    bf16 = _name(tasks, "moco_v2_random_none", 0)
    for t in tasks:
        if t.name == bf16:
            t.cmd += ["PRETRAIN.AMP_CPU", "True"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(pipeline.Pipeline, "_run_local", lambda self, todo: pytest.fail("the run started"))
    assert preflight.refused_on_this_cpu(tasks) == [bf16]  # the fp32 rows and the supervised bound run here
    with pytest.raises(pipeline.PipelineError, match=rf"1 pretraining task\(s\) cannot run on this machine: {bf16}\."):
        pipeline.Pipeline(tasks, str(out)).run()
    assert sorted(os.listdir(out / "logs")) == ["pipeline.log"]  # not even the data stage started
    pipeline.Pipeline(tasks, str(out), dry_run=True).run()  # says so, and changes nothing
    said = (out / "logs" / "pipeline.log").read_text()
    assert "warning: a run would stop before starting anything: 1 pretraining task(s)" in said
    # slurm jobs run on other machines: not this CPU's to refuse
    slurm_out = tmp_path / "slurm"
    pipeline.Pipeline(tasks, str(slurm_out), launcher="slurm", dry_run=True).run()
    assert "warning" not in (slurm_out / "logs" / "pipeline.log").read_text()
    # a CPU with native bf16 runs it
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)
    assert preflight.refused_on_this_cpu(tasks) == []


def test_more_processes_than_gpus_or_several_nodes_stop_a_local_run_before_anything_starts(tmp_path, monkeypatch):
    """--gpus N asks for N processes per task, one per GPU: detectron2 refuses several on the CPU, and a
    machine with fewer GPUs has none for the last ones; --nodes asks for machines a local launcher lacks.
    The pipeline refuses such a run before its first task; pretraining alone may run several processes
    on a CPU-only machine (gloo), as test_slurm_real's local two-process run does."""
    monkeypatch.setattr(pipeline.Pipeline, "_run_local", lambda self, todo: pytest.fail("the run started"))
    out = tmp_path / "out"
    tasks = _plan(out, seeds="0", det_tasks="voc", gpus="2")
    detect = [t.name for t in tasks if t.stage == "detect"]
    pre = [t.name for t in tasks if t.stage == "pretrain" and t.gpus == 2]
    assert detect and pre

    def refused(have, todo=tasks):
        monkeypatch.setattr(preflight, "cuda_devices", lambda: have)
        return preflight.refusal_on_this_machine(todo)

    said = refused(0)
    assert f"{len(detect)} task(s) ask for 2 processes, one per GPU, and this machine has 0 CUDA device(s)" in said
    assert detect[0] in said and not any(name in said for name in pre)  # pretraining's run on the CPU
    assert refused(0, [t for t in tasks if t.stage != "detect"]) == ""
    said = refused(1)  # one GPU: the second process of every task has none
    assert f"{len(detect) + len(pre)} task(s) ask for 2 processes" in said and "Pass --gpus 1" in said
    assert refused(2) == ""
    refused(0)
    with pytest.raises(pipeline.PipelineError, match=r"ask for 2 processes, one per GPU"):
        pipeline.Pipeline(tasks, str(out)).run()
    assert sorted(os.listdir(out / "logs")) == ["pipeline.log"]  # not even the data stage started
    pipeline.Pipeline(tasks, str(out), dry_run=True).run()
    assert "warning: a run would stop before starting anything: " in (out / "logs" / "pipeline.log").read_text()

    # a pretraining whose config asks for CUDA, on a machine without it
    one = _plan(tmp_path / "cuda", seeds="0", det_tasks="voc")
    cuda = _name(one, "moco_v2_random_none", 0)
    next(t for t in one if t.name == cuda).cmd += ["PRETRAIN.DEVICE", "cuda"]
    assert refused(0, one) == (f"1 pretraining task(s) ask for CUDA (PRETRAIN.DEVICE cuda), and this machine has none: "
                               f"{cuda}. Run them where a GPU is, or set PRETRAIN.DEVICE auto")
    assert refused(1, one) == ""

    nodes = _plan(tmp_path / "nodes", seeds="0", det_tasks="voc", nodes="2")
    said = preflight.refusal_on_this_machine(nodes, "submitit-local")
    assert "ask for 2 nodes, and the submitit-local launcher runs every task on this one machine" in said
    assert preflight.refusal_on_this_machine(nodes, "slurm") == ""  # other machines: not this one's to refuse
    assert preflight.refusal_on_this_machine(_plan(tmp_path / "one", seeds="0", det_tasks="voc")) == ""


def test_a_record_with_stages_retrains_nothing_for_a_stage_that_does_not_run(tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    tasks = _plan(out, seeds="0")
    pre = _name(tasks, "moco_v2_random_none", 0)
    _record(tasks, out, record, keep=lambda t: t.stage != "detect")
    assert pre not in pipeline.recorded_tasks(tasks, str(out), str(record))
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record), ["pretrain", "probe"])
    assert {pre, "probe." + pre.split(".", 1)[1]} <= skipped


def test_a_record_of_runs_named_before_run_name_is_read_under_the_new_names(tmp_path):
    """A record directory whose runs have the short names of before (`moco_v2_random_none_s0`)
    still lets a run skip them: each name is rebuilt from the run's results.json and config.yaml."""
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    out, record = tmp_path / "out", tmp_path / "record"
    (record / "data").mkdir(parents=True)
    tasks = _plan(out, seeds="0", det_tasks="voc")
    budget_of_voc = recorded.detection_budget(next(t for t in tasks if t.stage == "detect"))
    for t in (t for t in tasks if t.stage == "pretrain" and not t.raw):
        opts = t.cmd[t.cmd.index("--opts") + 1:]
        cfg = merge_config(get_pretrain_cfg, t.cmd[t.cmd.index("--config-file") + 1], opts)
        prov = provenance(cfg, "gt" if cfg.DATA.PROPOSALS else "none")
        old = f"{prov.method}_{prov.policy}_{prov.proposals}_s{prov.seed}"
        new = t.name.split(".", 1)[1]
        assert old != new
        for rel in (f"runs/pretrain/{old}", f"runs/probe/{old}", f"runs/detect_voc/{old}/seed0"):
            (record / rel).mkdir(parents=True)
            budget = budget_of_voc if rel.startswith("runs/detect") else {}
            (record / rel / "results.json").write_text(json.dumps({"status": "ok", "pretrain": prov.to_dict(), **budget}))
            if budget:
                _write_solver(record / rel, budget)  # its schedule, read under the new name too
        (record / f"runs/pretrain/{old}/config.yaml").write_text(cfg.dump())
    (record / "data" / "meta.json").write_text("{}")
    # the reference rows (random init, supervised, detection from scratch) were not recorded here,
    # and the data they train on must then be made again
    references = {t.name for t in tasks if re.search(r"supervised|random_init|scratch", t.name)}
    unrecorded = {t.name for t in tasks} - pipeline.recorded_tasks(tasks, str(out), str(record))
    assert unrecorded == {"report", "data"} | references
    # a batch the name does not carry is another run: nothing of it is skipped
    for config in record.glob("runs/pretrain/*/config.yaml"):
        config.write_text(config.read_text().replace("BATCH_SIZE: 32", "BATCH_SIZE: 64"))
    assert pipeline.recorded_tasks(tasks, str(out), str(record)) == set()


@pytest.mark.parametrize("study", ["study_hard"])
def test_the_repositorys_study_record_leaves_only_the_report_to_run(tmp_path, study):
    """--records on the study's own record (docs/results/): every task of the preset is recorded."""
    record = os.path.join(REPO, "docs", "results", study)
    if not os.path.exists(record):
        pytest.skip(f"{record} is not in this checkout")
    r = subprocess.run([sys.executable, "-m", "objcrop.pipeline", "--preset", study, "--out", str(tmp_path),
                        "--records", record, "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    plan = pipeline.build_plan(pipeline.load_preset(study), str(tmp_path))
    # a registered arm's seeds land over several sessions (RunSpec.accumulating): the ones not yet in may run
    # (and the proposal stores they train on)
    would_run = [line.split("would run ")[1].split(":")[0] for line in r.stdout.splitlines() if "would run " in line]
    accumulating = {t.name for t in plan if t.accumulating and t.name in would_run}
    # and their detection (docs/preregistration.md, clarifications: detection), fixed after some seeds were
    # recorded without a checkpoint: it may run, with the pretraining (and so the probe) it needs again
    registered = {t.name.split(".", 1)[1] for t in plan if t.accumulating and t.stage == "pretrain"}
    accumulating |= {n for n in would_run if any(n.split(".")[0] in ("pretrain", "probe", "convert", "detect")
                                                 and f".{r}" in n for r in registered)}
    accumulating |= {d for t in plan if t.name in accumulating for d in t.deps if d.startswith("proposals.")}
    # the fine-tunings recorded at another budget than the preset's now (the 3-epoch rows' 300 iterations)
    # run again, with the pretraining they need (and so its probe), its conversion and proposals
    other_budget = set(recorded.held_at_another_budget(plan, str(tmp_path), pipeline.open_record(record)))
    again = {f"{stage}.{d.split('.', 1)[1]}" for t in plan if t.name in other_budget for d in t.deps
             for stage in ("convert", "pretrain", "probe")}
    again |= {d for t in plan if t.name in again for d in t.deps if d.startswith("proposals.")}
    assert other_budget | again <= set(would_run)
    runs = [name for name in would_run if name not in accumulating | other_budget | again]
    # The detection reference rows (issue 17) were added to the preset after the study ran: those not yet
    # recorded, the supervised backbone they convert (a checkpoint, never recorded) and its data run again;
    # once all are recorded (study_hard's since 2026-12-07), only the data the accumulating runs need.
    new_references = {n for n in runs if re.fullmatch(r"(convert\.supervised|detect\.\w+\.(scratch|supervised)\.seed\d+)", n)}
    bound = {"pretrain.supervised", "probe.supervised_s0"} if new_references else set()
    assert set(runs) == {"report", "data"} | bound | new_references
    assert r.stdout.count(f"its result is recorded in {record}") == len(plan) - r.stdout.count("would run ")


def test_an_accumulating_run_says_how_many_of_its_seeds_are_recorded(tmp_path):
    """A registered arm's seeds are recorded as they finish: the record may hold some; the rest run."""
    import yaml

    preset = yaml.safe_load(open(os.path.join(REPO, "eval_configs", "pipeline", "demo.yaml")))
    preset["pretrain"]["runs"] = [{"policy": "random", "seeds": [0, 1, 2], "detect": False, "accumulating": True},
                                  {"policy": "obj-obj-dilate", "proposals": "gt", "seeds": [0], "detect": False}]
    path = tmp_path / "registered.yaml"
    path.write_text(yaml.safe_dump(preset))
    out, record = tmp_path / "out", tmp_path / "record"
    tasks = pipeline.build_plan(pipeline.load_preset(str(path)), str(out))
    assert {t.name.split("_s")[-1] for t in tasks if t.accumulating} == {"0", "1", "2"}
    assert all(t.accumulating == ("_random_" in t.name) for t in tasks if t.stage in ("pretrain", "probe")
               and t.name != "pretrain.supervised" and "random_init" not in t.name)
    first = _name(tasks, "moco_v2_random_none", 0).split(".", 1)[1]
    _record(tasks, out, record, keep=lambda t: t.name in (f"pretrain.{first}", f"probe.{first}"))
    r = subprocess.run([sys.executable, "-m", "objcrop.pipeline", "--preset", str(path), "--out", str(out),
                        "--records", str(record), "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert f"accumulating runs: 1 of 3 recorded in {record}" in r.stdout
    assert f"skip pretrain.{first}:" in r.stdout and "would run " + _name(tasks, "moco_v2_random_none", 2) in r.stdout
    # a recorded seed that this output still holds complete counts as recorded too (it is skipped as complete)
    second = _name(tasks, "moco_v2_random_none", 1)
    _record(tasks, out, record, keep=lambda t: t.name == second)
    for t in tasks:
        if t.name == second:
            for result in t.results:
                os.makedirs(os.path.dirname(result), exist_ok=True)
                with open(result, "w") as f:
                    json.dump({"stage": "pretrain", "status": "ok"}, f)
            with open(os.path.join(os.path.dirname(t.results[0]), "model_final.pth"), "wb") as f:
                f.write(b"weights")  # a check wants a file that is not empty
            assert t.complete()
    r = subprocess.run([sys.executable, "-m", "objcrop.pipeline", "--preset", str(path), "--out", str(out),
                        "--records", str(record), "--dry-run"], capture_output=True, text=True, env=_env())
    assert f"skip {second}: outputs complete" in r.stdout, r.stdout
    assert f"accumulating runs: 2 of 3 recorded in {record}" in r.stdout
    # an unknown key is still refused: `accumulating` is a key of its own, not a free-form one
    preset["pretrain"]["runs"][0]["accumulate"] = True
    path.write_text(yaml.safe_dump(preset))
    bad = subprocess.run([sys.executable, "-m", "objcrop.pipeline", "--preset", str(path), "--out", str(out),
                          "--dry-run"], capture_output=True, text=True, env=_env())
    assert bad.returncode == 2 and "accumulate" in bad.stderr


def test_jobs_come_from_the_option_else_the_preset_else_one(tmp_path):
    """--jobs / OBJCROP_JOBS win over the preset's `jobs` (the demo's 2), which wins over 1; a bad value is one line."""
    from objcrop.pipeline.cli import jobs_of
    from objcrop.pipeline.presets import PipelineError

    ns = lambda jobs: type("A", (), {"jobs": jobs})()  # noqa: E731
    assert jobs_of(ns(None), {"_path": "p.yaml"}) == 1
    assert jobs_of(ns(None), {"_path": "p.yaml", "jobs": 2}) == 2
    assert jobs_of(ns("3"), {"_path": "p.yaml", "jobs": 2}) == 3
    with pytest.raises(PipelineError, match="p.yaml: jobs"):
        jobs_of(ns(None), {"_path": "p.yaml", "jobs": "two"})
    with pytest.raises(PipelineError, match="--jobs"):
        jobs_of(ns("0"), {"_path": "p.yaml"})
