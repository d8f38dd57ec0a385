"""Which classes a run traces paths to, which images it selects, and its many-class defaults.

Target rules (``--targets``), applied per image to the probabilities p0 at its start:

- ``all``: every other class (C - 1 paths per image).
- ``top:K``: the K most probable other classes at the start (ties: lower class index first).
- ``random:K``: K other classes drawn uniformly, by a generator seeded with (seed, image index),
  so the draw does not depend on chunking or on the other images.
- ``LIST``: comma-separated class indices (e.g. ``3,5,7``); an image whose source is listed
  gets a path to each of the others.

Each path records ``target_rank``: the rank of its target among the other classes by p0 (1 =
the most probable other class). Defaults: ``all`` when C <= 10, ``top:9`` otherwise;
``top_classes`` 20 when C > 100 (``DEFAULT_TOP_CLASSES``; see docs/design.md, many classes).

Importing this module imports neither torch nor numpy.

Example:
    >>> parse_targets("top:9")
    TargetRule(kind='top', k=9, classes=())
    >>> default_targets(1000), default_targets(10)
    ('top:9', 'all')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import bad_argument

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "DEFAULT_TOP_CLASSES",
    "MANY_CLASSES",
    "TOP_CLASSES_FROM",
    "TargetRule",
    "choose_targets",
    "default_targets",
    "default_top_classes",
    "parse_targets",
    "select_images",
    "selection_rule",
]

#: more classes than this: targets default to ``top:9``
MANY_CLASSES = 10
#: more classes than this: ``top_classes`` defaults to ``DEFAULT_TOP_CLASSES``
TOP_CLASSES_FROM = 100
DEFAULT_TOP_CLASSES = 20
DEFAULT_MANY_TARGETS = "top:9"
EXPECTED = "all, top:K, random:K (K >= 1) or a comma-separated list of class indices"


@dataclass(frozen=True)
class TargetRule:
    """A parsed ``--targets`` value: kind ``all``, ``top``, ``random`` or ``list``."""

    kind: str
    k: int = 0
    classes: tuple[int, ...] = ()

    def check(self, n_classes: int) -> None:
        """Raise FrmarginError when the rule does not fit a model with ``n_classes`` classes."""
        if self.kind in ("top", "random") and self.k > n_classes - 1:
            raise bad_argument("targets", f"{self.kind}:{self.k}", f"K <= {n_classes - 1} (C - 1 for this model)")
        bad = [c for c in self.classes if c >= n_classes]
        if bad:
            raise bad_argument("targets", bad[:5], f"class indices in 0..{n_classes - 1}")


def parse_targets(spec: str) -> TargetRule:
    """Parse a ``--targets`` value (syntax only; ``TargetRule.check`` compares it with C)."""
    if not isinstance(spec, str) or not spec.strip():
        raise bad_argument("targets", spec, EXPECTED)
    text = spec.strip().lower()
    if text == "all":
        return TargetRule("all")
    kind, sep, rest = text.partition(":")
    if sep and kind in ("top", "random"):
        if not rest.isdigit() or int(rest) < 1:
            raise bad_argument("targets", spec, EXPECTED)
        return TargetRule(kind, int(rest))
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise bad_argument("targets", spec, EXPECTED)
    classes = tuple(sorted({int(p) for p in parts}))
    if len(classes) < 1:
        raise bad_argument("targets", spec, EXPECTED)
    return TargetRule("list", classes=classes)


def default_targets(n_classes: int) -> str:
    """``all`` when C <= 10, ``top:9`` otherwise."""
    return "all" if n_classes <= MANY_CLASSES else DEFAULT_MANY_TARGETS


def default_top_classes(n_classes: int) -> int | None:
    """``DEFAULT_TOP_CLASSES`` when C > 100 (and it lumps something), else None (every class)."""
    return DEFAULT_TOP_CLASSES if n_classes > TOP_CLASSES_FROM else None


def choose_targets(
    rule: TargetRule, p0: torch.Tensor, source: torch.Tensor, image_index: np.ndarray, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paths of n images under ``rule``: (row, target, target_rank), each (P,) int64.

    Args:
        rule: the parsed rule.
        p0: (n, C) probabilities at the start of each image.
        source: (n,) the class of each image (its argmax).
        image_index: (n,) dataset indices (seed the ``random`` draw per image).
        seed: the run's seed.

    Returns:
        row (P,) index into the n images, target (P,) and target_rank (P,) (1 = the most
        probable other class), image by image, targets of one image in ascending class order
        for ``all``/``random``/``list`` and by rank for ``top``.

    Example:
        >>> import torch, numpy as np
        >>> p = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
        >>> choose_targets(parse_targets("top:2"), p, torch.tensor([0]), np.array([7]), 0)[1].tolist()
        [2, 1]
    """
    import numpy as np
    import torch

    n = p0.shape[0]
    # rank of every class among the others: sort by -p, ties by class index (stable)
    order = torch.argsort(-p0.to(torch.float64), dim=-1, stable=True)
    rows, targets, ranks = [], [], []
    for i in range(n):
        src = int(source[i])
        others = [c for c in order[i].tolist() if c != src]
        rank_of = {c: r + 1 for r, c in enumerate(others)}
        if rule.kind == "all":
            chosen = sorted(others)
        elif rule.kind == "top":
            chosen = others[: rule.k]
        elif rule.kind == "random":
            rng = np.random.default_rng([seed, int(image_index[i])])
            chosen = sorted(int(c) for c in rng.choice(sorted(others), size=rule.k, replace=False))
        else:
            chosen = [c for c in rule.classes if c != src]
        rows += [i] * len(chosen)
        targets += chosen
        ranks += [rank_of[c] for c in chosen]
    dev = p0.device

    def as_long(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=dev)

    return as_long(rows), as_long(targets), as_long(ranks)


def selection_rule(n: int, n_classes: int) -> str:
    """The image-selection rule ``select_images`` applies, in words (run.json ``image_selection``)."""
    if n < n_classes:
        return f"{n} of {n_classes} classes drawn with the seed, one image of each drawn with the seed"
    return f"stratified: {n} // {n_classes} images per class, the remainder to the first classes, drawn with the seed"


def select_images(labels: np.ndarray, n: int, n_classes: int, seed: int) -> np.ndarray:
    """Deterministic selection; returns sorted dataset indices.

    n >= C: stratified, n // C images per class (the remainder to the first classes), drawn
    with ``seed``. n < C: n classes drawn with ``seed``, one image of each drawn with ``seed``.

    Example:
        >>> import numpy as np
        >>> select_images(np.repeat(np.arange(3), 2), 3, 3, 0).tolist()
        [1, 2, 4]
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    if n < n_classes:
        drawn = set(rng.permutation(n_classes)[:n].tolist())
        per = [1 if c in drawn else 0 for c in range(n_classes)]
    else:
        per = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
    chosen = []
    for c in range(n_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per[c]:
            raise bad_argument(
                "images", n, f"at most {len(pool) * n_classes} for this dataset ({len(pool)} of class {c})"
            )
        chosen.append(rng.permutation(pool)[: per[c]])
    return np.sort(np.concatenate(chosen))
