"""Preset -> task graph: data → proposals → pretrain (method × policy × proposals × seed) → probe
→ convert → detect (VOC, COCO) × seed → report, beside the reference rows: random-init and
supervised probes (`probe.references`) and detection from scratch and from the supervised
backbone (`detection.references`), for every detection task and fine-tuning seed.

Every pretraining run directory is named by `objcrop.records.run_name`, from the run's merged
pretraining config (YAML + the preset's opts + the run's own), exactly as `objcrop pretrain`
names a run it is given no OUTPUT_DIR for; probe, detection and weights paths reuse that name.
"""
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from objcrop.pipeline.naming import RunNamer
from objcrop.pipeline.presets import PipelineError, RunSpec, fill, pretrain_specs, words
from objcrop.pipeline.tasks import STAGE_ORDER, Task, check_graph


@dataclass
class Context:
    """A preset with its placeholders filled, and where its outputs go."""

    p: Dict[str, Any]
    out: str
    data_dir: str
    data_deps: List[str]
    stores: Dict[str, str]  # proposal source -> store file

    @property
    def runs(self) -> str:
        return os.path.join(self.out, "runs")

    @property
    def gpus(self) -> int:
        return int(self.p.get("gpus", 0) or 0)

    @property
    def nodes(self) -> int:
        return int(self.p.get("nodes", 1) or 1)

    def section(self, key: str) -> Dict[str, Any]:
        return self.p.get(key) or {}


def build_plan(preset: Dict[str, Any], out: str) -> List[Task]:
    """The task graph of a preset, in an order that respects every dependency."""
    ctx = _context(preset, out)
    tasks = _data_tasks(ctx)
    det_tasks = preset.get("_detection_tasks", list(ctx.section("detection").get("tasks") or {}))
    if preset.get("_references_only"):
        specs = []  # --references-only: the data and the reference rows below, no pretraining run
    else:
        specs = pretrain_specs(ctx.section("pretrain"), words(ctx.section("proposals").get("methods", ["gt"])),
                               det_tasks, selection=preset.get("_selection", ""))
    tasks += _proposal_tasks(ctx, specs)
    tasks += _supervised_tasks(ctx)
    namer = RunNamer(ctx.p["datasets"]["pretrain"], ctx.section("pretrain").get("opts", []))
    for spec, seed in run_order(specs):
        tasks += _run_tasks(ctx, spec, seed, namer)
    tasks += _reference_probes(ctx)
    tasks += _reference_detections(ctx)
    report_dir = os.path.join(ctx.out, "report")
    deps = [t.name for t in tasks if t.stage in ("probe", "detect", "pretrain")]
    tasks.append(Task("report", "report", ["report", ctx.runs, "--out", report_dir] + registration_args(preset),
                      [["file", os.path.join(report_dir, "results.md")]], deps=deps, always=True))
    # stage by stage (all pretraining runs, then every probe, ...): the order the logs read in
    tasks.sort(key=lambda t: STAGE_ORDER.index(t.stage))
    check_graph(tasks)
    return tasks


# the registration beside the code (a checkout; an installed package has none)
REGISTRATION = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "docs", "preregistration.yaml")


def registration_args(preset: Dict[str, Any], registration: str = REGISTRATION) -> List[str]:
    """A preset that the registration names (a hypothesis' `study`) reports like its record: its
    registered arms' scores withheld until complete (docs/preregistration.md: fixed n, no peeking)."""
    if not os.path.isfile(registration):
        return []
    import yaml

    with open(registration, encoding="utf-8") as f:
        hypotheses = (yaml.safe_load(f) or {}).get("hypotheses") or []
    name = os.path.splitext(os.path.basename(preset.get("_path", "")))[0]
    if not any(isinstance(h, dict) and h.get("study") == name for h in hypotheses):
        return []
    return ["--registration", registration, "--study", name]


def run_order(specs: List[RunSpec]) -> List[Tuple[RunSpec, int]]:
    """(run, seed) in the order they train: each run's seeds in turn, except the accumulating arms (a
    registered comparison's, recorded over several sessions), which go seed by seed across the arms —
    seed k of every arm before seed k + 1 of any (docs/preregistration.md, "Clarifications") — from
    where the first of them stands in the preset, so that a run cut short leaves the arms balanced."""
    arms = [spec for spec in specs if spec.accumulating]
    by_seed = sorted((seed, i) for i, spec in enumerate(arms) for seed in spec.seeds)
    order: List[Tuple[RunSpec, int]] = []
    for spec in specs:
        if not spec.accumulating:
            order += [(spec, seed) for seed in spec.seeds]
        elif spec is arms[0]:
            order += [(arms[i], seed) for seed, i in by_seed]
    return order


