"""The class view of a path's geometry: every class, or the top few and one lumped class.

Shapes: n paths of a chunk, m of them in a call (``gidx`` (m,) their indices in the chunk),
C classes of the model, V classes of the view (C, or top_classes + 1).
"""

from __future__ import annotations

import torch


class FullView:
    """Every class: the geometry's logits are the model's, V = C."""

    lumped = False

    def __init__(self, C: int) -> None:
        self.size = C

    def reduce(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        """Logits (m, C) of paths ``gidx`` in the view, (m, V)."""
        return z

    def classes(self, gidx: torch.Tensor, top: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The current top and target classes (m,) of paths ``gidx`` as indices of the view."""
        return top, k

    def probs(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        """Probabilities (m, V) float64 of the view from logits (m, C)."""
        return torch.softmax(self.reduce(z, gidx).to(torch.float64), -1)


class LumpedView(FullView):
    """Per path the m classes most probable at its start (the source and the target always
    among them) and one class lumping the rest, with logit logsumexp(z_rest): V = m + 1.

    The coarse distribution's Fisher information is at most the full one's and needs m + 1
    Jacobian rows instead of C. Lengths are those of the coarse distribution; class changes are
    read from all C logits, so a lumped class can be the first hit. The kept classes are fixed
    at the start (``top_classes`` needs ``until="first_flip"``, so top stays the source).
    """

    lumped = True

    def __init__(self, z0: torch.Tensor, source: torch.Tensor, target: torch.Tensor, m: int) -> None:
        n, C = z0.shape
        order = torch.softmax(z0.to(torch.float64), -1).argsort(dim=-1, descending=True, stable=True)
        keep = order[:, :m].clone()
        # the target (and the source, should the start be misclassified) take the last slots
        for cls, slot in ((source, m - 2), (target, m - 1)):
            missing = ~(keep == cls[:, None]).any(-1)
            keep[missing, slot] = cls[missing]
        rest = torch.ones(n, C, dtype=torch.bool, device=z0.device)
        rest.scatter_(1, keep, False)
        self.keep, self.rest = keep, rest
        self.top_view = (keep == source[:, None]).long().argmax(-1)
        self.target_view = (keep == target[:, None]).long().argmax(-1)
        self.size = m + 1

    def reduce(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        lumped = torch.logsumexp(z.masked_fill(~self.rest[gidx], -float("inf")), -1, keepdim=True)
        return torch.cat([z.gather(1, self.keep[gidx]), lumped], -1)

    def classes(self, gidx: torch.Tensor, top: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.top_view[gidx], self.target_view[gidx]


def class_view(
    z0: torch.Tensor, source: torch.Tensor, target: torch.Tensor, top_classes: int | None
) -> FullView | LumpedView:
    """The view for logits z0 (n, C) at the start: lumped when 2 <= top_classes < C - 1.

    Example:
        >>> z0 = torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0]])
        >>> view = class_view(z0, torch.tensor([0]), torch.tensor([4]), 2)
        >>> view.reduce(z0, torch.tensor([0])).shape
        torch.Size([1, 3])
    """
    C = z0.shape[-1]
    if top_classes is None or top_classes >= C - 1:
        return FullView(C)
    return LumpedView(z0, source, target, top_classes)
