"""Several GPUs (or CPU processes) through ``torchrun``: process group, device, wrapping.

``torchrun`` sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a single process and
nothing here does anything. NCCL is used on GPUs, gloo on CPUs (which is how the tests run two
real processes on a laptop).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from segresmamba.inference import resolve_device

__all__ = ["Distributed", "gather", "replica_digests", "setup", "teardown", "wrap"]


@dataclass(frozen=True)
class Distributed:
    """This process's place: rank, world size and device; ``main`` is rank 0."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup(device: str = "auto") -> Distributed:
    """Join the process group when started by torchrun; pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    run_device = resolve_device(device)
    if run_device.type == "cuda" and world_size > 1:
        torch.cuda.set_device(local_rank)
        run_device = torch.device("cuda", local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if run_device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, run_device)


def wrap(model: nn.Module, place: Distributed) -> nn.Module:
    """DistributedDataParallel when there are several processes (every parameter is used in
    SegResMamba's forward pass, so ``find_unused_parameters=False``)."""
    if not place.active:
        return model
    device_ids = [place.local_rank] if place.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=False
    )


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def replica_digests(model: nn.Module, place: Distributed) -> list[str]:
    """SHA-256 of every rank's weights (one per rank, on every rank): DDP keeps replicas
    identical, and after training this is checked rather than assumed."""
    from segresmamba.weights import weights_digest

    model = getattr(model, "module", model)
    return gather(weights_digest(model.state_dict()), place)


def gather(obj: object, place: Distributed) -> list:
    """Every rank's ``obj`` as a list on every rank (just ``[obj]`` for a single process)."""
    if not place.active:
        return [obj]
    out: list = [None] * place.world_size
    dist.all_gather_object(out, obj)
    return out
