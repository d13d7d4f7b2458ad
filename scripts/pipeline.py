"""The full objcrop pipeline as a graph of stage commands, run locally or through submitit.

    data → proposals → pretrain (method × policy × proposals × seed) → probe
                                                                      → convert → detect (VOC, COCO) × seed
                                                                                              → report

`scripts/run_pipeline.sh` is the entry point; this module builds the plan from a preset
(eval_configs/pipeline/<preset>.yaml) and command-line overrides, then runs it. Every task
is one `objcrop <stage> …` command with its own log (OUT/logs/<task>.log) and a check of
its outputs (a results.json with status "ok", a dataset's meta.json, a store file, a .pkl).
A task whose outputs are complete is skipped, so a rerun continues where the last run
stopped; pretraining always runs with --resume, so an interrupted run continues from its
newest checkpoint. The first failing task stops the pipeline with its name and log path.

`--launcher slurm` submits every task through submitit with `afterok` dependencies
(multi-node pretraining via torchrun and detection via detectron2's launch);
`--launcher submitit-local` does the same with submitit's local executor (one machine,
dependencies waited for here), which is how it is tested.

This file imports nothing from objcrop: it drives the stages through their CLIs only.
"""
import argparse
import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PRESET_DIR = os.path.join(REPO, "eval_configs", "pipeline")
STAGE_ORDER = ["data", "proposals", "pretrain", "probe", "convert", "detect", "report"]
LAUNCHERS = ["local", "slurm", "submitit-local"]


class PipelineError(Exception):
    """A problem the user can fix (bad preset, bad option): printed as one line."""


# --------------------------------------------------------------------------- tasks

@dataclass
class Task:
    """One stage command. `checks` say when its outputs are complete (then it is skipped)."""

    name: str  # unique; also the log file name
    stage: str  # one of STAGE_ORDER
    cmd: List[str]  # argv after `objcrop` (or a full argv when `raw`)
    checks: List[List[str]]  # [["results_ok", path], ["file", path], ["dir", path]]
    deps: List[str] = field(default_factory=list)
    always: bool = False  # the report: cheap, and must see every new result
    gpus: int = 0  # per node
    nodes: int = 1
    distributed: str = ""  # "torchrun" (pretrain) or "d2" (detectron2 launch) when gpus > 1 or nodes > 1
    timeout_min: int = 60
    tail: List[str] = field(default_factory=list)  # arguments that must come last (detectron2's --opts)
    raw: bool = False  # cmd is a script of this repository and its arguments, run with this Python
    # the small files that hold the task's result, relative to OUT (a record keeps them, not the
    # checkpoints); empty for the stages whose outputs only feed others (proposals, convert, report)
    results: List[str] = field(default_factory=list)

    def complete(self) -> bool:
        return (not self.always) and bool(self.checks) and all(_check(c) for c in self.checks)


def _results_ok(path: str) -> bool:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("status") == "ok"


def _check(check: List[str]) -> bool:
    kind = check[0]
    if kind == "results_ok":
        return _results_ok(check[1])
    if kind == "file":
        return os.path.isfile(check[1]) and os.path.getsize(check[1]) > 0
    if kind == "dir":
        return os.path.isdir(check[1])
    raise PipelineError(f"unknown output check {check!r}")


# --------------------------------------------------------------------------- presets

def load_preset(name_or_path: str) -> Dict[str, Any]:
    import yaml

    path = name_or_path if os.path.isfile(name_or_path) else os.path.join(PRESET_DIR, f"{name_or_path}.yaml")
    if not os.path.isfile(path):
        known = sorted(os.path.splitext(f)[0] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))
        raise PipelineError(f"--preset {name_or_path}: no such preset (known: {', '.join(known)}; or a YAML path)")
    with open(path, "r", encoding="utf-8") as f:
        try:
            preset = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise PipelineError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(preset, dict):
        raise PipelineError(f"{path}: a preset is a YAML mapping")
    preset["_path"] = path
    return preset


