"""The pieces of a piecewise-linear network: where its activation pattern switches.

A switch is one call of a piecewise-linear function in the network's forward pass (a ReLU, a
leaky ReLU, an absolute value, a max-pool). With its pattern fixed (which side of each kink
every element is on, which element of every window wins) it is linear, and its *slacks* are
affine functions of its input that stay >= 0 exactly as long as the pattern holds; the first
slack to reach zero along a path ends the activation region.

Shapes: N samples (a batch of paths), the switch's input (N, *H), its slacks (N, S) with S the
switch's number of slacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Hinge", "MaxPool", "Switch"]


class Switch:
    """One piecewise-linear call: its pattern, its linear map under a pattern, its slacks.

    Crossing slack j changes the gradient of the unit's output by -kappa times the gradient of
    slack j (for a hinge kappa = slope_pos - slope_neg; for a max-pool kappa = 1), so the
    network's Jacobian changes by a rank-one term (``sliding``)."""

    #: a word for messages ("ReLU", "max-pool")
    kind = "switch"
    kappa = 1.0
    #: elements of its output per sample, known once a pattern was recorded
    n_outputs = 0

    def record(self, h: torch.Tensor) -> torch.Tensor:
        """The pattern (N, ...) of the input h (N, *H) itself."""
        raise NotImplementedError

    def apply(self, h: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """The switch's output for input h under ``pattern`` (linear in h)."""
        raise NotImplementedError

    def slack(self, h: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """(N, S) slacks: >= 0 while ``pattern`` is the pattern of h; linear in h."""
        raise NotImplementedError

    def flip(self, pattern: torch.Tensor, row: int, index: int) -> None:
        """Cross slack ``index`` of sample ``row``: change ``pattern`` in place to the side past it."""
        raise NotImplementedError

    def unit(self, index: int) -> int:
        """The unit (element, or window) slack ``index`` belongs to: the slacks of one unit
        switch together."""
        return index

    def back(self, pattern: torch.Tensor, row: int, index: int) -> int:
        """The slack that crosses back, once slack ``index`` of sample ``row`` is crossed
        (``pattern``: before the crossing)."""
        return index

    def output_index(self, index: int) -> int:
        """The element of the switch's (flattened) output that slack ``index`` switches."""
        return index


@dataclass
class Hinge(Switch):
    """h -> slope_pos h where h > 0, slope_neg h elsewhere: ReLU (0, 1), leaky ReLU (a, 1),
    absolute value (-1, 1). Pattern: h > 0 (bool); one slack per element, h or -h."""

    slope_neg: float
    slope_pos: float = 1.0
    kind: str = "ReLU"

    @property
    def kappa(self) -> float:  # type: ignore[override]
        return self.slope_pos - self.slope_neg

    def record(self, h: torch.Tensor) -> torch.Tensor:
        self.n_outputs = h[0].numel()
        return (h > 0).contiguous()  # contiguous: ``flip`` indexes it flat (channels-last models)

    def apply(self, h: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        if self.slope_neg == 0.0 and self.slope_pos == 1.0:
            return torch.where(pattern, h, h.new_zeros(()))
        pos, neg = (h.new_tensor(v) for v in (self.slope_pos, self.slope_neg))
        return h * torch.where(pattern, pos, neg)

    def slack(self, h: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        return torch.where(pattern, h, -h).flatten(1)

    def flip(self, pattern: torch.Tensor, row: int, index: int) -> None:
        flat = pattern[row].view(-1)
        flat[index] = ~flat[index]


@dataclass
class MaxPool(Switch):
    """2-D max-pooling: the pattern is the winning position of every window (N, C, L) int64;
    one slack per window and element, winner - element (+inf for the winner itself)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    kind: str = "max-pool"
    #: windows per channel (L), known once a pattern was recorded
    n_windows: int = 0

    def windows(self, h: torch.Tensor) -> torch.Tensor:
        """(N, C, K, L): the K elements of each of the L windows of h (N, C, H, W)."""
        n, c = h.shape[:2]
        if any(self.padding):
            ph, pw = self.padding
            h = F.pad(h, (pw, pw, ph, ph), value=float("-inf"))
        cols = F.unfold(h, self.kernel, dilation=self.dilation, stride=self.stride)
        return cols.view(n, c, self.kernel[0] * self.kernel[1], -1)

    def out_shape(self, h: torch.Tensor) -> tuple[int, int]:
        size = []
        for i in range(2):
            span = self.dilation[i] * (self.kernel[i] - 1) + 1
            size.append((h.shape[2 + i] + 2 * self.padding[i] - span) // self.stride[i] + 1)
        return size[0], size[1]

    def record(self, h: torch.Tensor) -> torch.Tensor:
        pattern = self.windows(h).argmax(2)
        self.n_windows = pattern.shape[2]
        self.n_outputs = pattern[0].numel()
        return pattern

    def apply(self, h: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        won = self.windows(h).gather(2, pattern[:, :, None]).squeeze(2)
        return won.view(h.shape[0], h.shape[1], *self.out_shape(h))

    def slack(self, h: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        w = self.windows(h)
        won = w.gather(2, pattern[:, :, None])
        own = torch.zeros_like(w, dtype=torch.bool).scatter_(2, pattern[:, :, None], True)
        return torch.where(own, torch.full_like(w, float("inf")), won - w).flatten(1)

    def flip(self, pattern: torch.Tensor, row: int, index: int) -> None:
        channel, element, window = self._split(index)
        pattern[row, channel, window] = element

    def unit(self, index: int) -> int:
        channel, _, window = self._split(index)
        return channel * self.n_windows + window

    def output_index(self, index: int) -> int:
        channel, _, window = self._split(index)
        return channel * self.n_windows + window

    def back(self, pattern: torch.Tensor, row: int, index: int) -> int:
        channel, _, window = self._split(index)
        winner = int(pattern[row, channel, window])
        return (channel * self.kernel[0] * self.kernel[1] + winner) * self.n_windows + window

    def _split(self, index: int) -> tuple[int, int, int]:
        """(channel, element, window) of slack ``index``."""
        kk, windows = self.kernel[0] * self.kernel[1], self.n_windows
        return index // (kk * windows), (index // windows) % kk, index % windows