def _context(preset: Dict[str, Any], out: str) -> Context:
    out = os.path.abspath(out)
    datasets_root = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    data_cfg = preset.get("data") or {}
    data_dir = os.path.abspath(fill(data_cfg.get("dir", "{out}/data"), {"out": out, "datasets": datasets_root}))
    values = {"out": out, "data": data_dir, "datasets": datasets_root}
    p = fill({k: v for k, v in preset.items() if not k.startswith("_")}, values)
    return Context(p, out, data_dir, [], {})


def _data_tasks(ctx: Context) -> List[Task]:
    s = (ctx.p.get("data") or {}).get("synth")
    if not s:
        return []
    cmd = ["data", "synth", "--out", ctx.data_dir, "--num-images", str(s.get("num_images", 600)),
           "--seed", str(s.get("seed", 0))]
    if s.get("variant"):
        cmd += ["--variant", str(s["variant"])]
    cmd += [str(a) for a in s.get("args", [])]
    meta = os.path.join(ctx.data_dir, "meta.json")
    ctx.data_deps = ["data"]
    return [Task("data", "data", cmd, [["file", meta]], results=[meta])]


def _proposal_tasks(ctx: Context, specs: List[RunSpec]) -> List[Task]:
    prop, tasks = ctx.section("proposals"), []
    for m in dict.fromkeys(s.proposals for s in specs if s.proposals != "none"):
        store = os.path.join(ctx.out, "proposals", f"{m}{prop.get('suffix', '.store')}")
        # --resume: continue an interrupted computation from its shards (a fresh start when there are none)
        cmd = ["proposals", "compute", "--dataset", str(prop.get("dataset", ctx.p["datasets"]["pretrain"])),
               "--method", m, "--out", store, "--resume"] + [str(a) for a in (prop.get("args") or {}).get(m, [])]
        tasks.append(Task(f"proposals.{m}", "proposals", cmd, [["file", store]], deps=list(ctx.data_deps)))
        ctx.stores[m] = store
    return tasks


def _supervised_tasks(ctx: Context) -> List[Task]:
    """The supervised bound: it answers whether the data is learnable at this budget at all. OUT/supervised/
    holds the preset's model, the one the reference rows probe and fine-tune; `supervised.seeds` trains it
    again with each seed into OUT/supervised_seed<K>/, probed too (`_supervised_seed_probes`) for the bound's
    own spread (one training of one seed is one draw: a seed, or another CPU's float kernels, moves it)."""
    sup = ctx.p.get("supervised")
    if not sup:
        return []
    args = [str(a) for a in sup.get("args", [])]
    tasks = [_supervised_task(ctx, f"pretrain.{bound_folder()}", os.path.join(ctx.out, bound_folder()), args)]
    for seed in supervised_seeds(sup):
        if "--seed" in args:
            raise PipelineError("supervised.seeds: supervised.args sets --seed already; list the seeds in one place")
        tasks.append(_supervised_task(ctx, f"pretrain.{bound_folder(seed)}",
                                      os.path.join(ctx.out, bound_folder(seed)), args + ["--seed", str(seed)]))
    return tasks


def bound_folder(seed: Optional[int] = None) -> str:
    """OUT's folder of the supervised bound (and the name of its pretrain task): the preset's model, or the
    bound trained again with `seed`."""
    return "supervised" if seed is None else f"supervised_seed{seed}"


def bound_training_seed(sup: Dict[str, Any], seed: Optional[int] = None) -> str:
    """The seed the bound in bound_folder(seed) was trained with: `seed`, else the preset model's (its
    `--seed` in supervised.args, else learnability.py's default 0). Its probe and its .pkl carry it as their
    pretraining seed: the torchvision file it is saved as cannot say."""
    if seed is not None:
        return str(seed)
    args = [str(a) for a in sup.get("args", [])]
    return args[args.index("--seed") + 1] if "--seed" in args[:-1] else "0"


def supervised_seeds(sup: Dict[str, Any]) -> List[int]:
    """`supervised.seeds` (a list, or --supervised-seeds' words) as integers; PipelineError naming a bad one."""
    seeds = []
    for word in words(sup.get("seeds")):
        try:
            seeds.append(int(word))
        except ValueError:
            raise PipelineError(f"supervised.seeds / --supervised-seeds: {word!r} is not a seed (an integer)") from None
    return list(dict.fromkeys(seeds))


