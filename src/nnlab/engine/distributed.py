"""Data-parallel training with `torch.distributed`: one process per device, started by torchrun.

    torchrun --nproc_per_node=2 -m nnlab.commands.train trainer=ddp

Each process (rank) holds a full copy of the model and trains on its own shard of every epoch's
batches; DistributedDataParallel averages the gradients across ranks during backward, so every
rank applies the same update and the weights stay identical. Rank 0 alone writes the run folder
(TensorBoard, checkpoints, metrics.json) and talks to the console.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from nnlab.errors import ConfigValueError

if TYPE_CHECKING:
    from nnlab.engine.task import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str, timeout_s: float = 300.0) -> DistInfo:
    """Join the process group torchrun set up (env:// rendezvous): NCCL on CUDA, gloo on CPU.
    `timeout_s` bounds every collective, so a rank that died cannot hang the others forever."""
    if not launched_by_torchrun():
        raise ConfigValueError(
            "trainer.strategy=ddp needs one process per rank, started by torchrun, e.g. "
            "`torchrun --nproc_per_node=2 -m nnlab.commands.train trainer=ddp`. Without torchrun use "
            "trainer.strategy=auto."
        )
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if dist.is_initialized():
        return info
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return info


def current() -> DistInfo:
    """This process's rank and the world size (rank 0 of 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def check_ddp_task(task: Task) -> None:
    """DDP wraps `task.model` and runs its forward, so a task must declare that it trains only
    through that forward (`supports_ddp = True`, see `nnlab.engine.task.Task`); a GAN calls into
    the model's parts, a SOM learns without gradients. A task that declares nothing is refused."""
    # (getattr: a task class written outside nnlab may lack the declaration; the safe answer is no)
    if not getattr(task, "supports_ddp", False):
        raise ConfigValueError(
            "trainer.strategy=ddp supports tasks that train only through model(x), such as task=supervised and "
            f"task=reconstruction, not {type(task).__name__}. Train this model in one process (trainer.strategy=auto)."
        )


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` wrapped in DistributedDataParallel, which averages gradients across ranks during
    backward; rank 0's weights and buffers are broadcast at construction (and buffers at every
    forward), so all ranks stay identical."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index or 0] if device.type == "cuda" else None
    wrapped = DistributedDataParallel(module, device_ids=ids)
    info = current()
    log.info("DistributedDataParallel: rank %d of %d", info.rank, info.world_size)
    return wrapped


def gradient_sync(model: torch.nn.Module, update: bool) -> contextlib.AbstractContextManager[Any]:
    """Where a data-parallel backward may skip its all-reduce: on the batches of an accumulation
    window before its update (`update=False`) DDP's `no_sync` keeps each rank's gradients local,
    and the update batch's backward averages the window's sums, one all-reduce per update instead
    of one per batch (the mean of sums is the sum of means). A no-op for any other model."""
    from torch.nn.parallel import DistributedDataParallel

    if update or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj`, on every rank."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sums(sums: dict[str, float], count: int) -> tuple[dict[str, float], int]:
    """Sample-weighted metric sums and their sample count, summed over every rank."""
    if not current().active:
        return sums, count
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    values = t.tolist()
    return dict(zip(keys, values[:-1])), int(values[-1])


@torch.no_grad()
def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm statistics) to every rank."""
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def barrier() -> None:
    if current().active:
        dist.barrier()


def shutdown(wait_for_peers: bool = True) -> None:
    """Leave the process group. After a run that ended well, wait for every rank first: a rank
    that tears down its gloo pairs while a peer still uses them can make that peer abort
    ("terminate called without an active exception"). After a failure, leave at once."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()
