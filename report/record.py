"""A study's record: the small result files of its pipeline outputs, kept beside the code.

A study that takes longer than one machine's lifetime (hours of CPU, a GPU lent for minutes)
loses its outputs with the machine. Its record keeps what the tables are made of — every run's
results.json, config.yaml and a summary of its training metrics, the generated data's
meta.json, the supervised bound's learnability.json, scripts/study_extras.py's measurements and
the preset's plan (plan.json), and each pipeline log — so that `objcrop report` rebuilds the tables from it and
`run_pipeline.sh --records RECORD` skips every task whose result it holds.

Two layouts answer the same questions through `StudyRecord`:

* the compact record (the current one): ONE file, `RECORD/record.json` (report/record_file.py
  describes it), plus the pictures (`extras/*.png`) as files beside it;
* the legacy record directory: the output's files copied as they were (`RECORD/runs/...`).

    record = StudyRecord.open("docs/results/study")
    record.results("runs/probe/random_init_s0/results.json")   # dict, or None when absent
    record.has("supervised/learnability.json")
    record.save_output("output/study")                         # add a pipeline output's results
"""
import fnmatch
import glob
import hashlib
import itertools
import math
import os
import re
import shutil
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from objcrop.errors import ObjcropError
from objcrop.io import atomic_path, read_json
from objcrop.records import RecordError

from objcrop.report import record_file

RECORD_FILE = record_file.RECORD_FILE
# beside each results.json: what the report and the study pages read of a run
RUN_FILES = ("results.json", "config.yaml", "metrics.jsonl", "metrics.json")
# the supervised bound's result (benchmarks/learnability.py), one per training: supervised/, supervised_seed<K>/, ...
BOUND_PATTERN = "supervised*/learnability.json"
OTHER_PATTERNS = ("data/meta.json", BOUND_PATTERN, "extras/*.json", "extras/*.png",
                  "extras/commands.txt", "plan.json")
# kept as files beside the compact record (binary, and linked from the study pages by path)
FILE_PATTERNS = ("*.png",)


def _log_id(path: str) -> str:
    """A pipeline log's id: its first line (the run's start) never changes while the log grows."""
    with open(path, "rb") as f:
        first = f.readline()
    return hashlib.sha1(first + os.path.abspath(path).encode()).hexdigest()[:10]


def output_files(out: str, runs: Optional[Sequence[str]] = None) -> Iterator[Tuple[str, str]]:
    """(source, path relative to the record) of every file a record keeps of pipeline output `out`.
    Pipeline logs are kept one per output directory (logs/pipeline-<id>.log), so that the record's
    wall times add up over every machine that worked on it. `runs`: only the runs whose folder
    (`runs/<stage>/<name>[/seed<k>]`, or `supervised` for the supervised bound) matches one of these globs."""
    for run_dir in selected_run_dirs(out, runs):
        for name in RUN_FILES:
            src = os.path.join(out, run_dir, name)
            if os.path.isfile(src):
                yield src, os.path.relpath(src, out)
    for pattern in OTHER_PATTERNS:
        for src in glob.glob(os.path.join(out, pattern)):
            rel = os.path.relpath(src, out)
            # the supervised bound is a trained model's result too: with `runs`, only when its folder matches
            if rel.startswith("supervised") and not _selected(os.path.dirname(rel), runs):
                continue
            yield src, rel
    log = os.path.join(out, "logs", "pipeline.log")
    if os.path.isfile(log) and os.path.getsize(log) > 0:
        yield log, os.path.join("logs", f"pipeline-{_log_id(log)}.log")


def selected_run_dirs(out: str, runs: Optional[Sequence[str]] = None) -> List[str]:
    """The run folders of output `out` (`runs/<stage>/<name>[/seed<k>]`, relative, "/"-separated) that hold
    a results.json and match one of `runs`' globs (None: every one)."""
    dirs = (_norm(os.path.relpath(os.path.dirname(r), out))
            for r in glob.glob(os.path.join(out, "runs", "**", "results.json"), recursive=True))
    return [d for d in dirs if _selected(d, runs)]


