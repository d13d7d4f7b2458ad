"""Pipeline presets (eval_configs/pipeline/<name>.yaml): loading, command-line overrides,
`{out}` placeholders, and the list of pretraining runs a preset asks for.

A preset is plain YAML (not a CfgNode): it describes a grid of stage commands, not one model.
Each pretraining run of `pretrain.runs` names its own pretraining YAML (`config_file:`, a leaf
such as eval_configs/pretrain/study/r18_b32_e12.yaml whose `_BASE_` is the study's preset) instead
of carrying a list of `--opts`, so a run's setting is a file that `objcrop pretrain` reads as is.
"""
import argparse
import copy
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from objcrop.errors import ObjcropError


class PipelineError(ObjcropError):
    """A problem the user can fix (bad preset, bad option): printed as one line."""


def preset_dir() -> str:
    """eval_configs/pipeline, wherever objcrop's configs are installed."""
    import objcrop.eval_configs as pkg

    return os.path.join(os.path.dirname(pkg.__file__), "pipeline")


def load_preset(name_or_path: str) -> Dict[str, Any]:
    """A preset by name (eval_configs/pipeline/<name>.yaml) or path; `_path` says which file."""
    import yaml

    folder = preset_dir()
    path = name_or_path if os.path.isfile(name_or_path) else os.path.join(folder, f"{name_or_path}.yaml")
    if not os.path.isfile(path):
        known = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".yaml"))
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


def words(value) -> List[str]:
    """A list from YAML or a space/comma-separated string (flags and env vars)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [w for w in str(value).replace(",", " ").split() if w]


def apply_overrides(preset: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """The preset with the command line's --policies/--methods/--seeds/... applied (a copy)."""
    p = copy.deepcopy(preset)
    pre = p.setdefault("pretrain", {})
    # the preset's own rows: a flag's value none of them has is a typo; one they have, in none of the rows
    # the flags before it kept, is a selection that keeps nothing of it, and the two errors say which
    preset_runs = pre.get("runs") or []
    # on a runs list, --policies/--methods select its rows as --tags does: before, they set the cross
    # product's keys, which a runs list never reads, so `--policies obj-obj-dilate` still ran the random arm
    if args.policies:
        pre["policies"] = words(args.policies)
        if preset_runs:
            pre["runs"] = _runs_with_field(pre["runs"], preset_runs, "policy", None, words(args.policies),
                                           "--policies", args)
    if args.methods:
        pre["methods"] = words(args.methods)
        if preset_runs:
            pre["runs"] = _runs_with_field(pre["runs"], preset_runs, "method", "moco_v2", words(args.methods),
                                           "--methods", args)
    if args.tags:
        if not preset_runs:
            raise PipelineError("--tags selects among pretrain.runs, and this preset lists none")
        pre["runs"] = _runs_with_field(pre["runs"], preset_runs, "tag", "-", words(args.tags), "--tags", args)
    if args.seeds:
        if preset_runs:
            # a runs list names its rows' seeds, so --seeds selects among them; the random-init reference
            # probes keep the preset's seeds (as --tags leaves the references), so a later session's
            # `--seeds 3` of an accumulating arm adds no random-init seed to the reference row
            p.setdefault("probe", {}).setdefault("reference_seeds", list(pre.get("seeds", [0])))
        pre["seeds"] = [int(s) for s in words(args.seeds)]
        if preset_runs:  # the flags before never empty the list: a value no kept row has is refused there
            pre["runs"] = _runs_with_seeds(pre["runs"], pre["seeds"], args)
    if args.proposals and words(args.proposals) == ["none"]:
        # the random-crop runs alone, e.g. a registered random arm trained again for its fine-tuning only
        if not preset_runs:
            raise PipelineError("--proposals none keeps the random-crop runs of pretrain.runs, and this preset "
                                "lists none (--policies random does it for the cross product)")
        pre["runs"] = [r for r in pre["runs"] if not (isinstance(r, dict) and r.get("proposals"))]
    elif args.proposals:
        p.setdefault("proposals", {})["methods"] = words(args.proposals)
        if preset_runs:
            pre["runs"] = _runs_with_proposals(pre["runs"], preset_runs, words(args.proposals), args)
    # named by pretrain_specs when the selection leaves no run; a preset file's own `runs: []` is its own error
    p["_selection"] = _selection(args) if preset_runs else ""
    if not getattr(args, "references", True):
        _drop_references(p)
    if getattr(args, "references_only", False):
        _references_only(p, args)
    if getattr(args, "supervised_seeds", None):
        if not p.get("supervised"):
            raise PipelineError("--supervised-seeds: the preset has no `supervised:` section (or --no-references "
                                "left it out)")
        p["supervised"]["seeds"] = args.supervised_seeds
    det = p.setdefault("detection", {})
    if args.det_seeds:
        det["seeds"] = [int(s) for s in words(args.det_seeds)]
    if args.det_tasks:
        wanted = words(args.det_tasks)
        unknown = set(wanted) - set(det.get("tasks", {}))
        if unknown:
            raise PipelineError(f"--det-tasks: {', '.join(sorted(unknown))} not in the preset "
                                f"(it has: {', '.join(det.get('tasks', {})) or 'none'})")
        p["_detection_tasks"] = list(det.get("tasks", {}))  # what a run's `detect: {tasks}` may name
        det["tasks"] = {k: v for k, v in det.get("tasks", {}).items() if k in wanted}
    if args.gpus is not None:
        p["gpus"] = int(args.gpus)
    if args.nodes is not None:
        p["nodes"] = int(args.nodes)
    workers = getattr(args, "loader_workers", None)
    if workers is not None:
        if int(workers) < 0:
            raise PipelineError(f"--loader-workers/OBJCROP_LOADER_WORKERS: {workers} is not a number of workers (0 or more)")
        p["loader_workers"] = int(workers)
    return p


