"""Sharing a run over ``torchrun`` ranks: the rank and world size, barriers, and sums over ranks.

Under ``torchrun`` (gloo on CPU, NCCL on GPU with one GPU per rank) the chunks of a run are shared
round-robin over the ranks; outside it every function is a no-op for one process.
"""

from __future__ import annotations

import os

import torch

__all__ = ["barrier", "broadcast_object", "rank_and_world", "sum_over_ranks"]


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) under torchrun, with a process group for barriers."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def sum_over_ranks(paths_traced: int, trace_seconds: float, device: torch.device, world: int) -> tuple[int, float]:
    """Every rank's work goes into run.json, not only rank 0's (tracing time: the slowest rank)."""
    if world <= 1:
        return paths_traced, trace_seconds
    import torch.distributed as dist

    on = device if device.type == "cuda" else torch.device("cpu")
    n = torch.tensor([paths_traced], dtype=torch.int64, device=on)
    s = torch.tensor([trace_seconds], dtype=torch.float64, device=on)
    dist.all_reduce(n, op=dist.ReduceOp.SUM)
    dist.all_reduce(s, op=dist.ReduceOp.MAX)  # wall-clock of the tracing phase
    return int(n.item()), float(s.item())


def broadcast_object(value: object, world: int) -> object:
    """Rank 0's ``value`` on every rank (a decision, or an error message, taken once)."""
    if world <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
