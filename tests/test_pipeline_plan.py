"""objcrop.pipeline.plan: the stage graph of each preset, run names, output checks, stage selection."""
import json
import os
import re

import pytest
import yaml

import objcrop.pipeline as pipeline
from objcrop.config import config_changes
from objcrop.pipeline.naming import provenance
from objcrop.records import Provenance, run_name


def _plan(out, preset="demo", **overrides):
    args = pipeline.build_parser().parse_args(["--preset", preset] + [x for k, v in overrides.items()
                                                                       for x in (f"--{k.replace('_', '-')}", v)])
    return pipeline.build_plan(pipeline.apply_overrides(pipeline.load_preset(preset), args), str(out))


def _run(tasks, prefix, seed, stage="pretrain"):
    """The task of one run: its name starts with method_policy_proposals and ends with its seed."""
    found = [t for t in tasks if t.stage == stage and t.name.startswith(f"{stage}.{prefix}_") and t.name.endswith(f"_s{seed}")]
    assert len(found) == 1, (prefix, seed, [t.name for t in tasks if t.stage == stage])
    return found[0]


def _short(name):
    """A task name without the arch, batch, epochs and data that run_name adds (the names of before)."""
    return re.sub(r"_r\d+_b\d+_e\d+_[A-Za-z0-9.-]+_s(\d+)(\.seed\d+)?$", r"_s\1\2", name)


def _opts(task):
    opts = task.cmd[task.cmd.index("--opts") + 1:]
    return dict(zip(opts[::2], opts[1::2]))


def _merged(task):
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    opts = task.cmd[task.cmd.index("--opts") + 1:]
    return merge_config(get_pretrain_cfg, task.cmd[task.cmd.index("--config-file") + 1], opts)


def test_demo_plan_has_every_stage_in_dependency_order(tmp_path):
    tasks = _plan(tmp_path)
    stages = [t.stage for t in tasks]
    assert stages == sorted(stages, key=pipeline.STAGE_ORDER.index)
    assert set(stages) == set(pipeline.STAGE_ORDER)
    names = [t.name for t in tasks]
    assert names.count("report") == 1 and names[-1] == "report"
    pretrains = [t for t in tasks if t.stage == "pretrain" and not t.raw]
    assert len(pretrains) == 4  # random + obj-obj-dilate(gt), 2 seeds (and the supervised bound)
    rnd = _run(tasks, "moco_v2_random_none", 1)
    assert rnd.deps == ["data"] and "--resume" in rnd.cmd
    assert _opts(rnd)["PRETRAIN.SEED"] == "1"
    dil = next(t for t in pretrains if "obj-obj-dilate" in t.name)
    assert dil.deps == ["data", "proposals.gt"]
    dets = [t for t in tasks if t.stage == "detect" and t.name.split(".")[2] not in ("scratch", "supervised")]
    assert len(dets) == 2 and all(t.deps[0].startswith("convert.") and "_s0." in t.name for t in dets)  # VOC only
    # the reference rows: random-init and supervised probes, scratch and supervised fine-tunings
    names = {t.name for t in tasks}
    assert {"probe.random_init_s0", "probe.random_init_s1", "probe.supervised_s0"} <= names
    assert {f"detect.voc.{ref}.seed0" for ref in ("scratch", "supervised")} <= names


def test_run_names_are_records_run_name_of_the_merged_config(tmp_path):
    """Every pretraining directory is run_name(its provenance, its batch), read from what the stage
    will merge; probe, weights and detection paths reuse it; reference probes keep their own names."""
    tasks = _plan(tmp_path, preset="study")
    by_name = {t.name: t for t in tasks}
    for t in (t for t in tasks if t.stage == "pretrain" and not t.raw):
        cfg = _merged(t)
        source = {"": "none", **{os.path.join(str(tmp_path), "proposals", f"{s}.store"): s
                                 for s in ("gt", "selective-search", "saliency-rbd")}}[cfg.DATA.PROPOSALS]
        store = source
        if cfg.DATA.PROPOSALS_TOPK and source not in ("none", "gt"):
            source += f"-top{cfg.DATA.PROPOSALS_TOPK}"  # the registered ranked arm: a store's 10 best boxes
        # written out here, independently of the trainer's view_policy: the study's presets use
        # objcrop's geometry, and copy-paste is named by its mode (shared: the study's first rows)
        copy_paste = {"shared": "+copy-paste", "dilo": "+copy-paste-dilo"}[cfg.VIEWS.COPY_PASTE.MODE]
        policy = cfg.VIEWS.POLICY + (copy_paste if cfg.VIEWS.COPY_PASTE.ENABLED else "")
        prov = Provenance(cfg.PRETRAIN.METHOD, policy, source, cfg.PRETRAIN.EPOCHS, cfg.PRETRAIN.ARCH,
                          cfg.DATA.DATASET, cfg.PRETRAIN.SEED, cfg.PRETRAIN.TAG)
        name = run_name(prov, cfg.PRETRAIN.BATCH_SIZE)
        assert t.name == f"pretrain.{name}" and cfg.OUTPUT_DIR == os.path.join(str(tmp_path), "runs", "pretrain", name)
        assert by_name[f"probe.{name}"].cmd[by_name[f"probe.{name}"].cmd.index("--weights") + 1] == os.path.join(
            cfg.OUTPUT_DIR, "model_final.pth")
        assert provenance(cfg, store) == prov
    # the record's round trip: a run's provenance as its results.json stores it gives back its name
    r50 = _run(tasks, "moco_v2_random-r50-b256-lr0.12_none", 0)
    cfg = _merged(r50)
    stored = json.loads(json.dumps(provenance(cfg, "none").to_dict()))
    assert r50.name == "pretrain." + run_name(Provenance.from_dict(stored), cfg.PRETRAIN.BATCH_SIZE)
    assert "_r50_b256_e20_data-train_s0" in r50.name  # the leaf YAML's arch, batch and epochs
    assert "_r18_b32_e3_data-train_s2" in _run(tasks, "moco_v2_obj-obj-dilate+copy-paste_gt", 2).name
    for ref in ("random_init_s0", "random_init_s2", "supervised_s0"):
        assert f"probe.{ref}" in by_name
    dets = {t.name.split(".")[2] for t in tasks if t.stage == "detect"}
    registered = {_run(tasks, p, s).name.split(".", 1)[1] for s in range(12) for p in (
        "moco_v2_random-b256-200e-bf16_none", "moco_v2_obj-obj-dilate-b256-200e-bf16_gt",
        "moco_v2_obj-obj-dilate-b256-200e-bf16_selective-search-top10")}
    assert dets == {_run(tasks, p, s).name.split(".", 1)[1] for p in ("moco_v2_random_none", "moco_v2_obj-obj-dilate_gt")
                    for s in range(3)} | registered | {"scratch", "supervised"}  # and the reference rows
    assert all(os.path.basename(t.cmd[t.cmd.index("--weights") + 1])[:-4] == t.name.split(".")[2]
               for t in tasks if t.stage == "detect" and "scratch" not in t.name)


