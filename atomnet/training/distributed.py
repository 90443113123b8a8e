"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node=N $(which atomnet) train CONFIG.yaml`` starts N
processes; torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous variables, and :func:`init` joins the process group (gloo on CPU,
NCCL on CUDA). Without them (a plain ``atomnet train``) everything here is a
no-op on one process, so the trainer has a single code path.

What the trainer communicates: one all-reduce (sum) per optimizer step, of the
flattened gradients with the loss value and rank 0's clock (which drives a budgeted
schedule) appended. Each rank divides its loss sums by the *global* batch's
denominators (weighted structure, atom and stress counts), which every rank knows
from the data set's per-structure table without communicating
(``structure_table()``), so the summed gradients are those of the global mean and N
ranks × batch B/N make exactly the update of 1 rank × batch B. (All-reduce latency
dominates on small CPU models: 2.5 ms per call with gloo on the 2-core benchmark
machine, whatever the size.) The
``DistributedDataParallel`` wrapper is not used: the force loss differentiates
through ``autograd.grad`` of the model, and one explicit, bucket-free sum of the
gradients keeps the update independent of how DDP would bucket and order them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` (1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on the process that writes checkpoints, plots, the model and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, batch: list[int]) -> list[int]:
        """This rank's contiguous part of a global batch (possibly empty)."""
        if self.size == 1:
            return batch
        n = len(batch)
        lo, hi = self.rank * n // self.size, (self.rank + 1) * n // self.size
        return batch[lo:hi]

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place; returned for chaining."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every rank, in place."""
        if self.size > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def from_environment() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device: torch.device) -> None:
    """Join the process group (gloo for CPU, NCCL for CUDA) if not joined yet."""
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=world.rank, world_size=world.size)


def shutdown(world: World) -> None:
    """Leave the process group (after every rank is done)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def abandon(world: World) -> None:
    """Leave the process group after an error, without waiting for the other ranks."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def sync_parameters(world: World, module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (identical starts)."""
    if not world.distributed:
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            world.broadcast(tensor.data)


def all_sum_gradients(
    world: World, params: list[torch.Tensor], extra: torch.Tensor
) -> torch.Tensor:
    """Sum every parameter's ``.grad`` over ranks (missing grads count as zero), in
    one collective with ``extra`` (1-D, e.g. the loss) appended; returns the summed
    ``extra``. On one process the gradients are left untouched."""
    if not world.distributed:
        return extra.clone()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [extra.to(grads[0])])
    world.all_sum(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
    return flat[offset:].to(extra)
