"""scripts/pipeline.py: the stage graph, skipping of complete stages, failures naming their log."""
import json
import os
import subprocess
import sys

import pytest
from _repo_files import load_repo_module

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PIPELINE = os.path.join(REPO, "scripts", "run_pipeline.sh")


def _load_script(name):
    return load_repo_module(os.path.join("scripts", f"{name}.py"))


pipeline = _load_script("pipeline")


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHON"] = sys.executable
    return env


def _plan(out, **overrides):
    args = pipeline.build_parser().parse_args(["--preset", "demo"] + [x for k, v in overrides.items()
                                                                       for x in (f"--{k.replace('_', '-')}", v)])
    return pipeline.build_plan(pipeline.apply_overrides(pipeline.load_preset("demo"), args), str(out))


def test_demo_plan_has_every_stage_in_dependency_order(tmp_path):
    tasks = _plan(tmp_path)
    stages = [t.stage for t in tasks]
    assert stages == sorted(stages, key=pipeline.STAGE_ORDER.index)
    assert set(stages) == set(pipeline.STAGE_ORDER)
    names = [t.name for t in tasks]
    assert names.count("report") == 1 and names[-1] == "report"
    pretrains = [t for t in tasks if t.stage == "pretrain"]
    assert len(pretrains) == 4  # random + obj-obj-dilate(gt), 2 seeds
    rnd = next(t for t in pretrains if t.name == "pretrain.moco_v2_random_none_s1")
    assert rnd.deps == ["data"] and "--resume" in rnd.cmd
    opts = rnd.cmd[rnd.cmd.index("--opts") + 1:]
    assert dict(zip(opts[::2], opts[1::2]))["PRETRAIN.SEED"] == "1"
    dil = next(t for t in pretrains if "obj-obj-dilate" in t.name)
    assert dil.deps == ["data", "proposals.gt"]
    dets = [t for t in tasks if t.stage == "detect"]
    assert len(dets) == 2 * 2 and all(t.deps[0].startswith("convert.") and "_s0" in t.name for t in dets)


def test_overrides_change_the_grid(tmp_path):
    tasks = _plan(tmp_path, policies="random obj-scene", seeds="0 3", det_seeds="0 1", det_tasks="voc",
                  proposals="gt selective-search")
    pre = sorted(t.name for t in tasks if t.stage == "pretrain" and t.name.endswith("_s3"))
    assert pre == ["pretrain.moco_v2_obj-scene_gt_s3", "pretrain.moco_v2_obj-scene_selective-search_s3",
                   "pretrain.moco_v2_random_none_s3"]
    assert {t.name for t in tasks if t.stage == "proposals"} == {"proposals.gt", "proposals.selective-search"}
    # voc only, two fine-tuning seeds, and only for pretraining seed 0 (the demo's detection.pretrain_seeds)
    assert len([t for t in tasks if t.stage == "detect"]) == 3 * 2
    with pytest.raises(pipeline.PipelineError, match="--det-tasks: lvis"):
        _plan(tmp_path, det_tasks="lvis")


def test_complete_stages_are_skipped_and_stage_selection_checks_inputs(tmp_path):
    tasks = _plan(tmp_path, seeds="0")
    run = tmp_path / "runs" / "pretrain" / "moco_v2_random_none_s0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"stage": "pretrain", "status": "ok"}))
    by = {t.name: t for t in tasks}
    assert not by["pretrain.moco_v2_random_none_s0"].complete()  # model_final.pth missing
    (run / "model_final.pth").write_bytes(b"x")
    assert by["pretrain.moco_v2_random_none_s0"].complete()
    (run / "results.json").write_text(json.dumps({"stage": "pretrain", "status": "failed"}))
    assert not by["pretrain.moco_v2_random_none_s0"].complete()  # a failed run is redone
    assert not by["report"].complete()  # always rerun
    det = tmp_path / "runs" / "detect_voc" / "moco_v2_random_none_s0" / "seed0"  # objcrop detect's layout
    det.mkdir(parents=True)
    (det / "results.json").write_text(json.dumps({"status": "ok", "seed": 0}))
    assert by["detect.voc.moco_v2_random_none_s0.seed0"].complete()
    detect = pipeline.Task("d", "detect", ["detect", "train"], [], gpus=2, tail=["--opts", "SOLVER.MAX_ITER", "5"])
    assert pipeline.objcrop_argv(detect)[-5:] == ["--num-gpus", "2", "--opts", "SOLVER.MAX_ITER", "5"]
    with pytest.raises(pipeline.PipelineError, match="probe.moco_v2_random_none_s0 needs pretrain"):
        pipeline.select_stages(_plan(tmp_path, seeds="0"), ["probe"])
    with pytest.raises(pipeline.PipelineError, match="unknown stage"):
        pipeline.select_stages(tasks, ["bogus"])


