"""What this machine would refuse, found before a local run starts anything.

Found only when a task starts, a refusal comes after the stages before it, possibly hours into a
run. The pipeline checks the plan first and refuses the run at once, naming the tasks and the ways out:

* bf16 autocast on a CPU without native bf16 (PRETRAIN.AMP_CPU): `objcrop pretrain` refuses it
  (objcrop.pretrain.engine.optim.build_optimisation), as emulated bf16 is slower than float32;
* more processes per task than this machine has CUDA devices (`--gpus N`, N > 1): each would ask
  for a device that is not there, and `objcrop detect train` refuses several processes on the CPU
  (detection/train_net.py) — after the pretrainings have run, multi-process, on the CPU (which they
  may: without any GPU, pretraining's processes train on the CPU with gloo);
* a pretraining whose config asks for CUDA (PRETRAIN.DEVICE cuda) on a machine without it;
* several nodes (`--nodes`) with a launcher that runs every task on this one machine.

`--gpus 1` on a machine without CUDA is not refused: every stage falls back to the CPU, as it
does without the option.
"""
from typing import List, Optional, Tuple

from objcrop.errors import ConfigError
from objcrop.pipeline.presets import PipelineError
from objcrop.pipeline.tasks import Task, config_and_opts


Settings = List[Tuple[Task, object]]  # (an `objcrop pretrain` task, its merged PRETRAIN section)


def refused_on_this_cpu(tasks: List[Task], settings: Optional[Settings] = None) -> List[str]:
    """The `objcrop pretrain` tasks among `tasks` that would run under bf16 autocast on this machine's
    CPU, which has no native bf16; none where it has (or where they run on CUDA). torch is imported
    only when some task asks for bf16 on the CPU: planning imports none."""
    settings = pretrain_settings(tasks) if settings is None else settings
    asking = [(t, p.DEVICE) for t, p in settings if p.DEVICE != "cuda" and p.AMP and p.AMP_CPU]
    if not asking:
        return []
    from objcrop.pretrain.engine.optim import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return []
    return [t.name for t, device in asking if device == "cpu" or not cuda_devices()]


def refused_without_cuda(tasks: List[Task], settings: Optional[Settings] = None) -> List[str]:
    """The `objcrop pretrain` tasks whose config asks for CUDA (PRETRAIN.DEVICE cuda) on a machine
    without it (pretrain/distributed.py refuses them when they start)."""
    settings = pretrain_settings(tasks) if settings is None else settings
    asking = [t.name for t, p in settings if p.DEVICE == "cuda"]
    return asking if asking and not cuda_devices() else []


def pretrain_settings(tasks: List[Task]) -> Settings:
    """Each `objcrop pretrain` task with its PRETRAIN config section: its config after its --opts."""
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    out = []
    for t in tasks:
        if t.stage != "pretrain" or t.cmd[:1] != ["pretrain"]:
            continue  # the supervised bound is a script of its own
        config_file, opts = config_and_opts(t)
        try:
            out.append((t, merge_config(get_pretrain_cfg, config_file, opts).PRETRAIN))
        except ConfigError as e:
            raise PipelineError(f"{t.name}: {e}") from e
    return out


def short_of_gpus(tasks: List[Task], have: int) -> List[Task]:
    """The tasks whose processes (`gpus` of them, more than one) this machine with `have` CUDA devices
    cannot run: a fine-tuning needs one GPU per process (detectron2's trainer runs several only on
    GPUs); a pretraining too, unless there is no GPU at all (then its processes train on the CPU, gloo)."""
    return [t for t in tasks if t.gpus > 1 and t.gpus > have and (t.stage == "detect" or have > 0)]


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def refusal_on_this_machine(tasks: List[Task], launcher: str = "local") -> str:
    """Why this machine cannot run some of `tasks` with `launcher` (naming them, and what to do
    instead); "" when it can. SLURM jobs run on other machines: not this one's to refuse."""
    if launcher == "slurm":
        return ""
    why = []
    multi_node = [t for t in tasks if t.nodes > 1]
    if multi_node:
        why.append(f"{len(multi_node)} task(s) ask for {max(t.nodes for t in multi_node)} nodes, and the {launcher} "
                   f"launcher runs every task on this one machine: {_listed([t.name for t in multi_node])}. Submit "
                   "them with --launcher slurm, or leave --nodes at 1")
    # torch is imported only when some task asks for several processes: planning imports none
    have = cuda_devices() if any(t.gpus > 1 for t in tasks) else 0
    gpu_short = short_of_gpus(tasks, have)
    if gpu_short:
        why.append(f"{len(gpu_short)} task(s) ask for {max(t.gpus for t in gpu_short)} processes, one per GPU, and "
                   f"this machine has {have} CUDA device(s): {_listed([t.name for t in gpu_short])}. Pass --gpus "
                   f"{max(have, 1)}, or run them where the GPUs are (--stages, --launcher slurm); without GPUs, only "
                   "pretraining runs several processes (on the CPU)")
    settings = pretrain_settings(tasks)  # each pretraining's config, merged once for the checks below
    cuda_only = refused_without_cuda(tasks, settings)
    if cuda_only:
        why.append(f"{len(cuda_only)} pretraining task(s) ask for CUDA (PRETRAIN.DEVICE cuda), and this machine has "
                   f"none: {_listed(cuda_only)}. Run them where a GPU is, or set PRETRAIN.DEVICE auto")
    refused = refused_on_this_cpu(tasks, settings)
    if refused:
        why.append(f"{len(refused)} pretraining task(s) cannot run on this machine: {', '.join(refused)}. Their "
                   "config asks for bf16 autocast on the CPU (PRETRAIN.AMP_CPU), and this CPU has no native bf16 "
                   "(neither AMX nor AVX512-BF16), so objcrop pretrain would refuse them. Run them on a CPU with "
                   "native bf16 or on a GPU, or leave their rows out (--tags, --seeds, --stages); "
                   "PRETRAIN.AMP_CPU False would train them in float32, another recipe than the one their row names")
    return "; and ".join(why)


def _listed(names: List[str], shown: int = 3) -> str:
    """A few of the tasks' names, and how many more (a plan has hundreds of tasks)."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")
