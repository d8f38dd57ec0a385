"""The study report: one row per model, one per run, the verdicts, the box and the closed form.

Analyses the study folder once (``report.study_data.analyze_study``), then writes into DIR the
tables ``study_table.csv`` (per model), ``study_runs.csv`` (per run), ``study_verdicts.csv``,
``study_box.csv`` (per image of the box runs), ``study_margins.csv`` (deciles of the closed-form
margins of all test images), the figures ``study_margins.png`` and ``study_shielding.png``, and
``report.md`` / ``report.html``. Each run keeps its own report: ``frmargin report DIR/<run>/<kind>``.

Example:
    >>> study_report(Path("runs/study"))  # doctest: +SKIP
    PosixPath('runs/study/report.html')
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from frmargin.analysis import DEFAULT_N_BOOT
from frmargin.analysis.study_box import BOX_RAISE, BOX_SHARE
from frmargin.analysis.study_closed import CLOSED_FORM_COLUMNS
from frmargin.analysis.study_rows import STUDY_ROW_COLUMNS
from frmargin.report.document import Document
from frmargin.report.format import format_cell, format_interval
from frmargin.report.render import write_document
from frmargin.report.study_data import StudyAnalysis, analyze_study
from frmargin.report.study_figures import margin_distributions, shielding_bars

__all__ = ["STUDY_FILES", "study_report"]

#: the tables the report writes into the study folder (``docs/results/collect.py`` copies them)
STUDY_FILES = ("study_table.csv", "study_runs.csv", "study_verdicts.csv", "study_box.csv", "study_margins.csv")


def _display(table: pd.DataFrame) -> pd.DataFrame:
    def iv(column: str, digits: int) -> list[str]:
        if column not in table:
            return ["–"] * len(table)
        return [format_interval(v, lo, hi, digits) for v, lo, hi in
                zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])]  # fmt: skip

    def col(name: str, digits: int | None = None, scale: float = 1.0) -> list[str]:
        return [format_cell(v * scale, digits) for v in table[name]] if name in table else ["–"] * len(table)

    return pd.DataFrame(
        {
            "model": table["model"],
            "runs": table["runs_done"],
            "test accuracy": col("test_accuracy", 4),
            "median confidence (test)": col("test_median_confidence", 6),
            "T": col("temperature", 3),
            "FR margin, T = 1": iv("fr_margin", 3),
            "FR margin, fitted T": iv("fr_margin_fitted", 3),
            "beyond top-two log-odds": iv("fr_margin_beyond", 4),
            "in-box / LB, median [CI]": iv("box_ratio_median", 4),
            "in-box / LB, max": col("box_ratio_max", 4),
            "NG shielded % [CI]": iv("ng_shielded_pct", 2),
            "closed form %": col("ng_predicted_shielded_pct", 2),
            "Euclidean shielded % [CI]": iv("euclid_shielded_pct", 1),
            "median min L2 (FMN) [CI]": iv("median_l2", 3),
            "Spearman FR-L2 [CI]": iv("spearman_fr_l2", 3),
            "rel. error vs closed form": col("rel_error_median"),
            "s / path": col("seconds_per_path", 3),
        }
    )


def _summary(doc: Document, result: StudyAnalysis) -> None:
    doc.heading("Summary")
    for row in result.verdicts[result.verdicts["model"] == "all"].itertuples():
        if row.verdict == "not tested":
            continue
        value = format_interval(row.value, row.ci_low, row.ci_high, 3)
        paired = ", 95% interval over images resampled within their class" if math.isfinite(row.ci_low) else ""
        caveat = f"; caveat: {row.caveat}" if row.caveat else ""
        doc.text(f"{row.question} {row.quantity}: {row.verdict} ({row.statistic}: {value}{paired}){caveat}.")


def _box_section(doc: Document, result: StudyAnalysis) -> None:
    if result.box.empty:
        return
    doc.heading("The box")
    doc.text(
        "Per image: the least in-box margin estimate over its targets divided by LB, the softmax-only "
        "(unconstrained) margin. The estimate never exceeds the traced in-box length and is never below "
        f"LB, so a ratio near 1 says the box leaves the margin as it is. Images above {1 + BOX_RAISE:g}: "
        f"the box raised the margin by more than {BOX_RAISE:.0%}, or no path near LB was found. The last "
        "column counts those of them whose unconstrained natural-gradient flow does not reach LB either "
        "(its least length is more than 1% above LB, or its path toward the runner-up class did not end ok): "
        "there the excess is not the box's."
    )
    columns = ["model", "box_images", "box_estimated_images", "box_ratio_min", "box_ratio_median", "box_ratio_max",
               "box_images_above", "box_share_above", "box_images_below_lb", "box_above_free_too"]  # fmt: skip
    doc.table(result.table[[c for c in columns if c in result.table]].dropna(subset=["box_images"]).round(4))
    moved = result.table[result.table.get("box_share_above", pd.Series(dtype=float)) > BOX_SHARE]
    shown = ["image_index", "source", "lower_bound", "traced_over_lb", "estimate_over_lb", "free_over_lb",
             "free_runner_up", "binds", "estimated_paths"]  # fmt: skip
    for row in moved.itertuples():
        images = result.box[(result.box["model"] == row.model) & (result.box["estimate_over_lb"] > 1 + BOX_RAISE)]
        doc.text(
            f"{row.model}: {len(images)} of {int(row.box_images)} images above {1 + BOX_RAISE:g} (more than "
            f"{BOX_SHARE:.0%}); on {int(row.box_above_free_too)} of them the unconstrained flow does not reach LB either."
        )
        doc.table(images[[c for c in shown if c in images]].round(5))


def study_report(out: Path, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Path:
    """Write the study report of the study folder ``out``; returns report.html's path."""
    out = Path(out)
    result = analyze_study(out, n_boot=n_boot, seed=seed)
    for name, frame in zip(STUDY_FILES, (result.table, result.runs, result.verdicts, result.box, result.deciles)):
        # the per-model and verdict tables in full precision; the per-image and per-run ones in 6 digits
        frame.to_csv(
            out / name, index=False, float_format=None if name in ("study_table.csv", "study_verdicts.csv") else "%.6g"
        )
    doc = Document(f"frmargin study: {len(result.table)} models")
    pending = result.runs[result.runs["status"] != "complete"]
    if len(pending):
        doc.warning(
            f"an unfinished study: {len(pending)} of {len(result.runs)} runs not finished; the tables cover "
            "the finished ones (the runs column says how many of each model's runs). Rerun the study command to finish it."
        )
    if result.min_per_class < 2:
        doc.warning(
            f"some class has {result.min_per_class} image(s) with a margin: images are resampled within their "
            "class, so intervals need at least 2 images per class (use more --images)"
        )
    _summary(doc, result)
    doc.heading("Models")
    doc.text(
        "One row per model. Intervals: 95% bootstrap over the study's images (resampled within their class, "
        "the same resample for every model). Also in `study_table.csv`."
    )
    doc.table(_display(result.table))
    doc.table(pd.DataFrame([*STUDY_ROW_COLUMNS, *CLOSED_FORM_COLUMNS], columns=["column", "definition"]))
    doc.heading("Verdicts")
    doc.table(result.verdicts.assign(**{"value [95% CI]": [
        format_interval(v, lo, hi, 3) for v, lo, hi in zip(result.verdicts["value"], result.verdicts["ci_low"],
                                                          result.verdicts["ci_high"])
    ]}).drop(columns=["value", "ci_low", "ci_high"]))  # fmt: skip
    _box_section(doc, result)
    if not result.deciles.empty:
        doc.heading("Closed-form margins of all test images")
        doc.table(result.deciles.round(4))
    doc.heading("Figures")
    doc.figure(margin_distributions(result.margins, out / "study_margins.png"), "Per-image FR margins per model.")
    shielding = result.table.rename(columns={"model": "run"})
    doc.figure(shielding_bars(shielding, out / "study_shielding.png"), "Shielded % of successful paths per model.")
    doc.heading("Runs")
    doc.text("Each run's own report: `frmargin report DIR/<run>` (several folders give a comparison).")
    doc.table(result.runs)
    return write_document(doc, out)
