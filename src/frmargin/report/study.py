"""The study report: one row per model, figures across models, and three verdicts.

Reads ``DIR/study.json`` and every run folder it lists, analyses them once (``analysis.study``,
``analysis.study_rows``), then writes ``study_table.csv``, ``study_verdicts.csv``, the figures
``study_margins.png`` and ``study_shielding.png``, ``report.md`` and ``report.html`` into DIR.
Each model's own report stays available: ``frmargin report DIR/<run>/<metric>``.

Example:
    >>> study_report(Path("runs/study"))  # doctest: +SKIP
    PosixPath('runs/study/report.html')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from frmargin.analysis import DEFAULT_N_BOOT
from frmargin.analysis.study import paired_ratios, ratio_interval, study_verdicts
from frmargin.analysis.study_rows import STUDY_ROW_COLUMNS, margin_values, run_summary, shielding_values
from frmargin.errors import FrmarginError
from frmargin.report.document import Document
from frmargin.report.format import format_cell, format_interval
from frmargin.report.render import write_document
from frmargin.report.study_figures import margin_distributions, shielding_bars
from frmargin.runs.folder import Run, load_run
from frmargin.runs.study import temperature_label
from frmargin.runs.study_session import read_study

__all__ = ["StudyAnalysis", "analyze_study", "study_report"]

#: (quantity name, column prefix of the table) of the paired, cross-model statistics
QUANTITIES = (("mean per-image FR margin", "fr_margin"), ("NG shielded %", "ng_shielded_pct"))


@dataclass(frozen=True)
class StudyAnalysis:
    """Every table of the study page.

    Attributes:
        table: one row per run key (model at a temperature), columns of ``STUDY_ROW_COLUMNS`` and
            intervals ``*_lo``/``*_hi``.
        verdicts: the three questions per quantity (``analysis.study.study_verdicts``).
        margins: run key -> per-image FR margins (for the figure).
        folders: rows (run, metric, folder) of the run folders.
        min_per_class: the fewest images of one class behind a run's mean margin.
    """

    table: pd.DataFrame
    verdicts: pd.DataFrame
    margins: dict[str, np.ndarray]
    folders: pd.DataFrame
    min_per_class: int


def run_folder(study_dir: Path, entry: dict) -> Path:
    """The folder of a study.json run entry, inside ``study_dir`` (``KEY/METRIC``): the study
    folder may have been moved, or written from another working directory."""
    recorded = Path(entry["folder"])
    return Path(study_dir) / recorded.parent.name / recorded.name


def pending_runs(study: dict) -> list[str]:
    """``KEY/METRIC`` of every run of the study that is not finished."""
    return [
        f"{Path(e['folder']).parent.name}/{Path(e['folder']).name}"
        for e in study["runs"]
        if e.get("status") != "complete"
    ]


def _load(study: dict, study_dir: Path) -> dict[str, dict[str, Run]]:
    """Run key -> metric -> loaded run, for the finished runs of the study."""
    out: dict[str, dict[str, Run]] = {}
    for entry in study["runs"]:
        kind = entry.get("kind", entry["metric"])
        if entry.get("status") != "complete" or kind not in ("fisher", "euclidean"):
            continue
        key = Path(entry["folder"]).parent.name
        out.setdefault(key, {})[kind] = load_run(run_folder(study_dir, entry))
    return out


def _values(runs: dict[str, dict[str, Run]], metric: str, kind: str) -> pd.DataFrame:
    """Per (run key, image) num/den of a paired statistic, with the image's label."""
    frames = []
    for key, by_metric in runs.items():
        run = by_metric.get(metric)
        if run is None:
            continue
        if kind == "margin":
            values = margin_values(run.paths, run.images)
        else:
            values = shielding_values(run.paths, predicted=kind == "predicted")
        labels = run.images.set_index("image_index")["label"] if run.images is not None else None
        label = labels.reindex(values["image_index"]).to_numpy() if labels is not None else -1
        frames.append(values.assign(run=key, label=label))
    cols = ["run", "image_index", "label", "num", "den"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _interval_columns(table: pd.DataFrame, values: pd.DataFrame, column: str, n_boot: int, seed: int) -> pd.DataFrame:
    if values.empty:
        table[column] = table[f"{column}_lo"] = table[f"{column}_hi"] = np.nan
        return None
    point, reps = paired_ratios(values, n_boot=n_boot, seed=seed)
    ci = ratio_interval(point, reps).reindex(table.index)
    table[column], table[f"{column}_lo"], table[f"{column}_hi"] = ci["value"], ci["ci_low"], ci["ci_high"]
    return point, reps


def analyze_study(out: Path, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> StudyAnalysis:
    """Analyse every finished run of the study in ``out``."""
    study = read_study(out)
    catalog = study.get("catalog", {})
    runs = _load(study, out)
    if not runs:
        raise FrmarginError(f"argument 'study_dir': {str(out)!r} holds no finished run yet, expected at least one")
    requested = {Path(e["folder"]).parent.name: temperature_label(e.get("temperature", 1.0)) for e in study["runs"]}
    rows = {}
    for key, by_metric in runs.items():
        first = next(iter(by_metric.values()))
        fisher = by_metric.get("fisher")
        baselines = next((r.baselines for r in by_metric.values() if r.baselines is not None), None)
        images = first.images if first.images is not None else pd.DataFrame(columns=["correct", "confidence"])
        model = first.info.get("model", key)
        rows[key] = {
            "run": key,
            "model": model,
            "temperature_requested": requested.get(key, "1"),
            "family": catalog.get(model, {}).get("family", "?"),
            "training": catalog.get(model, {}).get("training", "?"),
            **run_summary(fisher.paths if fisher else None, images, baselines, first.info, n_boot, seed),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    stats = {}
    for (name, column), values in zip(
        QUANTITIES, (_values(runs, "fisher", "margin"), _values(runs, "fisher", "shielded"))
    ):
        result = _interval_columns(table, values, column, n_boot, seed)
        if result is not None:
            stats[name] = result
    _interval_columns(table, _values(runs, "fisher", "predicted"), "ng_predicted_shielded_pct", n_boot, seed)
    _interval_columns(table, _values(runs, "euclidean", "shielded"), "euclid_shielded_pct", n_boot, seed)
    groups = table.assign(temperature=table["temperature_requested"])[["model", "temperature", "training", "family"]]
    verdicts = study_verdicts(groups, stats)
    margin_values_ = _values(runs, "fisher", "margin")
    margins = {k: m["num"].to_numpy() for k, m in margin_values_.groupby("run", sort=False)}
    counts = margin_values_.groupby(["run", "label"]).size()
    folders = pd.DataFrame(
        [(Path(e["folder"]).parent.name, e["metric"], str(run_folder(out, e)), e["status"]) for e in study["runs"]],
        columns=["run", "metric", "folder", "status"],
    )
    return StudyAnalysis(
        table=table.reset_index(drop=True),
        verdicts=verdicts,
        margins=margins,
        folders=folders,
        min_per_class=int(counts.min()) if len(counts) else 0,
    )


def _display(table: pd.DataFrame) -> pd.DataFrame:
    def iv(column: str, digits: int) -> list[str]:
        return [
            format_interval(v, lo, hi, digits)
            for v, lo, hi in zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])
        ]

    def col(name: str, digits: int | None = None) -> list[str]:
        return [format_cell(v, digits) for v in table[name]] if name in table else ["–"] * len(table)

    return pd.DataFrame(
        {
            "model": table["run"],
            "training": table["training"],
            "accuracy": [f"{100 * v:.1f}%" for v in table["accuracy"]],
            "median confidence": col("median_confidence", 4),
            "T": col("temperature", 3),
            "mean FR margin [95% CI]": iv("fr_margin", 3),
            "NG shielded % [CI]": iv("ng_shielded_pct", 1),
            "closed form %": col("ng_predicted_shielded_pct", 1),
            "Euclidean shielded % [CI]": iv("euclid_shielded_pct", 1),
            "median min L2": col("median_l2", 3),
            "Spearman FR-L2 [CI]": iv("spearman_fr_l2", 3) if "spearman_fr_l2" in table else ["–"] * len(table),
            "closed-form rel. error (median)": col("rel_error_median"),
            "first hit = closed form": col("first_hit_agreement", 3),
            "Jacobians / path": col("jacobians_per_path", 1),
            "s / path": col("seconds_per_path", 3),
        }
    )


def _listing(names: list[str], shown: int = 8) -> str:
    """``a, b, c`` or, for many, the first ``shown`` and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def study_report(out: Path, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Path:
    """Write the study report of the study folder ``out``; returns report.html's path."""
    out = Path(out)
    result = analyze_study(out, n_boot=n_boot, seed=seed)
    result.table.to_csv(out / "study_table.csv", index=False)
    result.verdicts.to_csv(out / "study_verdicts.csv", index=False)
    doc = Document(f"frmargin study: {len(result.table)} models")
    pending = pending_runs(read_study(out))
    if pending:
        doc.warning(
            f"an unfinished study: {len(pending)} of {len(result.folders)} runs not finished "
            f"({_listing(pending)}); this report covers the finished ones. Rerun the study command to finish it."
        )
    if result.min_per_class < 2:
        doc.warning(
            f"some class has {result.min_per_class} image(s) with a margin: images are resampled within their "
            "class, so intervals need at least 2 images per class (use more --images)"
        )
    doc.heading("Summary")
    for row in result.verdicts.itertuples():
        if row.verdict == "not tested":
            continue
        doc.text(
            f"{row.question} {row.quantity}: {row.verdict} ({row.statistic}: "
            f"{format_interval(row.value, row.ci_low, row.ci_high, 3)}, 95% interval over images resampled within "
            f"their class, paired across models)" + (f"; caveat: {row.caveat}." if row.caveat else ".")
        )
    doc.heading("Models")
    doc.text(
        "One row per model (and temperature). Intervals: 95% bootstrap over the study's images (resampled "
        "within their class, the same resample for every model). The logits are divided by T, so every "
        "closed form is evaluated at p(T). Also in `study_table.csv`."
    )
    doc.table(_display(result.table))
    doc.table(pd.DataFrame(STUDY_ROW_COLUMNS, columns=["column", "definition"]))
    doc.heading("Verdicts")
    doc.table(result.verdicts.assign(**{"value [95% CI]": [
        format_interval(v, lo, hi, 3) for v, lo, hi in zip(result.verdicts["value"], result.verdicts["ci_low"],
                                                          result.verdicts["ci_high"])
    ]}).drop(columns=["value", "ci_low", "ci_high"]))  # fmt: skip
    doc.heading("Figures")
    doc.figure(margin_distributions(result.margins, out / "study_margins.png"), "Per-image FR margins per model.")
    doc.figure(shielding_bars(result.table, out / "study_shielding.png"), "Shielded % of successful paths per model.")
    doc.heading("Run folders")
    doc.text("Each run's own report: `frmargin report FOLDER` (several folders give a comparison).")
    doc.table(result.folders)
    return write_document(doc, out)
