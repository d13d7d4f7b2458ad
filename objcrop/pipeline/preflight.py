"""What this machine would refuse, found before a local run starts anything.

`objcrop pretrain` refuses bf16 autocast on a CPU without native bf16 (PRETRAIN.AMP_CPU,
objcrop.pretrain.engine.optim.build_optimisation): emulated there, it is slower than float32. Found
only when the task starts, that refusal comes after the stages before it, possibly hours into a
run; the pipeline reads each pretraining task's merged config instead and refuses the run at once,
naming the tasks and the ways out.
"""
from typing import List

from objcrop.errors import ConfigError
from objcrop.pipeline.presets import PipelineError
from objcrop.pipeline.tasks import Task


def refused_on_this_cpu(tasks: List[Task]) -> List[str]:
    """The `objcrop pretrain` tasks among `tasks` that would run under bf16 autocast on this machine's
    CPU, which has no native bf16; none where it has (or where they run on CUDA). torch is imported
    only when some task asks for bf16 on the CPU: planning imports none."""
    pretrainings = [t for t in tasks if t.stage == "pretrain" and t.cmd[:1] == ["pretrain"]]
    asking = [(t, device) for t in pretrainings for device in [_asks_for_cpu_bf16(t)] if device]
    if not asking:
        return []
    import torch

    from objcrop.pretrain.engine.optim import cpu_has_native_bf16

    if cpu_has_native_bf16():
        return []
    return [t.name for t, device in asking if device == "cpu" or not torch.cuda.is_available()]


def _asks_for_cpu_bf16(task: Task) -> str:
    """Its PRETRAIN.DEVICE ("auto" or "cpu") when this pretraining task's config (after its --opts) asks
    for bf16 autocast on the CPU; "" when it does not, or runs on CUDA only."""
    from objcrop.config import merge_config
    from objcrop.pretrain.config import get_pretrain_cfg

    config_file = task.cmd[task.cmd.index("--config-file") + 1] if "--config-file" in task.cmd else None
    opts = task.cmd[task.cmd.index("--opts") + 1:] if "--opts" in task.cmd else []
    try:
        p = merge_config(get_pretrain_cfg, config_file, opts).PRETRAIN
    except ConfigError as e:
        raise PipelineError(f"{task.name}: {e}") from e
    return p.DEVICE if p.DEVICE != "cuda" and bool(p.AMP) and bool(p.AMP_CPU) else ""


def refusal_on_this_cpu(tasks: List[Task]) -> str:
    """Why this machine cannot run some of `tasks` (naming them, and what to do instead); "" when it can."""
    refused = refused_on_this_cpu(tasks)
    if not refused:
        return ""
    return (f"{len(refused)} pretraining task(s) cannot run on this machine: {', '.join(refused)}. Their config "
            "asks for bf16 autocast on the CPU (PRETRAIN.AMP_CPU), and this CPU has no native bf16 (neither AMX "
            "nor AVX512-BF16), so objcrop pretrain would refuse them. Run them on a CPU with native bf16 or on a "
            "GPU, or leave their rows out (--tags, --seeds, --stages); PRETRAIN.AMP_CPU False would train them in "
            "float32, another recipe than the one their row names")