def test_overrides_change_the_grid(tmp_path):
    tasks = _plan(tmp_path, policies="random obj-scene", seeds="0 3", det_seeds="0 1", det_tasks="voc",
                  proposals="gt selective-search")
    pre = sorted(t.name.rsplit("_r18_", 1)[0] for t in tasks if t.stage == "pretrain" and t.name.endswith("_s3"))
    assert pre == ["pretrain.moco_v2_obj-scene_gt", "pretrain.moco_v2_obj-scene_selective-search",
                   "pretrain.moco_v2_random_none"]
    assert {t.name for t in tasks if t.stage == "proposals"} == {"proposals.gt", "proposals.selective-search"}
    # voc only, two fine-tuning seeds, and only for pretraining seed 0 (the demo's detection.pretrain_seeds)
    assert len([t for t in tasks if t.stage == "detect"]) == (3 + 2) * 2  # 3 pretrained backbones, 2 references
    with pytest.raises(pipeline.PipelineError, match="--det-tasks: lvis"):
        _plan(tmp_path, det_tasks="lvis")


def test_seeds_and_proposals_select_an_accumulating_arm_without_touching_the_references(tmp_path):
    """The command a session runs for the next seed of one registered arm: `--seeds 3 --proposals gt` on
    study_hard's registered tag plans seed 3 of the gt arm and of the random arm, and the random-init
    reference probes stay the preset's seeds 0-2 (a `probe.random_init_s3` would grow the reference row)."""
    def pretrains(tasks):
        return sorted(_short(t.name) for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised")

    def random_inits(tasks):
        return sorted(t.name for t in tasks if t.name.startswith("probe.random_init_"))

    tasks = _plan(tmp_path, preset="study_hard", tags="b256-200e-bf16", seeds="3", proposals="gt")
    assert pretrains(tasks) == ["pretrain.moco_v2_obj-obj-dilate-b256-200e-bf16_gt_s3",
                                "pretrain.moco_v2_random-b256-200e-bf16_none_s3"]
    assert random_inits(tasks) == [f"probe.random_init_s{s}" for s in range(3)]
    assert [t.name for t in tasks if t.stage == "proposals"] == ["proposals.gt"]
    ranked = _plan(tmp_path, preset="study_hard", tags="b256-200e-bf16", seeds="0", proposals="saliency-gs")
    assert pretrains(ranked) == ["pretrain.moco_v2_obj-obj-dilate-b256-200e-bf16_saliency-gs-top10_s0",
                                 "pretrain.moco_v2_random-b256-200e-bf16_none_s0"]
    with pytest.raises(pipeline.PipelineError, match="--proposals: selective-search is in no row of pretrain.runs "
                                                     "that --tags b256-200e-bf16 keeps"):
        _plan(tmp_path, preset="study_hard", tags="b256-200e-bf16", proposals="selective-search")
    # --proposals none: the random arm alone (a registered random arm trained again for its fine-tuning)
    alone = _plan(tmp_path, preset="study", tags="b256-200e-bf16", seeds="0", proposals="none")
    assert pretrains(alone) == ["pretrain.moco_v2_random-b256-200e-bf16_none_s0"]
    assert not [t for t in alone if t.stage == "proposals"]
    with pytest.raises(pipeline.PipelineError, match="--proposals none keeps the random-crop runs of pretrain.runs"):
        _plan(tmp_path, proposals="none")
    # a preset without a runs list: --seeds sets every seed, the references' too (one per seed)
    assert random_inits(_plan(tmp_path, seeds="0 3")) == ["probe.random_init_s0", "probe.random_init_s3"]


def test_no_references_plans_the_runs_alone_with_the_same_commands(tmp_path, monkeypatch):
    """`--no-references` (a registered seed trained and fine-tuned while the study's reference rows are
    run elsewhere): no supervised training, no random-init or supervised probe, no scratch or supervised
    fine-tuning; every task of the runs themselves is the one the full plan holds, command for command."""
    argv = ["--preset", "study", "--tags", "b256-200e-bf16", "--seeds", "5", "--proposals", "gt"]

    def plan(extra):
        args = pipeline.build_parser().parse_args(argv + extra)
        return {t.name: t.cmd for t in pipeline.build_plan(pipeline.apply_overrides(pipeline.load_preset("study"), args),
                                                           str(tmp_path))}

    full, alone = plan([]), plan(["--no-references"])
    references = set(full) - set(alone)
    assert not set(alone) - set(full)
    assert {"pretrain.supervised", "convert.supervised"} <= references
    assert {n for n in references if n.startswith("probe.")} == {n for n in full if n.startswith("probe.random_init_")
                                                                 or n.startswith("probe.supervised")}
    assert sorted(_short(n) for n in alone if n.startswith("detect.")) == [
        "detect.voc.moco_v2_obj-obj-dilate-b256-200e-bf16_gt_s5.seed5", "detect.voc.moco_v2_random-b256-200e-bf16_none_s5.seed5"]
    assert all(alone[n] == full[n] for n in alone if n != "report")
    monkeypatch.setenv("OBJCROP_NO_REFERENCES", "1")
    assert set(plan([])) == set(alone)


def test_registered_arms_train_seed_by_seed_across_the_arms(tmp_path):
    """docs/preregistration.md: seed k of every arm before seed k + 1 of any, so that the whole preset
    run without --seeds (`make study`, a fresh reproduction) and cut short leaves the arms balanced."""
    for preset, ranked in (("study", "selective-search-top10"), ("study_hard", "saliency-gs-top10")):
        tasks = _plan(tmp_path, preset=preset, tags="b256-200e-bf16")
        order = [_short(t.name).split("b256-200e-bf16_", 1)[1] for t in tasks if t.stage == "pretrain"
                 and "b256-200e-bf16" in t.name]
        assert order == [f"{arm}_s{seed}" for seed in range(12) for arm in ("none", "gt", ranked)], preset
    # a run that is not accumulating keeps its seeds together, where the preset lists it
    tasks = _plan(tmp_path, seeds="0 1")
    runs = [_short(t.name) for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised"]
    assert runs[:2] == ["pretrain.moco_v2_random_none_s0", "pretrain.moco_v2_random_none_s1"]


def test_registered_arms_are_fine_tuned_once_for_voc_seeded_like_their_probe(tmp_path):
    """docs/preregistration.md (clarifications, detection): each registered pretraining run is converted
    and fine-tuned once, on the VOC task only, with its own pretraining seed (as its probe is); the
    reference rows keep every task of the preset and its detection seeds."""
    for preset in ("study", "study_hard"):
        tasks = _plan(tmp_path, preset=preset, tags="b256-200e-bf16", seeds="3")
        pretrains = [t.name for t in tasks if t.stage == "pretrain" and "b256-200e-bf16" in t.name]
        dets = [t for t in tasks if t.stage == "detect" and "b256-200e-bf16" in t.name]
        assert sorted(t.name for t in dets) == sorted(f"detect.voc.{p.split('.', 1)[1]}.seed3" for p in pretrains)
        assert len(dets) == 3 and {_arg(t, "--seeds") for t in dets} == {"3"}
        assert all(t.deps == [f"convert.{t.name.split('.')[2]}"] for t in dets)
        det = pipeline.load_preset(preset)["detection"]
        refs = sorted(t.name for t in tasks if t.stage == "detect" and t not in dets)
        assert refs == sorted(f"detect.{task}.{ref}.seed{s}" for task in det["tasks"]
                              for ref in det["references"] for s in det["seeds"])
    # --det-tasks without VOC: no conversion and no fine-tuning of a registered arm, and no error
    tasks = _plan(tmp_path, preset="study", tags="b256-200e-bf16", seeds="3", det_tasks="coco")
    assert not [t for t in tasks if t.stage in ("convert", "detect") and "b256-200e-bf16" in t.name]
    det = pipeline.load_preset("study")["detection"]
    assert {t.name for t in tasks if t.stage == "detect"} == {f"detect.coco.{ref}.seed{s}" for ref in det["references"]
                                                             for s in det["seeds"]}


def _yaml_value(config_file, dotted):
    """A key of an eval_configs YAML, following its `_BASE_` chain (what detectron2's merge gives it)."""
    import yaml

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "eval_configs", config_file)
    while True:
        with open(path) as f:
            cfg = yaml.safe_load(f)
        node = cfg
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None or "_BASE_" not in cfg:
            return node
        path = os.path.join(os.path.dirname(path), cfg["_BASE_"])


def test_the_registered_arms_are_fine_tuned_at_the_budget_where_the_detection_gate_passed(tmp_path):
    """docs/preregistration.md (detection): the calibrated budget is the one at which
    benchmarks/detect_curve.py's gate passed (its recorded curve.md); a config or preset change that
    moves the registered fine-tuning off it fails here."""
    curve = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "results",
                         "detect_curve", "curve.md")
    with open(curve) as f:
        gate = int(re.search(r"^## Gate at (\d+) iterations: \*\*PASS\*\*", f.read(), re.M).group(1))
    for preset in ("study", "study_hard"):
        dets = [t for t in _plan(tmp_path, preset=preset, tags="b256-200e-bf16", seeds="3")
                if t.stage == "detect" and "b256-200e-bf16" in t.name]
        assert len(dets) == 3
        for t in dets:
            assert "SOLVER.MAX_ITER" not in t.cmd + t.tail  # no override: the config's own schedule
            assert _yaml_value(_arg(t, "--config-file"), "SOLVER.MAX_ITER") == gate, (preset, t.name)


