"""Statistics of traced paths: DataFrames in, DataFrames out; generic, no paper constants.

Modules: ``inputs`` (the path table's columns, checks), ``bootstrap`` (cluster bootstrap over
images within class), ``correlation`` (rank statistics of replicates), ``tables`` (the class
table and per-image margins), ``matrices`` (path matrix, shielding landscape, status counts,
closed-form agreement), ``distances`` (FR versus L2: best_l2, fr_vs_l2, rankings), ``metrics``
(Fisher versus Euclidean paths), ``box`` (where the box binds, per class) and ``spectrum`` (the
Fisher spectrum against attacks: budget curves, lambda_1 as a score and as a detector).

Example:
    >>> stats = class_statistics(paths, images, class_names, n_boot=1000, seed=0)
    >>> stats.table[["name", "mean_fr_margin", "vuln_rank"]]
"""

from frmargin.analysis.bootstrap import (
    CI_LEVEL,
    DEFAULT_N_BOOT,
    ClusterBootstrap,
    check_n_boot,
    percentile_interval,
    safe_ratio,
    scalar_interval,
)
from frmargin.analysis.box import BOX_TABLE_COLUMNS, box_table
from frmargin.analysis.distances import (
    best_attack,
    best_l2,
    class_rankings,
    fr_vs_l2,
    margins_with_attacks,
    ranking_agreement,
)
from frmargin.analysis.headlines import HEADLINE_STATISTICS, run_headlines
from frmargin.analysis.inputs import (
    NO_FLIP,
    OPTIONAL_PATH_COLUMNS,
    PATH_COLUMNS,
    check_class_names,
    prepare_paths,
    require_columns,
    successful_paths,
)
from frmargin.analysis.matrices import (
    LB_ATOL,
    LB_RTOL,
    closed_form_agreement,
    closed_form_points,
    landscape_panels,
    margin_bound_points,
    path_matrix,
    ranked_order,
    shield_target_matrix,
    shielding_landscape,
    status_counts,
)
from frmargin.analysis.metrics import SHIELDING_ALIKE, MetricComparison, fisher_vs_euclidean
from frmargin.analysis.spectrum import (
    CURVE_ATTACKS,
    FMN_TOLERANCE,
    attack_summary,
    below_fmn,
    budget_curves,
    detection_auroc,
    score_correlations,
    spectral_images,
)
from frmargin.analysis.tables import (
    CI_COLUMNS,
    CLASS_TABLE_COLUMNS,
    ClassStatistics,
    class_means,
    class_statistics,
    class_table,
    image_margins,
)

__all__ = [
    "BOX_TABLE_COLUMNS",
    "CI_COLUMNS",
    "CI_LEVEL",
    "CLASS_TABLE_COLUMNS",
    "CURVE_ATTACKS",
    "DEFAULT_N_BOOT",
    "FMN_TOLERANCE",
    "HEADLINE_STATISTICS",
    "LB_ATOL",
    "LB_RTOL",
    "NO_FLIP",
    "OPTIONAL_PATH_COLUMNS",
    "PATH_COLUMNS",
    "SHIELDING_ALIKE",
    "ClassStatistics",
    "ClusterBootstrap",
    "MetricComparison",
    "attack_summary",
    "below_fmn",
    "best_attack",
    "best_l2",
    "box_table",
    "budget_curves",
    "check_class_names",
    "check_n_boot",
    "class_means",
    "class_rankings",
    "class_statistics",
    "class_table",
    "closed_form_agreement",
    "closed_form_points",
    "detection_auroc",
    "fisher_vs_euclidean",
    "fr_vs_l2",
    "image_margins",
    "landscape_panels",
    "margin_bound_points",
    "margins_with_attacks",
    "path_matrix",
    "percentile_interval",
    "prepare_paths",
    "ranked_order",
    "ranking_agreement",
    "require_columns",
    "run_headlines",
    "safe_ratio",
    "scalar_interval",
    "score_correlations",
    "shield_target_matrix",
    "shielding_landscape",
    "spectral_images",
    "status_counts",
    "successful_paths",
]
