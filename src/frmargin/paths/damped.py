"""The damped continuation of free natural-gradient paths (``continuation="damped"``, the default).

On adversarially trained ReLU CNNs some natural-gradient flows never reach a class change: the
exact flow slides along activation boundaries at hundreds to thousands of L2 per unit FR length
and ends at a corner (``frmargin.reference``), so the tracer's steps either all fail at once
(``stalled``, often at the first step) or creep to the step budget. Measured on CNN-A (8 official
test images x 9 targets each, ``benchmarks/bench_zoo_steps.py``): cnn-a-adv4 62 of 72 ``ok``
(5 stalled, 5 at the budget), cnn-a-adv2 70 of 72.

``DampedFree`` is the free-space ``Projection`` that goes on where the flow gives up, with the
Levenberg-Marquardt direction of the box's own rescue, (G + lam I) v = -g with lam a share of the
largest eigenvalue of G:

- a path whose step stalled is retried from its point with lam = RESCUE_DAMPING x lam_max, then
  10x that (RESCUES times), before it ends ``stalled``;
- a path still running after a quarter of its step budget (CONTINUE_SHARE: 50 of the default
  200 steps) gets lam = RESCUE_DAMPING x lam_max, 10x more after each further quarter,
  CONTINUE_LEVELS times at most.

A path with a damped direction that changes class ends ``damped``: its FR length is that of a real
path to the change (an upper bound of the margin, never below the softmax bound), not the flow's,
so the closed forms of the flow do not predict it (measured on cnn-a-adv4: a median 2.5% and
at most 18% from the flow's closed-form length). Paths that end within a quarter of their budget never see a damping: their
steps are those of the pure flow (``continuation="none"``).
"""

from __future__ import annotations

import torch

from .directions import FreeSpace, descent_gradient, row_direction
from .options import ResolvedOptions
from .state import Network
from .step_types import Direction

__all__ = ["CONTINUE_LEVELS", "CONTINUE_SHARE", "RESCUES", "RESCUE_DAMPING", "DampedFree"]

#: the first damping of the continuation, relative to the largest eigenvalue of G (the box's
#: floor on a reduced free set, ``box.BOX_DAMPING``: there 1e-4 moves x ~2% of the undamped
#: direction's L2 per unit FR on CNN-A)
RESCUE_DAMPING = 1e-4
#: a stalled step is retried damped this many times (x10 each), then the path ends ``stalled``
RESCUES = 2
#: a path still running after this share of its step budget (50 of the default 200 steps) goes
#: on damped, the damping growing by 10 after every further share, CONTINUE_LEVELS times at most
#: (1e-4 from step 50, 1e-3 from 100, 1e-2 from 150). A share, not a count: smaller steps (the
#: ``l2`` preset, a user's ``eta``) come with a larger budget. Measured on cnn-a-adv4 / -adv2 /
#: -mix (72 paths each): every path ends ok or damped, Jacobians per path 26 -> 19, 17 -> 13,
#: 8.7 -> 7.6; starting at step 100 instead also reaches every change, at 24 and 15 Jacobians
#: per path on the first two
CONTINUE_SHARE = 0.25
CONTINUE_LEVELS = 3


class DampedFree(FreeSpace):
    """The free ``Projection`` with the damped continuation (module docstring). The direction of
    a path is the unconstrained one bit for bit until it stalls or has used a quarter of its
    step budget."""

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        super().__init__(net, opts)
        #: accepted steps per damping level (CONTINUE_SHARE of the step budget)
        self.every = max(1, round(CONTINUE_SHARE * opts.max_steps))
        #: (n,) how many times each path's stalled steps were retried damped
        self.rescued = torch.zeros(len(net.state), dtype=torch.int64, device=net.state.x.device)

    def level(self, idx: torch.Tensor) -> torch.Tensor:
        """(m,) float64 share of lam_max the continuation asks for paths idx (0: none)."""
        by_steps = (self.net.state.steps[idx] // self.every).clamp(max=CONTINUE_LEVELS).to(torch.float64)
        by_rescue = self.rescued[idx].to(torch.float64)
        k = torch.maximum(by_steps, by_rescue)
        return torch.where(k > 0, RESCUE_DAMPING * 10.0 ** (k - 1), torch.zeros_like(k))

    def direction(
        self, idx: torch.Tensor, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor
    ) -> tuple[Direction, torch.Tensor | None]:
        floor = self.level(idx)
        self.net.state.damped[idx[floor > 0]] = True
        return row_direction(self.opts, J, p, descent_gradient(self.net, idx, p), floor), None

    def rescue(self, idx: torch.Tensor) -> torch.Tensor:
        """A stalled path is retried from its point, damped, RESCUES times at most."""
        again = self.rescued[idx] < RESCUES
        self.rescued[idx[again]] += 1
        return again
