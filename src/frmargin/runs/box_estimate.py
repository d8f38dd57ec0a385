"""Which paths of a box run get the in-box margin estimate (``paths.box_margin``): the run
option ``box_margin``.

- ``all``: every path that reached the boundary (status ``ok``);
- ``none``: no path (the traced length is the only in-box figure);
- ``candidates:FACTOR``: only the paths that can hold their image's in-box margin. Per image,
  with T the shortest traced ``ok`` path and LB the softmax bound: when T <= (1 + SETTLED_RTOL) LB
  the image is settled (its in-box margin lies in [LB, T], within 0.1% of LB, whatever the
  estimate of any path would be); otherwise the paths whose traced length is at most
  FACTOR x T are estimated.

The estimate of a path is never above its traced length nor below LB, so an image's least
estimate is the least over its candidates unless the optimizer shortens a path by more than the
factor; ``frmargin.analysis.study_box.candidate_check`` measures this on a run made with ``all``.

Importing this module imports neither torch nor numpy.

Example:
    >>> parse_box_margin("candidates:1.05")
    ('candidates', 1.05)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import bad_argument
from ..options import spell

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BOX_MARGIN_HELP", "SETTLED_RTOL", "candidate_paths", "parse_box_margin"]

#: an image whose shortest traced in-box path is within this of LB needs no estimate
SETTLED_RTOL = 1e-3
BOX_MARGIN_HELP = (
    "With --box, the paths that get the in-box margin estimate: all, none, or candidates:FACTOR "
    "(per image, the paths within FACTOR of its shortest traced path, on images whose shortest "
    "traced path is more than 0.1% above the softmax bound LB)."
)


def parse_box_margin(text: object) -> tuple[str, float]:
    """``"all"`` -> ("all", inf), ``"none"`` -> ("none", 0), ``"candidates:F"`` -> ("candidates", F);
    FrmarginError naming the option otherwise (F a finite number >= 1)."""
    if text in ("all", "none"):
        return str(text), math.inf if text == "all" else 0.0
    expected = "all, none or candidates:FACTOR with a FACTOR >= 1 (e.g. candidates:1.05)"
    kind, _, value = str(text).partition(":")
    try:
        factor = float(value)
    except ValueError:
        raise bad_argument(spell("box_margin"), text, expected) from None
    if kind != "candidates" or not (math.isfinite(factor) and factor >= 1.0):
        raise bad_argument(spell("box_margin"), text, expected)
    return kind, factor


def candidate_paths(
    rule: str, image: np.ndarray, ok: np.ndarray, traced: np.ndarray, lower_bound: np.ndarray
) -> np.ndarray:
    """(P,) bool: the paths that get the estimate under ``rule`` (a ``box_margin`` value).

    ``image``: the image of each path; ``ok``: it reached the boundary; ``traced``: its traced FR
    length; ``lower_bound``: its image's LB.

    Example:
        >>> import numpy as np
        >>> candidate_paths("candidates:1.1", np.array([0, 0, 0, 1, 1]), np.ones(5, bool),
        ...                 np.array([1.2, 1.3, 2.0, 0.5, 0.6]), np.array([1.0, 1.0, 1.0, 0.5, 0.5])).tolist()
        [True, True, False, False, False]
    """
    import numpy as np
    import pandas as pd

    kind, factor = parse_box_margin(rule)
    ok = np.asarray(ok, bool)
    if kind != "candidates":
        return ok.copy() if kind == "all" else np.zeros_like(ok)
    length = pd.Series(np.where(ok, np.asarray(traced, float), np.inf))
    shortest = length.groupby(np.asarray(image)).transform("min").to_numpy()
    unsettled = shortest > (1.0 + SETTLED_RTOL) * np.asarray(lower_bound, float)
    return ok & unsettled & (length.to_numpy() <= factor * shortest)