def _supervised_task(ctx: Context, name: str, sup_dir: str, args: List[str]) -> Task:
    cmd = ["benchmarks/learnability.py", "--data", ctx.data_dir, "--save-backbone", os.path.join(sup_dir, "backbone.pth"),
           "--json", os.path.join(sup_dir, "learnability.json")] + args
    return Task(name, "pretrain", cmd, [["file", os.path.join(sup_dir, "backbone.pth")]],
                deps=list(ctx.data_deps), raw=True, results=[os.path.join(sup_dir, "learnability.json")])


def _run_tasks(ctx: Context, spec: RunSpec, seed: int, namer: RunNamer) -> List[Task]:
    """Pretraining of one run and seed, its probe, and (when the preset asks) conversion and detection."""
    opts = namer.opts(spec, seed, ctx.stores.get(spec.proposals, ""))
    name = namer.name(spec, opts)
    run_dir = os.path.join(ctx.runs, "pretrain", name)
    cmd = ["pretrain", "--config-file", namer.config_arg(spec.config_file), "--resume",
           "--opts", "OUTPUT_DIR", run_dir] + opts
    if ctx.p.get("loader_workers") is not None:
        # after the run's name is made: an execution setting (the same weights), not part of the run
        cmd += ["DATA.NUM_WORKERS", str(ctx.p["loader_workers"])]
    deps = list(ctx.data_deps) + ([f"proposals.{spec.proposals}"] if spec.proposals in ctx.stores else [])
    final, results = os.path.join(run_dir, "model_final.pth"), os.path.join(run_dir, "results.json")
    pre = ctx.section("pretrain")
    tasks = [Task(f"pretrain.{name}", "pretrain", cmd, [["results_ok", results], ["file", final]],
                  deps=deps, gpus=ctx.gpus, nodes=ctx.nodes, distributed="torchrun",
                  timeout_min=int(pre.get("timeout_min", 24 * 60)), results=[results], accumulating=spec.accumulating)]
    probe = ctx.section("probe")
    if probe.get("enabled", True):
        tasks.append(replace(probe_task(ctx, name, final, [f"pretrain.{name}"]),
                             accumulating=spec.accumulating))
    det = ctx.section("detection")
    # detection is the costly part: a preset may fine-tune only some pretraining seeds
    det_pre_seeds = det.get("pretrain_seeds")
    if spec.detect and det.get("tasks") and (det_pre_seeds is None or seed in [int(x) for x in det_pre_seeds]):
        tasks += _detection_tasks(ctx, name, final, spec, seed)
    return tasks


def probe_task(ctx: Context, name: str, weights: str, deps: List[str], extra: Optional[List[str]] = None) -> Task:
    probe = ctx.section("probe")
    probe_dir = os.path.join(ctx.runs, "probe", name)
    cmd = ["probe", "--weights", weights, "--dataset-train", ctx.p["datasets"]["probe_train"],
           "--dataset-test", ctx.p["datasets"]["probe_test"], "--out", probe_dir]
    cmd += [str(a) for a in probe.get("args", [])] + list(extra or [])
    results = os.path.join(probe_dir, "results.json")
    checks = [["results_ok", results]] + ([["probed_from", results, weights]] if weights != "random" else [])
    return Task(f"probe.{name}", "probe", cmd, checks, deps=deps, gpus=min(ctx.gpus, 1), results=[results])


def _detection_tasks(ctx: Context, name: str, final: str, spec: RunSpec, seed: int) -> List[Task]:
    """Conversion of one pretraining run's backbone and its fine-tunings: the preset's detection tasks
    and seeds, or those the run's `detect` names (a registered arm: VOC only, seeded like its probe)."""
    det = ctx.section("detection")
    task_names = [t for t in det["tasks"] if not spec.detect_tasks or t in spec.detect_tasks]
    if not task_names:
        return []  # --det-tasks left none of the run's tasks
    pkl = os.path.join(ctx.out, "weights", f"{name}.pkl")
    cmd = ["convert", final, pkl] + [str(a) for a in ctx.section("convert").get("args", [])]
    convert = _convert_task(name, cmd, final, pkl, f"pretrain.{name}")
    seeds = [seed] if spec.detect_seed_is_pretraining else None
    return [convert] + _fine_tunings(ctx, name, convert, [convert.name], task_names=task_names, seeds=seeds)


def _convert_task(name: str, cmd: List[str], checkpoint: str, pkl: str, dep: str) -> Task:
    """`objcrop convert` of `checkpoint` to `pkl`: done when the .pkl is there and converted from the
    checkpoint as it is now (a backbone trained again is converted again: freshness.py)."""
    return Task(f"convert.{name}", "convert", cmd, [["file", pkl], ["converted_from", pkl, checkpoint]], deps=[dep])