def bounds_of_runs(out: str, runs: Sequence[str]) -> Dict[str, List[str]]:
    """The supervised bounds of output `out` that a run matching `runs` stands on: {the bound's
    learnability.json, relative to `out`: the sorted stages of those runs}. A run stands on the bound
    whose folder its name is (`runs/detect_coco/supervised_seed1/seed0` on `supervised_seed1/`) or
    whose probe it is (`runs/probe/supervised_seed1_s0`); a bound that `runs` selects itself is not one."""
    selected = [parts for parts in (d.split("/") for d in selected_run_dirs(out, runs)) if len(parts) > 2]
    stands = {}
    for src in glob.glob(os.path.join(out, BOUND_PATTERN)):
        folder = os.path.basename(os.path.dirname(src))
        standing = [parts for parts in selected if re.fullmatch(re.escape(folder) + r"(_s\d+)?", parts[2])]
        if standing and not _selected(folder, runs):
            _refuse_runs_of_another_training(out, src, ["/".join(parts) for parts in standing])
            stands[_norm(os.path.relpath(src, out))] = sorted({parts[1] for parts in standing})
    return stands


def _refuse_runs_of_another_training(out: str, bound_json: str, run_dirs: Sequence[str]) -> None:
    """A run is linked to the bound by its folder's name; where both name the training by hash (the
    fine-tuning's source_sha256, the bound's backbone_sha256), they must name the same one: a bound
    trained again after its fine-tunings ran would otherwise lend them its learnability.json."""
    trained = read_json(bound_json).get("backbone_sha256")
    for run_dir in run_dirs if trained else ():
        source = read_json(os.path.join(out, run_dir, "results.json")).get("source_sha256")
        if source and source != trained:
            raise RecordError(
                f"{os.path.join(out, run_dir)}: fine-tuned from a checkpoint with sha256 {source[:12]}…, but "
                f"{bound_json}, the bound its name stands on, saved {trained[:12]}…: the bound was trained again "
                f"after it ran. Nothing was recorded; fine-tune the bound again (objcrop pipeline refuses the "
                f"old folder: move it away first)")


# where and when a bound's training ran, not what it trained: a training repeated (same seed, same float
# kernels) differs from the first only in these keys of its learnability.json (and its final loss, below)
_CIRCUMSTANCES = ("code", "data", "device", "torch", "torch_threads")
# supervised_training.final_loss, the mean of the last 50 step losses, was taken in float64 (np.mean of
# Python floats) before be959b2 (2026-11-26) and in float32 since (torch's mean: a GPU run does not sync
# each step). One training gives the two within a float32 ulp or two: `study`'s bound, trained before that
# commit and again on 2026-12-07, repeated every probe figure to the last digit and its final loss one
# float32 ulp apart. So a few ulps are that rounding, not another training.
_FINAL_LOSS_REL_TOL = 1e-6


def same_training(a: Any, b: Any) -> bool:
    """Are two learnability.json values one training of the bound: equal in every key both hold but
    where, with which code and how long it ran (`_CIRCUMSTANCES`, supervised_training.train_seconds),
    with the final loss equal to within a few float32 ulps (`_FINAL_LOSS_REL_TOL`)? A key only one holds
    (backbone_sha256, written since 2026-12-07) says nothing either way."""
    def measured(value: Any, keys: set) -> Any:
        kept = {k: v for k, v in value.items() if k in keys and k not in _CIRCUMSTANCES}
        if isinstance(kept.get("supervised_training"), dict):
            kept["supervised_training"] = {k: v for k, v in kept["supervised_training"].items()
                                           if k not in ("train_seconds", "final_loss")}
        return kept

    def final_loss(value: Any) -> Any:
        training = value.get("supervised_training")
        return training.get("final_loss") if isinstance(training, dict) else None

    if not (isinstance(a, dict) and isinstance(b, dict)):
        return a == b
    common = set(a) & set(b)
    la, lb = final_loss(a), final_loss(b)
    losses_agree = (la == lb or (isinstance(la, float) and isinstance(lb, float)
                                 and math.isclose(la, lb, rel_tol=_FINAL_LOSS_REL_TOL)))
    return "supervised_mAP" in common and losses_agree and measured(a, common) == measured(b, common)


def _selected(run_dir: str, runs: Optional[Sequence[str]]) -> bool:
    """Is a run folder (relative to the output) one of `runs`' globs (None: every folder)?"""
    return runs is None or any(fnmatch.fnmatch(_norm(run_dir), g) for g in runs)


def _is_bound(rel: str) -> bool:
    """Is this record path a supervised bound's result (BOUND_PATTERN)?"""
    return fnmatch.fnmatch(_norm(rel), BOUND_PATTERN)


