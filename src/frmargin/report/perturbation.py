"""The report's perturbation section (only for runs made with a perturbation model): how many
targets the flow in the subspace reached, shielding against the closed form, the subspace margin
against the softmax-only bound per image and which classes shield which. It renders the run's
``PerturbationAnalysis`` (``report.result.analyze_perturbation``) and computes nothing; the
gallery shows the perturbation at the change for a few paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from frmargin.plots.perturbation import plot_shield_matrix, plot_subspace_margins
from frmargin.report.document import Document
from frmargin.report.result import RunAnalysis

#: the summary's statistics shown, with their labels (``analysis.perturbation.perturbation_summary``)
SHOWN = (
    ("reachable", "paths that reached a class change"),
    ("stationary", "ended: a stationary point of L in u"),
    ("runaway", "ended: p converges while u runs away"),
    ("creeping", "undetermined: too slow for the step budget"),
    ("budget", "undetermined: step budget"),
    ("stalled", "undetermined: stalled"),
    ("shielded", "shielded (of those that changed the class)"),
    ("shielded_closed_form", "shielded, closed form's prediction (same paths)"),
    ("first_hit_agreement", "first hit = closed form's"),
    ("margin_ratio", "median subspace margin / LB (per image)"),
    ("above_lb", "images with subspace margin > 1.01 LB"),
    ("out_of_range", "median share of inputs out of range at the change"),
    ("range_violation", "median largest violation of the range at the change"),
    ("u_norm", "median |u| at the change"),
)


def _table(summary: dict) -> pd.DataFrame:
    rows = []
    for key, label in SHOWN:
        if key not in summary:
            continue
        interval = ""
        if f"{key}_lo" in summary:
            interval = f"[{summary[f'{key}_lo']:.3g}, {summary[f'{key}_hi']:.3g}]"
        rows.append({"statistic": label, "value": f"{summary[key]:.3g}", "95% interval": interval})
    return pd.DataFrame(rows)


def perturbation_section(doc: Document, result: RunAnalysis, out: Path) -> None:
    """Append the perturbation section (nothing for a run in pixels)."""
    pert = result.perturbation
    if pert is None:
        return
    model = pert.model
    doc.heading("Perturbation model")
    doc.text(
        f"Paths traced in the coordinates u of x = x0 + B(x0) u: {model.get('model')} ({model.get('family')}, "
        f"K = {model.get('k')} directions"
        + (f", basis sha256 {model['basis_sha256']}" if model.get("basis_sha256") else "")
        + "). With K < C - 1 the pulled-back Fisher B^T G B has rank at most K, the flow cannot follow "
        "the simplex line, and shielding and margins are no longer functions of the softmax output. "
        "A flow that cannot reach any class change ends early (a stationary point of L = log p_y - "
        "log p_target in u, or p converging while u runs away); paths at the step budget, stalled, or "
        "creeping (at their pace the change lies far beyond the steps left) are undetermined. The subspace margin is the least FR length from u = 0 to the decision boundary "
        "found by a path-energy minimization in u, started from every flow's end and from straight "
        "lines toward each class; it is an upper estimate of the true subspace margin and never below LB. "
        "Intervals: 95% cluster bootstrap over images."
    )
    doc.table(_table(pert.summary))
    if pert.margins is not None and len(pert.margins):
        doc.figure(
            plot_subspace_margins(pert.margins, out / "subspace_margins.png"),
            "Subspace margin against LB, per image: on the diagonal the softmax output decides the margin.",
        )
    doc.figure(
        plot_shield_matrix(pert.shields, result.run.class_names, out / "subspace_shields.png"),
        "Shielded paths by target and by the class met first, in the subspace.",
    )
