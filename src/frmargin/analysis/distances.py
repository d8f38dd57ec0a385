"""FR margins against Euclidean distances: minimal L2 per attack, rank correlations, rankings.

``baselines`` has one row per (image, attack) with the attack's minimal ``l2`` (``inf`` when it
failed). Letters: B = images, C = classes.

Example:
    >>> fr_vs_l2(image_margins(paths, images), baselines).query("level == 'class'")
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from frmargin.analysis.bootstrap import DEFAULT_N_BOOT, ClusterBootstrap, check_n_boot, safe_ratio
from frmargin.analysis.correlation import CORRELATION_COLUMNS, correlations, weighted_kendall
from frmargin.analysis.inputs import require_columns


def best_l2(baselines: pd.DataFrame) -> pd.DataFrame:
    """Minimal L2 per image for each attack, plus ``"best"`` (min over attacks) when several.

    Returns a wide DataFrame indexed by ``image_index`` with one column per attack; failures stay
    ``inf``.

    Example:
        >>> best_l2(baselines)["best"]
    """
    require_columns(baselines, "baselines", ("image_index", "attack", "l2"))
    b = baselines.assign(l2=pd.to_numeric(baselines["l2"], errors="coerce").astype(float))
    wide = b.pivot_table(index="image_index", columns="attack", values="l2", aggfunc="min")
    wide.columns = [str(c) for c in wide.columns]
    if wide.shape[1] > 1:
        wide["best"] = wide.min(axis=1)
    return wide


def best_attack(wide: pd.DataFrame) -> str:
    """The column of ``best_l2(...)`` that stands for the attacks: ``"best"`` when present."""
    return "best" if "best" in wide.columns else str(wide.columns[0])


def margins_with_attacks(margins: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Per image present in both: ``fr_margin`` and one minimal-L2 column per attack (no "best").

    Indexed by ``image_index``; failed attacks stay ``inf``.
    """
    wide = best_l2(baselines)
    attacks = [c for c in wide.columns if c != "best"]
    return margins.set_index("image_index")[["fr_margin"]].join(wide[attacks], how="inner")


def fr_vs_l2(
    image_margins_df: pd.DataFrame,
    baselines_df: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Rank correlations between FR margins and minimal L2 distances, per attack and level.

    For each attack (and ``"best"`` = min over attacks): ``level="image"`` correlates per-image
    ``fr_margin`` with the attack's minimal L2 over images where both are finite (failed attacks,
    L2 = inf, are counted in ``n_excluded``); ``level="class"`` correlates the class means of the
    two over those images. Spearman and Kendall (tau-b) with 95% cluster-bootstrap intervals
    (images resampled within source class) and the asymptotic p-values of scipy.stats.

    Columns: attack, level, n, n_excluded, spearman, spearman_lo, spearman_hi, spearman_p,
    kendall, kendall_lo, kendall_hi, kendall_p.

    Example:
        >>> fr_vs_l2(image_margins(paths, images), baselines).query("level == 'class'")
    """
    require_columns(image_margins_df, "image_margins_df", ("image_index", "source", "fr_margin"))
    n_boot = check_n_boot(n_boot)
    wide = best_l2(baselines_df)
    margins = image_margins_df.drop_duplicates("image_index").set_index("image_index")
    rows = []
    for attack in wide.columns:
        joined = margins[["source", "fr_margin"]].join(wide[attack].rename("l2"), how="inner")
        finite = np.isfinite(joined["fr_margin"]) & np.isfinite(joined["l2"])
        use = joined[finite]
        x, y = use["fr_margin"].to_numpy(float), use["l2"].to_numpy(float)
        source = use["source"].to_numpy()
        draw = ClusterBootstrap.draw(source, n_boot, seed)
        idx, weights = draw.indices, draw.weights
        base = {"attack": attack, "n_excluded": int((~finite).sum())}
        boot_tau = weighted_kendall(x, y, weights)
        rows.append({**base, "level": "image", "n": len(x), **correlations(x, y, x[idx], y[idx], boot_tau)})
        classes = np.unique(source)
        onehot = (source[:, None] == classes[None, :]).astype(float)
        cx = safe_ratio(x @ onehot, onehot.sum(0))
        cy = safe_ratio(y @ onehot, onehot.sum(0))
        bx = safe_ratio(weights @ (onehot * x[:, None]), weights @ onehot)
        by = safe_ratio(weights @ (onehot * y[:, None]), weights @ onehot)
        rows.append({**base, "level": "class", "n": len(classes), **correlations(cx, cy, bx, by)})
    return pd.DataFrame(rows, columns=["attack", "level", "n", "n_excluded", *CORRELATION_COLUMNS])


def class_rankings(
    table: pd.DataFrame,
    image_margins_df: pd.DataFrame | None = None,
    baselines: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Class rankings side by side (1 = most robust): by FR and, with baselines, by L2.

    Columns: ``name``, ``mean_fr_margin``, ``rank_fr`` (= table ``vuln_rank``), and with
    baselines ``mean_min_l2`` and ``rank_l2`` (class mean of the best attack's minimal L2 over
    images with a finite one). Further ``rank_*`` columns (references) may be appended by the
    caller; ``ranking_agreement`` compares ``rank_fr`` with each.

    Example:
        >>> class_rankings(table, image_margins(paths, images), baselines)
    """
    require_columns(table, "table", ("name", "mean_fr_margin", "vuln_rank"))
    out = table[["name", "mean_fr_margin", "vuln_rank"]].rename(columns={"vuln_rank": "rank_fr"})
    if baselines is not None and image_margins_df is not None and len(baselines):
        l2 = best_l2(baselines)
        column = best_attack(l2)
        src = image_margins_df.drop_duplicates("image_index").set_index("image_index")["source"]
        joined = pd.DataFrame({"source": src}).join(l2[column].rename("l2"), how="inner")
        joined = joined[np.isfinite(joined["l2"])]
        out["mean_min_l2"] = joined.groupby("source")["l2"].mean().reindex(out.index)
        out["rank_l2"] = out["mean_min_l2"].rank(ascending=False, method="min")
    return out


def ranking_agreement(rankings: pd.DataFrame) -> pd.DataFrame:
    """Spearman and Kendall between ``rank_fr`` and each other ``rank_*`` column of ``rankings``.

    Computed over classes where both ranks exist. Columns: ``versus``, ``n``, ``spearman``,
    ``kendall``.

    Example:
        >>> ranking_agreement(class_rankings(table))
    """
    rows = []
    for column in [c for c in rankings.columns if c.startswith("rank_") and c != "rank_fr"]:
        both = rankings[["rank_fr", column]].dropna()
        if len(both) < 3:
            rows.append((column.removeprefix("rank_"), len(both), np.nan, np.nan))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = stats.spearmanr(both["rank_fr"], both[column]).statistic
            tau = stats.kendalltau(both["rank_fr"], both[column]).statistic
        rows.append((column.removeprefix("rank_"), len(both), float(rho), float(tau)))
    return pd.DataFrame(rows, columns=["versus", "n", "spearman", "kendall"])
