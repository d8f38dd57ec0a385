"""The default number of torch threads: never more than the cores this process may use.

torch's own default is every core of the machine, whatever else runs there and however many
processes ``torchrun`` started on it; oversubscribed threads wait for descheduled peers in
every parallel region (a demo took 256 s with torch's default and 53 s with one thread while
another job ran on the machine).
"""

from __future__ import annotations

import os

__all__ = ["apply_threads", "default_threads"]


def default_threads(cpus: int | None = None, load: float | None = None, local_ranks: int | None = None) -> int:
    """Threads for one process: the cores it may use (affinity), less those busy with other
    work (the 1-minute load average), shared among the ``torchrun`` ranks of this machine
    (``LOCAL_WORLD_SIZE``); at least 1.

    Args:
        cpus: cores available (default: the process's CPU affinity).
        load: runnable processes elsewhere (default: ``os.getloadavg()[0]``).
        local_ranks: processes sharing the machine (default: ``LOCAL_WORLD_SIZE`` or 1).

    Example:
        >>> default_threads(cpus=16, load=0.0, local_ranks=4)
        4
        >>> default_threads(cpus=2, load=3.0, local_ranks=1)
        1
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    if local_ranks is None:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    free = cpus - int(load + 0.5)
    return max(1, min(cpus, free) // max(1, local_ranks))


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to ``threads``, or to ``default_threads()`` when None; returns it."""
    import torch

    n = default_threads() if threads is None else threads
    torch.set_num_threads(n)
    return n