def _words(value) -> List[str]:
    """A list from YAML or a space/comma-separated string (flags and env vars)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [w for w in str(value).replace(",", " ").split() if w]


def apply_overrides(preset: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    p = copy.deepcopy(preset)
    pre = p.setdefault("pretrain", {})
    if args.policies:
        pre["policies"] = _words(args.policies)
    if args.methods:
        pre["methods"] = _words(args.methods)
    if args.seeds:
        pre["seeds"] = [int(s) for s in _words(args.seeds)]
    if args.proposals:
        p.setdefault("proposals", {})["methods"] = _words(args.proposals)
    det = p.setdefault("detection", {})
    if args.det_seeds:
        det["seeds"] = [int(s) for s in _words(args.det_seeds)]
    if args.det_tasks:
        wanted = _words(args.det_tasks)
        unknown = set(wanted) - set(det.get("tasks", {}))
        if unknown:
            raise PipelineError(f"--det-tasks: {', '.join(sorted(unknown))} not in the preset "
                                f"(it has: {', '.join(det.get('tasks', {})) or 'none'})")
        det["tasks"] = {k: v for k, v in det.get("tasks", {}).items() if k in wanted}
    if args.gpus is not None:
        p["gpus"] = int(args.gpus)
    if args.nodes is not None:
        p["nodes"] = int(args.nodes)
    return p


# --------------------------------------------------------------------------- the plan

def _fmt(value, ctx: Dict[str, str]):
    if isinstance(value, str):
        try:
            return value.format(**ctx)
        except (KeyError, IndexError) as e:
            raise PipelineError(f"preset value {value!r}: unknown placeholder {e} (known: {', '.join(ctx)})") from e
    if isinstance(value, list):
        return [_fmt(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _fmt(v, ctx) for k, v in value.items()}
    return value


def run_name(method: str, policy: str, proposals: str, seed: int) -> str:
    return f"{method}_{policy}_{proposals}_s{seed}"


RUN_KEYS = {"method", "policy", "proposals", "copy_paste", "seeds", "opts", "detect", "tag"}


def pretrain_specs(pre: Dict[str, Any], prop_methods: List[str]) -> List[Dict[str, Any]]:
    """The pretraining runs of a preset: the cross product methods × policies × proposal sources
    × seeds, or — when `pretrain.runs` lists them — exactly those runs (a study rarely wants
    every combination: copy-paste on one policy, BYOL on two)."""
    seeds = [int(s) for s in pre.get("seeds", [0])]
    if not pre.get("runs"):
        policies = _words(pre.get("policies", ["random"]))
        if any(pol != "random" for pol in policies) and not prop_methods:
            raise PipelineError("object-aware policies need proposals: set proposals.methods in the preset or --proposals")
        return [{"method": m, "policy": pol, "proposals": src, "copy_paste": False, "seeds": seeds, "opts": [],
                 "detect": True, "tag": ""}
                for m in _words(pre.get("methods", ["moco_v2"])) for pol in policies
                for src in (["none"] if pol == "random" else prop_methods)]
    specs = []
    for i, run in enumerate(pre["runs"]):
        where = f"pretrain.runs[{i}]"
        if not isinstance(run, dict) or "policy" not in run:
            raise PipelineError(f"{where}: a run is a mapping with at least `policy` (keys: {', '.join(sorted(RUN_KEYS))})")
        unknown = set(run) - RUN_KEYS
        if unknown:
            raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(RUN_KEYS))})")
        spec = {"method": str(run.get("method", "moco_v2")), "policy": str(run["policy"]),
                "proposals": str(run.get("proposals") or "none"), "copy_paste": bool(run.get("copy_paste", False)),
                "seeds": [int(s) for s in run.get("seeds", seeds)], "opts": [str(o) for o in run.get("opts", [])],
                "detect": bool(run.get("detect", True)), "tag": str(run.get("tag") or "")}
        if spec["proposals"] == "none" and (spec["policy"] != "random" or spec["copy_paste"]):
            raise PipelineError(f"{where}: policy {spec['policy']}{' with copy-paste' if spec['copy_paste'] else ''} "
                                f"needs `proposals` (gt or a proposal method)")
        specs.append(spec)
    return specs


def probe_task(name: str, weights: str, p: Dict[str, Any], probe: Dict[str, Any], runs: str, deps: List[str],
               gpus: int, extra: Optional[List[str]] = None) -> Task:
    probe_dir = os.path.join(runs, "probe", name)
    cmd = ["probe", "--weights", weights, "--dataset-train", p["datasets"]["probe_train"],
           "--dataset-test", p["datasets"]["probe_test"], "--out", probe_dir]
    cmd += [str(a) for a in probe.get("args", [])] + list(extra or [])
    return Task(f"probe.{name}", "probe", cmd, [["results_ok", os.path.join(probe_dir, "results.json")]],
                deps=deps, gpus=min(gpus, 1), results=[os.path.join(probe_dir, "results.json")])


def build_plan(preset: Dict[str, Any], out: str) -> List[Task]:
    """The task graph of a preset, in an order that respects every dependency."""
    out = os.path.abspath(out)
    data_cfg = preset.get("data") or {}
    datasets_root = os.path.abspath(os.environ.get("DETECTRON2_DATASETS", "datasets"))
    data_dir = os.path.abspath(_fmt(data_cfg.get("dir", "{out}/data"), {"out": out, "datasets": datasets_root}))
    ctx = {"out": out, "data": data_dir, "datasets": datasets_root}
    p = _fmt({k: v for k, v in preset.items() if not k.startswith("_")}, ctx)
    gpus, nodes = int(p.get("gpus", 0) or 0), int(p.get("nodes", 1) or 1)
    runs, weights = os.path.join(out, "runs"), os.path.join(out, "weights")
    tasks: List[Task] = []

    data_deps: List[str] = []
    if data_cfg.get("synth"):
        s = data_cfg["synth"]
        cmd = ["data", "synth", "--out", data_dir, "--num-images", str(s.get("num_images", 600)),
               "--seed", str(s.get("seed", 0))]
        if s.get("variant"):
            cmd += ["--variant", str(s["variant"])]
        cmd += [str(a) for a in s.get("args", [])]
        tasks.append(Task("data", "data", cmd, [["file", os.path.join(data_dir, "meta.json")]],
                          results=[os.path.join(data_dir, "meta.json")]))
        data_deps = ["data"]

    pre = p.get("pretrain") or {}
    specs = pretrain_specs(pre, _words((p.get("proposals") or {}).get("methods", ["gt"])))
    prop = p.get("proposals") or {}
    stores: Dict[str, str] = {}
    for m in dict.fromkeys(s["proposals"] for s in specs if s["proposals"] != "none"):
        store = os.path.join(out, "proposals", f"{m}{prop.get('suffix', '.store')}")
        # --resume: continue an interrupted computation from its shards (a fresh start when there are none)
        cmd = ["proposals", "compute", "--dataset", str(prop.get("dataset", p["datasets"]["pretrain"])),
               "--method", m, "--out", store, "--resume"] + [str(a) for a in (prop.get("args") or {}).get(m, [])]
        tasks.append(Task(f"proposals.{m}", "proposals", cmd, [["file", store]], deps=list(data_deps)))
        stores[m] = store

    # the supervised bound first: it answers whether the data is learnable at this budget at all
    sup = p.get("supervised")
    if sup:
        sup_dir = os.path.join(out, "supervised")
        cmd = ["benchmarks/learnability.py", "--data", data_dir, "--save-backbone", os.path.join(sup_dir, "backbone.pth"),
               "--json", os.path.join(sup_dir, "learnability.json")] + [str(a) for a in sup.get("args", [])]
        tasks.append(Task("pretrain.supervised", "pretrain", cmd, [["file", os.path.join(sup_dir, "backbone.pth")]],
                          deps=list(data_deps), raw=True, results=[os.path.join(sup_dir, "learnability.json")]))
    probe = p.get("probe") or {}
    det = p.get("detection") or {}
    det_seeds = [int(s) for s in det.get("seeds", [0])]
    pretrain_dataset = p["datasets"]["pretrain"]
    for spec in specs:
        method, policy, source = spec["method"], spec["policy"], spec["proposals"]
        # a tag tells apart runs of one setting with other opts (e.g. a longer budget)
        label = policy + ("+copy-paste" if spec["copy_paste"] else "") + (f"-{spec['tag']}" if spec["tag"] else "")
        for seed in spec["seeds"]:
            name = run_name(method, label, source, seed)
            run_dir = os.path.join(runs, "pretrain", name)
            opts = ["OUTPUT_DIR", run_dir, "PRETRAIN.METHOD", method, "VIEWS.POLICY", policy,
                    "DATA.DATASET", pretrain_dataset, "DATA.PROPOSALS", stores.get(source, ""),
                    "PRETRAIN.SEED", str(seed)] + [str(o) for o in pre.get("opts", [])]
            if spec["copy_paste"]:
                opts += ["VIEWS.COPY_PASTE.ENABLED", "True"]
            if spec["tag"]:
                opts += ["PRETRAIN.TAG", spec["tag"]]  # the run's own report row
            opts += spec["opts"]
            cmd = ["pretrain", "--config-file", str(pre.get("config_file", "pretrain/demo.yaml")),
                   "--resume", "--opts"] + opts
            pdeps = list(data_deps) + ([f"proposals.{source}"] if source in stores else [])
            final = os.path.join(run_dir, "model_final.pth")
            tasks.append(Task(f"pretrain.{name}", "pretrain", cmd,
                              [["results_ok", os.path.join(run_dir, "results.json")], ["file", final]],
                              deps=pdeps, gpus=gpus, nodes=nodes, distributed="torchrun",
                              timeout_min=int(pre.get("timeout_min", 24 * 60)),
                              results=[os.path.join(run_dir, "results.json")]))
            if probe.get("enabled", True):
                tasks.append(probe_task(name, final, p, probe, runs, [f"pretrain.{name}"], gpus))
            if not spec["detect"]:
                continue
            # detection is the costly part: a preset may fine-tune only some pretraining seeds
            det_pre_seeds = det.get("pretrain_seeds")
            if not det.get("tasks") or (det_pre_seeds is not None and seed not in [int(x) for x in det_pre_seeds]):
                continue
            pkl = os.path.join(weights, f"{name}.pkl")
            cmd = ["convert", final, pkl] + [str(a) for a in (p.get("convert") or {}).get("args", [])]
            tasks.append(Task(f"convert.{name}", "convert", cmd, [["file", pkl]], deps=[f"pretrain.{name}"]))
            for task_name, dspec in det["tasks"].items():
                for dseed in det_seeds:
                    # `objcrop detect train` puts seed k in OUTPUT_DIR/seed<k>; --resume continues it
                    det_dir = os.path.join(runs, f"detect_{task_name}", name)
                    cmd = ["detect", "train", "--config-file", str(dspec["config_file"]), "--weights", pkl,
                           "--seeds", str(dseed), "--output-dir", det_dir, "--resume"]
                    if dspec.get("dataset_train"):
                        cmd += ["--dataset-train", str(dspec["dataset_train"])]
                    if dspec.get("dataset_test"):
                        cmd += ["--dataset-test", str(dspec["dataset_test"])]
                    cmd += [str(a) for a in dspec.get("args", [])]
                    tail = ["--opts"] + [str(o) for o in dspec["opts"]] if dspec.get("opts") else []
                    tasks.append(Task(f"detect.{task_name}.{name}.seed{dseed}", "detect", cmd,
                                      [["results_ok", os.path.join(det_dir, f"seed{dseed}", "results.json")]],
                                      tail=tail, results=[os.path.join(det_dir, f"seed{dseed}", "results.json")],
                                      deps=[f"convert.{name}"], gpus=gpus, nodes=nodes, distributed="d2",
                                      timeout_min=int(det.get("timeout_min", 24 * 60))))
    # reference backbones probed exactly like the pretrained ones: random init (one per seed),
    # and "supervised" (the model above) or any torchvision state dict file
    for ref_name, weights in (probe.get("references") or {}).items() if probe.get("enabled", True) else ():
        deps = list(data_deps)
        if weights == "supervised":
            if not sup:
                raise PipelineError("probe.references: 'supervised' needs a `supervised:` section in the preset")
            weights, deps = os.path.join(out, "supervised", "backbone.pth"), deps + ["pretrain.supervised"]
        for seed in ([int(x) for x in pre.get("seeds", [0])] if weights == "random" else [0]):
            tasks.append(probe_task(f"{ref_name}_s{seed}", str(weights), p, probe, runs, deps, gpus,
                                    extra=["--seed", str(seed)] + [str(a) for a in probe.get("reference_args", [])]))
    report_dir = os.path.join(out, "report")
    deps = [t.name for t in tasks if t.stage in ("probe", "detect", "pretrain")]
    tasks.append(Task("report", "report", ["report", runs, "--out", report_dir], [["file", os.path.join(report_dir, "results.md")]],
                      deps=deps, always=True))
    # stage by stage (all pretraining runs, then every probe, ...): the order the logs read in
    tasks.sort(key=lambda t: STAGE_ORDER.index(t.stage))
    _check_graph(tasks)
    return tasks


def _result_recorded(path: str) -> bool:
    return _results_ok(path) if path.endswith("results.json") else os.path.isfile(path)


def recorded_tasks(tasks: List[Task], out: str, records: str, stages: Optional[List[str]] = None) -> Set[str]:
    """The tasks a record of an earlier run (scripts/study_records.py: OUT's small result files,
    without checkpoints) lets this run skip, e.g. on a new machine.

    A task is skipped when the record holds its results, every task that needs its outputs is
    itself complete or skipped (a record has no checkpoint to fine-tune), and no model it was
    measured on is trained again (a probe of a new checkpoint is a new result). Data and
    proposals are made again when something needs them: they come out the same (seeded), so
    the results recorded on them stand. The report always runs. With `stages`, only the tasks
    of those stages run, so only they can need a recorded task's outputs."""
    out, records = os.path.abspath(out), os.path.abspath(records)

    def in_record(path: str) -> str:
        return os.path.join(records, os.path.relpath(path, out))

    skip = {t.name for t in tasks if not t.always and all(_result_recorded(in_record(r)) for r in t.results)}
    by_name = {t.name: t for t in tasks}
    users: Dict[str, List[Task]] = {t.name: [] for t in tasks}
    for t in tasks:
        for d in t.deps:
            # the report reads results, not checkpoints; a stage that does not run needs nothing
            if not t.always and (not stages or t.stage in stages):
                users[d].append(t)

    def done(t: Task) -> bool:
        return t.name in skip or t.complete()

    def retrains_its_model(t: Task) -> bool:
        """Is a model this task measures (directly, or through a conversion) trained again?"""
        for d in t.deps:
            dep = by_name[d]
            if dep.stage == "pretrain" and not done(dep):
                return True
            if dep.stage == "convert" and retrains_its_model(dep):
                return True
        return False

    changed = True
    while changed:
        changed = False
        for t in tasks:
            if t.name in skip and (any(not done(u) for u in users[t.name]) or retrains_its_model(t)):
                skip.discard(t.name)
                changed = True
    return {n for n in skip if not by_name[n].complete()}


