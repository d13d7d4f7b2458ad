"""`--launcher slurm`: every task submitted through submitit with `afterok` dependencies
(multi-node pretraining via torchrun, detection via detectron2's launch); `--launcher
submitit-local`: the same with submitit's local executor (one machine, dependencies waited for
here), which is how it is tested.
"""
import os
import shlex
import sys
from typing import Any, Dict, List

from objcrop.pipeline import tasks as tasks_mod
from objcrop.pipeline.presets import PipelineError
from objcrop.pipeline.tasks import Task


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
        # torch would start one thread per core of the node; a job owns only the CPUs SLURM gave it
        'if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export OMP_NUM_THREADS="$SLURM_CPUS_PER_TASK"; fi',
        f"cd {q(tasks_mod.REPO)}",
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


def run_submitit(pipeline, todo: List[Task]) -> int:
    """Submit `todo` in plan order (a Pipeline says, logs and fails); 0 when all went well."""
    try:
        import submitit
    except ImportError as e:
        raise PipelineError("--launcher slurm needs the submitit package (pip install submitit)") from e
    folder = os.path.join(pipeline.out, "submitit")
    jobs: Dict[str, Any] = {}
    by_name = {t.name: t for t in todo}
    for t in todo:
        if pipeline.launcher == "submitit-local":
            # the local executor has no dependencies: wait for this task's before submitting it
            for d in t.deps:
                if d in jobs and not _wait(pipeline, by_name[d], jobs[d]):
                    return pipeline.fail(by_name[d], "its submitit job failed")
            executor = submitit.LocalExecutor(folder=folder)
            executor.update_parameters(timeout_min=t.timeout_min, gpus_per_node=t.gpus, tasks_per_node=1, nodes=1)
        else:
            executor = _slurm_executor(submitit, folder, pipeline.slurm, t, [jobs[d].job_id for d in t.deps if d in jobs])
        try:
            jobs[t.name] = _submit(submitit, executor, t, pipeline.log_path(t), len(jobs))
        except PipelineError:
            _cancel(pipeline, jobs)  # they would wait on a dependency that will never be submitted
            raise
        pipeline.say(f"submitted {t.name} as job {jobs[t.name].job_id} (log: {pipeline.log_path(t)})")
    if pipeline.launcher == "slurm" and not pipeline.wait:
        pipeline.say(f"submitted {len(jobs)} SLURM jobs (afterok dependencies); job files in {folder}. "
                     "Rerun the same command later: finished stages are skipped, failed ones resubmitted; "
                     "or pass --wait to block until the last job ends.")
        return 0
    for t in todo:
        if not _wait(pipeline, t, jobs[t.name]):
            return pipeline.fail(t, "its submitit job failed")
    return 0


def _slurm_executor(submitit, folder: str, slurm: Dict[str, Any], t: Task, after: List[str]):
    try:
        executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as e:  # submitit: srun not found
        raise PipelineError(f"--launcher slurm: {e} (use --launcher local on a single machine)") from e
    params = dict(slurm)
    if after:
        params["dependency"] = "afterok:" + ":".join(after)
    executor.update_parameters(job_name=f"objcrop.{t.name}", time=t.timeout_min, nodes=t.nodes,
                               ntasks_per_node=1, gpus_per_node=t.gpus or None, **params)
    return executor


def _cancel(pipeline, jobs: Dict[str, Any]) -> None:
    for name, job in jobs.items():
        try:
            job.cancel(check=False)
            pipeline.say(f"cancelled job {job.job_id} ({name}): a later task could not be submitted")
        except Exception as e:  # noqa: BLE001 - a job that already ended cannot be cancelled; say so and go on
            pipeline.say(f"could not cancel job {job.job_id} ({name}): {e}")


def _submit(submitit, executor, t: Task, log: str, submitted: int):
    command = ["bash", "-c", cluster_shell_command(t, log)]
    try:
        return executor.submit(submitit.helpers.CommandFunction(command, cwd=tasks_mod.REPO, verbose=False))
    except Exception as e:  # sbatch refused it (bad partition, account, limits): nothing after it can run
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(f"submitting {t.name} failed: {first}"
                            + (f" ({submitted} earlier job(s) cancelled)" if submitted else "")) from e


def _wait(pipeline, task: Task, job) -> bool:
    """Wait for a job; True when it ended and the task's outputs are complete (remembered per job)."""
    if getattr(job, "_objcrop_ok", None) is not None:
        return job._objcrop_ok
    try:
        job.result()
        ok = task.outputs_complete()
        if ok:
            pipeline.say(f"done {task.name} (job {job.job_id})")
        else:
            pipeline.say(f"job {job.job_id} of {task.name} ended but its outputs are incomplete: "
                         + ", ".join(task.incomplete_outputs()))
    except Exception as e:  # submitit raises FailedJobError (or UncompletedJobError) with the job's stderr
        pipeline.say(f"job {job.job_id} of {task.name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        ok = False
    job._objcrop_ok = ok
    return ok
