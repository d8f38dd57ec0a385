"""The comparison report of several runs: settings, class tables, claims and metrics side by side.

Runs that differ only in metric (Fisher and Euclidean) get a Fisher-versus-Euclidean section;
paper versus converged and standard versus robust models appear as side-by-side columns.

Example:
    >>> comparison_report(analyze_comparison(results), Path("runs/report-compare"))
    PosixPath('runs/report-compare/report.html')
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from frmargin import plots
from frmargin.report.css import VERDICT_CSS
from frmargin.report.document import Document
from frmargin.report.format import format_cell, format_interval, format_rank, interval_column, per_cell, text_frame
from frmargin.report.header import caveats
from frmargin.report.render import write_document
from frmargin.report.result import ComparisonAnalysis, MetricPair, RunAnalysis
from frmargin.report.single import rankings_section
from frmargin.runs.folder import Run

#: run.json settings shown per run in the comparison's first table
COMPARED_KEYS = ("model", "data", "data_source", "method", "metric", "until", "box", "images", "seed")
#: (class table column, heading) of the side-by-side tables
SIDE_BY_SIDE = (
    ("mean_fr_margin", "Mean FR margin"),
    ("image_margin", "Per-image margin"),
    ("shielding_pct", "Shielding %"),
    ("vuln_rank", "Vulnerability rank"),
    ("mean_l2", "Mean L2 at flip"),
    ("shielded_pct", "Shielded % of paths"),
)


def unique_labels(runs: list[Run]) -> list[Run]:
    """The runs, relabelled with their parent folder (then a number) where labels repeat."""
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return runs
    out: list[Run] = []
    for i, run in enumerate(runs):
        parent = run.directory.resolve().parent.name
        label = f"{parent}/{run.label}" if labels.count(run.label) > 1 else run.label
        if label in [r.label for r in out]:
            label = f"{label} #{i + 1}"
        out.append(replace(run, label=label))
    return out


def comparison_report(comparison: ComparisonAnalysis, out: Path) -> Path:
    """Write class_tables.csv, claims.csv, figures, report.md and report.html into ``out``."""
    results = list(comparison.results)
    out.mkdir(parents=True, exist_ok=True)
    doc = Document("frmargin comparison report")
    _caveat_blocks(doc, results)
    _runs_section(doc, comparison)
    pd.concat([r.table.assign(run=r.run.label) for r in results]).to_csv(out / "class_tables.csv")
    pd.concat([r.claims.assign(run=r.run.label) for r in results]).to_csv(out / "claims.csv", index=False)
    doc.heading("Per-class tables side by side")
    doc.text("95% cluster-bootstrap intervals in brackets. Full tables in `class_tables.csv`.")
    for column, label in SIDE_BY_SIDE:
        doc.heading(label, level=3)
        doc.table(_side_by_side(results, column))
    _claims_section(doc, results)
    doc.heading("Closed forms versus traced paths, per run")
    agreement = pd.DataFrame({"quantity": results[0].agreement["quantity"]})
    for result in results:
        agreement[result.run.label] = result.agreement["value"].to_numpy()
    doc.table(per_cell(agreement, [r.run.label for r in results]))
    doc.heading("Figures")
    by_label = {r.run.label: r.table for r in results}
    doc.figure(
        plots.plot_class_comparison(by_label, out / "compare_fr_margin.png"), "Mean FR margin per class and run."
    )
    doc.figure(
        plots.plot_class_comparison(by_label, out / "compare_shielding.png", "shielding_pct", "shielding %"),
        "Shielding % per class and run.",
    )
    for pair in comparison.metric_pairs:
        _metric_section(doc, pair, out)
    for result in results:
        if result.fr_l2 is not None:
            rankings_section(doc, result, suffix=f" ({result.run.label})")
    return write_document(doc, out)


def _caveat_blocks(doc: Document, results: list[RunAnalysis]) -> None:
    scopes: dict[str, list[str]] = {}
    for result in results:
        for caveat in caveats(result.run):
            scopes.setdefault(caveat, []).append(result.run.label)
    for caveat, labels in scopes.items():
        scope = "all runs" if len(labels) == len(results) else ", ".join(labels)
        doc.warning(f"[{scope}] {caveat}")


def _runs_section(doc: Document, comparison: ComparisonAnalysis) -> None:
    doc.heading("Runs")
    rows = []
    for result in comparison.results:
        info = result.run.info
        rows.append(
            {
                "run": result.run.label,
                **{k: format_cell(info.get(k)) for k in COMPARED_KEYS},
                "paths": len(result.run.paths),
                "success %": result.success_pct,
                "accuracy": info.get("accuracy", np.nan),
                "folder": str(result.run.directory),
            }
        )
    doc.table(pd.DataFrame(rows))
    differing = comparison.differing
    doc.text(
        "Settings that differ between the runs: "
        + (", ".join(f"`{k}`" for k in differing) if differing else "none")
        + "."
    )


def _side_by_side(results: list[RunAnalysis], column: str) -> pd.DataFrame:
    names = results[0].table["name"].tolist()
    out = pd.DataFrame({"class": names})
    for result in results:
        table = result.table.set_index("name").reindex(names)
        if column == "vuln_rank":
            cells = [
                format_rank(v, lo, hi) for v, lo, hi in zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])
            ]
        elif f"{column}_lo" in table.columns:
            cells = interval_column(table, column)
        else:
            cells = text_frame(table[[column]])[column].tolist()
        out[result.run.label] = cells
    return out


def _claims_section(doc: Document, results: list[RunAnalysis]) -> None:
    doc.heading("The paper's claims, per run")
    verdicts = pd.DataFrame({"claim": results[0].claims["claim"]})
    css: dict[tuple[int, str], str] = {}
    for result in results:
        c = result.claims
        verdicts[result.run.label] = [
            f"{v} ({format_interval(x, lo, hi, 3)})"
            for v, x, lo, hi in zip(c["verdict"], c["value"], c["ci_low"], c["ci_high"])
        ]
        css.update({(i, result.run.label): VERDICT_CSS.get(v, "") for i, v in enumerate(c["verdict"])})
    doc.table(verdicts, css)
    doc.text("Statistics: " + " ".join(f"({i + 1}) {s}." for i, s in enumerate(results[0].claims["statistic"])))


def _metric_section(doc: Document, pair: MetricPair, out: Path) -> None:
    """The Fisher-versus-Euclidean section of two runs that differ only in metric."""
    fisher, euclid, cmp = pair.fisher, pair.euclidean, pair.comparison
    names = fisher.run.class_names
    doc.heading(f"Fisher versus Euclidean: {fisher.run.label} vs {euclid.run.label}")
    doc.text(
        "The two runs differ only in the metric of the paths. Paths are matched on "
        "(image, target). Is shielding a property of the classifier's decision regions "
        "(then both metrics meet the same intervening classes) or of the metric?"
    )
    doc.text(f"Verdict: {cmp.verdict}")
    stats = cmp.statistics
    assert stats is not None
    doc.table(
        pd.DataFrame(
            {
                "statistic": stats["statistic"],
                "value [95% CI]": [
                    format_interval(v, lo, hi, 1)
                    for v, lo, hi in zip(stats["value"], stats["ci_low"], stats["ci_high"])
                ],
                "note": stats["note"],
            }
        )
    )
    doc.table(cmp.summary)
    doc.table(cmp.per_class.assign(source=[names[s] for s in cmp.per_class["source"]]))
    doc.figure(
        plots.plot_matrix_difference(cmp.matrix_diff, names, out / f"metric_diff_{pair.first}_{pair.second}.png"),
        "Path matrix of the Euclidean run minus that of the Fisher run (common pairs).",
    )
