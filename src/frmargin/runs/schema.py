"""The per-path table: one row per traced path, built in one place for the runner and the toy.

Columns (docs/guide/outputs.md): the caller's id columns (``image_index`` in a run, ``point`` in the
toy), ``source``, ``target``, the caller's label columns (``method``, ``metric``), every scalar
field of ``PathResult`` (``PathResult.to_frame``), then ``shielded``, ``predicted_length``,
``predicted_first_hit``, ``lower_bound`` and ``confidence``. With a box: ``bound_share`` and
``box_changes`` (from ``PathResult``) and, in a run, ``box_margin`` (the in-box margin estimate
of ``paths.box_margin``, NaN where the path is not ok).

Importing this module imports neither torch, pandas nor numpy (the run-folder check of
``frmargin report`` stays instant); ``path_table`` does.

Shapes: P paths, C classes.

Example:
    >>> import numpy as np
    >>> shielded(np.array([True, True, False]), np.array([3, 5, -1]), np.array([3, 4, 2])).tolist()
    [False, True, False]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..data.classes import CIFAR10_CLASSES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from ..paths import PathResult

__all__ = ["CIFAR10_CLASSES", "DERIVED_COLUMNS", "REQUIRED_PATH_COLUMNS", "path_table", "shielded"]

#: columns a reader cannot do without (the others get defaults)
REQUIRED_PATH_COLUMNS = ("image_index", "source", "target", "success", "first_hit", "fr_length", "l2")
#: the columns ``path_table`` adds after those of ``PathResult.to_frame``
DERIVED_COLUMNS = ("shielded", "predicted_length", "predicted_first_hit", "lower_bound", "confidence")


def shielded(success: np.ndarray, first_hit: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(P,) bool: the path changed the class, and the class it met first is not its target."""
    import numpy as np

    return np.asarray(success, dtype=bool) & (np.asarray(first_hit) != np.asarray(target))


def path_table(
    result: PathResult,
    p0: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    ids: Mapping[str, Any],
    labels: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The path table of ``result``: one row per path, columns as in the module docstring.

    Args:
        result: the P traced paths.
        p0: (P, C) probabilities at the start of each path (float64 for exact closed forms).
        source, target: (P,) classes each path starts in and is aimed at.
        ids: columns placed first, each (P,) (e.g. ``{"image_index": ...}``).
        labels: columns placed after ``target``, each one value or (P,) (e.g. method and metric).

    Example:
        >>> table = path_table(res, p0, source, target, ids={"point": point})  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd

    from ..geometry import margin_lower_bound, predicted_path

    head = {name: np.asarray(values) for name, values in ids.items()}
    head["source"] = source.cpu().numpy()
    head["target"] = target.cpu().numpy()
    frame = pd.DataFrame(head)
    for name, value in (labels or {}).items():
        frame[name] = value
    measured = result.to_frame().drop(columns=["source", "target"], errors="ignore")  # given above
    frame = pd.concat([frame, measured.set_axis(frame.index)], axis=1)
    predicted_length, predicted_first_hit = predicted_path(p0, source, target)
    frame["shielded"] = shielded(frame["success"].to_numpy(), frame["first_hit"].to_numpy(), head["target"])
    frame["predicted_length"] = predicted_length.cpu().numpy()
    frame["predicted_first_hit"] = predicted_first_hit.cpu().numpy()
    frame["lower_bound"] = margin_lower_bound(p0, source).cpu().numpy()
    frame["confidence"] = p0.gather(1, source[:, None])[:, 0].cpu().numpy()
    return frame