def test_dry_run_lists_skips(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text("{}")
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "demo", "--out", str(tmp_path), "--dry-run"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert "skip data: outputs complete" in r.stdout
    assert "would run proposals.gt: objcrop proposals compute" in r.stdout
    assert os.path.isfile(tmp_path / "logs" / "pipeline.log")


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
    assert r.returncode == 2 and r.stderr.startswith("run_pipeline: error: --preset no_such_preset")


def test_paper_preset_uses_real_datasets_and_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    tasks = pipeline.build_plan(pipeline.load_preset("paper"), str(tmp_path / "out"))
    assert not [t for t in tasks if t.stage == "data"]  # real data is not generated
    pre = [t for t in tasks if t.stage == "pretrain"]
    assert len(pre) == 3 * 3 and all(t.gpus == 8 and t.distributed == "torchrun" for t in pre)
    argv = pipeline.objcrop_argv(pre[0])
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=8" in argv
    props = {t.name: t for t in tasks if t.stage == "proposals"}
    assert props["proposals.selective-search"].cmd[props["proposals.selective-search"].cmd.index("--dataset") + 1] == "coco_2017_train"
    assert len([t for t in tasks if t.stage == "detect"]) == 9 * 2 * 3


def test_study_preset_lists_its_runs_instead_of_the_cross_product(tmp_path):
    tasks = pipeline.build_plan(pipeline.load_preset("study"), str(tmp_path))
    by_name = {t.name: t for t in tasks}
    pre = sorted(t.name for t in tasks if t.stage == "pretrain")
    assert "pretrain.moco_v2_obj-obj-dilate+copy-paste_gt_s2" in pre
    assert "pretrain.byol_obj-obj-dilate_gt_s0" in pre and "pretrain.byol_obj-scene_gt_s0" not in pre
    # 8 runs x 3 seeds, two 4x-budget runs, the no-colour diagnostics (3 + 1 seeds), a 4x-lr run,
    # two 10x-budget runs, four batch-256 runs, 3 seeds at MoCo-v2's lr, the supervised bound
    assert len(pre) == 8 * 3 + 2 + 3 + 1 + 1 + 2 + 4 + 3 + 1 + 1
    assert "pretrain.moco_v2_random-4x_none_s0" in pre
    nocol = by_name["pretrain.moco_v2_random-no-colour_none_s0"].cmd
    opts = nocol[nocol.index("--opts") + 1:]
    assert dict(zip(opts[::2], opts[1::2]))["VIEWS.COLOR_JITTER_PROB"] == "0.0"
    assert dict(zip(opts[::2], opts[1::2]))["PRETRAIN.TAG"] == "no-colour"
    cp = by_name["pretrain.moco_v2_obj-obj-dilate+copy-paste_gt_s2"].cmd
    opts = cp[cp.index("--opts") + 1:]
    assert dict(zip(opts[::2], opts[1::2]))["VIEWS.COPY_PASTE.ENABLED"] == "True"
    assert sorted(t.name for t in tasks if t.stage == "proposals") == [
        "proposals.gt", "proposals.saliency-rbd", "proposals.selective-search"]
    # detection only for the runs that ask for it (random crops and ground-truth boxes)
    dets = {t.name.split(".")[2].rsplit("_s", 1)[0] for t in tasks if t.stage == "detect"}
    assert dets == {"moco_v2_random_none", "moco_v2_obj-obj-dilate_gt"}
    sup = by_name["pretrain.supervised"]
    assert sup.raw and pipeline.objcrop_argv(sup)[1].endswith(os.path.join("benchmarks", "learnability.py"))
    assert by_name["probe.supervised_s0"].deps == ["data", "pretrain.supervised"]
    assert by_name["probe.random_init_s0"].deps == ["data"]
    rnd = by_name["probe.random_init_s2"].cmd
    assert rnd[rnd.index("--weights") + 1] == "random" and rnd[rnd.index("--seed") + 1] == "2"


def test_plain_study_preset_changes_only_the_data(tmp_path):
    """The background-free control: the study's pretraining config and policies on study-plain data."""
    tasks = pipeline.build_plan(pipeline.load_preset("study_plain"), str(tmp_path))
    assert {t.stage for t in tasks} == {"data", "proposals", "pretrain", "probe", "report"}
    data = next(t for t in tasks if t.stage == "data").cmd
    assert data[data.index("--variant") + 1] == "study-plain"
    pre = sorted(t.name for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised")
    same = [f"pretrain.moco_v2_{p}_s{s}" for p in ("obj-obj-dilate_gt", "random_none") for s in range(3)]
    grey = [f"pretrain.moco_v2_{p}_s{s}" for p in ("obj-obj-dilate-grey_gt", "random-grey_none") for s in range(3)]
    assert pre == sorted(same + grey + ["pretrain.moco_v2_random-grey-4x_none_s0", "pretrain.moco_v2_random-10x_none_s0",
                                        "pretrain.moco_v2_obj-obj-dilate-10x_gt_s0"]
                          + [f"pretrain.moco_v2_random-scale0.5_none_s{s}" for s in range(3)]
                          + [f"pretrain.moco_v2_{p}-b256-100e_{b}_s{s}" for p, b in (("random", "none"), ("obj-obj-dilate", "gt"))
                             for s in range(4)])
    study = {t.name: t for t in pipeline.build_plan(pipeline.load_preset("study"), str(tmp_path / "s"))}
    for t in tasks:
        if t.name in same:
            assert t.cmd[t.cmd.index("--config-file") + 1] == study[t.name].cmd[study[t.name].cmd.index("--config-file") + 1]


def test_gpu_study_preset_pretrains_and_probes_on_one_gpu_without_detection(tmp_path):
    tasks = pipeline.build_plan(pipeline.load_preset("study_gpu"), str(tmp_path))
    assert {t.stage for t in tasks} == {"data", "proposals", "pretrain", "probe", "report"}  # no detectron2 needed
    pre = [t for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised"]
    assert len(pre) == 3 * 2 + 4 and all(t.gpus == 1 for t in pre)
    assert all(t.cmd[t.cmd.index("--config-file") + 1] == "pretrain/study_gpu.yaml" for t in pre)
    sup = next(t for t in tasks if t.name == "pretrain.supervised").cmd
    assert sup[sup.index("--arch") + 1] == "resnet50" and sup[sup.index("--device") + 1] == "auto"
    rnd = next(t for t in tasks if t.name == "probe.random_init_s0").cmd
    assert rnd[rnd.index("--arch") + 1] == "resnet50"


def test_plain_gpu_preset_is_the_plain_control_with_device_augmentation_on_one_gpu(tmp_path):
    tasks = pipeline.build_plan(pipeline.load_preset("study_plain_gpu"), str(tmp_path))
    assert {t.stage for t in tasks} == {"data", "proposals", "pretrain", "probe", "report"}
    data = next(t for t in tasks if t.stage == "data").cmd
    plain = next(t for t in pipeline.build_plan(pipeline.load_preset("study_plain"), str(tmp_path / "p")) if t.stage == "data").cmd
    assert data[data.index("--num-images"):] == plain[plain.index("--num-images"):]  # the CPU control's data
    pre = [t for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised"]
    assert sorted(t.name for t in pre) == sorted(f"pretrain.moco_v2_{p}_s{s}" for p in ("random_none", "obj-obj-dilate_gt")
                                                 for s in range(5))
    assert all(t.gpus == 1 and t.cmd[t.cmd.index("--config-file") + 1] == "pretrain/study_plain_gpu.yaml" for t in pre)
    sup = next(t for t in tasks if t.name == "pretrain.supervised").cmd
    assert sup[sup.index("--device") + 1] == "auto" and "--arch" not in sup  # learnability.py's ResNet-18
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    cfg = merge_config(get_pretrain_cfg, "pretrain/study_plain_gpu.yaml", [])
    assert cfg.VIEWS.AUGMENT_ON == "device" and cfg.PRETRAIN.ARCH == "resnet18"


@pytest.mark.parametrize("run, message", [
    ({"policy": "obj-obj-dilate"}, "needs `proposals`"),
    ({"policy": "random", "copy_paste": True}, "with copy-paste needs `proposals`"),
    ({"policy": "random", "seed": 1}, "unknown key(s) seed"),
])
def test_bad_run_entry_names_it(tmp_path, run, message):
    preset = {"datasets": {"pretrain": "x", "probe_train": "x", "probe_test": "y"}, "pretrain": {"runs": [run]}}
    with pytest.raises(pipeline.PipelineError, match=r"pretrain\.runs\[0\]") as e:
        pipeline.build_plan(preset, str(tmp_path))
    assert message in str(e.value)


def test_jobs_run_independent_tasks_side_by_side_and_respect_dependencies(tmp_path, monkeypatch):
    # stand-in stages: each writes its start and end time, so overlap and order can be checked
    script = tmp_path / "stage.py"
    script.write_text("import json, sys, time, os\nname, secs, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]\n"
                      "t0 = time.time(); time.sleep(secs)\n"
                      "json.dump({'start': t0, 'end': time.time(), 'threads': os.environ.get('OMP_NUM_THREADS')}, "
                      "open(os.path.join(out, name + '.json'), 'w'))\n"
                      "if name == 'a': open(os.path.join(out, 'late.json'), 'w').write('{}')\n"
                      "sys.exit(1 if name == 'bad' else 0)\n")
    monkeypatch.setattr(pipeline, "REPO", str(tmp_path))
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
    """Write into `record` the result files of the tasks `keep` selects, as study_records would."""
    for t in tasks:
        if not keep(t):
            continue
        for path in t.results:
            dest = record / os.path.relpath(path, out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps({"status": status}))


def test_a_record_skips_recorded_results_but_reruns_what_a_missing_result_needs(tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    tasks = _plan(out, seeds="0 1")  # detection fine-tunes the seed-0 checkpoints only
    _record(tasks, out, record, keep=lambda t: t.stage != "detect")
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record))
    # seed 1: pretraining and probe are recorded and nothing else needs the checkpoint
    assert {"pretrain.moco_v2_random_none_s1", "probe.moco_v2_random_none_s1",
            "pretrain.moco_v2_obj-obj-dilate_gt_s1", "probe.moco_v2_obj-obj-dilate_gt_s1"} <= skipped
    # seed 0: detection is missing and needs the checkpoint, which a record does not keep; the
    # rerun pretraining makes a new checkpoint, so its recorded probe is redone as well
    for name in ("pretrain.moco_v2_random_none_s0", "probe.moco_v2_random_none_s0", "convert.moco_v2_random_none_s0",
                 "data", "proposals.gt", "report"):
        assert name not in skipped
    # with detection recorded too, only the report runs
    _record(tasks, out, record, keep=lambda t: t.stage == "detect")
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record))
    assert {t.name for t in tasks} - skipped == {"report"}
    # a failed result is no result
    _record(tasks, out, record, keep=lambda t: t.name == "probe.moco_v2_random_none_s1", status="failed")
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record))
    assert "probe.moco_v2_random_none_s1" not in skipped and "pretrain.moco_v2_random_none_s1" not in skipped
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "demo", "--seeds", "0 1", "--out", str(out),
                        "--records", str(record), "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    assert f"skip probe.moco_v2_obj-obj-dilate_gt_s1: its result is recorded in {record}" in r.stdout
    assert "would run pretrain.moco_v2_random_none_s1" in r.stdout
    r = subprocess.run(["bash", RUN_PIPELINE, "--preset", "demo", "--out", str(out), "--records", str(tmp_path / "nope"),
                        "--dry-run"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2 and "--records" in r.stderr and "no such directory" in r.stderr


def test_study_records_keep_results_not_checkpoints(tmp_path):
    records = _load_script("study_records")
    out, record = tmp_path / "out", tmp_path / "record"
    run = out / "runs" / "pretrain" / "moco_v2_random_none_s0"
    run.mkdir(parents=True)
    for name, text in (("results.json", '{"status": "ok"}'), ("config.yaml", "PRETRAIN: {}\n"),
                       ("metrics.jsonl", '{"loss": 1.0}\n'), ("model_final.pth", "weights"), ("log.txt", "log")):
        (run / name).write_text(text)
    (out / "data" / "images").mkdir(parents=True)
    (out / "data" / "meta.json").write_text("{}")
    (out / "data" / "images" / "0.png").write_text("png")
    (out / "logs").mkdir()
    (out / "logs" / "pipeline.log").write_text("[pipeline 10:00:00] start\n")
    records.save(str(out), str(record))
    kept = sorted(str(p.relative_to(record)) for p in record.rglob("*") if p.is_file())
    logs = [k for k in kept if k.startswith("logs/")]
    assert len(logs) == 1 and logs[0].startswith("logs/pipeline-")
    assert [k for k in kept if not k.startswith("logs/")] == [
        "data/meta.json", "runs/pretrain/moco_v2_random_none_s0/config.yaml",
        "runs/pretrain/moco_v2_random_none_s0/metrics.jsonl", "runs/pretrain/moco_v2_random_none_s0/results.json"]
    # the same output's log grows: its copy is replaced, not added; a new result replaces the old
    (out / "logs" / "pipeline.log").write_text("[pipeline 10:00:00] start\n[pipeline 11:00:00] done\n")
    (run / "results.json").write_text('{"status": "ok", "rerun": true}')
    records.save(str(out), str(record))
    assert [p.name for p in (record / "logs").iterdir()] == [os.path.basename(logs[0])]
    assert "11:00:00" in (record / logs[0]).read_text()
    assert "rerun" in (record / "runs" / "pretrain" / "moco_v2_random_none_s0" / "results.json").read_text()


def test_a_record_with_stages_retrains_nothing_for_a_stage_that_does_not_run(tmp_path):
    out, record = tmp_path / "out", tmp_path / "record"
    tasks = _plan(out, seeds="0")
    _record(tasks, out, record, keep=lambda t: t.stage != "detect")
    assert "pretrain.moco_v2_random_none_s0" not in pipeline.recorded_tasks(tasks, str(out), str(record))
    skipped = pipeline.recorded_tasks(tasks, str(out), str(record), ["pretrain", "probe"])
    assert {"pretrain.moco_v2_random_none_s0", "probe.moco_v2_random_none_s0"} <= skipped


def test_study_report_finds_a_moco_loss_that_climbs_back_after_the_queue_fills(tmp_path):
    report = _load_script("study_report")
    rows = [{"iteration": i, "epoch": e, "loss": loss, "acc_top1": 0.5}
            for i, (e, loss) in enumerate([(0, 3.0), (0, 3.1), (1, 6.5), (1, 6.4), (2, 6.8), (2, 6.9)])]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tail = report._run_tail(str(tmp_path), last=2)
    # the first epoch (queue filling) is not the lowest; epoch 2 is, and the end is above it
    assert tail["first"] == pytest.approx(3.05) and tail["lowest_epoch"] == 2 and tail["lowest"] == pytest.approx(6.45)
    assert tail["last"] == pytest.approx(6.85) and tail["epochs"] == 3 and tail["spread"] is None


def test_pretext_table_shows_the_probe_feature_spectrum_and_the_reference_rows(tmp_path):
    report = _load_script("study_report")
    run = tmp_path / "runs" / "pretrain" / "moco_v2_random_none_s0"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"status": "ok", "iterations": 4}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "epoch": i // 2, "loss": 5.0 - i}) + "\n"
                                               for i in range(4)))
    spectrum = {"effective_rank": 123.4, "top_pc_share": 0.456}
    for name, features in (("moco_v2_random_none_s0", spectrum), ("random_init_s0", None)):
        probe = tmp_path / "runs" / "probe" / name
        probe.mkdir(parents=True)
        (probe / "results.json").write_text(json.dumps({"status": "ok", "mAP": 0.5, **({"features": features} if features else {})}))
    table = report.pretext_table(str(tmp_path))
    mine = next(line for line in table.splitlines() if line.startswith("| moco_v2_random_none_s0 "))
    assert mine.endswith("| 50.0 | 123 / 0.46 |")
    reference = next(line for line in table.splitlines() if line.startswith("| random_init_s0 "))
    assert "reference" in reference and reference.endswith("| 50.0 | — |")  # probed before the spectrum existed


