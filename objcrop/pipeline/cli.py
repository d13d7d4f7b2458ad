"""`objcrop pipeline` (also `python -m objcrop.pipeline` and scripts/run_pipeline.sh): options, each
with an environment-variable default, and the run from preset to report."""
import argparse
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from objcrop.io import remove_stale_temp_files
from objcrop.pipeline.local import PROG, Pipeline
from objcrop.pipeline.lock import LOCK_NAME, held
from objcrop.pipeline.plan import build_plan
from objcrop.pipeline.presets import PipelineError, apply_overrides, load_preset, words
from objcrop.pipeline.recorded import (accumulated, detection_budget, held_at_another_budget, open_record,
                                      recorded_tasks)
from objcrop.pipeline.tasks import STAGE_ORDER, select_stages, select_targets

LAUNCHERS = ["local", "slurm", "submitit-local"]

DESCRIPTION = f"""\
The full objcrop pipeline as a graph of stage commands, run locally or through submitit:

    data → proposals → pretrain (method × policy × proposals × seed) → probe
                                                                      → convert → detect (VOC, COCO) × seed
                                                                                              → report

Beside them run the reference rows a preset lists: `probe.references` (a random-init backbone, and the
`supervised` task's backbone trained with labels on the same images) and `detection.references`
(fine-tuning from scratch in the same config, every layer trained, and from the supervised backbone
converted), for every detection task and seed; the report reads every row between them ("gap closed").

Every task is one `objcrop <stage> …` command with its own log (OUT/logs/<task>.log) and a check of
its outputs. A task whose outputs are complete is skipped, so a rerun continues where the last run
stopped; pretraining always runs with --resume. A probe, a converted .pkl and a fine-tuning are complete
only while they come from their checkpoint as it is now (its sha256): a backbone trained again is
converted again, and a probe or fine-tuning folder holding the earlier training's result is refused,
never overwritten.
The first failing task stops the pipeline with its
name and log path. Pretraining runs are named by objcrop.records.run_name
(method_policy[-tag]_proposals_arch_b<batch>_e<epochs>_<data>_s<seed>), as `objcrop pretrain` names them.

One pipeline per output folder: a run holds OUT/{LOCK_NAME} (pid, host, start, command) while it
plans, runs or submits, and a second one on the same OUT is refused with the holder's name. The lock of
a pipeline killed on this host (kill -9, a crash) is recognised as stale, reported and taken over, and
the temporary files its stages left half-written (.NAME.<pid>@<host>.*.tmp) are removed. A lock from
another host cannot be checked from here: remove it by hand once that pipeline is gone. With --launcher slurm
the lock is held by this process, the one that submits: without --wait, only until the jobs are submitted."""


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION,
        epilog="Every option also reads an environment variable (shown in brackets); flags win.\n"
               "Presets live in eval_configs/pipeline/ (demo, paper, tiny, study*); a path to your own YAML works too.\n"
               "Logs: OUT/logs/pipeline.log and OUT/logs/<task>.log. The report ends up in OUT/report/results.md.")
    p.add_argument("--preset", default=env("OBJCROP_PRESET", "demo"),
                   help="demo (embedded data, CPU), paper (real data under $DETECTRON2_DATASETS, GPUs), tiny "
                        "(the test's seconds-long run), or a YAML path [OBJCROP_PRESET; default demo]")
    p.add_argument("--out", default=env("OBJCROP_OUT"),
                   help="output directory [OBJCROP_OUT; default output/pipeline_<preset>]")
    p.add_argument("--policies", default=env("OBJCROP_POLICIES"),
                   help='view policies, e.g. "random obj-obj-dilate"; on a preset with pretrain.runs, only the runs '
                        'with these policies [OBJCROP_POLICIES; default from the preset]')
    p.add_argument("--methods", default=env("OBJCROP_METHODS"),
                   help='SSL methods, e.g. "moco_v2 byol"; on a preset with pretrain.runs, only the runs with these '
                        'methods (a run without `method` is moco_v2) [OBJCROP_METHODS; default from the preset]')
    p.add_argument("--proposals", default=env("OBJCROP_PROPOSALS"),
                   help='proposal sources for object-aware policies, e.g. "gt selective-search"; on a preset '
                        'with pretrain.runs, only the runs on these sources (and the random-crop runs); '
                        '"none": only the random-crop runs [OBJCROP_PROPOSALS]')
    p.add_argument("--seeds", default=env("OBJCROP_SEEDS"),
                   help='pretraining seeds, e.g. "0 1"; a run of pretrain.runs that lists its own seeds keeps '
                        'only those among them, and is left out if none is (a selection that leaves no run is '
                        'an error); on a preset with pretrain.runs '
                        'the random-init reference probes keep the preset\'s seeds [OBJCROP_SEEDS]')
    p.add_argument("--tags", default=env("OBJCROP_TAGS"),
                   help='only the runs of pretrain.runs with these tags (their report rows), e.g. "b256-100e"; '
                        '"-" stands for the untagged runs; reference rows run as usual [OBJCROP_TAGS; default all]')
    p.add_argument("--no-references", dest="references", action="store_false",
                   default=env("OBJCROP_NO_REFERENCES", "") in ("", "0"),
                   help="leave out the preset's reference rows (the random-init and supervised probes, the supervised "
                        "backbone's training, the scratch and supervised fine-tunings): only the pretraining runs "
                        "and what follows from them, e.g. a registered seed whose references are recorded later "
                        "or elsewhere [OBJCROP_NO_REFERENCES]")
    p.add_argument("--references-only", action="store_true",
                   default=env("OBJCROP_REFERENCES_ONLY", "") not in ("", "0"),
                   help="the preset's reference rows alone (the data, the supervised backbone's training, the "
                        "random-init and supervised probes, the scratch and supervised fine-tunings): no pretraining "
                        "run, e.g. a reference row trained again or with more seeds (--det-seeds, "
                        "--supervised-seeds) beside a record of the runs [OBJCROP_REFERENCES_ONLY]")
    p.add_argument("--supervised-seeds", default=env("OBJCROP_SUPERVISED_SEEDS"),
                   help='the supervised bound trained again with each of these seeds, e.g. "0 1 2", each into '
                        'OUT/supervised_seed<K>/ (benchmarks/learnability.py --seed K: its json and backbone): '
                        'each probed, converted and fine-tuned like the preset\'s model (probe.supervised_seed<K>_s0, '
                        'detect.<task>.supervised_seed<K>.seed<k>): the bound\'s own spread in the supervised row '
                        '[OBJCROP_SUPERVISED_SEEDS; default: the preset\'s supervised.seeds, else none]')
    p.add_argument("--det-seeds", default=env("OBJCROP_DET_SEEDS"),
                   help='detection fine-tuning seeds per checkpoint, e.g. "0 1 2" [OBJCROP_DET_SEEDS]')
    p.add_argument("--det-tasks", default=env("OBJCROP_DET_TASKS"),
                   help='detection benchmarks of the preset to run, e.g. "voc" [OBJCROP_DET_TASKS; default all]')
    p.add_argument("--gpus", type=int, default=env("OBJCROP_GPUS"),
                   help="GPUs per node for pretraining and detection, one process each; 0 = CPU (a local run this "
                        "machine cannot hold stops before it starts) [OBJCROP_GPUS; default from the preset]")
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
    p.add_argument("--tasks", default=env("OBJCROP_TASKS"),
                   help='run only the tasks named like these shell globs and the tasks they need, like make '
                        'TARGET, e.g. "detect.coco.supervised_seed*" (a reference row trained again with some seeds, '
                        'not the preset\'s own bound); --dry-run lists the names; --stages and --records apply '
                        'within them [OBJCROP_TASKS]')
    p.add_argument("--jobs", type=int, default=env("OBJCROP_JOBS"),
                   help="local launcher: run up to this many independent tasks at once, the CPU threads split "
                        "between the tasks running side by side (OMP_NUM_THREADS = cores / tasks, unless set) "
                        "[OBJCROP_JOBS; default: the preset's `jobs`, else 1]")
    p.add_argument("--loader-workers", type=int, default=env("OBJCROP_LOADER_WORKERS"),
                   help="DataLoader workers of every pretraining run (DATA.NUM_WORKERS), e.g. 4 on a GPU machine "
                        "whose cores must keep up with the GPU. An execution setting: the run computes the same "
                        "weights (pretrain.engine.results.EXECUTION_ONLY_KEYS) and keeps its name, so a study's "
                        "seeds may use different values [OBJCROP_LOADER_WORKERS; default: the run's config]")
    p.add_argument("--wait", action="store_true",
                   help="slurm launcher: stay until the last job has ended (default: submit and return)")
    p.add_argument("--records", default=env("OBJCROP_RECORDS"),
                   help="a record of earlier runs' results (a study record, e.g. docs/results/study: the small "
                        "result files, no checkpoints): tasks whose results it holds are not run again, unless a "
                        "task that runs needs their outputs; a fine-tuning counts only at the budget its config "
                        "plans now (iterations x images per batch) [OBJCROP_RECORDS]")
    p.add_argument("--keep-going", action="store_true", default=env("OBJCROP_KEEP_GOING", "") not in ("", "0"),
                   help="local launcher: after a failed task, go on with every task that does not need it (like "
                        "make -k) instead of stopping; the exit status still says that one failed [OBJCROP_KEEP_GOING]")
    p.add_argument("--dry-run", action="store_true", help="print what would run and what is skipped, run nothing")
    return p


