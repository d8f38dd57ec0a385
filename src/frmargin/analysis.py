"""Per-class tables, matrices and rank statistics of traced paths: DataFrames in, DataFrames out.

Inputs are the tables a run folder holds (see ``frmargin.report``): ``paths`` has one row per
path (``image_index``, ``source``, ``target``, ``success``, ``first_hit``, ``fr_length``, ``l2``,
...), ``images`` one row per selected image, ``baselines`` one row per (image, attack). Letters:
P = paths, B = images, C = classes.

Uncertainty: every interval is a 95% percentile interval of a *cluster* bootstrap that resamples
images, not paths (the C - 1 paths of an image share its softmax output and are correlated).
Images are resampled within their source class (stratified), so every class keeps its image count
in every replicate. Ratios of sums are computed for all replicates at once as
``(W @ numerators) / (W @ denominators)`` with W the (n_boot, B) matrix of resampling counts.

Example:
    >>> table = class_table(paths, images, class_names, n_boot=1000, seed=0)
    >>> table[["name", "mean_fr_margin", "vuln_rank"]]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from frmargin.errors import bad_argument

CI_LEVEL = 0.95
DEFAULT_N_BOOT = 1000
NO_FLIP = -1
KENDALL_TENSOR_MAX = 64  # up to this many points per replicate, Kendall uses an (n_boot, n, n) tensor
KENDALL_MATRIX_MAX = 3000  # up to this many images, bootstrap Kendall uses an (n, n) sign matrix
LB_RTOL = 1e-4  # a traced length counts as >= LB when fr_length >= LB * (1 - LB_RTOL) - LB_ATOL
LB_ATOL = 1e-6

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# The paper's groups: "animal classes (bird, cat, dog, frog) are fragile, vehicles and ship robust";
# its shields are "vehicle-style classes (truck, ship, airplane)". Automobile is a vehicle too.
PAPER_ROBUST = ("airplane", "automobile", "ship", "truck")
PAPER_FRAGILE = ("bird", "cat", "dog", "frog")
VEHICLE_CLASSES = PAPER_ROBUST

# Class-wise adversarial robustness on CIFAR-10 as commonly reported for standard and adversarially
# trained ResNets (e.g. Tian et al. 2021, "Analysis and applications of class-wise robustness in
# adversarial training"; Xu et al. 2021, "To be robust or to be fair"): cat is the most vulnerable
# class, then bird, deer and dog; automobile, truck and ship are the most robust. The order *within*
# a tier is not established, so ranks are tier mid-ranks (1 = most robust).
LITERATURE_TIERS: tuple[tuple[str, ...], ...] = (
    ("automobile", "truck", "ship"),
    ("airplane", "horse", "frog"),
    ("bird", "deer", "dog"),
    ("cat",),
)
LITERATURE_ORDER: tuple[str, ...] = tuple(c for tier in LITERATURE_TIERS for c in tier)

# The paper's table (ResNet, 800 CIFAR-10 test images, 3,659 successful paths). Its Shielding %
# column sums to 316% and its rank does not follow its mean FR margin (METHOD.md section 2).
PAPER_TABLE = pd.DataFrame(
    {
        "name": list(CIFAR10_CLASSES),
        "shielding_pct": [58.2, 40.5, 12.1, 9.8, 18.4, 14.2, 21.0, 27.5, 62.7, 51.7],
        "mean_fr_margin": [3.21, 2.76, 1.05, 0.98, 1.48, 1.12, 1.78, 2.05, 3.45, 2.98],
        "mean_l2": [0.98, 0.84, 0.32, 0.28, 0.52, 0.35, 0.60, 0.70, 1.12, 0.95],
        "vuln_rank": [1, 3, 9, 10, 7, 8, 6, 5, 2, 4],
    },
    index=pd.RangeIndex(10, name="class"),
)
PAPER_COLUMNS = ("shielding_pct", "mean_fr_margin", "mean_l2", "vuln_rank")

# Verdict thresholds of ``claims`` (named so the report can quote them).
SEPARATION_SUPPORTED = 0.9  # claim 1: share of (robust, fragile) class pairs ordered as claimed
SEPARATION_MIXED = 0.6
DOMINANCE_MAJORITY = 0.5  # claim 2: "dominate" = a majority of all shield events
DIRECTION_RATIO = 0.5  # claim 3: "rarely" = at most half the rate of the opposite direction
RANK_AGREEMENT_SUPPORTED = 0.7  # claim 4: Spearman rho of the class rankings
RANK_AGREEMENT_MIXED = 0.3

PATH_COLUMNS = ("image_index", "source", "target", "success", "first_hit", "fr_length", "l2")
OPTIONAL_PATH_COLUMNS = {
    "predicted_length": np.nan,
    "predicted_first_hit": NO_FLIP,
    "lower_bound": np.nan,
    "confidence": np.nan,
    "steps": np.nan,
    "status": "unknown",
    "method": "unknown",
    "metric": "unknown",
}

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
    ("mean_lower_bound", "mean over images of the simplex lower bound LB (METHOD 4a)"),
    ("mean_predicted_length", "mean closed-form NG length (METHOD 4b) over the paths of mean_fr_margin"),
    ("shielded_pct", "% of successful paths from this class whose first hit is not their target"),
    ("mean_steps", "mean step count of successful paths (the paper's D_FR in paper mode)"),
    ("n_as_shield", "number of paths this class intercepted (numerator of shielding_pct)"),
)
CI_COLUMNS = ("shielding_pct", "mean_fr_margin", "mean_l2", "vuln_rank", "image_margin")


# ----------------------------------------------------------------------------------- validation


def _require(df: object, name: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise bad_argument(name, type(df).__name__, "a pandas DataFrame")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise bad_argument(name, f"columns {list(df.columns)}", f"also the columns {missing}")
    return df


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise bad_argument("class_names", list(class_names), "at least 2 distinct class names")
    return names


def _prepare_paths(paths: pd.DataFrame, n_classes: int | None = None) -> pd.DataFrame:
    """Validated copy with default optional columns, typed columns and a fresh RangeIndex."""
    _require(paths, "paths", PATH_COLUMNS)
    p = paths.reset_index(drop=True).copy()
    for column, default in OPTIONAL_PATH_COLUMNS.items():
        if column not in p.columns:
            p[column] = default
    for column in ("image_index", "source", "target", "first_hit", "predicted_first_hit"):
        p[column] = p[column].fillna(NO_FLIP).astype(np.int64)
    for column in ("fr_length", "l2", "predicted_length", "lower_bound", "confidence", "steps"):
        p[column] = pd.to_numeric(p[column], errors="coerce").astype(float)
    p["success"] = p["success"].fillna(False).astype(bool)
    p["shielded"] = p["success"] & (p["first_hit"] != p["target"])
    if n_classes is not None and len(p):
        for column, low in (("source", 0), ("target", 0), ("first_hit", NO_FLIP)):
            values = p[column].to_numpy()
            bad = values[(values < low) | (values >= n_classes)]
            if bad.size:
                raise bad_argument(
                    f"paths.{column}",
                    sorted(set(bad.tolist()))[:10],
                    f"class indices in [{low}, {n_classes - 1}] for {n_classes} class names",
                )
        if (p["source"] == p["target"]).any():
            raise bad_argument("paths", "rows with target == source", "target != source")
    return p


def _check_n_boot(n_boot: int) -> int:
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise bad_argument("n_boot", n_boot, "an integer >= 0")
    return int(n_boot)


# ------------------------------------------------------------------------------------ bootstrap


def _bootstrap_indices(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, B) image indices resampled with replacement within each stratum."""
    n = len(strata)
    idx = np.empty((n_boot, n), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        idx[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return idx


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """(n_boot, B) resampling counts from (n_boot, B) indices."""
    n_boot = idx.shape[0]
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _interval(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, NaN where every replicate is NaN."""
    tail = 100 * (1 - CI_LEVEL) / 2
    if boot.shape[0] == 0:
        nan = np.full(boot.shape[1:], np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return lo, hi


def _rank_desc(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = largest, ties share the smallest rank, NaN stays NaN."""
    return stats.rankdata(-values, axis=-1, method="min", nan_policy="omit")


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return _ratio((a * b).sum(-1), den)


def _rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _rowwise_pearson(stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1))


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(a, b).statistic)


def _rowwise_kendall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair of (n_boot, n) arrays; for small n (an (n_boot, n, n) tensor)."""
    sx = np.sign(a[:, :, None] - a[:, None, :])
    sy = np.sign(b[:, :, None] - b[:, None, :])
    n = a.shape[1]
    pairs = n * (n - 1) / 2
    score = (sx * sy).sum(axis=(1, 2)) / 2
    ties_x = ((sx == 0).sum(axis=(1, 2)) - n) / 2
    ties_y = ((sy == 0).sum(axis=(1, 2)) - n) / 2
    out = _ratio(score, np.sqrt(np.maximum((pairs - ties_x) * (pairs - ties_y), 0.0)))
    return np.where(np.isfinite(a).all(1) & np.isfinite(b).all(1), out, np.nan)


def _weighted_kendall(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall tau-b of the resamples given by (n_boot, n) counts ``weights`` of the points (x, y).

    A resample holds w_i copies of point i. Over its N = sum w unordered pairs: concordant minus
    discordant = w^T S w / 2 with S_ij = sign(x_i - x_j) sign(y_i - y_j); pairs tied in x =
    (w^T T w - N) / 2 with T_ij = [x_i == x_j] (copies of one point are tied pairs), same in y.
    """
    if len(x) > KENDALL_MATRIX_MAX:
        idx = [np.repeat(np.arange(len(x)), w.astype(np.int64)) for w in weights]
        return np.array([_kendall(x[i], y[i]) for i in idx])
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    total = weights.sum(1)
    pairs = total * (total - 1) / 2
    score = np.einsum("bi,bi->b", weights @ (dx * dy), weights) / 2

    def tied_pairs(d: np.ndarray, values: np.ndarray) -> np.ndarray:
        if np.unique(values).size == values.size:  # T = identity: only copies of a point tie
            return ((weights * weights).sum(1) - total) / 2
        return (np.einsum("bi,bi->b", weights @ (d == 0).astype(float), weights) - total) / 2

    ties_x, ties_y = tied_pairs(dx, x), tied_pairs(dy, y)
    return _ratio(score, np.sqrt(np.maximum((pairs - ties_x) * (pairs - ties_y), 0.0)))


@dataclass(frozen=True)
class _ClusterStats:
    """Per-image numerators/denominators of ratio statistics and their bootstrap replicates."""

    point: dict[str, np.ndarray]  # name -> (C,)
    boot: dict[str, np.ndarray]  # name -> (n_boot, C)
    num: dict[str, np.ndarray]  # name -> (C,) summed numerators


def _onehot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(P, C) one-hot rows; NO_FLIP rows are all zero."""
    out = np.zeros((len(classes), n_classes))
    valid = classes >= 0
    out[np.flatnonzero(valid), classes[valid]] = 1.0
    return out


def _cluster_stats(p: pd.DataFrame, im: pd.DataFrame, n_classes: int, n_boot: int, seed: int) -> _ClusterStats:
    """All per-class ratio statistics of ``class_table`` with their cluster-bootstrap replicates."""
    n_img = len(im)
    pos = pd.Index(im["image_index"]).get_indexer(p["image_index"])
    ok = p["success"].to_numpy(bool)
    src = _onehot(p["source"].to_numpy(), n_classes)
    tgt = _onehot(p["target"].to_numpy(), n_classes)
    hit = _onehot(p["first_hit"].to_numpy(), n_classes)

    def by_source(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        use = mask & np.isfinite(values)
        return src * np.where(use, values, 0.0)[:, None], src * use[:, None]

    eligible = ok[:, None] * (1.0 - src - tgt)
    per_path = {
        "shielding_pct": (eligible * hit * 100.0, eligible),
        "mean_fr_margin": by_source(p["fr_length"].to_numpy(), ok),
        "mean_l2": by_source(p["l2"].to_numpy(), ok & np.isfinite(p["fr_length"].to_numpy())),
        "mean_predicted_length": by_source(
            p["predicted_length"].to_numpy(), ok & np.isfinite(p["fr_length"].to_numpy())
        ),
        "shielded_pct": by_source(p["shielded"].to_numpy(float) * 100.0, ok),
        "success_pct": by_source(ok * 100.0, np.ones(len(p), bool)),
        "mean_steps": by_source(p["steps"].to_numpy(), ok),
    }
    names = list(per_path)
    stacked_num = np.hstack([per_path[k][0] for k in names])
    stacked_den = np.hstack([per_path[k][1] for k in names])
    num = np.zeros((n_img, stacked_num.shape[1]))
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

    rng = np.random.default_rng(seed)
    weights = _weights(_bootstrap_indices(im["source"].to_numpy(), n_boot, rng), n_img)
    point_all = _ratio(num.sum(0), den.sum(0))
    boot_all = _ratio(weights @ num, weights @ den)
    num_sum = num.sum(0)
    point, boot, nums = {}, {}, {}
    for i, name in enumerate(names):
        cols = slice(i * n_classes, (i + 1) * n_classes)
        point[name], boot[name], nums[name] = point_all[cols], boot_all[:, cols], num_sum[cols]
    point["vuln_rank"] = _rank_desc(point["mean_fr_margin"])
    boot["vuln_rank"] = _rank_desc(boot["mean_fr_margin"]) if n_boot else np.empty((0, n_classes))
    return _ClusterStats(point=point, boot=boot, num=nums)


# --------------------------------------------------------------------------------- public tables


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
    p = _prepare_paths(paths)
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
        _require(images, "images", ("image_index",))
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
    names = _check_class_names(class_names)
    n_boot = _check_n_boot(n_boot)
    n_classes = len(names)
    p = _prepare_paths(paths, n_classes)
    im = image_margins(p, images)
    cs = _cluster_stats(p, im, n_classes, n_boot, seed)

    out = pd.DataFrame(index=pd.RangeIndex(n_classes, name="class"))
    out["name"] = names
    counts = p.groupby("source").agg(n_paths=("target", "size"), n_success=("success", "sum"))
    out["n_images"] = im.groupby("source").size().reindex(out.index, fill_value=0).astype(np.int64)
    for column in ("n_paths", "n_success"):
        out[column] = counts[column].reindex(out.index, fill_value=0).astype(np.int64)
    out["success_pct"] = cs.point["success_pct"]
    for column in ("shielding_pct", "mean_fr_margin", "mean_l2", "vuln_rank", "image_margin"):
        out[column] = cs.point[column]
        out[f"{column}_lo"], out[f"{column}_hi"] = _interval(cs.boot[column])
    for column in ("mean_lower_bound", "mean_predicted_length", "shielded_pct", "mean_steps"):
        out[column] = cs.point[column]
    out["n_as_shield"] = np.rint(cs.num["shielding_pct"] / 100.0).astype(np.int64)
    if "fr_length_target" in p.columns:
        to_target = pd.to_numeric(p["fr_length_target"], errors="coerce")
        if to_target.notna().any():
            out["mean_fr_length_target"] = to_target[p["success"]].groupby(p["source"]).mean()
    return out


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
    p = _prepare_paths(paths, n_classes)
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
    p = _prepare_paths(paths, n_classes)
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
    out["shielded_share"] = _ratio(out["n_shielded"].to_numpy(float), out["n_success"].to_numpy(float))
    shielded = p[p["shielded"]]
    counts = shielded.groupby(["source", "target", "first_hit"]).size().rename("n").reset_index()
    counts = counts.sort_values(["source", "target", "n", "first_hit"], ascending=[True, True, False, True])
    top = counts.drop_duplicates(["source", "target"]).set_index(["source", "target"])
    out["top_shield"] = top["first_hit"].reindex(grid).fillna(NO_FLIP).astype(np.int64)
    out["top_shield_share"] = _ratio(
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
    p = _prepare_paths(paths, n_classes)
    sources = list(range(n_classes)) if sources is None else [int(s) for s in sources]
    targets = list(range(n_classes)) if targets is None else [int(t) for t in targets]
    sel = p[p["success"] & p["source"].isin(sources) & p["target"].isin(targets)]
    den = sel.groupby("target").size().reindex(targets, fill_value=0).to_numpy(float)
    counts = pd.crosstab(sel.loc[sel["shielded"], "first_hit"], sel.loc[sel["shielded"], "target"])
    counts = counts.reindex(index=range(n_classes), columns=targets, fill_value=0).to_numpy(float)
    share = _ratio(counts, np.broadcast_to(den, counts.shape))
    out = pd.DataFrame(share, index=pd.RangeIndex(n_classes, name="shield"), columns=targets)
    out.columns.name = "target"
    return out


def status_counts(paths: pd.DataFrame) -> pd.DataFrame:
    """Paths per ``status`` with their share (%) and how many of them changed the class.

    Example:
        >>> status_counts(paths)  # status, n_paths, pct, n_success
    """
    p = _prepare_paths(paths)
    g = p.groupby("status", sort=False)
    out = pd.DataFrame({"n_paths": g.size(), "n_success": g["success"].sum().astype(np.int64)})
    out["pct"] = 100.0 * out["n_paths"] / max(len(p), 1)
    out = out.sort_values("n_paths", ascending=False)[["n_paths", "pct", "n_success"]]
    return out.reset_index()


def closed_form_agreement(paths: pd.DataFrame) -> pd.DataFrame:
    """How well the closed forms of METHOD 4 predict the traced paths.

    Rows (``quantity``, ``value``, ``n``, ``definition``), all over successful paths:
    ``rel_error_median`` and ``rel_error_p90``: quantiles of |fr_length - predicted_length| /
    predicted_length; ``first_hit_agreement``: share with first_hit == predicted_first_hit;
    ``share_above_lower_bound``: share with fr_length >= LB (1 - LB_RTOL) - LB_ATOL;
    ``margin_over_lb_median``: median over images of (min over targets of fr_length) / LB.

    Example:
        >>> closed_form_agreement(paths).set_index("quantity")["value"]
    """
    p = _prepare_paths(paths)
    ok = p[p["success"] & np.isfinite(p["fr_length"])]
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


# ----------------------------------------------------------------------------- FR versus L2


def best_l2(baselines: pd.DataFrame) -> pd.DataFrame:
    """Minimal L2 per image for each attack, plus ``"best"`` (min over attacks) when several.

    Returns a wide DataFrame indexed by ``image_index`` with one column per attack; failures stay
    ``inf``.

    Example:
        >>> best_l2(baselines)["best"]
    """
    _require(baselines, "baselines", ("image_index", "attack", "l2"))
    b = baselines.assign(l2=pd.to_numeric(baselines["l2"], errors="coerce").astype(float))
    wide = b.pivot_table(index="image_index", columns="attack", values="l2", aggfunc="min")
    wide.columns = [str(c) for c in wide.columns]
    if wide.shape[1] > 1:
        wide["best"] = wide.min(axis=1)
    return wide


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
    _require(image_margins_df, "image_margins_df", ("image_index", "source", "fr_margin"))
    n_boot = _check_n_boot(n_boot)
    wide = best_l2(baselines_df)
    margins = image_margins_df.drop_duplicates("image_index").set_index("image_index")
    rows = []
    for attack in wide.columns:
        joined = margins[["source", "fr_margin"]].join(wide[attack].rename("l2"), how="inner")
        finite = np.isfinite(joined["fr_margin"]) & np.isfinite(joined["l2"])
        use = joined[finite]
        x, y = use["fr_margin"].to_numpy(float), use["l2"].to_numpy(float)
        source = use["source"].to_numpy()
        rng = np.random.default_rng(seed)
        idx = _bootstrap_indices(source, n_boot, rng)
        base = {"attack": attack, "n_excluded": int((~finite).sum())}
        weights = _weights(idx, len(x))
        boot_tau = _weighted_kendall(x, y, weights)
        rows.append({**base, "level": "image", "n": len(x), **_correlations(x, y, x[idx], y[idx], boot_tau)})
        classes = np.unique(source)
        onehot = (source[:, None] == classes[None, :]).astype(float)
        cx = _ratio(x @ onehot, onehot.sum(0))
        cy = _ratio(y @ onehot, onehot.sum(0))
        bx = _ratio(weights @ (onehot * x[:, None]), weights @ onehot)
        by = _ratio(weights @ (onehot * y[:, None]), weights @ onehot)
        rows.append({**base, "level": "class", "n": len(classes), **_correlations(cx, cy, bx, by)})
    columns = [
        "attack",
        "level",
        "n",
        "n_excluded",
        "spearman",
        "spearman_lo",
        "spearman_hi",
        "spearman_p",
        "kendall",
        "kendall_lo",
        "kendall_hi",
        "kendall_p",
    ]
    return pd.DataFrame(rows, columns=columns)


def _correlations(
    x: np.ndarray, y: np.ndarray, bx: np.ndarray, by: np.ndarray, boot_tau: np.ndarray | None = None
) -> dict[str, float]:
    """Spearman and Kendall of (x, y) with percentile intervals over replicate rows (bx, by).

    ``boot_tau`` are precomputed Kendall replicates; else Kendall is computed row by row.
    """
    nan = {
        k: np.nan
        for k in (
            "spearman",
            "spearman_lo",
            "spearman_hi",
            "spearman_p",
            "kendall",
            "kendall_lo",
            "kendall_hi",
            "kendall_p",
        )
    }
    if len(x) < 3:
        return nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y)
        tau = stats.kendalltau(x, y)
    out = {
        "spearman": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "kendall": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
    }
    boot_rho = _rowwise_spearman(bx, by)
    if boot_tau is None and bx.shape[1] <= KENDALL_TENSOR_MAX:
        boot_tau = _rowwise_kendall(bx, by)
    elif boot_tau is None:
        boot_tau = np.array([_kendall(a, b) for a, b in zip(bx, by)])
    (out["spearman_lo"],), (out["spearman_hi"],) = _interval(boot_rho.reshape(-1, 1))
    (out["kendall_lo"],), (out["kendall_hi"],) = _interval(np.asarray(boot_tau).reshape(-1, 1))
    return {k: float(v) for k, v in out.items()}


# ------------------------------------------------------------------------------------- rankings


def literature_rank(name: str) -> float:
    """Mid-rank (1 = most robust) of a CIFAR-10 class in ``LITERATURE_TIERS``; NaN if unknown."""
    start = 1
    for tier in LITERATURE_TIERS:
        if name in tier:
            return start + (len(tier) - 1) / 2
        start += len(tier)
    return np.nan


def class_rankings(
    table: pd.DataFrame,
    image_margins_df: pd.DataFrame | None = None,
    baselines: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Class rankings side by side (1 = most robust): ours by FR, by L2, the paper's, the literature.

    Columns: ``name``, ``mean_fr_margin``, ``rank_fr`` (= table ``vuln_rank``), ``mean_min_l2``
    and ``rank_l2`` (class mean of the best attack's minimal L2 over images with a finite one;
    only with baselines), ``rank_paper`` (the paper's Vuln rank) and ``rank_literature``
    (``LITERATURE_TIERS`` mid-ranks); NaN where a class is not a CIFAR-10 class.

    Example:
        >>> class_rankings(table, image_margins(paths, images), baselines)
    """
    _require(table, "table", ("name", "mean_fr_margin", "vuln_rank"))
    out = table[["name", "mean_fr_margin", "vuln_rank"]].rename(columns={"vuln_rank": "rank_fr"})
    if baselines is not None and image_margins_df is not None and len(baselines):
        l2 = best_l2(baselines)
        column = "best" if "best" in l2.columns else l2.columns[0]
        src = image_margins_df.drop_duplicates("image_index").set_index("image_index")["source"]
        joined = pd.DataFrame({"source": src}).join(l2[column].rename("l2"), how="inner")
        joined = joined[np.isfinite(joined["l2"])]
        out["mean_min_l2"] = joined.groupby("source")["l2"].mean().reindex(out.index)
        out["rank_l2"] = out["mean_min_l2"].rank(ascending=False, method="min")
    paper = PAPER_TABLE.set_index("name")["vuln_rank"]
    out["rank_paper"] = out["name"].map(paper).astype(float)
    out["rank_literature"] = out["name"].map(literature_rank).astype(float)
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


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our class table beside the paper's, matched by class name, with ours - paper differences.

    Columns: ``name``, then for X in ``PAPER_COLUMNS``: ``X_ours``, ``X_paper``, ``X_diff``. Only
    classes present in both (empty for a dataset without CIFAR-10 class names).

    Example:
        >>> compare_with_paper(table)[["name", "mean_fr_margin_ours", "mean_fr_margin_paper"]]
    """
    _require(table, "table", ("name", *PAPER_COLUMNS))
    ours = table.set_index("name")
    paper = PAPER_TABLE.set_index("name")
    common = [n for n in paper.index if n in ours.index]
    out = pd.DataFrame({"name": common})
    for column in PAPER_COLUMNS:
        mine = ours.loc[common, column].to_numpy(float)
        theirs = paper.loc[common, column].to_numpy(float)
        out[f"{column}_ours"], out[f"{column}_paper"] = mine, theirs
        out[f"{column}_diff"] = mine - theirs
    return out


# --------------------------------------------------------------------------------------- claims

CLAIM_TEXTS = (
    "Animal classes (bird, cat, dog, frog) are fragile; vehicles and ship are robust",
    "Vehicle classes dominate as shields",
    "Fragile classes rarely shield robust ones (directionality)",
    "FR and L2 vulnerability rankings agree up to an offset",
)
CLAIM_COLUMNS = ["claim", "statistic", "value", "ci_low", "ci_high", "reference", "verdict", "explanation"]


def claims(
    paths: pd.DataFrame,
    images: pd.DataFrame | None,
    table: pd.DataFrame,
    baselines: pd.DataFrame | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    correlations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Test the paper's four qualitative claims; one row each, with a verdict.

    Verdicts are "supported", "mixed", "not supported" or "not tested" (data or class names
    missing). Intervals are 95% cluster-bootstrap intervals (images resampled within class).

    1. Separation: share of the 16 (robust, fragile) class pairs, robust in ``PAPER_ROBUST`` and
       fragile in ``PAPER_FRAGILE``, in which the robust class has the larger mean FR margin.
       Supported if >= SEPARATION_SUPPORTED, mixed if >= SEPARATION_MIXED.
    2. Vehicle shield share: among shielded paths, the share whose shield is in
       ``VEHICLE_CLASSES``; reference = the share expected if each path's shield were drawn
       uniformly from its C - 2 eligible classes. Supported if above DOMINANCE_MAJORITY and the
       interval lies above the reference; mixed if only one of the two holds.
    3. Directionality: R = top half of our vulnerability ranking, F = the rest. Value = share of
       successful paths from F toward R intercepted by a class in F; reference = share of
       successful paths from R toward F intercepted by a class in R (the two panels of the paper's
       landscape). Supported if value <= DIRECTION_RATIO * reference and the interval of
       reference - value lies above 0; not supported if value >= reference; else mixed.
    4. Rank agreement: Spearman rho between the class means of the per-image FR margin (min over
       targets) and of the minimal L2 of the best baseline attack. Supported if rho >=
       RANK_AGREEMENT_SUPPORTED with interval above 0, mixed if rho >= RANK_AGREEMENT_MIXED; not
       tested without baselines. ``correlations`` may pass the result of ``fr_vs_l2`` for these
       images, to reuse it.

    Example:
        >>> claims(paths, images, table, baselines)[["claim", "value", "verdict"]]
    """
    _require(table, "table", ("name", "mean_fr_margin", "vuln_rank"))
    n_boot = _check_n_boot(n_boot)
    names = list(table["name"])
    n_classes = len(names)
    p = _prepare_paths(paths, n_classes)
    im = image_margins(p, images)
    cs = _cluster_stats(p, im, n_classes, n_boot, seed)
    rng = np.random.default_rng(seed + 1)
    idx = _bootstrap_indices(im["source"].to_numpy(), n_boot, rng)
    weights = _weights(idx, len(im))
    pos = pd.Index(im["image_index"]).get_indexer(p["image_index"])
    rows = [
        _claim_separation(names, cs),
        _claim_vehicle_shields(names, p, pos, len(im), weights),
        _claim_directionality(table, p, pos, len(im), weights),
        _claim_rank_agreement(im, baselines, n_boot, seed, correlations),
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _row(
    number: int,
    statistic: str,
    value: float = np.nan,
    ci: tuple[float, float] = (np.nan, np.nan),
    reference: float = np.nan,
    verdict: str = "not tested",
    explanation: str = "",
) -> dict:
    return {
        "claim": CLAIM_TEXTS[number - 1],
        "statistic": statistic,
        "value": float(value),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "reference": float(reference),
        "verdict": verdict,
        "explanation": explanation,
    }


def _per_image_ratio(
    num: np.ndarray, den: np.ndarray, pos: np.ndarray, n_img: int, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """Point ratio sum(num)/sum(den) over paths and its (n_boot,) replicates."""
    num_img = np.bincount(pos, weights=num, minlength=n_img)
    den_img = np.bincount(pos, weights=den, minlength=n_img)
    return float(_ratio(num_img.sum(), den_img.sum())), _ratio(weights @ num_img, weights @ den_img)


def _ci(boot: np.ndarray) -> tuple[float, float]:
    lo, hi = _interval(np.asarray(boot, float).reshape(-1, 1))
    return float(lo[0]), float(hi[0])


def _claim_separation(names: list[str], cs: _ClusterStats) -> dict:
    statistic = (
        "share of (robust, fragile) class pairs, robust in {airplane, automobile, ship, "
        "truck} and fragile in {bird, cat, dog, frog}, with robust mean FR margin larger"
    )
    robust = [names.index(c) for c in PAPER_ROBUST if c in names]
    fragile = [names.index(c) for c in PAPER_FRAGILE if c in names]
    margin = cs.point["mean_fr_margin"]
    if len(robust) < len(PAPER_ROBUST) or len(fragile) < len(PAPER_FRAGILE):
        return _row(1, statistic, explanation="needs the CIFAR-10 class names")
    if not np.all(np.isfinite(margin[robust + fragile])):
        return _row(1, statistic, explanation="some of these classes have no successful path")

    def separation(m: np.ndarray) -> np.ndarray:
        return (m[..., robust][..., :, None] > m[..., fragile][..., None, :]).mean(axis=(-1, -2))

    value = float(separation(margin))
    ci = _ci(separation(cs.boot["mean_fr_margin"]))
    verdict = (
        "supported" if value >= SEPARATION_SUPPORTED else "mixed" if value >= SEPARATION_MIXED else "not supported"
    )
    worst = sorted(names[i] for i in fragile if margin[i] >= margin[robust].min())
    explanation = (
        f"{round(value * 16)} of 16 pairs ordered as claimed (supported >= "
        f"{SEPARATION_SUPPORTED:g}, mixed >= {SEPARATION_MIXED:g})"
    )
    if worst:
        explanation += f"; fragile classes above the weakest robust one: {', '.join(worst)}"
    return _row(1, statistic, value, ci, np.nan, verdict, explanation)


def _claim_vehicle_shields(names: list[str], p: pd.DataFrame, pos: np.ndarray, n_img: int, weights: np.ndarray) -> dict:
    statistic = (
        "share of shielded paths whose shield is airplane, automobile, ship or truck "
        "(reference: share expected under uniform shields)"
    )
    vehicles = [names.index(c) for c in VEHICLE_CLASSES if c in names]
    if len(vehicles) < len(VEHICLE_CLASSES):
        return _row(2, statistic, explanation="needs the CIFAR-10 class names")
    shielded = p["shielded"].to_numpy(bool)
    if not shielded.any():
        return _row(2, statistic, explanation="no shielded path in this run")
    is_vehicle = np.isin(p["first_hit"].to_numpy(), vehicles)
    value, boot = _per_image_ratio((shielded & is_vehicle).astype(float), shielded.astype(float), pos, n_img, weights)
    eligible = len(vehicles) - np.isin(p["source"], vehicles) - np.isin(p["target"], vehicles)
    chance = float(np.mean(eligible[shielded] / (len(names) - 2)))
    ci = _ci(boot)
    majority, above = value > DOMINANCE_MAJORITY, ci[0] > chance
    verdict = "supported" if majority and above else "mixed" if majority or above else "not supported"
    return _row(
        2,
        statistic,
        value,
        ci,
        chance,
        verdict,
        f"{int(shielded.sum())} shielded paths; vehicles would take {chance:.2f} of them "
        f"by chance; 'dominate' = a majority (> {DOMINANCE_MAJORITY:g}) and above chance",
    )


def _claim_directionality(
    table: pd.DataFrame, p: pd.DataFrame, pos: np.ndarray, n_img: int, weights: np.ndarray
) -> dict:
    statistic = (
        "share of successful fragile-to-robust paths shielded by a fragile class "
        "(reference: robust-to-fragile paths shielded by a robust class); robust = top "
        "half of our vulnerability ranking"
    )
    ranks = table["vuln_rank"].to_numpy(float)
    ranked = np.flatnonzero(np.isfinite(ranks))
    if ranked.size < 4:
        return _row(3, statistic, explanation="fewer than 4 classes have successful paths")
    order = ranked[np.argsort(ranks[ranked], kind="stable")]
    robust, fragile = order[: order.size // 2], order[order.size // 2 :]
    src, tgt, hit = (p[c].to_numpy() for c in ("source", "target", "first_hit"))
    ok, shielded = p["success"].to_numpy(bool), p["shielded"].to_numpy(bool)
    f_to_r = ok & np.isin(src, fragile) & np.isin(tgt, robust)
    r_to_f = ok & np.isin(src, robust) & np.isin(tgt, fragile)
    if not f_to_r.any() or not r_to_f.any():
        return _row(3, statistic, explanation="no successful path between the two halves")
    value, boot_v = _per_image_ratio(
        (f_to_r & shielded & np.isin(hit, fragile)).astype(float), f_to_r.astype(float), pos, n_img, weights
    )
    ref, boot_r = _per_image_ratio(
        (r_to_f & shielded & np.isin(hit, robust)).astype(float), r_to_f.astype(float), pos, n_img, weights
    )
    ci = _ci(boot_v)
    diff_lo, diff_hi = _ci(boot_r - boot_v)
    if value >= ref:
        verdict = "not supported"
    elif value <= DIRECTION_RATIO * ref and diff_lo > 0:
        verdict = "supported"
    else:
        verdict = "mixed"
    names = table["name"].tolist()
    return _row(
        3,
        statistic,
        value,
        ci,
        ref,
        verdict,
        f"robust half: {', '.join(names[i] for i in robust)}; reference - value = "
        f"{ref - value:.3f} [{diff_lo:.3f}, {diff_hi:.3f}]; 'rarely' = at most "
        f"{DIRECTION_RATIO:g} x the reference with the difference's interval above 0",
    )


def _claim_rank_agreement(
    im: pd.DataFrame, baselines: pd.DataFrame | None, n_boot: int, seed: int, correlations: pd.DataFrame | None
) -> dict:
    statistic = (
        "Spearman rho between the class means of the per-image FR margin (min over targets) "
        "and of the minimal L2 of the best baseline attack"
    )
    if baselines is None or len(baselines) == 0:
        return _row(4, statistic, explanation="no baselines.parquet: no minimal-L2 attack to compare")
    corr = fr_vs_l2(im, baselines, n_boot=n_boot, seed=seed) if correlations is None else correlations
    attacks = corr["attack"].unique().tolist()
    attack = "best" if "best" in attacks else attacks[0]
    row = corr[(corr["attack"] == attack) & (corr["level"] == "class")].iloc[0]
    value, ci = row["spearman"], (row["spearman_lo"], row["spearman_hi"])
    if not np.isfinite(value):
        return _row(4, statistic, explanation="too few classes with finite margins and L2")
    if value >= RANK_AGREEMENT_SUPPORTED and ci[0] > 0:
        verdict = "supported"
    elif value >= RANK_AGREEMENT_MIXED:
        verdict = "mixed"
    else:
        verdict = "not supported"
    image = corr[(corr["attack"] == attack) & (corr["level"] == "image")].iloc[0]
    return _row(
        4,
        statistic,
        value,
        ci,
        np.nan,
        verdict,
        f"attack {attack!r} over {int(row['n'])} classes; per-image Spearman "
        f"{image['spearman']:.2f} [{image['spearman_lo']:.2f}, {image['spearman_hi']:.2f}]; "
        f"supported >= {RANK_AGREEMENT_SUPPORTED:g}, mixed >= {RANK_AGREEMENT_MIXED:g}",
    )


# ------------------------------------------------------------------------ Fisher versus Euclidean


@dataclass(frozen=True)
class MetricComparison:
    """Fisher versus Euclidean paths of the same images and targets.

    Attributes:
        summary: rows (quantity, fisher, euclidean, joint, note): success %, shielded % of
            successful paths per run; first-hit agreement % (``joint``) over pairs in both runs.
        per_class: per source class: n_pairs, shielded_pct_fisher, shielded_pct_euclidean,
            agreement_pct (first hit equal, a failed path counting as first hit -1).
        pairs: per (image_index, target): source, first_hit_fisher, first_hit_euclidean, agree.
        matrix_diff: path matrix (source x first hit, "none" column) of Euclidean minus Fisher,
            over the common pairs.
        statistics: rows (statistic, value, ci_low, ci_high, note) with 95% cluster-bootstrap
            intervals (images resampled within their source class): shielded % under each
            metric, their difference, first-hit agreement, and among pairs shielded under both
            metrics the share with the same shield.
        verdict: one sentence answering whether shielding is a property of the classifier's
            decision regions (both metrics shield alike) or of the metric.
    """

    summary: pd.DataFrame
    per_class: pd.DataFrame
    pairs: pd.DataFrame
    matrix_diff: pd.DataFrame
    statistics: pd.DataFrame | None = None
    verdict: str = ""


def fisher_vs_euclidean(
    paths_fisher: pd.DataFrame,
    paths_euclid: pd.DataFrame,
    n_classes: int | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> MetricComparison:
    """Compare first hits and shielding of Fisher (natural-gradient) and Euclidean paths.

    Paths are matched on (image_index, target); unmatched rows are ignored. Intervals resample
    images within their source class (``n_boot`` replicates, ``seed``).

    Example:
        >>> cmp = fisher_vs_euclidean(run_fisher.paths, run_euclid.paths)
        >>> cmp.summary
    """
    pf, pe = _prepare_paths(paths_fisher), _prepare_paths(paths_euclid)
    if n_classes is None:
        n_classes = int(max(pf[["source", "target"]].max().max(), pe[["source", "target"]].max().max())) + 1
    key = ["image_index", "target"]
    cols = key + ["source", "success", "first_hit", "shielded"]
    pairs = (
        pf[cols]
        .drop_duplicates(key)
        .merge(pe[cols].drop_duplicates(key), on=key, suffixes=("_fisher", "_euclidean"), how="inner")
    )
    if pairs.empty:
        raise bad_argument(
            "paths_euclid", "no (image_index, target) pair shared with paths_fisher", "runs traced on the same images"
        )
    for metric in ("fisher", "euclidean"):
        pairs[f"first_hit_{metric}"] = np.where(pairs[f"success_{metric}"], pairs[f"first_hit_{metric}"], NO_FLIP)
    pairs["source"] = pairs["source_fisher"]
    pairs["agree"] = pairs["first_hit_fisher"] == pairs["first_hit_euclidean"]

    def shielded_pct(frame: pd.DataFrame, metric: str) -> float:
        succ = frame[f"success_{metric}"]
        return float(100 * frame.loc[succ, f"shielded_{metric}"].mean()) if succ.any() else np.nan

    both = pairs["success_fisher"] & pairs["success_euclidean"]
    agree_both = 100 * pairs.loc[both, "agree"].mean() if both.any() else np.nan
    summary = pd.DataFrame(
        [
            (
                "success_pct",
                100 * pairs["success_fisher"].mean(),
                100 * pairs["success_euclidean"].mean(),
                np.nan,
                f"% of the {len(pairs)} common (image, target) pairs that changed the class",
            ),
            (
                "shielded_pct",
                shielded_pct(pairs, "fisher"),
                shielded_pct(pairs, "euclidean"),
                np.nan,
                "% of successful paths whose first hit is not the target",
            ),
            (
                "first_hit_agreement_pct",
                np.nan,
                np.nan,
                100 * pairs["agree"].mean(),
                "% of pairs with the same first hit in both runs (no flip counts as -1)",
            ),
            (
                "first_hit_agreement_both_success_pct",
                np.nan,
                np.nan,
                agree_both,
                f"the same over the {int(both.sum())} pairs successful in both runs",
            ),
        ],
        columns=["quantity", "fisher", "euclidean", "joint", "note"],
    )
    g = pairs.groupby("source")
    per_class = pd.DataFrame(
        {
            "n_pairs": g.size(),
            "shielded_pct_fisher": g.apply(lambda f: shielded_pct(f, "fisher"), include_groups=False),
            "shielded_pct_euclidean": g.apply(lambda f: shielded_pct(f, "euclidean"), include_groups=False),
            "agreement_pct": 100 * g["agree"].mean(),
        }
    ).reindex(pd.RangeIndex(n_classes, name="source"))
    per_class["n_pairs"] = per_class["n_pairs"].fillna(0).astype(np.int64)

    def matrix(metric: str) -> pd.DataFrame:
        frame = pairs.rename(columns={f"success_{metric}": "success", f"first_hit_{metric}": "first_hit"})
        frame = frame.assign(fr_length=np.nan, l2=np.nan)
        return path_matrix(
            frame[["image_index", "source", "target", "success", "first_hit", "fr_length", "l2"]], n_classes
        )

    out_pairs = pairs[["image_index", "source", "target", "first_hit_fisher", "first_hit_euclidean", "agree"]]
    statistics, verdict = _metric_statistics(pairs, _check_n_boot(n_boot), seed)
    return MetricComparison(
        summary=summary,
        per_class=per_class.reset_index(),
        pairs=out_pairs,
        matrix_diff=matrix("euclidean") - matrix("fisher"),
        statistics=statistics,
        verdict=verdict,
    )


#: a difference of shielding rates (points of %) below this reads as "alike" when its interval
#: also contains 0
SHIELDING_ALIKE = 5.0


def _metric_statistics(pairs: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.DataFrame, str]:
    """Ratios of pair counts, with replicates from images resampled within their source class."""
    succ_f, succ_e = pairs["success_fisher"].to_numpy(bool), pairs["success_euclidean"].to_numpy(bool)
    sh_f = pairs["shielded_fisher"].to_numpy(bool) & succ_f
    sh_e = pairs["shielded_euclidean"].to_numpy(bool) & succ_e
    both = sh_f & sh_e
    same = both & (pairs["first_hit_fisher"] == pairs["first_hit_euclidean"]).to_numpy()
    sources = pairs.groupby("image_index")["source"].first()
    pos = pd.Index(sources.index).get_indexer(pairs["image_index"])
    rng = np.random.default_rng(seed)
    weights = _weights(_bootstrap_indices(sources.to_numpy(), n_boot, rng), len(sources))

    def pct(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
        value, boot = _per_image_ratio(num.astype(float), den.astype(float), pos, len(sources), weights)
        return 100 * value, 100 * boot

    (f, bf), (e, be) = pct(sh_f, succ_f), pct(sh_e, succ_e)
    estimates = [
        (f, bf),
        (e, be),
        (e - f, be - bf),
        pct(pairs["agree"].to_numpy(bool), np.ones(len(pairs), bool)),
        pct(same, both),
    ]
    names = [
        ("shielded_pct_fisher", "% of successful Fisher paths whose first hit is not the target"),
        ("shielded_pct_euclidean", "the same for Euclidean paths"),
        ("shielded_pct_difference", "Euclidean minus Fisher, in points of %"),
        ("first_hit_agreement_pct", "% of common pairs with the same first hit (no flip = -1)"),
        ("same_shield_pct", f"among the {int(both.sum())} pairs shielded under both metrics, % by the same class"),
    ]
    rows = []
    for (name, note), (value, b) in zip(names, estimates):
        lo, hi = _ci(b)
        rows.append({"statistic": name, "value": float(value), "ci_low": lo, "ci_high": hi, "note": note})
    table = pd.DataFrame(rows)
    diff = table.set_index("statistic").loc["shielded_pct_difference"]
    sf, se = table["value"].iloc[0], table["value"].iloc[1]
    if not np.isfinite(diff["value"]):
        verdict = "Undetermined: too few successful paths under one of the metrics."
    elif diff["ci_low"] <= 0 <= diff["ci_high"] and abs(diff["value"]) < SHIELDING_ALIKE:
        verdict = (
            f"Both metrics shield alike ({sf:.1f}% vs {se:.1f}%): shielding follows the classifier's "
            "decision regions more than the metric."
        )
    else:
        more = "Euclidean" if diff["value"] > 0 else "Fisher"
        verdict = (
            f"Shielding depends on the metric: {sf:.1f}% of Fisher paths and {se:.1f}% of Euclidean paths "
            f"are shielded (difference {diff['value']:+.1f} points, 95% CI [{diff['ci_low']:+.1f}, "
            f"{diff['ci_high']:+.1f}]); {more} paths meet intervening classes more often, so the "
            "shielding a path sees is not a fixed property of the decision regions."
        )
    return table, verdict


__all__ = [
    "CIFAR10_CLASSES",
    "CLAIM_TEXTS",
    "CLASS_TABLE_COLUMNS",
    "LITERATURE_ORDER",
    "LITERATURE_TIERS",
    "PAPER_TABLE",
    "MetricComparison",
    "best_l2",
    "claims",
    "class_rankings",
    "class_table",
    "closed_form_agreement",
    "compare_with_paper",
    "fisher_vs_euclidean",
    "fr_vs_l2",
    "image_margins",
    "literature_rank",
    "path_matrix",
    "ranking_agreement",
    "shield_target_matrix",
    "shielding_landscape",
    "status_counts",
]
