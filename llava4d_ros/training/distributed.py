"""Data-parallel training under `torchrun`: one process per device, torch DDP averaging the
gradients (gloo on the CPU, nccl on CUDA).

    torchrun --standalone --nproc_per_node N -m llava4d_ros.train --config tiny --out DIR

A global step takes `windows_per_step` scene windows; rank r trains on its contiguous share of
them and DDP averages the gradients, so N processes take the same steps as one process that
accumulates the whole global batch (test/test_train_distributed.py checks the weights).
Without torchrun's environment (`WORLD_SIZE` unset or 1) nothing is initialised and every
helper is a plain pass-through.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from llava4d_ros.training import losses


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; `device` is the one it trains on."""

    rank: int
    world_size: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> DistInfo:
    """Join torchrun's process group (env `RANK`, `WORLD_SIZE`, `LOCAL_RANK`) when there is one;
    on CUDA each process takes the GPU of its local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), device)


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first(info: DistInfo) -> Iterator[None]:
    """Rank 0 runs the body first (e.g. builds the scene cache), the others after it (and read
    what it wrote), so no two processes write the same files."""
    if info.distributed and not info.is_main:
        dist.barrier()
    yield
    if info.distributed and info.is_main:
        dist.barrier()


def local_share(items: Sequence[Any], info: DistInfo) -> list[Any]:
    """Rank r's contiguous share of a global batch whose length divides by the world size."""
    if len(items) % info.world_size:
        raise ValueError(f"a global batch of {len(items)} does not split over "
                         f"{info.world_size} processes")
    n = len(items) // info.world_size
    return list(items[info.rank * n:(info.rank + 1) * n])


def sum_over_ranks(values: Sequence[float], info: DistInfo) -> list[float]:
    """Element-wise sum of `values` over all processes (identity in a single process)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.to(info.device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers to every process (after a part every rank fits alike,
    so float differences between devices never let the replicas drift apart)."""
    if not info.distributed:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


class TrainStep(nn.Module):
    """The model's training forwards behind one `forward(kind, ...)`, so DDP sees (and syncs the
    gradients of) every one of them: `window` -> `losses.window_loss` (dict of losses, slot
    batch), `heads` -> the slot-head loss of a detached slot batch, `text` ->
    `losses.text_loss`, `idle` -> zero
    times one trainable parameter (a process with nothing to learn in a step still joins the
    all-reduce: DDP starts it from the gradient hook of a parameter in the graph)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, kind: str, *args: Any, **kwargs: Any) -> Any:
        if kind == "window":
            return losses.window_loss(self.model, *args, **kwargs)
        if kind == "heads":
            return losses.slot_total(losses.slot_losses(self.model, *args))
        if kind == "text":
            return losses.text_loss(self.model, *args)
        if kind == "idle":
            first = next(p for p in self.model.parameters() if p.requires_grad)
            return 0.0 * first.sum()
        raise ValueError(f"unknown training forward {kind!r}")


def replicate(model: nn.Module, info: DistInfo) -> nn.Module:
    """A `TrainStep` of `model`, inside DDP when distributed. Build it after the stage has set
    which parameters train: DDP registers those at construction (and broadcasts rank 0's
    weights). `find_unused_parameters`: a window without slots leaves the slot heads unused."""
    step = TrainStep(model)
    if not info.distributed:
        return step
    return nn.parallel.DistributedDataParallel(step, find_unused_parameters=True)


def accumulate(ddp: nn.Module, i: int, n: int) -> contextlib.AbstractContextManager[Any]:
    """Context for micro-batch `i` of `n` on this rank: DDP's all-reduce waits for the last."""
    if isinstance(ddp, nn.parallel.DistributedDataParallel) and i < n - 1:
        return ddp.no_sync()
    return contextlib.nullcontext()
