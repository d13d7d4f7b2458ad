"""The study presets list named leaf pretraining YAMLs (eval_configs/pretrain/study/) instead of
inline opts (demo and paper re-frozen when issues 17 and 18 changed them on purpose: R18 demo, BING paper proposals): every run's merged pretraining config is what the inline opts gave, each leaf's name
says its arch, batch and epochs, and every run a study record holds keeps its name."""
import glob
import json
import os
import re

import pytest
import yaml

import objcrop.pipeline as pipeline
from objcrop.config import merge_config, packaged_config
from objcrop.pretrain.config import get_pretrain_cfg
from objcrop.records import Provenance, arch_tag, run_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every pretraining run of every preset as the presets gave it before the leaf files: config file
# and --opts (OUTPUT_DIR left out), planned with out=/OUT and DETECTRON2_DATASETS=/DATASETS.
BEFORE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_pipeline_presets_before.json")
LEAF_DIR = os.path.dirname(packaged_config("pretrain/study/r18_b32_e12.yaml"))


def _dump(config_file, opts):
    return merge_config(get_pretrain_cfg, config_file, opts).dump()


def _planned_dumps(preset):
    dumps = []
    for t in pipeline.build_plan(pipeline.load_preset(preset), "/OUT"):
        if t.stage == "pretrain" and not t.raw:
            opts = t.cmd[t.cmd.index("--opts") + 1:]
            i = opts.index("OUTPUT_DIR")
            dumps.append(_dump(t.cmd[t.cmd.index("--config-file") + 1], opts[:i] + opts[i + 2:]))
    return sorted(dumps)


with open(BEFORE) as f:
    RUNS_BEFORE = json.load(f)