def _check_graph(tasks: List[Task]) -> None:
    names = set()
    for t in tasks:
        if t.name in names:
            raise PipelineError(f"two tasks named {t.name}: check the preset for repeated policies, methods or seeds")
        missing = [d for d in t.deps if d not in names]
        if missing:
            raise PipelineError(f"task {t.name} depends on {missing}, which come later or not at all")
        names.add(t.name)


def select_stages(tasks: List[Task], stages: Optional[List[str]], recorded: Optional[Set[str]] = None) -> List[Task]:
    """Keep only the given stages; every dependency outside them must already be complete (or recorded)."""
    if not stages:
        return tasks
    unknown = set(stages) - set(STAGE_ORDER)
    if unknown:
        raise PipelineError(f"--stages: unknown stage(s) {', '.join(sorted(unknown))} (known: {' '.join(STAGE_ORDER)})")
    chosen = [t for t in tasks if t.stage in stages]
    chosen_names = {t.name for t in chosen}
    by_name = {t.name: t for t in tasks}
    for t in chosen:
        for d in t.deps:
            if d not in chosen_names and not by_name[d].complete() and d not in (recorded or ()):
                raise PipelineError(f"--stages: {t.name} needs {d}, which is neither selected nor complete")
        t.deps = [d for d in t.deps if d in chosen_names]
    return chosen