def _drop_references(p: Dict[str, Any]) -> None:
    """--no-references: the preset without its reference rows, so that no task trains, probes or
    fine-tunes them (the report reads whatever reference rows the runs folder or a record holds)."""
    p.pop("supervised", None)
    p.get("probe", {}).pop("references", None)
    p.get("detection", {}).pop("references", None)


def _references_only(p: Dict[str, Any], args) -> None:
    """--references-only: no pretraining run (and so no proposals, probe, conversion or fine-tuning of one),
    the reference rows as the preset has them. A filter of the runs would select among none: refused."""
    if not getattr(args, "references", True):
        raise PipelineError("--references-only and --no-references leave out each other's tasks: nothing would run")
    chosen = [flag for flag, value in (("--policies", args.policies), ("--methods", args.methods),
                                       ("--proposals", args.proposals), ("--tags", args.tags)) if value]
    if chosen:
        raise PipelineError(f"--references-only runs no pretraining run, and {', '.join(chosen)} selects among them")
    p["_references_only"] = True


def _runs_with_field(runs, preset_runs, field: str, default: Optional[str], wanted: List[str], flag: str,
                     args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The runs of `runs` (what the flags before `flag` kept of the preset's `preset_runs`) whose `field`
    (`default` when a run leaves it out; "-" for an untagged run) is one of `wanted`. Each wanted value
    must be in a kept row: the error names the values there are, in the preset or in the kept rows."""
    def value_of(run) -> str:
        return str(run.get(field) or default) if isinstance(run, dict) else str(default)
    _check_wanted(set(wanted), {value_of(r) for r in preset_runs}, {value_of(r) for r in runs}, flag,
                  "policies" if field == "policy" else field + "s", args)
    return [r for r in runs if value_of(r) in wanted]


def _check_wanted(wanted: set, in_preset: set, in_kept: set, flag: str, what: str, args: argparse.Namespace) -> None:
    """A typo (a value no row of the preset has) and a selection that keeps no row with the value (the
    preset has it, the flags before `flag` left it out) are different mistakes with different fixes."""
    unknown = wanted - in_preset
    if unknown:
        raise PipelineError(f"{flag}: {', '.join(sorted(unknown))} not in pretrain.runs "
                            f"(its {what}: {', '.join(sorted(in_preset)) or 'none'})")
    left_out = wanted - in_kept
    if left_out:
        raise PipelineError(f"{flag}: {', '.join(sorted(left_out))} is in no row of pretrain.runs that "
                            f"{_selection(args, before=flag)} keeps "
                            f"(their {what}: {', '.join(sorted(in_kept)) or 'none'})")


def _runs_with_seeds(runs, seeds: List[int], args: argparse.Namespace) -> List[Dict[str, Any]]:
    """--seeds on a runs list: a run without `seeds` takes them; one with its own keeps the common
    ones, and is dropped when there are none (so `--seeds 0` runs seed 0 of every row, nothing else).
    When that drops every run, the error names the seeds the rows list, since the fix is the preset's."""
    kept = []
    for run in runs:
        if isinstance(run, dict) and "seeds" in run:
            common = [s for s in run["seeds"] if int(s) in seeds]
            if not common:
                continue
            run = dict(run, seeds=common)
        kept.append(run)
    if not kept:
        their_seeds = sorted({int(s) for run in runs for s in run["seeds"]})
        raise PipelineError(f"the selection {_selection(args)} leaves no run of pretrain.runs: the runs selected "
                            f"list their own seeds ({', '.join(map(str, their_seeds))}); to run another seed of a row, "
                            f"add it to the row's `seeds:` in the preset")
    return kept


SELECTION_FLAGS = ("--policies", "--methods", "--tags", "--seeds", "--proposals")  # in the order they apply


def _selection(args: argparse.Namespace, before: Optional[str] = None) -> str:
    """The filters of pretrain.runs given on the command line, as typed: `--tags x --seeds 1`; with
    `before`, those applied before that flag."""
    flags = SELECTION_FLAGS[:SELECTION_FLAGS.index(before)] if before else SELECTION_FLAGS
    return " ".join(f"{flag} {getattr(args, flag[2:])}" for flag in flags if getattr(args, flag[2:]))


def _runs_with_proposals(runs, preset_runs, sources: List[str], args: argparse.Namespace) -> List[Dict[str, Any]]:
    """--proposals on a runs list: the object-aware runs on one of `sources` (their `proposals`, the store's
    name without a -top<k>), and every run without proposals, as the cross product keeps random crops.
    `sources` are checked against the preset's rows (`preset_runs`), the runs kept are among `runs`."""
    def sources_of(rows) -> set:
        return {str(r.get("proposals")) for r in rows if isinstance(r, dict) and r.get("proposals")}
    _check_wanted(set(sources), sources_of(preset_runs), sources_of(runs), "--proposals", "proposal sources", args)
    return [r for r in runs if not (isinstance(r, dict) and r.get("proposals")) or str(r["proposals"]) in sources]


DETECT_KEYS = {"tasks", "seeds"}
DETECT_SEEDS = "pretraining"


def _detect_fields(value: Any, where: str, detection_tasks: List[str]) -> Dict[str, Any]:
    """RunSpec's detection fields from a run's `detect`: true / false, or a mapping
    {tasks: [names of the preset's detection tasks], seeds: pretraining}."""
    if not isinstance(value, dict):
        return {"detect": bool(value)}
    unknown = set(value) - DETECT_KEYS
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(DETECT_KEYS))}; or true / false)")
    tasks = tuple(words(value.get("tasks")))
    missing = [t for t in tasks if t not in detection_tasks]
    if missing:
        raise PipelineError(f"{where}.tasks: {', '.join(missing)} not in the preset's detection.tasks "
                            f"(it has: {', '.join(detection_tasks) or 'none'})")
    seeds = value.get("seeds")
    if seeds not in (None, DETECT_SEEDS):
        raise PipelineError(f"{where}.seeds: {seeds!r} is not {DETECT_SEEDS!r} (one fine-tuning per pretraining "
                            f"run, seeded with its pretraining seed); leave it out for the preset's detection.seeds")
    return {"detect": True, "detect_tasks": tasks, "detect_seed_is_pretraining": seeds == DETECT_SEEDS}