def test_loader_workers_change_how_a_run_loads_its_data_never_its_name_or_computation(tmp_path):
    """--loader-workers (a CPU-sized registered seed on a lent GPU machine's 16 cores) sets
    DATA.NUM_WORKERS of every pretraining run and nothing else: the same task names, so the record's
    seeds are recognised, and the same computation_hash, so the record holds one arm, not two."""
    from objcrop.pretrain.engine.results import computation_hash

    plain = _plan(tmp_path, preset="study", tags="b256-200e-bf16", seeds="3")
    fast = _plan(tmp_path, preset="study", tags="b256-200e-bf16", seeds="3", loader_workers="4")
    assert [t.name for t in fast] == [t.name for t in plain]
    pretrains = [(a, b) for a, b in zip(plain, fast) if a.stage == "pretrain" and a.name != "pretrain.supervised"]
    assert len(pretrains) == 3
    for a, b in pretrains:
        assert _merged(a).DATA.NUM_WORKERS == 1 and _merged(b).DATA.NUM_WORKERS == 4
        assert computation_hash(_merged(a)) == computation_hash(_merged(b))
    assert [a.cmd for a, b in zip(plain, fast) if a.stage != "pretrain"] == \
        [b.cmd for a, b in zip(plain, fast) if a.stage != "pretrain"]
    with pytest.raises(pipeline.PipelineError, match="--loader-workers"):
        _plan(tmp_path, preset="study", loader_workers="-1")


def test_a_registered_presets_report_withholds_its_registered_arms_like_the_records(tmp_path):
    """The pipeline's own report of study / study_hard passes the registration (objcrop report
    --registration), as scripts/study.sh does for the records; other presets' reports do not."""
    from objcrop.pipeline.plan import REGISTRATION, registration_args

    def report(preset):
        return next(t for t in pipeline.build_plan(pipeline.load_preset(preset), str(tmp_path)) if t.name == "report")

    for preset in ("study", "study_hard"):
        assert report(preset).cmd[-4:] == ["--registration", REGISTRATION, "--study", preset]
    assert "--registration" not in report("study_plain").cmd and "--registration" not in report("demo").cmd
    # an installed package without docs/ reports everything
    assert registration_args(pipeline.load_preset("study"), str(tmp_path / "none.yaml")) == []