def test_study_report_summarises_a_lent_machine(tmp_path):
    report = _load_script("study_report")
    assert report.machine_line(str(tmp_path)) == ""
    (tmp_path / "wall_time.txt").write_text("300 s on 16 cores and NVIDIA H200 (pipeline exit code 124)\n")
    (tmp_path / "gpu_use.csv").write_text("timestamp, utilization.gpu [%], memory.used [MiB]\n"
                                          "2026/11/26 04:05:33.543, 0 %, 0 MiB\n"
                                          "2026/11/26 04:05:38.547, 60 %, 4000 MiB\n"
                                          "2026/11/26 04:05:43.547, 40 %, 4500 MiB\n")
    line = report.machine_line(str(tmp_path))
    assert "NVIDIA H200" in line and "(3 samples): mean 33 % (50 % while busy), at most 4500 MiB" in line
    (tmp_path / "wall_times.txt").write_text("2026-11-26 06:44 UTC 480 s on 16 cores and NVIDIA H200 (pipeline exit code 124)\n"
                                             "2026-11-26 06:46 UTC 147 s on 16 cores and NVIDIA H200 (pipeline exit code 0)\n")
    assert "2 runs of it recorded in wall_times.txt, 627 s in all" in report.machine_line(str(tmp_path))


def test_results_page_is_built_from_the_records_in_the_repository(tmp_path):
    out = tmp_path / "results.md"
    assert _load_script("study_report").main(["--out", str(out), "--wall-time", str(tmp_path / "none.txt")]) == 0
    text = out.read_text()
    for title in ("## Default variant (`study`)", "## Hard variant (`study-hard`)",
                  "## No background to match views by (`study-plain`)", "## GPU scale (`study_gpu`)",
                  "## The background-free control at GPU scale (`study_plain_gpu`)"):
        assert title in text
    assert "nan" not in text.replace("nano", "")


def test_study_report_compares_a_backbone_only_with_random_init_of_its_architecture():
    report = _load_script("study_report")
    col = report.PROBE
    values = {("random_init", "none", "none", ""): {col: [30.0, 32.0]},
              ("moco_v2", "random", "none", "3"): {col: [35.0, 37.0]},
              ("moco_v2", "random-r50", "none", "20"): {col: [29.0]}}
    arches = {("random_init", "none", "none", ""): "resnet18", ("moco_v2", "random", "none", "3"): "resnet18",
              ("moco_v2", "random-r50", "none", "20"): "resnet50"}
    table = report.gate_table(values, col, arches)
    assert "| moco_v2 random | 3 | 36.0 ± 1.4 (n=2) | +5.0 |" in table
    assert "| moco_v2 random-r50 (resnet50) | 20 | 29.0 (n=1) | — (the reference is a resnet18) | — |" in table
