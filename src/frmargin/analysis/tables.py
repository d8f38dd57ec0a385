"""The per-class table and the per-image margins, with the bootstrap behind their intervals.

Inputs are the tables a run folder holds: ``paths`` has one row per path (``image_index``,
``source``, ``target``, ``success``, ``first_hit``, ``fr_length``, ``l2``, ...), ``images`` one row
per selected image. Letters: P = paths, B = images, C = classes.

Example:
    >>> stats = class_statistics(paths, images, class_names, n_boot=1000, seed=0)
    >>> stats.table[["name", "mean_fr_margin", "vuln_rank"]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from frmargin.analysis.bootstrap import (
    DEFAULT_N_BOOT,
    ClusterBootstrap,
    check_n_boot,
    percentile_interval,
    safe_ratio,
)
from frmargin.analysis.correlation import rank_descending
from frmargin.analysis.inputs import NO_FLIP, check_class_names, prepare_paths, require_columns

# (column, definition) of the table ``class_table`` returns; the report prints these.
CLASS_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "class name"),
    ("n_images", "images of this class (true = predicted label) with at least one path"),
    ("n_paths", "paths traced from images of this class"),
    ("n_success", "paths from this class that changed the predicted class"),
    ("success_pct", "100 * n_success / n_paths"),
    (
        "shielding_pct",
        "paper's column, as a rate: among successful paths where the class is neither "
        "source nor target, the % whose first class hit is this class",
    ),
    (
        "mean_fr_margin",
        "paper's column: mean FR length (fr_length) over successful paths from this class to all targets",
    ),
    ("mean_l2", "paper's column: mean L2 norm of x_end - x0 at the flip over the same paths"),
    ("vuln_rank", "paper's column: rank of mean_fr_margin, 1 = largest = most robust"),
    ("image_margin", "true FR margin: per image min over targets of fr_length, averaged over images"),
    ("mean_lower_bound", "mean over images of the simplex lower bound LB"),
    ("mean_predicted_length", "mean closed-form NG length (exact flow) over the paths of mean_fr_margin"),
    ("shielded_pct", "% of successful paths from this class whose first hit is not their target"),
    ("mean_steps", "mean step count of successful paths (the paper's D_FR in paper mode)"),
    ("n_as_shield", "number of paths this class intercepted (numerator of shielding_pct)"),
)
CI_COLUMNS = ("shielding_pct", "mean_fr_margin", "mean_l2", "vuln_rank", "image_margin")


@dataclass(frozen=True)
class ClassStatistics:
    """The class table and what was computed on the way to it, for statistics built on top.

    Attributes:
        table: the per-class table (see ``class_table``).
        paths: the validated path table (see ``prepare_paths``).
        margins: per-image margins (see ``image_margins``), one row per image with a path.
        bootstrap: the image resamples behind every interval of ``table``.
        replicates: column -> (n_boot, C) bootstrap replicates of the ratio columns and vuln_rank.
        path_image: (P,) position in ``margins`` of each path's image.
    """

    table: pd.DataFrame
    paths: pd.DataFrame
    margins: pd.DataFrame
    bootstrap: ClusterBootstrap
    replicates: Mapping[str, np.ndarray]
    path_image: np.ndarray

    @property
    def class_names(self) -> list[str]:
        """Class names, in class index order."""
        return self.table["name"].tolist()


def _onehot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(P, C) one-hot rows; NO_FLIP rows are all zero."""
    out = np.zeros((len(classes), n_classes))
    valid = classes >= 0
    out[np.flatnonzero(valid), classes[valid]] = 1.0
    return out