# --------------------------------------------------------------------------- commands

def objcrop_argv(task: Task) -> List[str]:
    """The argv of a task on one machine (multi-process when it has several GPUs)."""
    if task.stage == "pretrain" and task.gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={task.gpus}",
                "-m", "objcrop.pretrain.train_net"] + task.cmd[1:]
    if task.raw:
        return [sys.executable, os.path.join(REPO, task.cmd[0])] + task.cmd[1:] + task.tail
    argv = [sys.executable, "-m", "objcrop"] + task.cmd
    if task.stage == "detect" and task.gpus > 0:
        argv += ["--num-gpus", str(task.gpus)]
    return argv + task.tail


def cluster_shell_command(task: Task, log_path: str) -> str:
    """A bash command run on every node of a SLURM job (SLURM_* variables resolve there).

    Multi-node pretraining: torchrun with node rank SLURM_NODEID and the job's first host as
    rendezvous; detection: detectron2's launch via --num-machines/--machine-rank/--dist-url.
    Outside SLURM (the local executor) the variables fall back to one node.
    """
    q = shlex.quote
    prelude = [
        'NODE="${SLURM_NODEID:-0}"; NNODES="${SLURM_NNODES:-1}"',
        'MASTER="$( (scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null || echo 127.0.0.1) | head -n 1)"',
        f'LOG={q(log_path)}; if [ "$NODE" != 0 ]; then LOG="$LOG.node$NODE"; fi',
        'exec >>"$LOG" 2>&1',
        f"cd {q(REPO)}",
    ]
    if task.distributed == "torchrun" and (task.nodes > 1 or task.gpus > 1):
        run = (f"{q(sys.executable)} -m torch.distributed.run --nnodes=\"$NNODES\" --node_rank=\"$NODE\" "
               f"--nproc_per_node={max(task.gpus, 1)} --master_addr=\"$MASTER\" --master_port=29511 "
               f"-m objcrop.pretrain.train_net " + " ".join(q(a) for a in task.cmd[1:]))
    elif task.distributed == "d2" and (task.nodes > 1 or task.gpus > 0):
        run = (f"{q(sys.executable)} -m objcrop " + " ".join(q(a) for a in task.cmd)
               + f" --num-gpus {max(task.gpus, 1)} --num-machines \"$NNODES\" --machine-rank \"$NODE\" "
               "--dist-url \"tcp://$MASTER:29512\" " + " ".join(q(a) for a in task.tail))
    else:
        run = (f'if [ "$NODE" = 0 ]; then {q(sys.executable)} -m objcrop '
               + " ".join(q(a) for a in task.cmd + task.tail) + "; fi")
    return "; ".join(prelude + [f'echo "[pipeline] {task.name} on node $NODE of $NNODES: $(date -u)"', run])