def _converted(convert: Task) -> Tuple[str, str]:
    """(checkpoint, .pkl) of a `_convert_task`."""
    _, pkl, checkpoint = convert.checks[1]
    return checkpoint, pkl


def _fine_tunings(ctx: Context, name: str, weights: Union[str, Task], deps: List[str], extra_opts: Sequence[str] = (),
                  task_names: Optional[List[str]] = None, seeds: Optional[List[int]] = None) -> List[Task]:
    """`objcrop detect train` of one backbone (the .pkl a convert task writes, a .pkl file, or "none":
    random init) for every detection task and fine-tuning seed of the preset (or the `task_names` and
    `seeds` given); `extra_opts` come after the task's opts. A fine-tuning of a convert task's .pkl is
    done only while it is one of that checkpoint as it is now (freshness.py)."""
    det, tasks, source = ctx.section("detection"), [], None
    if isinstance(weights, Task):
        source, weights = _converted(weights)
    for task_name, dspec in det["tasks"].items():
        if task_names is not None and task_name not in task_names:
            continue
        for dseed in seeds if seeds is not None else [int(s) for s in det.get("seeds", [0])]:
            # `objcrop detect train` puts seed k in OUTPUT_DIR/seed<k>; --resume continues it
            det_dir = os.path.join(ctx.runs, f"detect_{task_name}", name)
            cmd = ["detect", "train", "--config-file", str(dspec["config_file"]), "--weights", weights,
                   "--seeds", str(dseed), "--output-dir", det_dir, "--resume"]
            if dspec.get("dataset_train"):
                cmd += ["--dataset-train", str(dspec["dataset_train"])]
            if dspec.get("dataset_test"):
                cmd += ["--dataset-test", str(dspec["dataset_test"])]
            cmd += [str(a) for a in dspec.get("args", [])]
            opts = [str(o) for o in dspec.get("opts") or []] + [str(o) for o in extra_opts]
            results = os.path.join(det_dir, f"seed{dseed}", "results.json")
            checks = [["results_ok", results]] + ([["fine_tuned_from", results, weights, source]] if source else [])
            tasks.append(Task(f"detect.{task_name}.{name}.seed{dseed}", "detect", cmd, checks,
                              tail=["--opts"] + opts if opts else [], results=[results], deps=list(deps),
                              gpus=ctx.gpus, nodes=ctx.nodes, distributed="d2",
                              timeout_min=int(det.get("timeout_min", 24 * 60))))
    return tasks


def _reference_probes(ctx: Context) -> List[Task]:
    """Reference backbones probed exactly like the pretrained ones: random init (one per seed of
    `probe.reference_seeds`, by default pretrain.seeds),
    and "supervised" (the model of the `supervised` task, and the bound trained again with each of
    `supervised.seeds`) or any torchvision state dict file."""
    probe, tasks = ctx.section("probe"), []
    if not probe.get("enabled", True):
        return []
    ref_args = [str(a) for a in probe.get("reference_args", [])]
    for ref_name, weights in (probe.get("references") or {}).items():
        if weights == "supervised":
            tasks += [_supervised_probe(ctx, ref_name, ref_args)] + _supervised_seed_probes(ctx, ref_name, ref_args)
            continue
        seeds = [int(x) for x in probe.get("reference_seeds", ctx.section("pretrain").get("seeds", [0]))
                 ] if weights == "random" else [0]
        for seed in seeds:
            tasks.append(probe_task(ctx, f"{ref_name}_s{seed}", str(weights), list(ctx.data_deps),
                                    extra=["--seed", str(seed)] + ref_args))
    return tasks


def _supervised_seed_probes(ctx: Context, ref_name: str, ref_args: List[str]) -> List[Task]:
    """The bound trained again with seed K (OUT/supervised_seed<K>/) probed like the preset's model, with the
    same probe seed 0, so that only the training differs: the supervised row then holds every training of the
    bound, and its spread is the bound's own, read by every gap column of the probe."""
    return [_supervised_probe(ctx, ref_name, ref_args, seed) for seed in supervised_seeds(_bound_section(ctx, "probe"))]