def _is_kept_as_file(rel: str) -> bool:
    return any(fnmatch.fnmatch(os.path.basename(rel), p) for p in FILE_PATTERNS)


class StudyRecord:
    """One study's record, compact (`record.json`) or legacy (a directory of copied files)."""

    def __init__(self, root: str, data: Optional[Dict[str, Any]] = None):
        self.root = root  # the record directory: pictures and legacy files lie below it
        self.data = data  # the compact record's content; None for a legacy directory

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str) -> "StudyRecord":
        """A record file, a directory holding record.json, a legacy record directory, or a directory
        that holds no record yet (a new compact record, written by the first `save_output`)."""
        if os.path.isfile(path):
            return cls(os.path.dirname(os.path.abspath(path)) or ".", record_file.load(path))
        compact = os.path.join(path, RECORD_FILE)
        if os.path.isfile(compact):
            return cls(path, record_file.load(compact))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ObjcropError(f"{path}: not a record file or directory")
        if os.path.isdir(path) and os.listdir(path) and _looks_legacy(path):
            return cls(path)
        return cls(path, record_file.empty())

    @property
    def compact(self) -> bool:
        return self.data is not None

    @property
    def path(self) -> str:
        """The record file (compact) or the record directory (legacy)."""
        return os.path.join(self.root, RECORD_FILE) if self.compact else self.root

    # ------------------------------------------------------------------ questions

    def results(self, relpath: str) -> Optional[dict]:
        """A run's results.json by its path in the output (`runs/pretrain/<name>/results.json`);
        None when the record does not hold it; a file that is there but unreadable raises."""
        if not self.compact:
            full = os.path.join(self.root, relpath)
            return read_json(full) if os.path.isfile(full) else None
        run = self._run(os.path.dirname(relpath))
        if os.path.basename(relpath) == "results.json" and run is not None:
            return run.get("results")
        value = self.data["files"].get(_norm(relpath))
        return value if isinstance(value, dict) else None

    def has(self, relpath: str) -> bool:
        """Does the record hold this file of the output (a run's results.json or config.yaml,
        `data/meta.json`, `supervised/learnability.json`, `extras/...`)?"""
        rel = _norm(relpath)
        if not self.compact or _is_kept_as_file(rel):
            return os.path.isfile(os.path.join(self.root, rel))
        if rel in self.data["files"]:
            return True
        run = self._run(os.path.dirname(rel))
        field = record_file.RUN_FIELDS.get(os.path.basename(rel))
        return run is not None and field is not None and run.get(field) is not None

    def run_keys(self) -> List[str]:
        """Every recorded run, as its directory in the output (`runs/probe/random_init_s0`), sorted."""
        if self.compact:
            return sorted(self.data["runs"])
        found = glob.glob(os.path.join(self.root, "runs", "**", "results.json"), recursive=True)
        return sorted(os.path.relpath(os.path.dirname(p), self.root).replace(os.sep, "/") for p in found)

    def config(self, run_key: str) -> Optional[dict]:
        """A run's merged config (its config.yaml) as a dict; None when not recorded or unreadable."""
        if self.compact:
            run = self._run(run_key)
            return None if run is None else run.get("config")
        return record_file.read_yaml(os.path.join(self.root, run_key, "config.yaml"))

    def metrics(self, run_key: str) -> List[Dict[str, Any]]:
        """A pretraining run's logged steps: iteration, epoch, loss and the pretext scores the
        report reads (the compact record keeps only those; a legacy one has the whole log)."""
        if self.compact:
            run = self._run(run_key)
            return record_file.metrics_rows(run.get("metrics")) if run else []
        return record_file.read_metrics_file(os.path.join(self.root, run_key, "metrics.jsonl"))

    def read(self, relpath: str) -> Optional[Any]:
        """Another recorded file: a .json file's content, else its text; None when absent."""
        rel = _norm(relpath)
        if self.compact and not _is_kept_as_file(rel):
            return record_file.file_value(self.data["files"].get(rel), rel)
        full = os.path.join(self.root, rel)
        if not os.path.isfile(full):
            return None
        if rel.endswith(".json"):
            return read_json(full)
        with open(full, "r", encoding="utf-8") as f:
            return f.read()

    def files(self, pattern: str) -> List[str]:
        """Recorded files (not runs) whose path matches a glob, e.g. `extras/views_*.json`, sorted."""
        if self.compact and not _is_kept_as_file(pattern):
            return sorted(rel for rel in self.data["files"] if fnmatch.fnmatchcase(rel, pattern))
        return sorted(os.path.relpath(p, self.root).replace(os.sep, "/")
                      for p in glob.glob(os.path.join(self.root, pattern)))

    def _run(self, run_key: str) -> Optional[Dict[str, Any]]:
        key = _norm(run_key)
        runs = self.data["runs"]
        return runs.get(key) or runs.get(self.data.get("renamed", {}).get(key, ""))

    # ------------------------------------------------------------------ writing

    def save_output(self, out_dir: str, runs: Optional[Sequence[str]] = None, replace: bool = False) -> List[str]:
        """Record the small result files of pipeline output `out_dir`. A run the record holds with
        status ok is replaced only by the same result (the same output recorded again) or with
        `replace`; anything else raises RecordError before a byte is written. `runs`: record only
        the runs matching these globs (see output_files). Returns the record paths written."""
        if not os.path.isdir(out_dir):
            raise ObjcropError(f"{out_dir}: no such pipeline output directory")
        sources = sorted(output_files(out_dir, runs))
        def is_run_file(rel: str) -> bool:
            return rel.startswith("runs" + os.sep) and os.path.basename(rel) in RUN_FILES

        found: Dict[str, Dict[str, str]] = {}
        for src, rel in filter(lambda s: is_run_file(s[1]), sources):
            found.setdefault(os.path.dirname(rel).replace(os.sep, "/"), {})[os.path.basename(rel)] = src
        entries = {key: record_file.run_entry(files) for key, files in found.items()}
        if not replace:  # checked before anything is written: a refused output leaves the record as it was
            bounds = {_norm(rel): record_file.read_file_value(src) for src, rel in sources if _is_bound(rel)}
            self._refuse_other_results(out_dir, entries, bounds)
            # a bound trained again that repeated the recorded training is that training: the first stays
            sources = [(src, rel) for src, rel in sources if not self._holds_a_repeat_of(_norm(rel), bounds)]
        if runs is not None:
            sources += self._draws_runs_stand_on(out_dir, runs)
        if not self.compact:
            for src, rel in sources:
                _copy(src, os.path.join(self.root, rel))
            return [rel for _, rel in sources]
        for src, rel in filter(lambda s: not is_run_file(s[1]), sources):
            if _is_kept_as_file(rel):
                _copy(src, os.path.join(self.root, rel))
            else:
                self.data["files"][_norm(rel)] = record_file.read_file_value(src)
        for key, entry in entries.items():
            self.data["runs"][key] = entry
            self.data.get("renamed", {}).pop(key, None)
        self.write()
        return [rel for _, rel in sources]

    def _draws_runs_stand_on(self, out_dir: str, runs: Sequence[str]) -> List[Tuple[str, str]]:
        """(source, record path) of the learnability.json of each bound the runs recorded with `runs` were
        fine-tuned or probed from (`bounds_of_runs`), so that the record says which training they stand
        on. At its own path where the record holds none; nothing where it holds the same training
        (`same_training`: repeated, only its wall time, place and the last bits of its final loss differ);
        else — the bound trained again, on another CPU or seed, for these runs — beside the first as a further draw,
        `<folder>_for_<stages>[_<n>]/learnability.json`, which the "Learnable?" line lists with its CPU."""
        kept = []
        for rel, stages in bounds_of_runs(out_dir, runs).items():
            src = os.path.join(out_dir, rel)
            value = record_file.read_file_value(src)
            draw = f"{os.path.dirname(rel)}_for_{'_'.join(stages)}"
            further = (f"{draw}{'' if n == 1 else f'_{n}'}/learnability.json" for n in itertools.count(1))
            for candidate in itertools.chain([rel], further):
                held = self.read(candidate)
                if held is None:
                    kept.append((src, candidate))
                if held is None or same_training(held, value):
                    break
        return kept

    def _holds_a_repeat_of(self, rel: str, bounds: Dict[str, Any]) -> bool:
        """Does the record hold bound `rel` as another copy of the same training as the output's
        (`same_training`: only where, when and how long it ran differ)?"""
        held = self.read(rel) if rel in bounds else None
        return held is not None and held != bounds[rel] and same_training(held, bounds[rel])

    def _refuse_other_results(self, out_dir: str, entries: Dict[str, Dict[str, Any]],
                              bounds: Optional[Dict[str, Any]] = None) -> None:
        """A recorded ok result is a measurement, and another one of the same run (a backbone trained
        again, a probe run again) must not overwrite it unnoticed: a registered run's record keeps its
        first training, the one its probe measured (docs/preregistration.md, detection). The supervised
        bound's learnability.json (`bounds`: record path -> the output's) is one too: trained again it is
        another draw (another seed or CPU), recorded beside the first (--supervised-seeds), never over it;
        unless it repeated the first (`same_training`), which is then kept as it is."""
        def other(key: str, entry: Dict[str, Any]) -> bool:
            held = self.results(f"{key}/results.json")
            return isinstance(held, dict) and held.get("status") == "ok" and held != entry["results"]

        others = sorted(k for k, e in entries.items() if other(k, e))
        held = {rel: self.read(rel) for rel in bounds or {}}
        others += sorted(rel for rel, value in (bounds or {}).items()
                         if held[rel] not in (None, value) and not same_training(held[rel], value))
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise RecordError(
                f"{out_dir}: {len(others)} result(s) that {self.path} holds with another value: {shown}. Nothing was "
                f"recorded. A second training or probe replaces the recorded one only with --replace; a backbone "
                f"trained again for its fine-tuning is recorded with --runs 'runs/detect_voc/*/*' (README)")

    def write(self) -> str:
        """Write the compact record atomically; returns its path."""
        return record_file.dump(self.path, self.data)