def test_complete_stages_are_skipped_and_stage_selection_checks_inputs(tmp_path):
    tasks = _plan(tmp_path, seeds="0")
    pre = _run(tasks, "moco_v2_random_none", 0)
    name = pre.name.split(".", 1)[1]
    run = tmp_path / "runs" / "pretrain" / name
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"stage": "pretrain", "status": "ok"}))
    by = {t.name: t for t in tasks}
    assert not pre.complete()  # model_final.pth missing
    (run / "model_final.pth").write_bytes(b"x")
    assert pre.complete()
    (run / "results.json").write_text(json.dumps({"stage": "pretrain", "status": "failed"}))
    assert not pre.complete()  # a failed run is redone
    assert not by["report"].complete()  # always rerun
    det = tmp_path / "runs" / "detect_voc" / name / "seed0"  # objcrop detect's layout
    det.mkdir(parents=True)
    (det / "results.json").write_text(json.dumps({"status": "ok", "seed": 0}))
    assert by[f"detect.voc.{name}.seed0"].complete()
    detect = pipeline.Task("d", "detect", ["detect", "train"], [], gpus=2, tail=["--opts", "SOLVER.MAX_ITER", "5"])
    assert pipeline.objcrop_argv(detect)[-5:] == ["--num-gpus", "2", "--opts", "SOLVER.MAX_ITER", "5"]
    with pytest.raises(pipeline.PipelineError, match=f"probe.{name} needs pretrain"):
        pipeline.select_stages(_plan(tmp_path, seeds="0"), ["probe"])
    with pytest.raises(pipeline.PipelineError, match="unknown stage"):
        pipeline.select_stages(tasks, ["bogus"])


def test_task_selection_runs_the_named_tasks_and_everything_they_need_only(tmp_path, capsys):
    """--tasks GLOB is `make TARGET`: the tasks named like it and what they need, directly or not (the
    data, the proposals, the pretraining, the conversion), and no other seed's, stage's or the report."""
    tasks = _plan(tmp_path, seeds="0 1")
    target = next(t for t in tasks if t.stage == "detect" and "obj-obj-dilate" in t.name)
    by_name = {t.name: t for t in tasks}

    def needs(name):
        return {name}.union(*(needs(d) for d in by_name[name].deps))

    chosen = pipeline.select_targets(tasks, [target.name.replace("obj-obj-dilate", "obj-obj-*")])
    assert {t.name for t in chosen} == needs(target.name)
    assert {t.stage for t in chosen} == {"data", "proposals", "pretrain", "convert", "detect"} and len(chosen) == 5
    # a glob for many: seed 1's probes need seed 1's pretrainings, nothing of seed 0 or of the bound
    probes = {t.name for t in pipeline.select_targets(tasks, ["probe.*_s1"])}
    assert probes == set().union(*(needs(t.name) for t in tasks if t.stage == "probe" and t.name.endswith("_s1")))
    assert not any(n.endswith("_s0") or "supervised" in n for n in probes) and len(probes) == 7
    assert [t.name for t in chosen] == [t.name for t in tasks if t.name in needs(target.name)]  # the plan's order
    assert pipeline.select_targets(tasks, None) is tasks
    with pytest.raises(pipeline.PipelineError, match=r"--tasks: no task of this plan is named like detect\.nope"):
        pipeline.select_targets(tasks, [target.name, "detect.nope"])
    r = pipeline.main(["--preset", "demo", "--out", str(tmp_path / "o"), "--seeds", "0 1", "--tasks",
                       target.name, "--dry-run"])
    out = capsys.readouterr().out
    assert r == 0 and " 5 tasks, launcher local" in out and out.count("would run ") == 5, out


def test_paper_preset_uses_real_datasets_and_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "ds"))
    tasks = pipeline.build_plan(pipeline.load_preset("paper"), str(tmp_path / "out"))
    assert not [t for t in tasks if t.stage == "data"]  # real data is not generated
    pre = [t for t in tasks if t.stage == "pretrain"]
    assert len(pre) == 3 * 3 and all(t.gpus == 8 and t.distributed == "torchrun" for t in pre)
    argv = pipeline.objcrop_argv(pre[0])
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=8" in argv
    props = {t.name: t for t in tasks if t.stage == "proposals"}
    assert props["proposals.bing"].cmd[props["proposals.bing"].cmd.index("--dataset") + 1] == "coco_2017_train"
    seeds = pipeline.load_preset("paper")["detection"]["seeds"]
    assert len(seeds) >= 3 and len([t for t in tasks if t.stage == "detect"]) == 9 * 2 * len(seeds)


# what each exploratory arm at the learning budget changes in the registered recipe, besides its tag
# (config key -> its value; OUTPUT_DIR and PRETRAIN.TAG differ for every run)
EXPLORATORY = {
    "moco_v2_obj-scene-explore-b256-200e-bf16_gt": ("moco_v2_obj-obj-dilate-b256-200e-bf16_gt", {
        "VIEWS.POLICY": "obj-scene"}),
    "moco_v2_obj-obj-dilate+copy-paste-dilo-explore-b256-200e-bf16_gt": ("moco_v2_obj-obj-dilate-b256-200e-bf16_gt", {
        "VIEWS.COPY_PASTE.ENABLED": True, "VIEWS.COPY_PASTE.MODE": "dilo"}),
    "byol_random-explore-b256-200e-bf16_none": ("moco_v2_random-b256-200e-bf16_none", {
        "PRETRAIN.METHOD": "byol", "PRETRAIN.BASE_LR": 0.05, "PRETRAIN.BASE_BATCH_SIZE": 256}),
    "byol_obj-obj-dilate-explore-b256-200e-bf16_gt": ("moco_v2_obj-obj-dilate-b256-200e-bf16_gt", {
        "PRETRAIN.METHOD": "byol", "PRETRAIN.BASE_LR": 0.05, "PRETRAIN.BASE_BATCH_SIZE": 256}),
}


