"""The network around one point with its activation pattern fixed: logits, slacks, Jacobians,
and the minimum-norm moves of the exact flow.

Shapes: m paths, C classes, D input dimensions, S slacks per path, h held slacks of a path;
float64 throughout.
"""

from __future__ import annotations

import math

import torch

from .linearize import PiecewiseLinear

__all__ = ["Local", "centred_basis", "min_norm"]


def centred_basis(C: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(C, C - 1) orthonormal basis U of the vectors of R^C that sum to zero."""
    centred = torch.eye(C, dtype=dtype) - 1.0 / C
    q, _ = torch.linalg.qr(centred[:, : C - 1])
    return q


def min_norm(rows: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-norm solutions v (m, D, K) of rows v = rhs, rows (m, R, D), rhs (m, R, K), and
    the condition number (m,) of the rows (inf with more rows than dimensions)."""
    m, R, D = rows.shape
    if R > D:
        dev = rows.device
        return torch.zeros(m, D, rhs.shape[2], dtype=rows.dtype, device=dev), torch.full(
            (m,), math.inf, dtype=rows.dtype, device=dev
        )
    q, r = torch.linalg.qr(rows.transpose(1, 2))
    sv = torch.linalg.svdvals(r)
    cond = sv[:, 0] / sv[:, -1]
    y = torch.linalg.solve_triangular(r.transpose(1, 2), rhs, upper=False)
    return q @ y, cond


class Local:
    """The network at m points x (m, *S) with fixed ``patterns``: one forward pass, whose graph is
    kept for the backward passes asked for.

    Attributes:
        z: (m, C) logits; slack: (m, S) slacks.
        J: (m, C, D) logit Jacobian and J_out (m, C, S_out) the logits' derivatives by the
            switches' outputs (S_out per path, the outputs flattened and concatenated): C
            backward passes, only with ``jacobian``.
    """

    def __init__(self, net: PiecewiseLinear, x: torch.Tensor, patterns: list[torch.Tensor], jacobian: bool) -> None:
        self.net = net
        with torch.enable_grad():
            self.x = x.detach().requires_grad_(True)
            self.outs: list[torch.Tensor] = []
            z, slack = net.evaluate(self.x, patterns, outputs=self.outs)
        assert slack is not None
        self._slack = slack
        self.z, self.slack = z.detach(), slack.detach()
        self.sizes = [o[0].numel() for o in self.outs]
        self.starts = [0]
        for n in self.sizes:
            self.starts.append(self.starts[-1] + n)
        self.J: torch.Tensor | None = None
        self.J_out: torch.Tensor | None = None
        if jacobian:
            pairs = [self._grad(z[:, c].sum()) for c in range(z.shape[1])]
            self.J = torch.stack([gx for gx, _ in pairs], 1)
            self.J_out = torch.stack([go for _, go in pairs], 1)

    def _grad(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the scalar y by x (m, D) and by the switches' outputs (m, S_out)."""
        with torch.enable_grad():
            gs = torch.autograd.grad(y, [self.x, *self.outs], retain_graph=True, allow_unused=True)
        x = self.x
        flat = [
            torch.zeros(x.shape[0], n, dtype=x.dtype, device=x.device) if g is None else g.flatten(1)
            for g, n in zip(gs[1:], self.sizes)
        ]
        return gs[0].flatten(1), torch.cat(flat, 1) if flat else x.new_zeros(x.shape[0], 0)

    def slack_grad(self, r: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient (D,) of slack j of row r by x, and (S_out,) by the switches' outputs."""
        gx, go = self._grad(self._slack[r, j])
        return gx[r], go[r]

    def column(self, j: int) -> int:
        """Where the output slack j switches sits in the concatenated outputs (S_out)."""
        w, local = self.net.locate(j)
        return self.starts[w] + self.net.switches[w].output_index(local)

    def held(self, r: int, js: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients (h, D) of the held slacks js of row r, and (h, h) their derivatives by the
        outputs those units switch ([i, q]: slack i by the output of unit q)."""
        pairs = [self.slack_grad(r, j) for j in js]
        cols = [self.column(j) for j in js]
        return torch.stack([gx for gx, _ in pairs]), torch.stack([go[cols] for _, go in pairs])