def holds_result(record, relpath: str, budget: Optional[Dict[str, Any]] = None) -> bool:
    """Does `record` (a StudyRecord, or anything with its results(), has() and config()) hold this
    result: a results.json with status ok (with `budget`, a fine-tuning's planned budget: one of that
    budget and schedule, `same_budget`), any other file at all? The pipeline's --records and the study
    page's "Not run yet" both ask it."""
    if relpath.endswith("results.json"):
        data = record.results(relpath)
        return (isinstance(data, dict) and data.get("status") == "ok"
                and (budget is None or same_budget(data, budget, recorded_solver(record, relpath))))
    return record.has(relpath)


def recorded_solver(record, relpath: str) -> Optional[Dict[str, Any]]:
    """The SOLVER the run that wrote `relpath` trained with (`solver_ran`: its results.json's schedule,
    else its recorded config's; None without either)."""
    config = record.config(os.path.dirname(_norm(relpath)))
    result = record.results(relpath) if relpath.endswith("results.json") else None
    return solver_ran(result, config.get("SOLVER") if isinstance(config, dict) else None)


def solver_ran(result: Any, config_solver: Any) -> Optional[Dict[str, Any]]:
    """The SOLVER (MAX_ITER, IMS_PER_BATCH, BASE_LR, STEPS, WARMUP_ITERS) a fine-tuning trained with: from
    its results.json alone when it carries its `schedule` (detection/results.py, written since
    2026-12-07), else its config's SOLVER section (`config_solver`), else None. Either is after
    world-size scaling, so both give the same answer where both exist."""
    schedule = result.get("schedule") if isinstance(result, dict) else None
    if isinstance(schedule, dict) and {"base_lr", "steps", "warmup_iters"} <= set(schedule):
        return {"MAX_ITER": result.get("iterations"), "IMS_PER_BATCH": result.get("ims_per_batch"),
                "BASE_LR": schedule["base_lr"], "STEPS": schedule["steps"], "WARMUP_ITERS": schedule["warmup_iters"]}
    return config_solver if isinstance(config_solver, dict) else None