@pytest.mark.parametrize("preset", ["study", "study_hard"])
def test_exploratory_arms_change_only_what_they_name_and_stay_out_of_the_registered_tag(tmp_path, preset):
    """Issue 20 §3's exploratory arms (Obj-Scene, DiLo's copy-paste, the BYOL pair) run the registered
    recipe with one thing changed, each against the registered seed of the arm it varies; the registered
    tag still selects the registered arms alone (their session commands), and their own tag selects them."""
    explore = _plan(tmp_path, preset=preset, tags="explore-b256-200e-bf16")
    pretrains = {_short(t.name) for t in explore if t.stage == "pretrain" and not t.raw}
    assert pretrains == {f"pretrain.{arm}_s{s}" for arm in EXPLORATORY for s in range(3)}
    registered = _plan(tmp_path, preset=preset, tags="b256-200e-bf16", seeds="0")
    assert not [t for t in registered if "explore" in t.name]
    for arm, (against, changes) in EXPLORATORY.items():
        theirs, mine = (_merged(_run(tasks, name, 0)).dump() for tasks, name in ((registered, against), (explore, arm)))
        differ = {k: new for k, (_, new) in config_changes(theirs, mine).items()
                  if k not in ("OUTPUT_DIR", "PRETRAIN.TAG")}
        assert differ == changes, arm


def test_study_preset_lists_its_runs_instead_of_the_cross_product(tmp_path):
    tasks = pipeline.build_plan(pipeline.load_preset("study"), str(tmp_path))
    by_name = {_short(t.name): t for t in tasks}
    pre = sorted(_short(t.name) for t in tasks if t.stage == "pretrain")
    assert "pretrain.moco_v2_obj-obj-dilate+copy-paste_gt_s2" in pre
    assert "pretrain.byol_obj-obj-dilate_gt_s0" in pre and "pretrain.byol_obj-scene_gt_s0" not in pre
    # 9 runs x 3 seeds (copy-paste shared and DiLo's per-view mode), two 4x-budget runs, the no-colour
    # diagnostics (3 + 1 seeds), a 4x-lr run, two 10x-budget runs, four batch-256 runs, 3 seeds at MoCo-v2's
    # lr, the supervised bound, issue 20 §2's first budget point (3 seeds of random crops, bf16), at the
    # second, the learning budget, the registered comparison's three arms (12 seeds each, issue 20 §3), and
    # issue 20 §4's ResNet-50 at the first and second points' recipes (3 seeds each), and issue 20 §3's budget curve (three
    # rows of 3 seeds: Obj-Obj+Dilate at the first point, both policies at half of it), and its exploratory
    # arms at the learning budget (four rows of 3 seeds: Obj-Scene, DiLo's copy-paste, the BYOL pair)
    assert len(pre) == 9 * 3 + 2 + 3 + 1 + 1 + 2 + 4 + 3 + 1 + 1 + 3 + 3 * 12 + 2 * 3 + 3 * 3 + 4 * 3
    assert "pretrain.moco_v2_obj-obj-dilate+copy-paste-dilo_gt_s0" in pre
    assert "pretrain.moco_v2_random-4x_none_s0" in pre
    nocol = by_name["pretrain.moco_v2_random-no-colour_none_s0"]
    # the run's setting is its own leaf YAML; the tag stays an opt of its own
    assert nocol.cmd[nocol.cmd.index("--config-file") + 1] == "pretrain/study/r18_b32_e3_no-colour.yaml"
    assert _merged(nocol).VIEWS.COLOR_JITTER_PROB == 0.0 and _opts(nocol)["PRETRAIN.TAG"] == "no-colour"
    cp = by_name["pretrain.moco_v2_obj-obj-dilate+copy-paste_gt_s2"].cmd
    opts = cp[cp.index("--opts") + 1:]
    assert dict(zip(opts[::2], opts[1::2]))["VIEWS.COPY_PASTE.ENABLED"] == "True"
    assert sorted(t.name for t in tasks if t.stage == "proposals") == [
        "proposals.gt", "proposals.saliency-rbd", "proposals.selective-search"]
    # detection only for the runs that ask for it (random crops and ground-truth boxes, and the registered
    # arms: VOC only, test_registered_arms_are_fine_tuned_once_for_voc_seeded_like_their_probe)
    dets = {_short(t.name).split(".")[2].rsplit("_s", 1)[0] for t in tasks if t.stage == "detect"}
    assert dets == {"moco_v2_random_none", "moco_v2_obj-obj-dilate_gt", "scratch", "supervised",
                    "moco_v2_random-b256-200e-bf16_none", "moco_v2_obj-obj-dilate-b256-200e-bf16_gt",
                    "moco_v2_obj-obj-dilate-b256-200e-bf16_selective-search-top10"}
    sup = by_name["pretrain.supervised"]
    assert sup.raw and pipeline.objcrop_argv(sup)[1].endswith(os.path.join("benchmarks", "learnability.py"))
    assert by_name["probe.supervised_s0"].deps == ["data", "pretrain.supervised"]
    assert by_name["probe.random_init_s0"].deps == ["data"]
    rnd = by_name["probe.random_init_s2"].cmd
    assert rnd[rnd.index("--weights") + 1] == "random" and rnd[rnd.index("--seed") + 1] == "2"


