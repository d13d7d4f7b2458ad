"""Process-group helpers: torchrun's environment, gathers for shuffle-BN, averaged scalars.

It sits below both the engine and the methods (MoCo-v2's shuffle-BN gathers keys with it), so the
imports point one way: engine -> methods -> models / distributed, and nothing here imports either.

Everything works in a single process without a process group (world size 1), so the same
trainer code runs under `torchrun` (DDP, gloo on CPU, nccl on GPU, one or many nodes) and alone.
"""
import collections
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment (nccl on GPU, gloo on CPU).

    `device`: "auto" (cuda when available), "cpu" or "cuda". Without torchrun: world size 1.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        from objcrop.errors import ConfigError

        raise ConfigError("PRETRAIN.DEVICE: 'cuda' requested but torch sees no CUDA device")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if not launched_by_torchrun():
        return DistContext(device=dev)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)


# torch < 2.8: ProcessGroupGloo's destructor holds the GIL while it joins its worker threads, and a
# worker that is still releasing a finished collective whose tensors Python has already dropped must
# take the GIL to free them: destroy_process_group deadlocks (seen once in the 2-process shuffle-BN
# test; pytorch/pytorch#154976 releases the GIL there). Python keeps the last collectives' tensors
# until the group is destroyed, so a worker never needs the GIL to drop its references to them.
_RECENT_COLLECTIVE_TENSORS: collections.deque = collections.deque(maxlen=16)


def _keep_until_cleanup(*tensors) -> None:
    _RECENT_COLLECTIVE_TENSORS.append(tensors)


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0 (no gradient flows through it)."""
    if get_world_size() == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
    local = tensor.contiguous()
    dist.all_gather(gathered, local)
    _keep_until_cleanup(gathered, local)
    return torch.cat(gathered, dim=0)


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if get_world_size() > 1:
        dist.broadcast(tensor, src=src)
        _keep_until_cleanup(tensor)
    return tensor


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over processes; every process gets the same value (so a NaN stops all)."""
    if get_world_size() == 1:
        return value.detach()
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    _keep_until_cleanup(value)
    return value / get_world_size()


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group together: a rank that tears down while another is still
    finishing its last collective can leave that rank hanging in destroy_process_group
    (seen with gloo on torch 2.3)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    _RECENT_COLLECTIVE_TENSORS.clear()  # the workers are gone: no thread but this one drops them now
