"""Count tables of traced paths: path matrix, shielding landscape, status counts, closed forms.

Letters: P = paths, C = classes.

Example:
    >>> path_matrix(paths, 10).loc[3, 5]  # paths from cat whose first class hit is dog
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from frmargin.analysis.bootstrap import safe_ratio
from frmargin.analysis.inputs import NO_FLIP, flow_paths, prepare_paths
from frmargin.analysis.tables import image_margins
from frmargin.errors import bad_argument

LB_RTOL = 1e-4  # a traced length counts as >= LB when fr_length >= LB * (1 - LB_RTOL) - LB_ATOL
LB_ATOL = 1e-6


def path_matrix(paths: pd.DataFrame, n_classes: int, no_flip: str = "column") -> pd.DataFrame:
    """Counts of paths by (source class, first class hit): rows = source, columns = first hit.

    ``no_flip`` says where paths that did not change the class go: ``"column"`` (an extra column
    ``"none"``), ``"diagonal"`` (counted as keeping the source label, as in the paper's figure) or
    ``"drop"``.

    Example:
        >>> path_matrix(paths, 10).loc[3, 5]  # paths from cat whose first class hit is dog
    """
    if no_flip not in ("column", "diagonal", "drop"):
        raise bad_argument("no_flip", no_flip, "'column', 'diagonal' or 'drop'")
    p = prepare_paths(paths, n_classes)
    matrix = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    hit = np.where(p["success"].to_numpy(), p["first_hit"].to_numpy(), NO_FLIP)
    flip = hit >= 0
    np.add.at(matrix, (p["source"].to_numpy()[flip], hit[flip]), 1)
    failed = np.bincount(p["source"].to_numpy()[~flip], minlength=n_classes)
    if no_flip == "diagonal":
        matrix[np.arange(n_classes), np.arange(n_classes)] += failed
    elif no_flip == "column":
        matrix[:, n_classes] = failed
    columns: list[object] = list(range(n_classes))
    if no_flip != "column":
        matrix = matrix[:, :n_classes]
    else:
        columns.append("none")
    out = pd.DataFrame(matrix, index=pd.RangeIndex(n_classes, name="source"), columns=columns)
    out.columns.name = "first_hit"
    return out


def shielding_landscape(paths: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """Per (source, target) pair: how often its successful paths were shielded, and by whom.

    Columns: ``source``, ``target``, ``n_paths``, ``n_success``, ``n_shielded``, ``shielded_share``
    (n_shielded / n_success), ``top_shield`` (most frequent first hit among shielded paths, ties to
    the smaller class index, -1 if none) and ``top_shield_share`` (its share of the shielded paths).

    Example:
        >>> shielding_landscape(paths, 10).query("source == 3 and target == 5")
    """
    p = prepare_paths(paths, n_classes)
    grid = pd.MultiIndex.from_tuples(
        [(s, t) for s in range(n_classes) for t in range(n_classes) if s != t],
        names=["source", "target"],
    )
    g = p.groupby(["source", "target"])
    out = pd.DataFrame(index=grid)
    out["n_paths"] = g.size().reindex(grid, fill_value=0)
    out["n_success"] = g["success"].sum().reindex(grid, fill_value=0)
    out["n_shielded"] = g["shielded"].sum().reindex(grid, fill_value=0)
    out = out.astype(np.int64)
    out["shielded_share"] = safe_ratio(out["n_shielded"].to_numpy(float), out["n_success"].to_numpy(float))
    shielded = p[p["shielded"]]
    counts = shielded.groupby(["source", "target", "first_hit"]).size().rename("n").reset_index()
    counts = counts.sort_values(["source", "target", "n", "first_hit"], ascending=[True, True, False, True])
    top = counts.drop_duplicates(["source", "target"]).set_index(["source", "target"])
    out["top_shield"] = top["first_hit"].reindex(grid).fillna(NO_FLIP).astype(np.int64)
    out["top_shield_share"] = safe_ratio(
        top["n"].reindex(grid).fillna(0).to_numpy(float), out["n_shielded"].to_numpy(float)
    )
    return out.reset_index()


def shield_target_matrix(
    paths: pd.DataFrame,
    n_classes: int,
    sources: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Share of successful paths toward each target intercepted by each shield (rows = shields).

    Entry (c, t) = #(successful paths from ``sources`` toward t whose first hit is c != t) /
    #(successful paths from ``sources`` toward t). Columns are ``targets`` (default all classes).

    Example:
        >>> shield_target_matrix(paths, 10, sources=[0, 1, 8, 9], targets=[2, 3, 5, 6])
    """
    p = prepare_paths(paths, n_classes)
    sources = list(range(n_classes)) if sources is None else [int(s) for s in sources]
    targets = list(range(n_classes)) if targets is None else [int(t) for t in targets]
    sel = p[p["success"] & p["source"].isin(sources) & p["target"].isin(targets)]
    den = sel.groupby("target").size().reindex(targets, fill_value=0).to_numpy(float)
    counts = pd.crosstab(sel.loc[sel["shielded"], "first_hit"], sel.loc[sel["shielded"], "target"])
    counts = counts.reindex(index=range(n_classes), columns=targets, fill_value=0).to_numpy(float)
    share = safe_ratio(counts, np.broadcast_to(den, counts.shape))
    out = pd.DataFrame(share, index=pd.RangeIndex(n_classes, name="shield"), columns=targets)
    out.columns.name = "target"
    return out


def status_counts(paths: pd.DataFrame) -> pd.DataFrame:
    """Paths per ``status`` with their share (%) and how many of them changed the class.

    Example:
        >>> status_counts(paths)  # status, n_paths, pct, n_success
    """
    p = prepare_paths(paths)
    g = p.groupby("status", sort=False)
    out = pd.DataFrame({"n_paths": g.size(), "n_success": g["success"].sum().astype(np.int64)})
    out["pct"] = 100.0 * out["n_paths"] / max(len(p), 1)
    out = out.sort_values("n_paths", ascending=False)[["n_paths", "pct", "n_success"]]
    return out.reset_index()


def closed_form_agreement(paths: pd.DataFrame) -> pd.DataFrame:
    """How well the closed forms (docs/method.md) predict the traced paths.

    Rows (``quantity``, ``value``, ``n``, ``definition``), all over successful paths of the flow
    (status ``damped`` left out: such a path is a real path to the change, not the flow's):
    ``rel_error_median`` and ``rel_error_p90``: quantiles of |fr_length - predicted_length| /
    predicted_length; ``first_hit_agreement``: share with first_hit == predicted_first_hit;
    ``share_above_lower_bound``: share with fr_length >= LB (1 - LB_RTOL) - LB_ATOL;
    ``margin_over_lb_median``: median over images of (min over targets of fr_length) / LB.

    Example:
        >>> closed_form_agreement(paths).set_index("quantity")["value"]
    """
    p = prepare_paths(paths)
    ok = flow_paths(p)
    pred = ok["predicted_length"].to_numpy()
    use = np.isfinite(pred) & (pred > 0)
    rel = np.abs(ok["fr_length"].to_numpy()[use] - pred[use]) / pred[use]
    has_hit = ok["predicted_first_hit"] >= 0
    agree = (ok["first_hit"] == ok["predicted_first_hit"])[has_hit]
    lb = ok["lower_bound"].to_numpy()
    has_lb = np.isfinite(lb)
    above = ok["fr_length"].to_numpy()[has_lb] >= lb[has_lb] * (1 - LB_RTOL) - LB_ATOL
    im = image_margins(p)
    ratio = (im["fr_margin"] / im["lower_bound"]).to_numpy()
    ratio = ratio[np.isfinite(ratio)]

    def q(values: np.ndarray, level: float) -> float:
        return float(np.quantile(values, level)) if values.size else np.nan

    rows = [
        ("rel_error_median", q(rel, 0.5), rel.size, "median of |traced - predicted| / predicted length"),
        ("rel_error_p90", q(rel, 0.9), rel.size, "90th percentile of the same relative error"),
        (
            "first_hit_agreement",
            float(agree.mean()) if agree.size else np.nan,
            int(agree.size),
            "share of paths whose first class hit equals the predicted one",
        ),
        (
            "share_above_lower_bound",
            float(above.mean()) if above.size else np.nan,
            int(above.size),
            f"share with traced length >= LB (relative tolerance {LB_RTOL:g})",
        ),
        (
            "margin_over_lb_median",
            q(ratio, 0.5),
            ratio.size,
            "median over images of (min over targets of traced length) / LB",
        ),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value", "n", "definition"])


def ranked_order(vuln_rank: Sequence[float] | np.ndarray) -> list[int]:
    """Class indices ordered by rank (1 first); unranked classes last."""
    ranks = np.asarray(vuln_rank, float)
    return sorted(range(len(ranks)), key=lambda c: (not np.isfinite(ranks[c]), ranks[c], c))


def landscape_panels(
    paths: pd.DataFrame, n_classes: int, vuln_rank: Sequence[float] | np.ndarray
) -> list[tuple[str, pd.DataFrame]]:
    """The two panels of the shielding landscape, as % shares (rows = shields, columns = targets).

    "Robust" is the top half of the ranked classes of ``vuln_rank`` (1 = most robust), "fragile"
    the rest. Panel 1: robust sources toward fragile targets; panel 2: fragile toward robust. Rows
    (every ranked class) and columns are ordered by rank.

    Example:
        >>> title, shares = landscape_panels(paths, 10, table["vuln_rank"])[0]
    """
    ranks = np.asarray(vuln_rank, float)
    order = [c for c in ranked_order(ranks) if np.isfinite(ranks[c])]
    robust, fragile = order[: len(order) // 2], order[len(order) // 2 :]
    panels = [
        ("robust sources -> fragile targets", robust, fragile),
        ("fragile sources -> robust targets", fragile, robust),
    ]
    return [
        (title, 100 * shield_target_matrix(paths, n_classes, sources, targets).loc[order, targets])
        for title, sources, targets in panels
    ]


def closed_form_points(paths: pd.DataFrame) -> pd.DataFrame:
    """Successful paths' traced and closed-form lengths, and whether the closed form is direct
    (paths of status ``damped`` left out).

    Columns: ``predicted_length``, ``fr_length``, ``predicted_direct`` (the closed form predicts
    the path reaches its target unshielded; True when paths carry no ``predicted_first_hit``).
    Empty when no path carries a finite ``predicted_length``.
    """
    ok = flow_paths(paths)
    if "predicted_length" not in ok.columns or not np.isfinite(ok["predicted_length"]).any():
        return pd.DataFrame(columns=["predicted_length", "fr_length", "predicted_direct"])
    direct = (
        ok["predicted_first_hit"] == ok["target"]
        if "predicted_first_hit" in ok.columns
        else pd.Series(True, index=ok.index)
    )
    return pd.DataFrame(
        {"predicted_length": ok["predicted_length"], "fr_length": ok["fr_length"], "predicted_direct": direct}
    )


def margin_bound_points(margins: pd.DataFrame) -> pd.DataFrame:
    """Images of ``margins`` with a finite margin and lower bound: ``lower_bound``, ``fr_margin``."""
    finite = np.isfinite(margins["fr_margin"]) & np.isfinite(margins["lower_bound"])
    return margins.loc[finite, ["lower_bound", "fr_margin"]]