def prepare(args: argparse.Namespace):
    """(preset name, preset, out, tasks, pipeline) from the parsed options; PipelineError on bad input."""
    preset = apply_overrides(load_preset(args.preset), args)
    name = os.path.splitext(os.path.basename(preset["_path"]))[0]
    out = os.path.abspath(args.out or os.path.join("output", f"pipeline_{name}"))
    tasks = select_targets(build_plan(preset, out), words(args.tasks) or None)
    stages = words(args.stages) or None
    record = open_record(args.records) if args.records else None
    recorded = recorded_tasks(tasks, out, record, stages) if record is not None else set()
    held = accumulated(tasks, out, record) if record is not None else set()
    again = held_at_another_budget(tasks, out, record) if record is not None else {}
    tasks = select_stages(tasks, stages, recorded)
    slurm = {k: v for k, v in (("partition", args.slurm_partition), ("account", args.slurm_account)) if v}
    pipeline = Pipeline(tasks, out, args.launcher, args.dry_run, slurm, wait=args.wait, jobs=jobs_of(args, preset),
                        recorded=recorded, records=args.records or "", keep_going=args.keep_going, accumulated=held,
                        run_again=again)
    return name, preset, out, tasks, pipeline


def jobs_of(args: argparse.Namespace, preset: dict) -> int:
    """--jobs (or OBJCROP_JOBS), else the preset's `jobs`, else 1: how many tasks run side by side."""
    value = args.jobs if args.jobs is not None else preset.get("jobs", 1)
    try:
        jobs = int(value)
    except (TypeError, ValueError):
        jobs = 0
    if jobs < 1:
        where = "--jobs/OBJCROP_JOBS" if args.jobs is not None else f"{preset['_path']}: jobs"
        raise PipelineError(f"{where} = {value!r}: expected a whole number >= 1")
    return jobs


