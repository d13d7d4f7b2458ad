"""objcrop.pipeline: the whole benchmark as a graph of stage commands (`objcrop pipeline`).

    presets.py   eval_configs/pipeline/<preset>.yaml: loading, overrides, `{out}` placeholders, run list
    naming.py    a pretraining run's --opts and its name (objcrop.records.run_name of its merged config)
    plan.py      preset -> task graph (data, proposals, pretrain, probe, convert, detect, report)
    tasks.py     Task: one stage command, its output checks, its argv; stage selection
    freshness.py is a probe, a converted .pkl, a fine-tuning still of its checkpoint as it is now (sha256)?
    recorded.py  --records: the tasks a record of earlier results lets a run skip
    preflight.py what this machine would refuse (CPU bf16, CUDA, more processes than GPUs, nodes), up front
    local.py     Pipeline: skipping, logs, the local scheduler (--jobs, --keep-going)
    slurm.py     --launcher slurm / submitit-local
    lock.py      one pipeline per output folder: OUT/.objcrop-pipeline.lock, a stale one taken over
    cli.py       the options (each with an environment variable) and main()

The stages are driven through their CLIs only (each task is a process); the pipeline imports
objcrop's core (records, config) and objcrop.pretrain's config defaults to name runs (and, in
preflight.py, its CPU bf16 check, to refuse up front what a stage would refuse; in freshness.py,
objcrop.convert's restricted .pkl reader, to read which checkpoint a .pkl was converted from).
docs/ARCHITECTURE.md places it: above every stage, depended on by none.
"""
from objcrop.pipeline.cli import build_parser, main, planned_results
from objcrop.pipeline.local import Pipeline
from objcrop.pipeline.plan import build_plan
from objcrop.pipeline.presets import PipelineError, RunSpec, apply_overrides, load_preset, pretrain_specs
from objcrop.pipeline.recorded import open_record, recorded_tasks
from objcrop.pipeline.slurm import cluster_shell_command
from objcrop.pipeline.tasks import STAGE_ORDER, Task, objcrop_argv, result_recorded, select_stages, select_targets

__all__ = ["build_parser", "main", "planned_results", "Pipeline", "build_plan", "PipelineError", "RunSpec",
           "apply_overrides", "load_preset", "pretrain_specs", "open_record", "recorded_tasks", "cluster_shell_command",
           "STAGE_ORDER", "Task", "objcrop_argv", "result_recorded", "select_stages", "select_targets"]