@pytest.mark.parametrize("preset", sorted(RUNS_BEFORE))
def test_every_run_merges_to_the_config_it_had_with_inline_opts(preset, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", "/DATASETS")
    before = sorted(_dump(r["config_file"], r["opts"]) for r in RUNS_BEFORE[preset])
    assert _planned_dumps(preset) == before


def test_a_leaf_that_changes_a_setting_is_caught(tmp_path, monkeypatch):
    """The check above compares whole configs: a leaf one value off fails it."""
    monkeypatch.setenv("DETECTRON2_DATASETS", "/DATASETS")
    leaf = os.path.join(LEAF_DIR, "r18_b32_e3_no-colour.yaml")
    changed = tmp_path / "no-colour.yaml"
    text = open(leaf).read().replace("_BASE_: ../study.yaml", f"_BASE_: {os.path.join(os.path.dirname(LEAF_DIR), 'study.yaml')}")
    changed.write_text(text.replace("GRAYSCALE_PROB: 0.0", "GRAYSCALE_PROB: 0.1"))
    preset = pipeline.load_preset("study")
    for run in preset["pretrain"]["runs"]:
        if run.get("config_file") == "pretrain/study/r18_b32_e3_no-colour.yaml":
            run["config_file"] = str(changed)
    before = sorted(_dump(r["config_file"], r["opts"]) for r in RUNS_BEFORE["study"])
    after = []
    for t in pipeline.build_plan(preset, "/OUT"):
        if t.stage == "pretrain" and not t.raw:
            opts = t.cmd[t.cmd.index("--opts") + 1:]
            after.append(_dump(t.cmd[t.cmd.index("--config-file") + 1], opts[2:]))
    assert len(after) == len(before) and sorted(after) != before


def test_leaf_names_say_their_arch_batch_and_epochs():
    """`[gpu_][method_]<arch>_b<batch>_e<epochs>[_<what else differs>].yaml`, read against the file."""
    leaves = sorted(glob.glob(os.path.join(LEAF_DIR, "*.yaml")))
    assert len(leaves) >= 10
    used = set()
    for name in os.listdir(os.path.join(os.path.dirname(LEAF_DIR), "..", "pipeline")):
        with open(os.path.join(os.path.dirname(LEAF_DIR), "..", "pipeline", name)) as f:
            preset = yaml.safe_load(f)
        used |= {r.get("config_file") for r in (preset.get("pretrain") or {}).get("runs", [])}
    for path in leaves:
        stem = os.path.basename(path)[:-5]
        m = re.fullmatch(r"(gpu_)?(?:(byol)_)?(r\d+)_b(\d+)_e(\d+)(_[A-Za-z0-9.-]+)?", stem)
        assert m, stem
        cfg = merge_config(get_pretrain_cfg, path, [])
        with open(path) as f:
            base = yaml.safe_load(f)["_BASE_"]
        assert base == ("../study_gpu.yaml" if m.group(1) else "../study.yaml"), stem
        assert (m.group(2) or "moco_v2") == cfg.PRETRAIN.METHOD, stem
        assert (m.group(3), int(m.group(4)), int(m.group(5))) == (
            arch_tag(cfg.PRETRAIN.ARCH), cfg.PRETRAIN.BATCH_SIZE, cfg.PRETRAIN.EPOCHS), stem
        assert f"pretrain/study/{stem}.yaml" in used, f"{stem}.yaml is used by no preset"


@pytest.mark.parametrize("study", ["study", "study_hard", "study_plain", "study_gpu", "study_plain_gpu"])
def test_every_recorded_run_keeps_its_name(study):
    """Every pretraining run a study record holds is, under
    run_name(Provenance.from_dict(results["pretrain"]), its config's PRETRAIN.BATCH_SIZE), a run of the plan."""
    from objcrop.report.record import StudyRecord

    path = os.path.join(REPO, "docs", "results", study)
    if not os.path.exists(path):
        pytest.skip(f"{path}: no record in this checkout")
    record = StudyRecord.open(path)
    planned = {t.name.split(".", 1)[1] for t in pipeline.build_plan(pipeline.load_preset(study), "/OUT")
               if t.stage == "pretrain"}
    recorded = []
    for key in record.run_keys():
        if key.startswith("runs/pretrain/"):
            results = record.results(f"{key}/results.json")
            name = run_name(Provenance.from_dict(results["pretrain"]), record.config(key)["PRETRAIN"]["BATCH_SIZE"])
            assert name == key.split("/")[-1]  # the record's own key is that name too
            recorded.append(name)
    assert recorded and sorted(set(recorded) - planned) == []


def test_the_gpu_row_of_the_cpu_resnet50_recipe_differs_from_it_in_the_device_alone(monkeypatch):
    """study_gpu's row r50-b256-100e-bf16-headbn is study's row of that tag (the recipe under which the
    ResNet-50 began to learn on the CPU) on a GPU, so that its probe tells the device from the warm-up as
    the cause of the GPU head-bn run's failure: their merged configs compute the same thing
    (computation_hash ignores execution settings) once PRETRAIN.AMP_CPU, which gives a CPU the bf16
    autocast a GPU has under PRETRAIN.AMP, is set alike; and the GPU row is head-bn's config but for its
    warm-up. A leaf one value off (a planted lr, queue or head) fails it."""
    from objcrop.pretrain.engine.results import computation_hash

    monkeypatch.setenv("DETECTRON2_DATASETS", "/DATASETS")
    tag = "r50-b256-100e-bf16-headbn"

    def merged(preset, row_tag):
        args = pipeline.build_parser().parse_args(["--preset", preset, "--tags", row_tag, "--seeds", "0"])
        (t,) = [t for t in pipeline.build_plan(pipeline.apply_overrides(pipeline.load_preset(preset), args), "/OUT")
                if t.stage == "pretrain" and t.name != "pretrain.supervised"]
        opts = t.cmd[t.cmd.index("--opts") + 1:]
        cfg = merge_config(get_pretrain_cfg, t.cmd[t.cmd.index("--config-file") + 1], opts)
        cfg.defrost()
        cfg.PRETRAIN.AMP_CPU = False
        return cfg

    cpu, gpu = merged("study", tag), merged("study_gpu", tag)
    assert cpu.PRETRAIN.AMP and cpu.PRETRAIN.AMP_DTYPE == "bfloat16"
    assert computation_hash(gpu) == computation_hash(cpu)
    head_bn = merged("study_gpu", "head-bn")
    assert (head_bn.PRETRAIN.WARMUP_EPOCHS, gpu.PRETRAIN.WARMUP_EPOCHS) == (5.0, 10.0)
    head_bn.PRETRAIN.WARMUP_EPOCHS, head_bn.PRETRAIN.TAG = gpu.PRETRAIN.WARMUP_EPOCHS, gpu.PRETRAIN.TAG
    assert computation_hash(head_bn) == computation_hash(gpu)
