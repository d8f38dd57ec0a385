"""The report's Fisher spectrum section (runs with a spectral attack among their baselines): success
rate against the L2 budget per attack, the top eigenvalue lambda_1 of G_x as an attack-free score
and as a detector of adversarial points. It renders ``RunAnalysis.spectrum`` (see
``report.result.analyze_spectrum``), writes its tables as CSV files, and computes nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from frmargin import plots
from frmargin.analysis import FMN_TOLERANCE
from frmargin.report.document import Document
from frmargin.report.format import format_cell, interval_column
from frmargin.report.result import RunAnalysis, SpectrumAnalysis

#: the CSV files the section writes into the report folder, by table
CSV_FILES = {
    "images": "spectrum_images.csv",
    "curves": "spectrum_curves.csv",
    "scores": "spectrum_scores.csv",
    "detection": "spectrum_detection.csv",
    "attacks": "spectrum_attacks.csv",
    "below_fmn": "spectrum_below_fmn.csv",
}
SCORE_NAMES = {"lambda_1": "lambda_1", "lb_over_sqrt_lambda_1": "LB / sqrt(lambda_1)"}


def spectrum_section(doc: Document, result: RunAnalysis, out: Path) -> None:
    """Append the Fisher spectrum section (nothing for a run without lambda_1 in its baselines)."""
    spectrum = result.spectrum
    if spectrum is None:
        return
    for name, file in CSV_FILES.items():
        getattr(spectrum, name).to_csv(out / file, index=False)
    doc.heading("Fisher spectrum: spectral attacks and the top eigenvalue")
    doc.text(
        "lambda_1 is the largest eigenvalue of the data-space Fisher G_x = J^T (diag p - p p^T) J at "
        'each image, exact from a C x C matrix (the method page, "The Fisher spectrum"; one Jacobian, no D x D '
        "matrix). `ossa` steps along +-v_1, its eigenvector; `tssa` spends 60% of the budget along "
        "v_1 and 40% along v_1 at the intermediate point; `random` steps along a random direction; "
        "each is the smallest budget that changes the class, by a scan and a bisection, clipped to "
        "the input range. `deepfool` is the DeepFool direction shortened by bisection; `fmn` is the "
        "smallest distance found by FMN (a lower envelope for the others, up to FMN's precision)."
    )
    doc.figure(
        plots.plot_budget_curves(spectrum.curves, out / "spectrum_budget.png"),
        "Success rate against the L2 budget: % of attacked images whose class the attack changed "
        f"within each budget. Tables in `{CSV_FILES['curves']}` and `{CSV_FILES['attacks']}`.",
    )
    doc.table(_attacks_display(spectrum.attacks))
    _below_fmn_block(doc, spectrum)
    attack = "fmn" if "l2_fmn" in spectrum.images else _first_attack(spectrum.images)
    doc.figure(
        plots.plot_spectral_scores(spectrum.images, out / "spectrum_scores.png", attack),
        "Per image: lambda_1 against the FR margin (min over targets), against the minimal L2 "
        f"({attack}), and lambda_1 at the clean images beside lambda_1 at each attack's point.",
    )
    doc.heading("lambda_1 as an attack-free score", level=3)
    doc.text(
        "Rank correlations of lambda_1, and of LB / sqrt(lambda_1) (the L2 step that would cover the "
        "margin's lower bound at the image's steepest rate), with the FR margin and with each "
        "attack's minimal L2 over images; 95% cluster-bootstrap intervals in brackets. A usable "
        "vulnerability score correlates negatively (lambda_1) or positively (LB / sqrt(lambda_1)) "
        "with the minimal L2."
    )
    doc.table(_scores_display(spectrum.scores))
    doc.heading("Detection by lambda_1", level=3)
    doc.text(
        "AUROC of lambda_1 separating each attack's adversarial points from the clean images "
        "(1: every adversarial point has the larger lambda_1), over images the attack fooled, with a "
        "95% cluster-bootstrap interval; and the median ratio of lambda_1 at the point to lambda_1 "
        "at its image. The points sit on the decision boundary, where two classes share the "
        "probability, so the score measures closeness to a boundary more than adversarial origin."
    )
    doc.table(_detection_display(spectrum.detection))


def _first_attack(images: pd.DataFrame) -> str | None:
    columns = [c.removeprefix("l2_") for c in images.columns if c.startswith("l2_")]
    return columns[0] if columns else None


def _below_fmn_block(doc: Document, spectrum: SpectrumAnalysis) -> None:
    below = spectrum.below_fmn
    if below.empty:
        doc.text("No FMN baseline in this run: the line attacks are not compared with FMN's minimal L2.")
        return
    lines = [f"{r.attack}: {r.n_below} of {r.n}" for r in below.itertuples()]
    if int(below["n_below"].sum()) == 0:
        doc.text(
            f"No attack's distance is below FMN's by more than FMN's precision ({FMN_TOLERANCE:.1%}) on any "
            "image both fooled (" + "; ".join(lines) + ")."
        )
        return
    worst = below[below["n_below"] > 0]
    doc.warning(
        f"On some images an attack found a class change closer than FMN's minimal L2 by more than FMN's "
        f"precision ({FMN_TOLERANCE:.1%}): "
        + "; ".join(
            f"{r.attack} on {r.n_below} of {r.n} images (smallest ratio {r.min_ratio:.4g}, images "
            f"{', '.join(str(i) for i in r.images_below[:8])})"
            for r in worst.itertuples()
        )
        + ". FMN is a local search started at DeepFool's point: there it stopped farther away than a "
        "boundary point that exists, so its distance is an upper bound, and the smaller of the two is "
        "the better estimate of the minimal L2 on those images."
    )


def _attacks_display(attacks: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attack": attacks["attack"],
            "images attacked": attacks["n"],
            "fooled %": [format_cell(v, 1) for v in attacks["fooled_pct"]],
            "median minimal L2": [format_cell(v, 4) for v in attacks["median_l2"]],
            "forward passes / image": [format_cell(v, 1) for v in attacks["forward_passes"]],
            "backward passes / image": [format_cell(v, 1) for v in attacks["backward_passes"]],
        }
    )


def _scores_display(scores: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "score": [SCORE_NAMES.get(s, s) for s in scores["score"]],
            "versus": [v if v == "fr_margin" else f"minimal L2 ({v})" for v in scores["versus"]],
            "n": scores["n"],
            "excluded": scores["n_excluded"],
            "Spearman [95% CI]": interval_column(scores, "spearman", 3),
            "Kendall [95% CI]": interval_column(scores, "kendall", 3),
        }
    )


def _detection_display(detection: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attack points": detection["attack"],
            "n": detection["n"],
            "AUROC [95% CI]": interval_column(detection, "auroc", 3),
            "median lambda_1 ratio (point / image)": [f"{v:.3g}" for v in detection["median_ratio"]],
        }
    )