def planned_results(preset: str, pipeline_args: Sequence[str], out: str) -> List[Dict[str, Any]]:
    """The tasks `objcrop pipeline --preset PRESET PIPELINE_ARGS --out OUT` plans, each as its name, stage
    and result files relative to OUT (a fine-tuning also with its budget): the form of a record's
    plan.json (scripts/study_extras.py), and what the study page reads a record against, with the
    preset as it is now."""
    args = build_parser().parse_args(["--preset", preset, *pipeline_args])
    return [_planned(t, out) for t in build_plan(apply_overrides(load_preset(preset), args), out)]


def _planned(task, out: str) -> Dict[str, Any]:
    """A task as plan.json has it; a fine-tuning with its budget, so that a result of another
    budget is not read as this task's."""
    entry = {"name": task.name, "stage": task.stage, "results": [os.path.relpath(r, out) for r in task.results]}
    budget = detection_budget(task)
    if budget:
        entry["budget"] = budget
    return entry


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        name, preset, out, tasks, pipeline = prepare(args)
    except PipelineError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:  # changes nothing, so it needs no lock (and may look at a folder in use)
        return _run(args, name, preset, out, tasks, pipeline)
    try:
        with held(out, f"{PROG} {shlex.join(sys.argv[1:] if argv is None else argv)}") as lock:
            if lock.stale:
                pipeline.say(f"warning: {lock.stale}")
            _remove_stale_temp_files(pipeline, out)
            return _run(args, name, preset, out, tasks, pipeline)
    except PipelineError as e:  # the folder is locked by a live pipeline
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGINT/SIGTERM outside the run itself (the lock is released)
        return 130


def _remove_stale_temp_files(pipeline: Pipeline, out: str) -> None:
    """A dead writer's temporary file is a leftover (a live one's, e.g. an earlier submission's job, is kept)."""
    removed = remove_stale_temp_files(out)
    if removed:
        pipeline.say(f"removed {len(removed)} temporary file(s) or folder(s) left by killed writers, "
                     f"e.g. {removed[0]}")


def _run(args: argparse.Namespace, name: str, preset, out: str, tasks, pipeline: Pipeline) -> int:
    start = time.time()
    pipeline.say(f"preset {name} ({preset['_path']})")
    try:
        rc = pipeline.run()
    except KeyboardInterrupt:
        pipeline.say("interrupted; rerun the same command to continue where it stopped")
        return 130
    except PipelineError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
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