# --------------------------------------------------------------------------- running

class Pipeline:
    def __init__(self, tasks: List[Task], out: str, launcher: str = "local", dry_run: bool = False,
                 slurm: Optional[Dict[str, Any]] = None, wait: bool = False, jobs: int = 1,
                 recorded: Optional[Set[str]] = None, records: str = "", keep_going: bool = False):
        self.tasks, self.out, self.launcher, self.dry_run = tasks, os.path.abspath(out), launcher, dry_run
        self.keep_going = keep_going
        self.recorded, self.records = set(recorded or ()), records
        self.wait = wait
        self.slurm = slurm or {}
        self.log_dir = os.path.join(self.out, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.pipeline_log = os.path.join(self.log_dir, "pipeline.log")
        self.jobs = max(1, int(jobs))

    def say(self, msg: str) -> None:
        line = f"[pipeline {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.pipeline_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def log_path(self, task: Task) -> str:
        return os.path.join(self.log_dir, f"{task.name}.log")

    def fail(self, task: Task, why: str) -> int:
        log = self.log_path(task)
        self.say(f"FAILED stage {task.name}: {why}; log: {log}")
        tail = _tail(log, 15)
        if tail:
            print("---- last lines of " + log + " ----\n" + tail + "----", file=sys.stderr, flush=True)
        print(f"run_pipeline: stage {task.name} failed; see its log: {log}", file=sys.stderr, flush=True)
        return 1

    def run(self) -> int:
        self.say(f"{len(self.tasks)} tasks, launcher {self.launcher}, output {self.out}")
        todo = []
        for t in self.tasks:
            if t.complete():
                self.say(f"skip {t.name}: outputs complete")
            elif t.name in self.recorded:
                self.say(f"skip {t.name}: its result is recorded in {self.records}")
            else:
                todo.append(t)
        if self.dry_run:
            for t in todo:
                self.say(f"would run {t.name}: objcrop {' '.join(shlex.quote(a) for a in t.cmd + t.tail)}")
            return 0
        if self.launcher == "local":
            return self._run_local(todo)
        return self._run_submitit(todo)

    # ---- local: each task in its own process, up to `jobs` at once, in plan order
    def _run_local(self, todo: List[Task]) -> int:
        old = signal.signal(signal.SIGTERM, self._on_sigterm)
        pending, running, done = list(todo), {}, set()
        in_this_run = {t.name for t in todo}  # other dependencies were complete before the run began
        failed, lost = 0, set()  # lost: tasks that failed, and (with --keep-going) those that needed them
        try:
            while pending or running:
                if self.keep_going:
                    self._drop_dependents(pending, lost)
                # start what is ready: every dependency in this run has finished (the rest were complete);
                # a ready probe goes first, so that each run's score arrives soon after its pretraining
                for t in sorted(pending, key=lambda x: x.stage != "probe"):
                    if (failed and not self.keep_going) or len(running) >= self.jobs:
                        break
                    if all(d in done for d in t.deps if d in in_this_run):
                        pending.remove(t)
                        if t.complete():  # finished meanwhile (e.g. by hand, or by another pipeline)
                            self.say(f"skip {t.name}: outputs complete")
                            done.add(t.name)
                            continue
                        running[t.name] = (t, self._start(t), time.time())
                if not running:
                    break
                finished = self._wait_any(running)
                t, child, start = running.pop(finished)
                rc = self._finish(t, child.returncode, start)
                if rc != 0:
                    failed = failed or rc
                    lost.add(t.name)
                else:
                    done.add(t.name)
        except KeyboardInterrupt:
            for t, child, _ in running.values():
                self._stop(child)
                self.say(f"interrupted during {t.name}; rerun the same command to continue from here")
            return 130
        finally:
            signal.signal(signal.SIGTERM, old)
        if failed and self.keep_going:
            self.say(f"{len(lost)} task(s) failed or were not run for want of a failed one: {', '.join(sorted(lost))}")
        return failed

    def _drop_dependents(self, pending: List[Task], lost: Set[str]) -> None:
        """--keep-going: a task that needs a lost one cannot run; it is lost too (and so on down the graph)."""
        while True:
            dropped = [t for t in pending if any(d in lost for d in t.deps)]
            if not dropped:
                return
            for t in dropped:
                pending.remove(t)
                lost.add(t.name)
                self.say(f"not run {t.name}: it needs {', '.join(d for d in t.deps if d in lost)}, which failed")

    def _start(self, t: Task) -> subprocess.Popen:
        argv = objcrop_argv(t)
        log = self.log_path(t)
        self.say(f"run {t.name}: {' '.join(shlex.quote(a) for a in argv[1:])} (log: {log})")
        env = dict(os.environ)
        if self.jobs > 1 and "OMP_NUM_THREADS" not in env:
            # tasks side by side share the cores instead of each taking all of them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n[pipeline] {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(shlex.quote(a) for a in argv)}\n")
            f.flush()
            return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def _wait_any(self, running: Dict[str, Any]) -> str:
        while True:
            for name, (_, child, _) in running.items():
                if child.poll() is not None:
                    return name
            time.sleep(0.2)

    def _finish(self, t: Task, rc: int, start: float) -> int:
        if rc != 0:
            return self.fail(t, f"exit code {rc}")
        if t.checks and not all(_check(c) for c in t.checks):
            return self.fail(t, "it exited 0 but its outputs are incomplete: " + ", ".join(
                c[1] for c in t.checks if not _check(c)))
        self.say(f"done {t.name} in {time.time() - start:.0f} s")
        return 0

    @staticmethod
    def _stop(child: subprocess.Popen) -> None:
        if child.poll() is None:
            child.terminate()  # the stage cleans up (e.g. DDP workers) on SIGTERM
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()

    def _on_sigterm(self, signum, frame):
        raise KeyboardInterrupt

    # ---- submitit: SLURM (dependencies by afterok) or the local executor (dependencies waited for)
    def _run_submitit(self, todo: List[Task]) -> int:
        try:
            import submitit
        except ImportError as e:
            raise PipelineError("--launcher slurm needs the submitit package (pip install submitit)") from e
        folder = os.path.join(self.out, "submitit")
        jobs: Dict[str, Any] = {}
        pending = {t.name for t in todo}
        by_name = {t.name: t for t in todo}
        for t in todo:
            if self.launcher == "submitit-local":
                # the local executor has no dependencies: wait for this task's before submitting it
                for d in t.deps:
                    if d in jobs and not self._wait(by_name[d], jobs[d]):
                        return self.fail(by_name[d], "its submitit job failed")
                executor = submitit.LocalExecutor(folder=folder)
                executor.update_parameters(timeout_min=t.timeout_min, gpus_per_node=t.gpus, tasks_per_node=1, nodes=1)
            else:
                try:
                    executor = submitit.SlurmExecutor(folder=folder)
                except RuntimeError as e:  # submitit: srun not found
                    raise PipelineError(f"--launcher slurm: {e} (use --launcher local on a single machine)") from e
                params = dict(self.slurm)
                after = [jobs[d].job_id for d in t.deps if d in jobs]
                if after:
                    params["dependency"] = "afterok:" + ":".join(after)
                executor.update_parameters(job_name=f"objcrop.{t.name}", time=t.timeout_min, nodes=t.nodes,
                                           ntasks_per_node=1, gpus_per_node=t.gpus or None, **params)
            command = ["bash", "-c", cluster_shell_command(t, self.log_path(t))]
            try:
                jobs[t.name] = executor.submit(submitit.helpers.CommandFunction(command, cwd=REPO, verbose=False))
            except Exception as e:  # sbatch refused it (bad partition, account, limits): nothing after it can run
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise PipelineError(f"submitting {t.name} failed: {first}"
                                    + (f" ({len(jobs)} earlier job(s) already submitted)" if jobs else "")) from e
            self.say(f"submitted {t.name} as job {jobs[t.name].job_id} (log: {self.log_path(t)})")
        if self.launcher == "slurm" and not self.wait:
            self.say(f"submitted {len(jobs)} SLURM jobs (afterok dependencies); job files in {folder}. "
                     "Rerun the same command later: finished stages are skipped, failed ones resubmitted; "
                     "or pass --wait to block until the last job ends.")
            return 0
        for name in list(pending):
            if not self._wait(by_name[name], jobs[name]):
                return self.fail(by_name[name], "its submitit job failed")
        return 0

    def _wait(self, task: Task, job) -> bool:
        if getattr(job, "_objcrop_ok", None) is not None:
            return job._objcrop_ok
        try:
            job.result()
            ok = all(_check(c) for c in task.checks) if task.checks else True
            if ok:
                self.say(f"done {task.name} (job {job.job_id})")
            else:
                self.say(f"job {job.job_id} of {task.name} ended but its outputs are incomplete: "
                         + ", ".join(c[1] for c in task.checks if not _check(c)))
        except Exception as e:  # submitit raises FailedJobError (or UncompletedJobError) with the job's stderr
            self.say(f"job {job.job_id} of {task.name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            ok = False
        job._objcrop_ok = ok
        return ok


def _tail(path: str, n: int) -> str:
    if not os.path.isfile(path):
        return ""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().replace("\r", "\n").splitlines()
    lines = [ln for ln in lines if ln.strip()]
    return "\n".join(lines[-n:]) + "\n" if lines else ""


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="run_pipeline.sh", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
        epilog="Every option also reads an environment variable (shown in brackets); flags win.\n"
               "Presets live in eval_configs/pipeline/ (demo, paper, tiny); a path to your own YAML works too.\n"
               "Logs: OUT/logs/pipeline.log and OUT/logs/<task>.log. The report ends up in OUT/report/results.md.")
    p.add_argument("--preset", default=env("OBJCROP_PRESET", "demo"),
                   help="demo (embedded data, CPU), paper (real data under $DETECTRON2_DATASETS, GPUs), tiny "
                        "(the test's seconds-long run), or a YAML path [OBJCROP_PRESET; default demo]")
    p.add_argument("--out", default=env("OBJCROP_OUT"),
                   help="output directory [OBJCROP_OUT; default output/pipeline_<preset>]")
    p.add_argument("--policies", default=env("OBJCROP_POLICIES"),
                   help='view policies, e.g. "random obj-obj-dilate" [OBJCROP_POLICIES; default from the preset]')
    p.add_argument("--methods", default=env("OBJCROP_METHODS"),
                   help='SSL methods, e.g. "moco_v2 byol" [OBJCROP_METHODS; default from the preset]')
    p.add_argument("--proposals", default=env("OBJCROP_PROPOSALS"),
                   help='proposal sources for object-aware policies, e.g. "gt selective-search" [OBJCROP_PROPOSALS]')
    p.add_argument("--seeds", default=env("OBJCROP_SEEDS"), help='pretraining seeds, e.g. "0 1" [OBJCROP_SEEDS]')
    p.add_argument("--det-seeds", default=env("OBJCROP_DET_SEEDS"),
                   help='detection fine-tuning seeds per checkpoint, e.g. "0 1 2" [OBJCROP_DET_SEEDS]')
    p.add_argument("--det-tasks", default=env("OBJCROP_DET_TASKS"),
                   help='detection benchmarks of the preset to run, e.g. "voc" [OBJCROP_DET_TASKS; default all]')
    p.add_argument("--gpus", type=int, default=env("OBJCROP_GPUS"),
                   help="GPUs per node for pretraining and detection; 0 = CPU [OBJCROP_GPUS; default from the preset]")
    p.add_argument("--nodes", type=int, default=env("OBJCROP_NODES"),
                   help="nodes per pretraining/detection job (slurm launcher) [OBJCROP_NODES; default 1]")
    p.add_argument("--launcher", choices=LAUNCHERS, default=env("OBJCROP_LAUNCHER", "local"),
                   help="local: one task after another here; slurm: submit every task through submitit with "
                        "dependencies; submitit-local: submitit's local executor (testing) [OBJCROP_LAUNCHER]")
    p.add_argument("--slurm-partition", default=env("OBJCROP_SLURM_PARTITION"), help="SLURM partition [OBJCROP_SLURM_PARTITION]")
    p.add_argument("--slurm-account", default=env("OBJCROP_SLURM_ACCOUNT"), help="SLURM account [OBJCROP_SLURM_ACCOUNT]")
    p.add_argument("--stages", default=env("OBJCROP_STAGES"),
                   help=f'run only these stages, e.g. "probe report" (their other inputs must be complete); '
                        f'stages: {" ".join(STAGE_ORDER)} [OBJCROP_STAGES]')
    p.add_argument("--jobs", type=int, default=int(env("OBJCROP_JOBS", "1")),
                   help="local launcher: run up to this many independent tasks at once, the CPU threads split "
                        "between them (OMP_NUM_THREADS = cores / jobs unless set) [OBJCROP_JOBS; default 1]")
    p.add_argument("--wait", action="store_true",
                   help="slurm launcher: stay until the last job has ended (default: submit and return)")
    p.add_argument("--records", default=env("OBJCROP_RECORDS"),
                   help="a record of earlier runs' results (scripts/study_records.py OUT DIR: the small result "
                        "files, no checkpoints): tasks whose results it holds are not run again, unless a task that "
                        "runs needs their outputs [OBJCROP_RECORDS]")
    p.add_argument("--keep-going", action="store_true", default=env("OBJCROP_KEEP_GOING", "") not in ("", "0"),
                   help="local launcher: after a failed task, go on with every task that does not need it (like "
                        "make -k) instead of stopping; the exit status still says that one failed [OBJCROP_KEEP_GOING]")
    p.add_argument("--dry-run", action="store_true", help="print what would run and what is skipped, run nothing")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        preset = apply_overrides(load_preset(args.preset), args)
        name = os.path.splitext(os.path.basename(preset["_path"]))[0]
        out = os.path.abspath(args.out or os.path.join("output", f"pipeline_{name}"))
        tasks = build_plan(preset, out)
        if args.records and not os.path.isdir(args.records):
            raise PipelineError(f"--records {args.records}: no such directory")
        recorded = recorded_tasks(tasks, out, args.records, _words(args.stages) or None) if args.records else set()
        tasks = select_stages(tasks, _words(args.stages) or None, recorded)
        slurm = {k: v for k, v in (("partition", args.slurm_partition), ("account", args.slurm_account)) if v}
        pipeline = Pipeline(tasks, out, args.launcher, args.dry_run, slurm, wait=args.wait, jobs=args.jobs,
                            recorded=recorded, records=args.records or "", keep_going=args.keep_going)
    except PipelineError as e:
        print(f"run_pipeline: error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    pipeline.say(f"preset {name} ({preset['_path']})")
    try:
        rc = pipeline.run()
    except KeyboardInterrupt:
        pipeline.say("interrupted; rerun the same command to continue where it stopped")
        return 130
    except PipelineError as e:
        print(f"run_pipeline: error: {e}", file=sys.stderr)
        return 2
    if rc != 0 or args.dry_run:
        return rc
    report = os.path.join(out, "report", "results.md")
    if args.launcher == "slurm" and not args.wait:
        pipeline.say(f"the report will be written to {report} by the last job")
        return 0
    pipeline.say(f"finished in {time.time() - start:.0f} s")
    if os.path.isfile(report) and any(t.stage == "report" for t in tasks):
        print(report)  # the last line: where the table is
    return 0


if __name__ == "__main__":
    sys.exit(main())