def holds_all(record, relpaths: Sequence[str], budget: Optional[Dict[str, Any]] = None) -> bool:
    """Does `record` hold every one of a task's result files (`holds_result`, at `budget` if given)?"""
    return all(holds_result(record, r, budget) for r in relpaths)


def held_at_other_budget(record, relpaths: Sequence[str], budget: Optional[Dict[str, Any]]) -> bool:
    """Does `record` hold a fine-tuning's results, but at another budget than `budget`, the one it
    plans now? Another experiment: the tables keep it, a rerun fine-tunes it again."""
    return bool(budget) and holds_all(record, relpaths) and not holds_all(record, relpaths, budget)


def same_budget(result: Dict[str, Any], budget: Dict[str, Any], solver: Optional[Dict[str, Any]] = None) -> bool:
    """Did this detection results.json train on the images `budget` plans ({"iterations",
    "ims_per_batch"} of its config, before scaling), with its schedule (`same_schedule`; `solver`: the
    run's recorded SOLVER)? Images seen (iterations x images per batch) is what the linear scaling rule
    keeps when another world size runs the config, so it is compared, within one recorded batch (scaled
    iterations are rounded). A result that does not say is not taken for any budget."""
    its, ims = result.get("iterations"), result.get("ims_per_batch")
    if not (is_count(its) and is_count(ims)):
        return False
    return same_images_seen(its, ims, budget["iterations"], budget["ims_per_batch"]) and same_schedule(solver, budget)


