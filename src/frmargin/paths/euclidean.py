"""The step attempt of the Euclidean metric: a linear step along the plain gradient direction.

Shapes: m paths (``idx`` (m,)), C classes, V classes of the view, *S the input shape, D =
prod(S); simplex quantities are float64.
"""

from __future__ import annotations

import torch

from ..geometry import fr_distance
from .linalg import into_box, pair_gap
from .options import ResolvedOptions
from .state import Network
from .step_types import Attempt, Start


class LinearStep:
    """Linear steps x + tau v, clamped to the box; no corrector, no fallback round."""

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        self.net = net
        self.opts = opts

    def begin(self, idx: torch.Tensor) -> None:
        """Nothing to set up for a step."""

    def __call__(self, s: Start, h: torch.Tensor, hz: torch.Tensor, retry: bool) -> Attempt:
        """FR length h by its linear speed, or a linearly predicted change hz of the logit gap,
        whichever is shorter. A step whose realized FR length exceeds 2 h is refused (the
        linear speed can be tiny near p_y = 1)."""
        st, view = self.net.state, self.net.view
        gidx, x, z, d = s.idx, s.x, s.z, s.direction
        top, k = view.classes(gidx, st.top[gidx], st.target[gidx])
        rate = pair_gap(d.zdot, top, k).abs().clamp_min(1e-300)
        tau = torch.minimum(h / s.speed, hz / rate)
        x_new = into_box(x + (tau[:, None] * d.v).to(x.dtype).reshape(x.shape), self.opts.box)
        z_new = self.net.forward(gidx, x_new)
        nonfinite = ~torch.isfinite(z_new).all(-1)
        z_safe = view.reduce(torch.nan_to_num(z_new), gidx).to(torch.float64)
        moved = fr_distance(s.p, torch.softmax(z_safe, -1))
        good = ~nonfinite & (moved <= 2 * h) & (moved > 0)
        predicted = tau * pair_gap(d.zdot, top, k)
        change = pair_gap(z_safe - view.reduce(z, gidx).to(torch.float64), top, k)
        theta = (change - predicted).abs() / predicted.abs().clamp_min(1e-300)
        return Attempt(x_new, z_new, good, nonfinite, theta)
