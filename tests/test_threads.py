"""The default torch thread count never oversubscribes the machine."""

from __future__ import annotations

import pytest
import torch

from frmargin.threads import apply_threads, default_threads


@pytest.mark.parametrize(
    ("cpus", "load", "ranks", "want"),
    [(16, 0.0, 1, 16), (16, 0.0, 4, 4), (16, 8.0, 1, 8), (16, 8.0, 2, 4), (2, 6.0, 1, 1), (3, 0.0, 4, 1)],
)
def test_default_threads_leave_busy_cores_and_split_among_ranks(cpus, load, ranks, want):
    assert default_threads(cpus=cpus, load=load, local_ranks=ranks) == want


def test_torchrun_ranks_split_the_cores(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads(cpus=8, load=0.0) == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_threads(cpus=8, load=0.0) == 8


def test_apply_threads_sets_torch():
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1 and torch.get_num_threads() == 1
        n = apply_threads(None)
        assert n >= 1 and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