def _path_ratio_terms(p: pd.DataFrame, n_classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-path (P, C) numerators and denominators of the class table's ratio columns."""
    ok = p["success"].to_numpy(bool)
    src = _onehot(p["source"].to_numpy(), n_classes)
    tgt = _onehot(p["target"].to_numpy(), n_classes)
    hit = _onehot(p["first_hit"].to_numpy(), n_classes)

    def by_source(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        use = mask & np.isfinite(values)
        return src * np.where(use, values, 0.0)[:, None], src * use[:, None]

    eligible = ok[:, None] * (1.0 - src - tgt)
    finite_length = ok & np.isfinite(p["fr_length"].to_numpy())
    return {
        "shielding_pct": (eligible * hit * 100.0, eligible),
        "mean_fr_margin": by_source(p["fr_length"].to_numpy(), ok),
        "mean_l2": by_source(p["l2"].to_numpy(), finite_length),
        "mean_predicted_length": by_source(p["predicted_length"].to_numpy(), finite_length),
        "shielded_pct": by_source(p["shielded"].to_numpy(float) * 100.0, ok),
        "success_pct": by_source(ok * 100.0, np.ones(len(p), bool)),
        "mean_steps": by_source(p["steps"].to_numpy(), ok),
    }


def _image_sums(
    p: pd.DataFrame, im: pd.DataFrame, pos: np.ndarray, n_classes: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names and (B, len(names) * C) per-image numerator and denominator sums of every ratio."""
    per_path = _path_ratio_terms(p, n_classes)
    names = list(per_path)
    stacked_num = np.hstack([per_path[k][0] for k in names])
    stacked_den = np.hstack([per_path[k][1] for k in names])
    num = np.zeros((len(im), stacked_num.shape[1]))
    den = np.zeros_like(num)
    np.add.at(num, pos, stacked_num)
    np.add.at(den, pos, stacked_den)
    img_src = _onehot(im["source"].to_numpy(), n_classes)
    for name, column in (("image_margin", "fr_margin"), ("mean_lower_bound", "lower_bound")):
        values = im[column].to_numpy(float)
        use = np.isfinite(values)
        num = np.hstack([num, img_src * np.where(use, values, 0.0)[:, None]])
        den = np.hstack([den, img_src * use[:, None]])
        names.append(name)
    return names, num, den


def image_margins(paths: pd.DataFrame, images: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-image FR margin: the minimum over targets of the traced length of successful paths.

    Columns: ``image_index``, ``source``, ``n_paths``, ``n_success``, ``fr_margin`` (min fr_length
    over successful paths, NaN if none), ``margin_target``, ``margin_first_hit``, ``margin_l2``
    (target, first class hit and L2 at flip of that shortest path), ``min_l2_paths`` (min L2 at flip
    over successful paths), ``predicted_margin`` (min closed-form length over all targets),
    ``lower_bound``, ``confidence`` (from ``images`` when given, else from ``paths``) and
    ``fr_rank`` (rank of fr_margin over images, 1 = largest margin = most robust).

    Example:
        >>> image_margins(paths, images).sort_values("fr_margin").head()
    """
    p = prepare_paths(paths)
    base = p.groupby("image_index", sort=True).agg(
        source=("source", "first"),
        n_paths=("target", "size"),
        n_success=("success", "sum"),
        predicted_margin=("predicted_length", "min"),
        lower_bound=("lower_bound", "first"),
        confidence=("confidence", "first"),
    )
    succ = p[p["success"] & np.isfinite(p["fr_length"])]
    shortest = succ.loc[succ.groupby("image_index")["fr_length"].idxmin()]
    shortest = shortest.set_index("image_index")[["fr_length", "target", "first_hit", "l2"]]
    shortest.columns = ["fr_margin", "margin_target", "margin_first_hit", "margin_l2"]
    out = base.join(shortest).join(succ.groupby("image_index")["l2"].min().rename("min_l2_paths"))
    if images is not None:
        require_columns(images, "images", ("image_index",))
        info = images.drop_duplicates("image_index").set_index("image_index")
        for column in ("lower_bound", "confidence"):
            if column in info.columns:
                values = info[column].reindex(out.index).astype(float)
                out[column] = values.where(values.notna(), out[column])
    for column in ("margin_target", "margin_first_hit"):
        out[column] = out[column].fillna(NO_FLIP).astype(np.int64)
    out["n_success"] = out["n_success"].astype(np.int64)
    out["fr_rank"] = out["fr_margin"].rank(ascending=False, method="average")
    columns = [
        "source",
        "n_paths",
        "n_success",
        "fr_margin",
        "margin_target",
        "margin_first_hit",
        "margin_l2",
        "min_l2_paths",
        "predicted_margin",
        "lower_bound",
        "confidence",
        "fr_rank",
    ]
    return out[columns].reset_index()


def class_statistics(
    paths: pd.DataFrame,
    images: pd.DataFrame | None,
    class_names: Sequence[str],
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> ClassStatistics:
    """The class table (see ``class_table``) with its bootstrap draw and replicates.

    Example:
        >>> stats = class_statistics(paths, images, names, n_boot=1000, seed=0)
        >>> stats.replicates["mean_fr_margin"].shape
        (1000, 10)
    """
    names = check_class_names(class_names)
    n_boot = check_n_boot(n_boot)
    n_classes = len(names)
    p = prepare_paths(paths, n_classes)
    im = image_margins(p, images)
    pos = pd.Index(im["image_index"]).get_indexer(p["image_index"])
    bootstrap = ClusterBootstrap.draw(im["source"].to_numpy(), n_boot, seed)
    columns, num, den = _image_sums(p, im, pos, n_classes)
    point_all = safe_ratio(num.sum(0), den.sum(0))
    boot_all = safe_ratio(bootstrap.weights @ num, bootstrap.weights @ den)
    num_sum = num.sum(0)
    point, boot, sums = {}, {}, {}
    for i, name in enumerate(columns):
        cols = slice(i * n_classes, (i + 1) * n_classes)
        point[name], boot[name], sums[name] = point_all[cols], boot_all[:, cols], num_sum[cols]
    point["vuln_rank"] = rank_descending(point["mean_fr_margin"])
    boot["vuln_rank"] = rank_descending(boot["mean_fr_margin"]) if bootstrap.n_boot else np.empty((0, n_classes))
    table = _assemble_table(names, p, im, point, boot, sums)
    return ClassStatistics(table=table, paths=p, margins=im, bootstrap=bootstrap, replicates=boot, path_image=pos)


def _assemble_table(
    names: list[str],
    p: pd.DataFrame,
    im: pd.DataFrame,
    point: dict[str, np.ndarray],
    boot: dict[str, np.ndarray],
    sums: dict[str, np.ndarray],
) -> pd.DataFrame:
    out = pd.DataFrame(index=pd.RangeIndex(len(names), name="class"))
    out["name"] = names
    counts = p.groupby("source").agg(n_paths=("target", "size"), n_success=("success", "sum"))
    out["n_images"] = im.groupby("source").size().reindex(out.index, fill_value=0).astype(np.int64)
    for column in ("n_paths", "n_success"):
        out[column] = counts[column].reindex(out.index, fill_value=0).astype(np.int64)
    out["success_pct"] = point["success_pct"]
    for column in CI_COLUMNS:
        out[column] = point[column]
        out[f"{column}_lo"], out[f"{column}_hi"] = percentile_interval(boot[column])
    for column in ("mean_lower_bound", "mean_predicted_length", "shielded_pct", "mean_steps"):
        out[column] = point[column]
    out["n_as_shield"] = np.rint(sums["shielding_pct"] / 100.0).astype(np.int64)
    if "fr_length_target" in p.columns:
        to_target = pd.to_numeric(p["fr_length_target"], errors="coerce")
        if to_target.notna().any():
            out["mean_fr_length_target"] = to_target[p["success"]].groupby(p["source"]).mean()
    return out


def class_table(
    paths: pd.DataFrame,
    images: pd.DataFrame | None,
    class_names: Sequence[str],
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-class table: the paper's four columns with 95% cluster-bootstrap intervals, and more.

    One row per class (index ``class`` = 0..C-1); columns in ``CLASS_TABLE_COLUMNS`` order, and
    ``X_lo``/``X_hi`` for X in ``CI_COLUMNS``. Definitions (s = the row's class; "successful" =
    the path changed the predicted class):

    - ``shielding_pct``: among successful paths with s neither source nor target, the % whose first
      class hit is s. A per-class rate, so (unlike the paper's column) it does not sum to 100.
    - ``mean_fr_margin``: mean ``fr_length`` over successful paths from s (all targets pooled).
    - ``mean_l2``: mean ``l2`` at the flip over those paths.
    - ``vuln_rank``: rank of ``mean_fr_margin`` among classes, 1 = most robust; its interval is
      the percentile interval of the rank recomputed in each replicate.
    - ``image_margin``: mean over images of s of min over targets of fr_length (the true margin).
    - ``mean_lower_bound``, ``mean_predicted_length``, ``shielded_pct``, ``success_pct``,
      ``mean_steps``, ``n_as_shield``: see ``CLASS_TABLE_COLUMNS``.
    - ``mean_fr_length_target`` (only when paths carry ``fr_length_target``, runs with
      until="target"): mean FR length to the target itself over successful paths from s.

    Paths of several methods or metrics must be split by the caller before.

    Example:
        >>> table = class_table(paths, images, ["airplane", ...], n_boot=1000, seed=0)
        >>> table.loc[3, ["shielding_pct", "shielding_pct_lo", "shielding_pct_hi"]]
    """
    return class_statistics(paths, images, class_names, n_boot=n_boot, seed=seed).table


def class_means(margins: pd.DataFrame, column: str = "fr_margin") -> pd.Series:
    """Mean of a per-image ``column`` of ``margins`` over the images of each source class."""
    return margins.groupby("source")[column].mean()
