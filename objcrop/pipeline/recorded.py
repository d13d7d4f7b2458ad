"""`--records`: which tasks a record of earlier runs lets this run skip (e.g. on a new machine).

A record holds a study's small result files (results.json, learnability.json, data/meta.json), not
its checkpoints. It is read through `objcrop.report.record.StudyRecord` (the compact record.json or
a legacy record directory), which answers the two questions asked here: `results(relpath)` and
`has(relpath)`, relpath as in the pipeline's output (`runs/probe/<name>/results.json`).
"""
import functools
import os
from typing import Any, Dict, List, Optional, Set, Tuple

from objcrop.errors import ObjcropError
from objcrop.pipeline.presets import PipelineError
from objcrop.pipeline.tasks import Task, config_and_opts
from objcrop.report.record import (budget_words, held_at_other_budget, holds_all, planned_budget, recorded_budget,
                                   recorded_solver)


def open_record(path: str):
    """The StudyRecord at `path` (record.json, a directory holding it, or a legacy record directory);
    a legacy directory whose runs still have the short names of before run_name is read under the new ones."""
    from objcrop.report.record import StudyRecord

    if not os.path.exists(path):
        raise PipelineError(f"--records {path}: no such directory or record file")
    try:
        record = StudyRecord.open(path)
        aliases = legacy_aliases(record)
    except (ObjcropError, OSError, ValueError) as e:
        raise PipelineError(f"--records {path}: {e}") from e
    return RenamedRecord(record, aliases) if aliases else record


def legacy_aliases(record) -> Dict[str, str]:
    """{run_name: short name} of a record's pretraining runs named before run_name
    (`moco_v2_random_none_s0`): each name is rebuilt from the run's results.json and config."""
    from objcrop.records import Provenance, run_name

    aliases = {}
    for key in record.run_keys():
        parts = key.split("/")
        if len(parts) != 3 or parts[:2] != ["runs", "pretrain"]:
            continue
        results, config = record.results(f"{key}/results.json"), record.config(key)
        try:
            batch = int(config["PRETRAIN"]["BATCH_SIZE"])
        except (KeyError, TypeError, ValueError):
            continue  # not a run of objcrop pretrain: nothing to rename
        if isinstance(results, dict) and results.get("pretrain"):
            new = run_name(Provenance.from_dict(results["pretrain"]), batch)
            if new != parts[2]:
                aliases[new] = parts[2]
    return aliases


class RenamedRecord:
    """A record read under new run names: runs/<stage>/<new>/... is looked up as runs/<stage>/<old>/..."""

    def __init__(self, record, aliases: Dict[str, str]):
        self.record, self.aliases = record, aliases

    def _old(self, relpath: str) -> str:
        parts = relpath.replace(os.sep, "/").split("/")
        if len(parts) > 2 and parts[0] == "runs" and parts[2] in self.aliases:
            parts[2] = self.aliases[parts[2]]
        return "/".join(parts)

    def results(self, relpath: str) -> Optional[dict]:
        return self.record.results(self._old(relpath))

    def has(self, relpath: str) -> bool:
        return self.record.has(self._old(relpath))

    def config(self, run_key: str) -> Optional[dict]:
        return self.record.config(self._old(run_key))


def holds_results(record, task: Task, out: str) -> bool:
    """Does the record hold every result file of `task` (its paths below the absolute `out`), a
    fine-tuning's at the budget the task plans?"""
    return holds_all(record, [os.path.relpath(r, out) for r in task.results], detection_budget(task))


def recorded_tasks(tasks: List[Task], out: str, records, stages: Optional[List[str]] = None) -> Set[str]:
    """The tasks a record of an earlier run lets this run skip (`records`: a path or an opened record).

    A task is skipped when the record holds its results, every task that needs its outputs is
    itself complete or skipped (a record has no checkpoint to fine-tune), and no model it was
    measured on is trained again (a probe of a new checkpoint is a new result). Data and
    proposals are made again when something needs them: they come out the same (seeded), so
    the results recorded on them stand. The report always runs. With `stages`, only the tasks
    of those stages run, so only they can need a recorded task's outputs."""
    record = open_record(records) if isinstance(records, str) else records
    out = os.path.abspath(out)
    skip = {t.name for t in tasks if not t.always and holds_results(record, t, out)}
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
            if (dep.stage == "pretrain" and not done(dep)) or (dep.stage == "convert" and retrains_its_model(dep)):
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


def accumulated(tasks: List[Task], out: str, record) -> Set[str]:
    """The accumulating pretraining runs (a registered arm's seeds) whose results the record holds,
    whether or not this output still has them too (recorded_tasks leaves those out: they need no skip)."""
    out = os.path.abspath(out)
    return {t.name for t in tasks if t.accumulating and t.stage == "pretrain" and holds_results(record, t, out)}


def held_at_another_budget(tasks: List[Task], out: str, record) -> Dict[str, str]:
    """{name: why it runs again} of the fine-tunings whose results the record holds at another
    budget than the one they plan now (the pipeline says so beside "would run")."""
    out, why = os.path.abspath(out), {}
    for t in tasks:
        budget = detection_budget(t)
        relpaths = [os.path.relpath(r, out) for r in t.results]
        if held_at_other_budget(record, relpaths, budget):
            held = recorded_budget(record.results(relpaths[0]), recorded_solver(record, relpaths[0]))
            why[t.name] = f"the record holds it at {budget_words(held)}, its config plans {budget_words(budget)}"
    return why


def detection_budget(task: Task) -> Optional[Dict[str, Any]]:
    """The fine-tuning budget an `objcrop detect train` task plans: {"iterations", "ims_per_batch"} and
    its schedule {"base_lr", "steps", "warmup_iters"} (objcrop.report.record.planned_budget) of its config
    file after its --opts, before any world-size scaling (None for other stages). A recorded fine-tuning
    of another budget or schedule is another experiment, not this task's result."""
    config_file, opts = config_and_opts(task)
    if task.stage != "detect" or config_file is None:
        return None
    try:
        return dict(_budget_of(config_file, tuple(opts)))
    except ObjcropError as e:
        raise PipelineError(f"{task.name}: {e}") from e


@functools.lru_cache(maxsize=None)
def _budget_of(config_file: str, opts: Tuple[str, ...]) -> Dict[str, Any]:
    from objcrop.convert.detectron2_model import load_config  # detectron2: only when a record is read

    return planned_budget(load_config(config_file, list(opts)).SOLVER)
