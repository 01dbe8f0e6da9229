"""Data-parallel training over several processes started by ``torchrun`` (torch.distributed).

Every rank trains on its share of each global batch and DDP averages the gradients, so the run
follows the same steps as one process with the whole batch. Rank 0 alone writes the run file,
evaluates, checkpoints and runs the plugins (Hessian-vector products use the unwrapped module:
DDP does not support double backward). A plain process is a world of one, where every call here
is free.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class World:
    """This process's place among the ranks, and the collectives the training loop needs."""

    def __init__(self, environ=os.environ):
        self.size = int(environ.get("WORLD_SIZE", "1"))
        self.rank = int(environ.get("RANK", "0"))
        self.local_rank = int(environ.get("LOCAL_RANK", "0"))

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank on a node; CPU ranks share the CPU."""
        if self.active and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        if self.active and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        """Leave together: a rank that tears its group down while rank 0 still finishes (final
        evaluation, checkpoint) aborts in gloo's threads."""
        if self.active and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch (every rank gets the same number of samples when
        the batch size is a multiple of the world size)."""
        return indices[self.rank::self.size] if self.active else indices

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a small tensor (batch metrics: one collective per step)."""
        if self.active:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.size
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is true on one (a stop request must stop all at one step)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


class NullWriter:
    """What ranks other than 0 write their run file to: nothing. Rank 0 is the only writer."""

    def __getattr__(self, name):
        return _nothing


def _nothing(*args, **kwargs) -> None:
    return None
