"""A pipeline task: one stage command, the checks that say its outputs are complete, and its argv."""
import fnmatch
import json
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple

from objcrop.pipeline import freshness
from objcrop.pipeline.presets import PipelineError

STAGE_ORDER = ["data", "proposals", "pretrain", "probe", "convert", "detect", "report"]
# the repository: the stages run from here, and `raw` tasks are its scripts (benchmarks/learnability.py)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Task:
    """One stage command. `checks` say when its outputs are complete (then it is skipped)."""

    name: str  # unique; also the log file name
    stage: str  # one of STAGE_ORDER
    cmd: List[str]  # argv after `objcrop` (or a full argv when `raw`)
    # [["results_ok", path], ["file", path], ["dir", path]], and for what is made from a checkpoint
    # (freshness.py) ["probed_from", results.json, checkpoint], ["converted_from", pkl, checkpoint],
    # ["fine_tuned_from", results.json, pkl, checkpoint]
    checks: List[List[str]]
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
    # a seed of an accumulating run (RunSpec.accumulating): its pretraining and probe may be missing
    # from a study's record while the other seeds are in
    accumulating: bool = False

    def complete(self) -> bool:
        """Can the task be skipped: it has outputs, they are all there, and it is not always rerun."""
        return (not self.always) and bool(self.checks) and self.outputs_complete()

    def outputs_complete(self) -> bool:
        return all(check(c) for c in self.checks)

    def incomplete_outputs(self) -> List[str]:
        return [c[1] for c in self.checks if not check(c)]

    def checks_freshness(self) -> bool:
        """Is this made from a checkpoint, so that its outputs must be of the checkpoint as it is now?"""
        return any(c[0] in FRESHNESS_CHECKS for c in self.checks)

    def outdated(self) -> List[str]:
        """Why outputs that are there are no longer of the checkpoint they were made from (freshness.py)."""
        return [why for why in map(outdated, self.checks) if why]


def results_ok(path: str) -> bool:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("status") == "ok"


def result_recorded(path: str) -> bool:
    """Is this result file there (a results.json: with status ok)?"""
    return results_ok(path) if path.endswith("results.json") else os.path.isfile(path)


FRESHNESS_CHECKS = ("probed_from", "converted_from", "fine_tuned_from")


def outdated(spec: List[str]) -> Optional[str]:
    """For a check of what is made from a checkpoint: why its output is another training's (None: it is
    not, or the check is of another kind)."""
    if spec[0] == "probed_from":
        return freshness.probe_outdated(spec[1], spec[2])
    if spec[0] == "converted_from":
        return freshness.conversion_outdated(spec[1], spec[2])
    if spec[0] == "fine_tuned_from":
        return freshness.fine_tuning_outdated(*spec[1:])
    return None


def check(spec: List[str]) -> bool:
    kind = spec[0]
    if kind in FRESHNESS_CHECKS:  # the output itself is checked by a file/results_ok check
        return outdated(spec) is None
    if kind == "results_ok":
        return results_ok(spec[1])
    if kind == "file":
        return os.path.isfile(spec[1]) and os.path.getsize(spec[1]) > 0
    if kind == "dir":
        return os.path.isdir(spec[1])
    raise PipelineError(f"unknown output check {spec!r}")


def check_graph(tasks: List[Task]) -> None:
    """Names are unique and every dependency comes earlier in the list."""
    names = set()
    for t in tasks:
        if t.name in names:
            raise PipelineError(f"two tasks named {t.name}: check the preset for repeated policies, methods or seeds")
        missing = [d for d in t.deps if d not in names]
        if missing:
            raise PipelineError(f"task {t.name} depends on {missing}, which come later or not at all")
        names.add(t.name)


def select_targets(tasks: List[Task], patterns: Optional[List[str]]) -> List[Task]:
    """Only the tasks whose names match one of `patterns` (shell globs, as --dry-run names the tasks) and
    every task they need, directly or not, like `make TARGET`: a reference row trained again with one
    seed need not train the others. A pattern that matches no task is an error, not an empty run."""
    if not patterns:
        return tasks
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(t.name, p) for t in tasks)]
    if unmatched:
        raise PipelineError(f"--tasks: no task of this plan is named like {', '.join(unmatched)} (--dry-run "
                            "lists the plan's tasks)")
    by_name = {t.name: t for t in tasks}
    wanted: Set[str] = set()
    todo = [t.name for t in tasks if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].deps)
    return [t for t in tasks if t.name in wanted]


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


def config_and_opts(task: Task) -> Tuple[Optional[str], List[str]]:
    """The `--config-file` a stage command names (None without one) and the overrides after its `--opts`
    (in its cmd, or in its tail for detectron2's): what the stage will merge, read from the argv it runs."""
    argv = task.cmd + task.tail
    config_file = argv[argv.index("--config-file") + 1] if "--config-file" in argv else None
    return config_file, argv[argv.index("--opts") + 1:] if "--opts" in argv else []


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
