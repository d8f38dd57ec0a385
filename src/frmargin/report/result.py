"""Analyse a run once: every table, statistic and figure input its report pages need.

Example:
    >>> result = analyze(load_run(Path("runs/resnet20")), n_boot=1000)
    >>> result.claims[["claim", "verdict"]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from frmargin import analysis, paper
from frmargin.runs.folder import Run
from frmargin.runs.schema import CIFAR10_CLASSES


@dataclass(frozen=True)
class RunAnalysis:
    """Every table of one run's report; nothing after this computes a statistic.

    Attributes:
        run: the loaded run.
        statistics: the class table with its bootstrap draw and replicates.
        table: the per-class table (``statistics.table``).
        margins: per-image margins (``analysis.image_margins``).
        status, agreement, matrix, landscape: the count tables of ``analysis.matrices``.
        claims: the paper's four claims with verdicts (``paper.claims``).
        paper: our class table beside the paper's (``paper.compare_with_paper``).
        rankings, ranking_agreement: class rankings (ours, L2, paper, literature) and their
            agreement with ours.
        fr_l2: FR-versus-L2 rank correlations (None without baselines).
        lengths: successful paths (source, fr_length), for the attack-effort figure.
        margin_means: class -> mean per-image margin, for the same figure.
        landscape_panels: the two (title, shares) panels of the shielding landscape figure.
        closed_form_points, margin_bounds: the points of the closed-form figure.
        attack_l2: per image, fr_margin and each attack's minimal L2 (None without baselines).
        success_pct: % of all paths that changed the class.
        headlines: run-level statistics with intervals (``analysis.run_headlines``).
        cifar10: whether the run's classes are CIFAR-10's ten (the paper's table, claims and the
            literature ranking apply only then).
        box: the box section's table (None for a run without a box or without box statistics).
        spectrum: the Fisher spectrum section's tables (None for a run without a spectral attack
            among its baselines).
    """

    run: Run
    statistics: analysis.ClassStatistics
    table: pd.DataFrame
    margins: pd.DataFrame
    status: pd.DataFrame
    agreement: pd.DataFrame
    claims: pd.DataFrame
    paper: pd.DataFrame
    rankings: pd.DataFrame
    ranking_agreement: pd.DataFrame
    matrix: pd.DataFrame
    landscape: pd.DataFrame
    lengths: pd.DataFrame
    margin_means: pd.Series
    landscape_panels: tuple[tuple[str, pd.DataFrame], ...]
    closed_form_points: pd.DataFrame
    margin_bounds: pd.DataFrame
    success_pct: float
    headlines: pd.DataFrame
    cifar10: bool
    fr_l2: pd.DataFrame | None = None
    attack_l2: pd.DataFrame | None = None
    box: BoxAnalysis | None = None
    spectrum: SpectrumAnalysis | None = None


@dataclass(frozen=True)
class BoxAnalysis:
    """The box section of a run made with a box.

    Attributes:
        bounds: the run's box (valid-input range), as in run.json.
        table: one row per source class, the columns of ``analysis.BOX_TABLE_COLUMNS``
            (``analysis.box_table``).
    """

    bounds: tuple[float, ...]
    table: pd.DataFrame


def analyze_box(run: Run) -> BoxAnalysis | None:
    """The box table of a run made with a box whose paths carry box statistics, else None."""
    if not run.info.get("box") or "bound_share" not in run.paths:
        return None
    return BoxAnalysis(tuple(run.info["box"]), analysis.box_table(run.paths, run.class_names))


@dataclass(frozen=True)
class SpectrumAnalysis:
    """The Fisher spectrum section of a run whose baselines carry the top eigenvalue lambda_1.

    Attributes:
        images: per image lambda_1, FR margin, LB and each attack's L2 and lambda_1 at its point
            (``analysis.spectral_images``).
        curves: success rate against the L2 budget per attack (``analysis.budget_curves``).
        scores: lambda_1 and LB / sqrt(lambda_1) against the FR margin and minimal L2
            (``analysis.score_correlations``).
        detection: AUROC of lambda_1, clean images against attack points (``analysis.detection_auroc``).
        below_fmn: where an attack's distance is below FMN's (``analysis.below_fmn``).
        attacks: per attack fooled %, median L2 and model evaluations (``analysis.attack_summary``).
    """

    images: pd.DataFrame
    curves: pd.DataFrame
    scores: pd.DataFrame
    detection: pd.DataFrame
    below_fmn: pd.DataFrame
    attacks: pd.DataFrame


def analyze_spectrum(run: Run, margins: pd.DataFrame, n_boot: int, seed: int) -> SpectrumAnalysis | None:
    """The spectrum section's tables for a run whose baselines carry ``lambda_1``, else None."""
    b = run.baselines
    if b is None or "lambda_1" not in b or not b["lambda_1"].notna().any():
        return None
    images = analysis.spectral_images(margins, b)
    return SpectrumAnalysis(
        images=images,
        curves=analysis.budget_curves(b),
        scores=analysis.score_correlations(images, n_boot=n_boot, seed=seed),
        detection=analysis.detection_auroc(images, n_boot=n_boot, seed=seed),
        below_fmn=analysis.below_fmn(images),
        attacks=analysis.attack_summary(b),
    )