def test_plain_study_preset_changes_only_the_data(tmp_path):
    """The background-free control: the study's pretraining config and policies on study-plain data."""
    tasks = pipeline.build_plan(pipeline.load_preset("study_plain"), str(tmp_path))
    assert {t.stage for t in tasks} == set(pipeline.STAGE_ORDER)
    # detection (issue 17 §4): the b256-100e backbones of pretraining seeds 0-2, both policies, 2 fine-tuning
    # seeds, VOC and COCO style, beside the two references
    dets = sorted({_short(t.name).split(".")[2] for t in tasks if t.stage == "detect"})
    assert dets == sorted([f"moco_v2_{p}-b256-100e_{b}_s{s}" for p, b in (("random", "none"), ("obj-obj-dilate", "gt"))
                           for s in range(3)] + ["scratch", "supervised"])
    assert len([t for t in tasks if t.stage == "detect"]) == (6 + 2) * 2 * 2
    data = next(t for t in tasks if t.stage == "data").cmd
    assert data[data.index("--variant") + 1] == "study-plain"
    pre = sorted(_short(t.name) for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised")
    same = [f"pretrain.moco_v2_{p}_s{s}" for p in ("obj-obj-dilate_gt", "random_none") for s in range(3)]
    grey = [f"pretrain.moco_v2_{p}_s{s}" for p in ("obj-obj-dilate-grey_gt", "random-grey_none") for s in range(3)]
    assert pre == sorted(same + grey + ["pretrain.moco_v2_random-grey-4x_none_s0", "pretrain.moco_v2_random-10x_none_s0",
                                        "pretrain.moco_v2_obj-obj-dilate-10x_gt_s0"]
                          + [f"pretrain.moco_v2_random-scale0.5_none_s{s}" for s in range(3)]
                          + [f"pretrain.moco_v2_{p}-b256-100e_{b}_s{s}" for p, b in (("random", "none"), ("obj-obj-dilate", "gt"))
                             for s in range(4)])
    study = {_short(t.name): t for t in pipeline.build_plan(pipeline.load_preset("study"), str(tmp_path / "s"))}
    for t in tasks:
        if _short(t.name) in same:
            assert t.cmd[t.cmd.index("--config-file") + 1] == study[_short(t.name)].cmd[study[_short(t.name)].cmd.index("--config-file") + 1]


def test_gpu_study_preset_pretrains_and_probes_on_one_gpu_without_detection(tmp_path):
    tasks = pipeline.build_plan(pipeline.load_preset("study_gpu"), str(tmp_path))
    assert {t.stage for t in tasks} == {"data", "proposals", "pretrain", "probe", "report"}  # no detectron2 needed
    pre = [t for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised"]
    # both policies at 3 seeds, head-bn, BYOL, lr-moco on both policies, and §4's CPU recipe at 3 seeds
    assert len(pre) == 3 * 2 + 4 + 3 and all(t.gpus == 1 for t in pre)
    # every run is the GPU study's config: its own file, or a leaf whose base it is
    assert all(_merged(t).PRETRAIN.ARCH == "resnet50" and _merged(t).PRETRAIN.EPOCHS == 100 for t in pre)
    files = {t.cmd[t.cmd.index("--config-file") + 1] for t in pre}
    assert "pretrain/study_gpu.yaml" in files and all(f.startswith("pretrain/study/gpu_") for f in files - {"pretrain/study_gpu.yaml"})
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
    assert sorted(_short(t.name) for t in pre) == sorted(f"pretrain.moco_v2_{p}_s{s}" for p in ("random_none", "obj-obj-dilate_gt")
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
    ({"policy": "random", "opts": ["PRETRAIN.EPOCHS", 12]}, "a run takes no `opts`; put them in a leaf pretraining YAML"),
    ({"policy": "random", "detect": {"task": ["voc"]}}, "detect: unknown key(s) task"),
    ({"policy": "random", "detect": {"tasks": ["vocc"]}}, "detect.tasks: vocc not in the preset's detection.tasks"),
    ({"policy": "random", "detect": {"seeds": [0, 1]}}, "detect.seeds: [0, 1] is not 'pretraining'"),
])
def test_bad_run_entry_names_it(tmp_path, run, message):
    preset = {"datasets": {"pretrain": "x", "probe_train": "x", "probe_test": "y"}, "pretrain": {"runs": [run]}}
    with pytest.raises(pipeline.PipelineError, match=r"pretrain\.runs\[0\]") as e:
        pipeline.build_plan(preset, str(tmp_path))
    assert message in str(e.value)




def _arg(task, flag):
    return task.cmd[task.cmd.index(flag) + 1]


@pytest.mark.parametrize("preset", ["demo", "study", "study_hard", "study_plain"])
def test_detection_references_run_for_every_task_and_seed_like_the_pretrained_backbones(tmp_path, preset):
    """scratch: --weights none, every layer trained; supervised: the `supervised` task's backbone
    converted with a provenance that lands in the probe's supervised row; both in the same config,
    data, options and seeds as a pretrained backbone's fine-tuning of the same task."""
    from objcrop.report.aggregate import row_key

    tasks = pipeline.build_plan(pipeline.load_preset(preset), str(tmp_path))
    by_name = {t.name: t for t in tasks}
    det = pipeline.load_preset(preset)["detection"]
    pretrained = next(t for t in tasks if t.stage == "detect" and t.name.split(".")[2] not in det["references"])
    for task in det["tasks"]:
        for seed in det.get("seeds", [0]):
            mine = next(t for t in tasks if t.stage == "detect" and t.name.startswith(f"detect.{task}.")
                        and t.name.split(".")[2] not in det["references"] and t.name.endswith(f".seed{seed}"))
            scratch, sup = by_name[f"detect.{task}.scratch.seed{seed}"], by_name[f"detect.{task}.supervised.seed{seed}"]
            for ref in (scratch, sup):
                assert ref.cmd[:2] == ["detect", "train"] and _arg(ref, "--seeds") == str(seed)
                assert [c for c in ref.cmd if c != _arg(ref, "--weights") and c != _arg(ref, "--output-dir")] == [
                    c for c in mine.cmd if c != _arg(mine, "--weights") and c != _arg(mine, "--output-dir")]
                assert _arg(ref, "--output-dir").startswith(os.path.join(str(tmp_path), "runs", f"detect_{task}"))
            assert _arg(scratch, "--weights") == "none" and scratch.deps == ["data"]
            assert scratch.tail == (mine.tail or ["--opts"]) + ["MODEL.BACKBONE.FREEZE_AT", "0"]
            assert sup.tail == mine.tail and sup.deps == ["convert.supervised"]
            assert by_name["report"].deps.count(scratch.name) == 1
    convert = by_name["convert.supervised"]
    assert convert.deps == ["pretrain.supervised"] and _arg(convert, "--format") == "torchvision"
    assert convert.cmd[1] == os.path.join(str(tmp_path), "supervised", "backbone.pth") == _arg(
        by_name["probe.supervised_s0"], "--weights")
    assert _arg(by_name[f"detect.{next(iter(det['tasks']))}.supervised.seed0"], "--weights") == convert.cmd[2]
    # the converted file's provenance is the one the probe gives the same backbone (pretrain/probe/weights.py)
    fields = dict(v.split("=", 1) for k, v in zip(convert.cmd, convert.cmd[1:]) if k == "--pretrain")
    arch = "resnet18"  # the demo and the CPU studies fine-tune a ResNet-18
    assert row_key({**fields, "arch": arch}) == row_key(Provenance.supervised(arch, "backbone.pth", 0).to_dict())
    assert pretrained.deps[0].startswith("convert.")


def test_detection_references_need_what_they_name(tmp_path):
    preset = pipeline.load_preset("demo")
    preset["detection"]["references"] = {"imagenet": "weights.pth"}
    with pytest.raises(pipeline.PipelineError, match="detection.references.imagenet: 'weights.pth' is none, supervised"):
        pipeline.build_plan(preset, str(tmp_path))
    preset["detection"]["references"] = {"supervised": "supervised"}
    del preset["supervised"]
    preset["probe"].pop("references", None)
    with pytest.raises(pipeline.PipelineError, match="'supervised' needs a `supervised:` section"):
        pipeline.build_plan(preset, str(tmp_path))
    preset["detection"]["references"] = {"imagenet": str(tmp_path / "in1k.pkl")}
    (ref,) = [t for t in pipeline.build_plan(preset, str(tmp_path)) if t.name == "detect.voc.imagenet.seed0"]
    assert _arg(ref, "--weights") == str(tmp_path / "in1k.pkl") and ref.deps == ["data"]


def test_tags_and_seeds_select_rows_of_a_runs_list(tmp_path):
    """`--tags b256-100e --seeds 0` is one seed of one row set: runs listing their own seeds keep the
    common ones (a run with none in common is left out, not run with the flag's seeds)."""
    tasks = _plan(tmp_path, preset="study_plain", tags="b256-100e", seeds="0")
    pre = sorted(_short(t.name) for t in tasks if t.stage == "pretrain" and t.name != "pretrain.supervised")
    assert pre == ["pretrain.moco_v2_obj-obj-dilate-b256-100e_gt_s0", "pretrain.moco_v2_random-b256-100e_none_s0"]
    assert len([t for t in tasks if t.stage == "detect"]) == (2 + 2) * 2 * 2  # the references still run
    untagged = _plan(tmp_path, preset="study_plain", tags="-", seeds="1")
    assert sorted(_short(t.name) for t in untagged if t.stage == "pretrain" and t.name != "pretrain.supervised") == [
        "pretrain.moco_v2_obj-obj-dilate_gt_s1", "pretrain.moco_v2_random_none_s1"]
    with pytest.raises(pipeline.PipelineError, match="--tags: b512 not in pretrain.runs"):
        _plan(tmp_path, preset="study_plain", tags="b512")
    with pytest.raises(pipeline.PipelineError, match="lists none"):
        _plan(tmp_path, tags="x")  # the demo crosses policies x seeds: no runs list


def test_a_selection_that_leaves_no_run_is_refused_not_replaced_by_the_cross_product(tmp_path):
    """`--tags r50-b256-100e-bf16-headbn --seeds 9` on a row that lists its own seeds (not 9) leaves no
    run. An empty runs list reads as no list, so it used to plan the preset's cross product instead:
    seed 9 of the default random-crop recipe, a run nobody asked for, trained for hours. Now it is an
    error that names the selection and the seeds the rows list; the row's own seed still plans."""
    tag = "r50-b256-100e-bf16-headbn"
    with pytest.raises(pipeline.PipelineError,
                       match=rf"--tags {tag} --seeds 9 leaves no run of pretrain.runs: .*own seeds \(0[\d, ]*\)"):
        _plan(tmp_path, preset="study", tags=tag, seeds="9")
    (run,) = [t for t in _plan(tmp_path, preset="study", tags=tag, seeds="0")
              if t.stage == "pretrain" and t.name != "pretrain.supervised"]
    assert "r50" in run.name and run.name.endswith("_s0")
    # the other filters of a runs list: the rows of b256-200e-bf16 all have proposals or none, and the
    # object-aware rows alone have no random-crop run left to keep
    with pytest.raises(pipeline.PipelineError,
                       match="--policies obj-obj-dilate --tags b256-200e-bf16 --proposals none leaves no run"):
        _plan(tmp_path, preset="study", tags="b256-200e-bf16", policies="obj-obj-dilate", proposals="none")
    # a value the preset has, in none of the rows the flags before it kept, is named as such, with the
    # values the kept rows have (before: "--tags: b256-200e-bf16 not in pretrain.runs (its tags: -,
    # explore-b256-200e-bf16)", as if the preset had no such tag)
    with pytest.raises(pipeline.PipelineError, match=r"^--tags: b256-200e-bf16 is in no row of pretrain.runs that "
                                                     r"--policies obj-scene keeps "
                                                     r"\(their tags: -, explore-b256-200e-bf16\)"):
        _plan(tmp_path, preset="study", policies="obj-scene", tags="b256-200e-bf16")
    with pytest.raises(pipeline.PipelineError, match=r"^--methods: byol is in no row .* that --policies obj-scene keeps "
                                                     r"\(their methods: moco_v2\)"):
        _plan(tmp_path, preset="study", policies="obj-scene", methods="byol")
    with pytest.raises(pipeline.PipelineError, match=r"^--proposals: selective-search is in no row .* that "
                                                     r"--tags b256-200e-bf16 --seeds 0 keeps "
                                                     r"\(their proposal sources: gt, saliency-gs\)"):
        _plan(tmp_path, preset="study_hard", tags="b256-200e-bf16", seeds="0", proposals="selective-search")
    # a value no row of the preset has is a typo, named with the values the whole preset lists
    with pytest.raises(pipeline.PipelineError, match=r"^--tags: b512 not in pretrain.runs \(its tags: .*b256-200e-bf16"):
        _plan(tmp_path, preset="study", policies="obj-scene", tags="b512")
    # a preset file whose runs list is empty is the same mistake, made in the file
    preset = pipeline.load_preset("demo")
    preset.setdefault("pretrain", {})["runs"] = []
    path = tmp_path / "empty_runs.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in preset.items() if not k.startswith("_")}))
    with pytest.raises(pipeline.PipelineError, match="pretrain.runs is an empty list"):
        _plan(tmp_path, preset=str(path))
    with pytest.raises(pipeline.PipelineError, match="pretrain.runs is an empty list"):
        _plan(tmp_path, preset=str(path), policies="random")  # not "the selection --policies random ..."


def test_policies_and_methods_select_rows_of_a_runs_list(tmp_path):
    """On a runs list, `--policies obj-obj-dilate` is the object-aware rows alone: two lanes can then
    share one seed of a registered comparison without both training its random arm (before, the flag
    set the cross product's key, which a runs list never reads, and the random arm ran in each lane)."""
    def pretrain_runs(**overrides):
        return sorted(_short(t.name) for t in _plan(tmp_path, preset="study", **overrides)
                      if t.stage == "pretrain" and t.name != "pretrain.supervised")

    lane = pretrain_runs(tags="b256-200e-bf16", seeds="4", proposals="selective-search", policies="obj-obj-dilate")
    assert lane == ["pretrain.moco_v2_obj-obj-dilate-b256-200e-bf16_selective-search-top10_s4"]
    assert pretrain_runs(tags="b256-200e-bf16", seeds="4", policies="random") == [
        "pretrain.moco_v2_random-b256-200e-bf16_none_s4"]
    byol = pretrain_runs(methods="byol", seeds="0")
    assert byol and all(name.startswith("pretrain.byol_") for name in byol)
    assert not any(name.startswith("pretrain.byol_") for name in pretrain_runs(methods="moco_v2", seeds="0"))
    with pytest.raises(pipeline.PipelineError, match=r"--policies: no-such-policy not in pretrain.runs \(its policies: "):
        pretrain_runs(policies="no-such-policy")
    with pytest.raises(pipeline.PipelineError, match="--methods: simclr not in pretrain.runs"):
        pretrain_runs(methods="simclr")


def test_references_only_plans_the_reference_rows_alone_and_supervised_seeds_train_the_bound_again(tmp_path):
    """`--references-only` (a reference row trained again beside a record of the runs): the data, the supervised
    bound, the reference probes and fine-tunings, each the full plan's task command for command, and no
    pretraining run nor anything made for one; `--supervised-seeds` adds the bound trained with each seed into
    its own folder, the reference rows still reading the preset's OUT/supervised/."""
    def plan(*extra):
        args = pipeline.build_parser().parse_args(["--preset", "study", *extra])
        return {t.name: t for t in pipeline.build_plan(pipeline.apply_overrides(pipeline.load_preset("study"), args),
                                                       str(tmp_path))}

    full, refs = plan(), plan("--references-only")
    reference = {n for n in full if n in ("data", "report") or n.split(".")[-1].startswith(("supervised", "random_init"))
                 or ".scratch." in n or ".supervised." in n}
    assert set(refs) == reference and {"pretrain.supervised", "convert.supervised", "probe.supervised_s0",
                                       "detect.voc.scratch.seed0", "detect.voc.supervised.seed1"} <= reference
    assert all(refs[n].cmd == full[n].cmd for n in refs if n != "report")
    seeded = plan("--references-only", "--supervised-seeds", "0 2")
    fine_tunings = {f"detect.{task}.supervised_seed{k}.seed{s}" for task in ("voc", "coco") for k in (0, 2) for s in (0, 1)}
    assert set(seeded) - set(refs) == {"pretrain.supervised_seed0", "pretrain.supervised_seed2",
                                       "probe.supervised_seed0_s0", "probe.supervised_seed2_s0",
                                       "convert.supervised_seed0", "convert.supervised_seed2"} | fine_tunings
    # ... and converted (its own seed in its provenance) and fine-tuned like it, each into a folder of its own
    convert = seeded["convert.supervised_seed2"]
    assert convert.deps == ["pretrain.supervised_seed2"] and convert.cmd == [
        a.replace("supervised/", "supervised_seed2/").replace("supervised.pkl", "supervised_seed2.pkl")
        .replace("seed=0", "seed=2") for a in full["convert.supervised"].cmd]
    tuned = seeded["detect.voc.supervised_seed2.seed1"]
    assert tuned.deps == ["convert.supervised_seed2"] and tuned.cmd == [
        a.replace("weights/supervised.pkl", "weights/supervised_seed2.pkl").replace("detect_voc/supervised",
                                                                                    "detect_voc/supervised_seed2")
        for a in full["detect.voc.supervised.seed1"].cmd]
    # each training of the bound probed like the preset's model, with its probe seed: only the backbone (and the
    # training seed it reports, the one its .pkl carries) differs
    again = seeded["probe.supervised_seed2_s0"]
    assert again.deps == ["data", "pretrain.supervised_seed2"]
    assert again.cmd == [str(tmp_path / "supervised_seed2" / "backbone.pth") if a.endswith("supervised/backbone.pth")
                         else a.replace("supervised_s0", "supervised_seed2_s0").replace("seed=0", "seed=2")
                         for a in full["probe.supervised_s0"].cmd]
    probe_seed = again.cmd[again.cmd.index("--seed") + 1]
    pretrain_seeds = [a for a in again.cmd + convert.cmd if a.startswith("seed=")]
    assert probe_seed == "0" and pretrain_seeds == ["seed=2", "seed=2"]
    bound = seeded["pretrain.supervised_seed2"].cmd
    assert bound[:bound.index("--samples")] == ["benchmarks/learnability.py", "--data", str(tmp_path / "data"),
                                                "--save-backbone", str(tmp_path / "supervised_seed2" / "backbone.pth"),
                                                "--json", str(tmp_path / "supervised_seed2" / "learnability.json")]
    assert bound[-2:] == ["--seed", "2"] and bound[:-2] == [a.replace("supervised", "supervised_seed2")
                                                          for a in full["pretrain.supervised"].cmd]
    assert seeded["probe.supervised_s0"].cmd == full["probe.supervised_s0"].cmd  # the reference: the preset's model
    for extra, message in ((("--references-only", "--tags", "b256-200e-bf16"), "--tags selects among them"),
                           (("--references-only", "--no-references"), "nothing would run"),
                           (("--supervised-seeds", "1 x"), "'x' is not a seed"),
                           (("--no-references", "--supervised-seeds", "1"), "no `supervised:` section")):
        with pytest.raises(pipeline.PipelineError, match=re.escape(message)):
            plan(*extra)