def fill(value, ctx: Dict[str, str]):
    """Replace `{out}`, `{data}`, `{datasets}` in every string of a (nested) preset value."""
    if isinstance(value, str):
        try:
            return value.format(**ctx)
        except (KeyError, IndexError) as e:
            raise PipelineError(f"preset value {value!r}: unknown placeholder {e} (known: {', '.join(ctx)})") from e
    if isinstance(value, list):
        return [fill(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ctx) for k, v in value.items()}
    return value


@dataclass
class RunSpec:
    """One pretraining setting of a preset, run once per seed."""

    method: str
    policy: str
    proposals: str  # a proposal source (gt, selective-search, ...) or "none"
    copy_paste: bool
    seeds: List[int]
    config_file: str  # the pretraining YAML: the preset's, or the run's own leaf
    detect: bool = True
    # `detect: {tasks: [voc], seeds: pretraining}`: only these of the preset's detection tasks (empty: all),
    # and one fine-tuning per pretraining run whose seed is the run's own (the registered arms' rule,
    # docs/preregistration.md) instead of the preset's detection.seeds
    detect_tasks: Tuple[str, ...] = ()
    detect_seed_is_pretraining: bool = False
    tag: str = ""  # the run's own report row (PRETRAIN.TAG); part of its name
    # its seeds are recorded as they finish, over several sessions: a registered arm (docs/preregistration.md,
    # 12 seeds of about an hour each on 2 CPU cores) whose record may hold only some of them yet
    accumulating: bool = False