def _supervised_probe(ctx: Context, ref_name: str, ref_args: List[str], seed: Optional[int] = None) -> Task:
    """The probe (seed 0) of the bound in bound_folder(seed), its training seed named (--pretrain seed=)."""
    folder, sup = bound_folder(seed), _bound_section(ctx, "probe")
    name = f"{ref_name}_s0" if seed is None else f"{ref_name}_seed{seed}_s0"
    extra = ["--seed", "0", "--pretrain", f"seed={bound_training_seed(sup, seed)}"] + ref_args
    return probe_task(ctx, name, os.path.join(ctx.out, folder, "backbone.pth"),
                      list(ctx.data_deps) + [f"pretrain.{folder}"], extra=extra)


def _bound_section(ctx: Context, section: str) -> Dict[str, Any]:
    """The preset's `supervised:` section, which `<section>.references: {...: supervised}` needs."""
    sup = ctx.p.get("supervised")
    if not sup:
        raise PipelineError(f"{section}.references: 'supervised' needs a `supervised:` section in the preset")
    return sup


# From scratch every layer trains: a frozen stem or res2 would stay random (He et al., "Rethinking
# ImageNet Pre-training"; MoCo's protocol freezes nothing either). The bases say FREEZE_AT 0 already;
# this keeps it so for a task config that freezes layers of a pretrained backbone.
SCRATCH_OPTS = ("MODEL.BACKBONE.FREEZE_AT", "0")


def _reference_detections(ctx: Context) -> List[Task]:
    """Reference rows of every detection table, fine-tuned exactly like the pretrained backbones:
    `none` (random init in the same config: the "scratch" row, reported as random_init) and
    `supervised` (the `supervised` task's backbone, converted with a provenance saying so), or a
    converted .pkl file."""
    det, tasks = ctx.section("detection"), []
    refs = det.get("references") or {}
    if not isinstance(refs, dict):
        raise PipelineError("detection.references: a mapping of row name to none | supervised | FILE.pkl "
                            "(e.g. {scratch: none, supervised: supervised})")
    if not refs or not det.get("tasks"):
        return []
    for ref_name, weights in refs.items():
        weights, deps, again = str(weights), list(ctx.data_deps), []
        if weights == "none":
            tasks += _fine_tunings(ctx, ref_name, "none", deps, SCRATCH_OPTS)
            continue
        if weights == "supervised":
            again = _supervised_seed_fine_tunings(ctx, ref_name)
            convert = _convert_supervised(ctx, ref_name)
            tasks.append(convert)
            weights, deps = convert, [convert.name]
        elif not weights.endswith(".pkl"):
            raise PipelineError(f"detection.references.{ref_name}: {weights!r} is none, supervised or a "
                                f"converted .pkl (`objcrop convert FILE OUT.pkl --pretrain method=supervised`)")
        tasks += _fine_tunings(ctx, ref_name, weights, deps) + again
    return tasks


def _supervised_seed_fine_tunings(ctx: Context, ref_name: str) -> List[Task]:
    """The bound trained again with seed K (OUT/supervised_seed<K>/) converted and fine-tuned like the
    preset's model, as detection row `<ref_name>_seed<K>`: the supervised row of every detection column then
    holds every training of the bound, as the probe's does (`_supervised_seed_probes`)."""
    tasks = []
    for seed in supervised_seeds(ctx.p.get("supervised") or {}):
        convert = _convert_supervised(ctx, ref_name, seed)
        tasks += [convert] + _fine_tunings(ctx, f"{ref_name}_seed{seed}", convert, [convert.name])
    return tasks


def _convert_supervised(ctx: Context, ref_name: str, seed: Optional[int] = None) -> Task:
    """The supervised backbone (a torchvision state dict; with `seed`, the bound trained again with it) ->
    .pkl whose provenance is the probe's supervised row's (objcrop.records.Provenance.supervised: method
    supervised, no policy or proposals, the file's name as its data), so that both land in one report row."""
    sup = _bound_section(ctx, "detection")
    folder, name = bound_folder(seed), ref_name if seed is None else f"{ref_name}_seed{seed}"
    backbone = os.path.join(ctx.out, folder, "backbone.pth")
    pkl = os.path.join(ctx.out, "weights", f"{name}.pkl")
    provenance = {"method": "supervised", "policy": "none", "proposals": "none", "epochs": "0",
                  "dataset": os.path.basename(backbone), "seed": bound_training_seed(sup, seed)}
    cmd = ["convert", backbone, pkl, "--format", "torchvision"]
    cmd += [x for k, v in provenance.items() for x in ("--pretrain", f"{k}={v}")]
    cmd += [str(a) for a in ctx.section("convert").get("args", [])]
    return _convert_task(name, cmd, backbone, pkl, f"pretrain.{folder}")