def analyze(run: Run, n_boot: int = analysis.DEFAULT_N_BOOT, seed: int = 0) -> RunAnalysis:
    """Compute the tables of one run's report."""
    names = run.class_names
    statistics = analysis.class_statistics(run.paths, run.images, names, n_boot=n_boot, seed=seed)
    table = statistics.table
    margins = analysis.image_margins(run.paths, run.images)
    baselines = run.baselines if run.baselines is not None and len(run.baselines) else None
    fr_l2 = analysis.fr_vs_l2(margins, baselines, n_boot=n_boot, seed=seed) if baselines is not None else None
    rankings = paper.with_reference_ranks(analysis.class_rankings(table, margins, baselines))
    rank = table["vuln_rank"].to_numpy(float)
    return RunAnalysis(
        run=run,
        statistics=statistics,
        table=table,
        margins=margins,
        status=analysis.status_counts(run.paths),
        agreement=analysis.closed_form_agreement(run.paths),
        claims=paper.claims(statistics, fr_l2),
        paper=paper.compare_with_paper(table),
        rankings=rankings,
        ranking_agreement=analysis.ranking_agreement(rankings),
        matrix=analysis.path_matrix(run.paths, len(names)),
        landscape=analysis.shielding_landscape(run.paths, len(names)),
        lengths=analysis.successful_paths(run.paths)[["source", "fr_length"]],
        margin_means=analysis.class_means(margins),
        landscape_panels=tuple(analysis.landscape_panels(run.paths, len(names), rank)),
        closed_form_points=analysis.closed_form_points(run.paths),
        margin_bounds=analysis.margin_bound_points(margins),
        success_pct=float(100 * run.paths["success"].astype(bool).mean()),
        headlines=analysis.run_headlines(statistics),
        cifar10=list(names) == list(CIFAR10_CLASSES),
        fr_l2=fr_l2,
        attack_l2=analysis.margins_with_attacks(margins, baselines) if baselines is not None else None,
        box=analyze_box(run),
        spectrum=analyze_spectrum(run, margins, n_boot, seed),
    )


@dataclass(frozen=True)
class MetricPair:
    """Two runs that differ only in their metric, and the comparison of their paths.

    Attributes:
        first, second: 1-based positions of the two runs on the comparison page.
        fisher, euclidean: the two runs' analyses.
        comparison: ``analysis.fisher_vs_euclidean`` of their paths.
    """

    first: int
    second: int
    fisher: RunAnalysis
    euclidean: RunAnalysis
    comparison: analysis.MetricComparison


@dataclass(frozen=True)
class ComparisonAnalysis:
    """Every table of a comparison page: the runs' analyses and their metric pairs.

    Attributes:
        results: one analysis per run, in page order.
        differing: run.json settings that differ between the runs (sorted).
        metric_pairs: every pair of runs that differ only in metric (Fisher and Euclidean).
    """

    results: tuple[RunAnalysis, ...]
    differing: tuple[str, ...]
    metric_pairs: tuple[MetricPair, ...]


#: run.json entries that do not make two runs different experiments: bookkeeping, and "config",
#: whose entries that matter stand at the top level too (batch size, chunking, baselines, device
#: and world size change no path)
INCIDENTAL_KEYS = frozenset(
    {
        "timing",
        "versions",
        "tracer_options",
        "accuracy",
        "n_correct",
        "fingerprint",
        "sessions",
        "config",
        "status",
        "world_size",
        "device",
        "data_requested",
    }
)


def differing_keys(a: dict, b: dict) -> set[str]:
    """run.json keys, less ``INCIDENTAL_KEYS``, whose values differ between ``a`` and ``b``."""
    keys = (set(a) | set(b)) - INCIDENTAL_KEYS
    return {k for k in keys if a.get(k) != b.get(k)}


def analyze_comparison(results: Sequence[RunAnalysis]) -> ComparisonAnalysis:
    """Compare analysed runs: differing settings, and Fisher versus Euclidean per metric pair."""
    base = results[0].run.info
    differing = sorted(set().union(*(differing_keys(base, r.run.info) for r in results[1:])))
    pairs = []
    for i, a in enumerate(results):
        for j, b in enumerate(results[i + 1 :], start=i + 1):
            if differing_keys(a.run.info, b.run.info) != {"metric"}:
                continue
            metrics = {a.run.info.get("metric"): a, b.run.info.get("metric"): b}
            if set(metrics) != {"fisher", "euclidean"}:
                continue
            fisher, euclid = metrics["fisher"], metrics["euclidean"]
            comparison = analysis.fisher_vs_euclidean(fisher.run.paths, euclid.run.paths, len(fisher.run.class_names))
            pairs.append(MetricPair(i + 1, j + 1, fisher, euclid, comparison))
    return ComparisonAnalysis(results=tuple(results), differing=tuple(differing), metric_pairs=tuple(pairs))