def is_count(value: Any) -> bool:
    """A whole number as results.json holds one (iterations, images per batch): not a bool, not a float."""
    return isinstance(value, int) and not isinstance(value, bool)


def same_images_seen(recorded_iters: int, recorded_ims: int, planned_iters: int, planned_ims: int) -> bool:
    """As many images by this iteration as planned, within one recorded batch (scaled iterations are rounded)."""
    return abs(recorded_iters * recorded_ims - planned_iters * planned_ims) <= recorded_ims


def planned_budget(solver) -> Dict[str, Any]:
    """What a fine-tuning config's SOLVER (before world-size scaling) plans: the budget ("iterations",
    "ims_per_batch") and the schedule ("base_lr", "steps", "warmup_iters")."""
    return {"iterations": int(solver["MAX_ITER"]), "ims_per_batch": int(solver["IMS_PER_BATCH"]),
            "base_lr": float(solver["BASE_LR"]), "steps": [int(x) for x in solver["STEPS"]],
            "warmup_iters": int(solver["WARMUP_ITERS"])}


def same_schedule(solver: Optional[Dict[str, Any]], budget: Dict[str, Any]) -> bool:
    """Did a fine-tuning whose recorded config has this SOLVER follow the schedule `budget` plans: the
    same learning rate per image, and its steps and warmup after the same number of images (within one
    recorded batch)? That is what the linear scaling rule keeps on another world size (detection/
    config.py: lr with the batch, steps and warmup against it). Two fine-tunings of one length at two
    learning rates are two experiments. A budget without a schedule (a plan.json written before it was
    planned) asks for the images only; a run whose config the record lacks cannot show its schedule."""
    if "base_lr" not in budget:
        return True
    try:
        ran = planned_budget(solver)
    except (KeyError, TypeError, ValueError):
        return False
    ims, planned_ims = ran["ims_per_batch"], budget["ims_per_batch"]

    def same_images(recorded_iters: int, planned_iters: int) -> bool:
        return same_images_seen(recorded_iters, ims, planned_iters, planned_ims)

    return (math.isclose(ran["base_lr"] / ims, budget["base_lr"] / planned_ims, rel_tol=1e-6)
            and len(ran["steps"]) == len(budget["steps"]) and all(map(same_images, ran["steps"], budget["steps"]))
            and same_images(ran["warmup_iters"], budget["warmup_iters"]))


def recorded_budget(result: Dict[str, Any], solver: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The budget and schedule a recorded fine-tuning ran (its results.json, its config's SOLVER), as
    `planned_budget` words them; the schedule is left out where the record lacks the config."""
    budget = {"iterations": result.get("iterations"), "ims_per_batch": result.get("ims_per_batch")}
    try:
        return {**planned_budget(solver), **budget}
    except (KeyError, TypeError, ValueError):
        return budget


def budget_words(budget: Dict[str, Any]) -> str:
    """A budget as a sentence's words: "500 iterations of 4 images (lr 0.02, steps 400, warmup 30)"."""
    words = f"{budget['iterations']} iterations of {budget['ims_per_batch']} images"
    if "base_lr" in budget:
        steps = " ".join(str(s) for s in budget["steps"]) or "none"
        words += f" (lr {budget['base_lr']:g}, steps {steps}, warmup {budget['warmup_iters']})"
    return words


def _norm(relpath: str) -> str:
    return os.path.normpath(relpath).replace(os.sep, "/")


def _copy(src: str, dst: str) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _looks_legacy(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, d)) for d in ("runs", "data", "supervised", "extras", "logs"))
