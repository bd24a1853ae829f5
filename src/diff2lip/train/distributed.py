"""Distributed data parallel (DDP) helpers shared by the trainers.

One process per device, started by ``torchrun`` (``torchrun --nproc-per-node 2 -m diff2lip train-syncnet
CONFIG``), which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``.
:func:`init_distributed` reads them (a plain ``python -m diff2lip ...`` run is world size 1 and needs no
process group), picks the backend — NCCL for CUDA, gloo on CPU — and the device of this rank.
Rank 0 alone logs, writes checkpoints and exports models (:attr:`DistInfo.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from diff2lip.errors import Diff2LipError

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "cleanup_distributed",
    "init_distributed",
    "resolve_device",
]

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, the local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes files)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda`` → the device of this rank."""
    if name not in DEVICES:
        raise Diff2LipError(f"unknown device '{name}' (choose {', '.join(DEVICES)})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise Diff2LipError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise Diff2LipError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str = "auto") -> DistInfo:
    """Set up this process from the ``torchrun`` environment (world size 1 without it).

    With ``WORLD_SIZE > 1`` the default process group is initialised (``env://``) with NCCL on CUDA or
    gloo on CPU, and on CUDA this rank's device becomes the current one.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world > 1:
        if not dist.is_available():
            raise Diff2LipError("torch.distributed is not available in this PyTorch build")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``values`` over ranks (a copy; the input is unchanged; no-op in a single process)."""
    out = values.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