RUN_KEYS = {"method", "policy", "proposals", "copy_paste", "seeds", "config_file", "detect", "tag", "accumulating"}
DEFAULT_PRETRAIN_CONFIG = "pretrain/demo.yaml"


def pretrain_specs(pre: Dict[str, Any], prop_methods: List[str],
                   detection_tasks: Optional[List[str]] = None, selection: str = "") -> List[RunSpec]:
    """The pretraining runs of a preset: the cross product methods × policies × proposal sources
    × seeds, or — when `pretrain.runs` lists them — exactly those runs (a study rarely wants
    every combination: copy-paste on one policy, BYOL on two). `detection_tasks`: the preset's own
    (before --det-tasks), which a run's `detect: {tasks: ...}` must name; `selection`: the command
    line's filters of the runs, named when they leave none."""
    seeds = [int(s) for s in pre.get("seeds", [0])]
    config_file = str(pre.get("config_file", DEFAULT_PRETRAIN_CONFIG))
    if pre.get("runs") == []:
        # an empty list is not "no list": the cross product in its place would train runs nobody asked for
        if selection:
            raise PipelineError(f"the selection {selection} leaves no run of pretrain.runs")
        raise PipelineError("pretrain.runs is an empty list: list the runs, or leave the key out for the "
                            "cross product of pretrain.methods x policies x seeds")
    if not pre.get("runs"):
        policies = words(pre.get("policies", ["random"]))
        if any(pol != "random" for pol in policies) and not prop_methods:
            raise PipelineError("object-aware policies need proposals: set proposals.methods in the preset or --proposals")
        return [RunSpec(m, pol, src, False, seeds, config_file)
                for m in words(pre.get("methods", ["moco_v2"])) for pol in policies
                for src in (["none"] if pol == "random" else prop_methods)]
    return [_run_spec(run, f"pretrain.runs[{i}]", seeds, config_file, detection_tasks or [])
            for i, run in enumerate(pre["runs"])]


def _run_spec(run: Any, where: str, seeds: List[int], config_file: str, detection_tasks: List[str]) -> RunSpec:
    if not isinstance(run, dict) or "policy" not in run:
        raise PipelineError(f"{where}: a run is a mapping with at least `policy` (keys: {', '.join(sorted(RUN_KEYS))})")
    if "opts" in run:
        raise PipelineError(f"{where}: a run takes no `opts`; put them in a leaf pretraining YAML "
                            f"(e.g. eval_configs/pretrain/study/) and name it with `config_file`")
    unknown = set(run) - RUN_KEYS
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(RUN_KEYS))})")
    spec = RunSpec(method=str(run.get("method", "moco_v2")), policy=str(run["policy"]),
                   proposals=str(run.get("proposals") or "none"), copy_paste=bool(run.get("copy_paste", False)),
                   seeds=[int(s) for s in run.get("seeds", seeds)],
                   config_file=str(run.get("config_file") or config_file),
                   tag=str(run.get("tag") or ""), accumulating=bool(run.get("accumulating", False)),
                   **_detect_fields(run.get("detect", True), f"{where}.detect", detection_tasks))
    if spec.proposals == "none" and (spec.policy != "random" or spec.copy_paste):
        raise PipelineError(f"{where}: policy {spec.policy}{' with copy-paste' if spec.copy_paste else ''} "
                            f"needs `proposals` (gt or a proposal method)")
    return spec
