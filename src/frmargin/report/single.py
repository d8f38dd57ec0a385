"""The report of one run: its tables, figures, report.md and report.html.

Example:
    >>> single_report(analyze(load_run(Path("runs/resnet20"))), Path("runs/resnet20"))
    PosixPath('runs/resnet20/report.html')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from frmargin import plots
from frmargin.analysis import CLASS_TABLE_COLUMNS
from frmargin.paper import PAPER_TABLE
from frmargin.report.box import box_section
from frmargin.report.css import VERDICT_CSS
from frmargin.report.document import Document
from frmargin.report.format import display_class_table, format_cell, format_interval, interval_column, per_cell
from frmargin.report.gallery import (
    MAX_GALLERY_CLASSES,
    GalleryItem,
    Rebuild,
    gallery_items,
    rebuild_from_registry,
    select_gallery_paths,
)
from frmargin.report.header import caveats, header_table, raw_info
from frmargin.report.render import markdown_table, write_document
from frmargin.report.result import RunAnalysis
from frmargin.report.sections import OPTIONAL_SECTIONS, Section
from frmargin.report.summary import box_note, run_summary
from frmargin.runs.folder import Run


def _claims_display(claims: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    frame = pd.DataFrame(
        {
            "claim": claims["claim"],
            "verdict": claims["verdict"],
            "value [95% CI]": [
                format_interval(v, lo, hi, 3) for v, lo, hi in zip(claims["value"], claims["ci_low"], claims["ci_high"])
            ],
            "reference": [format_cell(v, 3) for v in claims["reference"]],
            "statistic": claims["statistic"],
            "explanation": claims["explanation"],
        }
    )
    css = {(i, "verdict"): VERDICT_CSS.get(v, "") for i, v in enumerate(claims["verdict"])}
    return frame, css


def _paper_display(paper: pd.DataFrame) -> pd.DataFrame:
    labels = {
        "shielding_pct": "shielding %",
        "mean_fr_margin": "mean FR margin",
        "mean_l2": "mean L2",
        "vuln_rank": "vuln rank",
    }
    out = pd.DataFrame({"class": paper["name"]})
    for column, label in labels.items():
        for side in ("ours", "paper", "diff"):
            out[f"{label} ({side})"] = paper[f"{column}_{side}"]
    return out


#: beyond this many classes, tables and figures show the most robust and most fragile halves
MAX_SHOWN_CLASSES = 20


def shown_classes(result: RunAnalysis, limit: int = MAX_SHOWN_CLASSES) -> list[int]:
    """Class indices a table or figure shows: all, or the limit/2 most robust and most fragile."""
    order = plots.ranked_order(result.table["vuln_rank"].to_numpy(float))
    if len(order) <= limit:
        return list(range(len(order)))
    ranked = [c for c in order if np.isfinite(result.table["vuln_rank"].iloc[c])]
    half = limit // 2
    return sorted(set(ranked[:half]) | set(ranked[-half:]))


def key_figures(result: RunAnalysis, out: Path) -> list[tuple[Path, str]]:
    """The findings' figures: attack effort, shielding landscape, path matrix, FR versus L2."""
    names = result.run.class_names
    shown = shown_classes(result)
    subset = (
        "" if len(shown) == len(names) else f" ({len(shown)} of {len(names)} classes: the most robust and most fragile)"
    )
    return [
        (
            plots.plot_attack_effort(
                result.lengths,
                names,
                out / "attack_effort.png",
                result.table["vuln_rank"].to_numpy(float),
                result.margin_means,
                classes=shown,
            ),
            "How robust each class is: FR length to the class change of each successful path, per "
            "source class, most robust first" + subset + ".",
        ),
        (
            plots.plot_shielding_landscape(
                result.landscape_panels, names, out / "shielding_landscape.png", max_classes=MAX_SHOWN_CLASSES
            ),
            "Shielding: which classes intercept paths from robust to fragile classes (left) and from "
            "fragile to robust classes (right), in % of the successful paths toward each target.",
        ),
        (
            plots.plot_path_matrix(result.matrix, names, out / "path_matrix.png", max_classes=MAX_SHOWN_CLASSES),
            "Path matrix: paths by source class and first class hit after the class change.",
        ),
        (
            plots.plot_fr_vs_l2(result.margins, out / "fr_vs_l2.png", result.attack_l2),
            "FR versus L2: per-image FR margin against the L2 distance at the flip and the minimal L2 of each attack.",
        ),
    ]


def single_report(
    result: RunAnalysis,
    out: Path,
    sections: Sequence[Section] = OPTIONAL_SECTIONS,
    rebuild: Rebuild | None = rebuild_from_registry,
) -> Path:
    """Write the tables, figures, report.md and report.html of one run into ``out``.

    Order: banners, summary, key figures, tables, ``sections`` (optional sections such as the box
    section, see ``report.sections``), then the run's metadata with its raw run.json folded.
    ``rebuild`` rebuilds the run's model and data for the gallery (None: no gallery).
    """
    run = result.run
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "class_table.csv")
    (out / "class_table.md").write_text(markdown_table(display_class_table(result.table)) + "\n")
    result.claims.to_csv(out / "claims.csv", index=False)
    result.margins.to_csv(out / "image_margins.csv", index=False)

    doc = Document(f"frmargin report: {run.info.get('model', run.label)} on {run.info.get('data', '?')}")
    for caveat in caveats(run):
        doc.warning(caveat)
    doc.summary(run_summary(result))
    doc.heading("Key figures")
    for path, caption in key_figures(result, out):
        doc.figure(path, caption)
    if rebuild is not None:
        gallery_section(doc, result, out, rebuild)
    _class_table_section(doc, result)
    if result.cifar10:
        doc.heading("The paper's claims")
        frame, css = _claims_display(result.claims)
        doc.table(frame, css)
        _paper_section(doc, result)
    else:
        doc.heading("The paper's table and claims")
        doc.text(
            "Not shown: the paper's table, its four claims and the literature ranking are about the ten "
            "CIFAR-10 classes, and this run's classes are not CIFAR-10's."
        )
    rankings_section(doc, result)
    doc.heading("Closed forms versus traced paths")
    doc.text(
        "How well the softmax-only closed forms (documentation: Method, closed forms on the simplex) predict the traced paths "
        "(successful paths of the flow; paths of status damped are left out). Large errors point to box "
        "constraints, damping, step size or "
        "rank-deficient Jacobians."
    )
    doc.figure(
        plots.plot_closed_form(result.closed_form_points, result.margin_bounds, out / "closed_form.png"),
        "Closed forms: traced versus predicted path length, and per-image margin versus the lower bound.",
    )
    doc.table(per_cell(result.agreement, ["value"]))
    box_section(doc, result.box)
    doc.heading("Path status")
    doc.text(
        "ok: the path's flow (natural gradient, or gradient for the Euclidean metric) reached a class change; "
        "damped: the natural-gradient flow stalled or crept and the path "
        "went on along a damped natural gradient to a class change (a real path, not the flow's); budget, "
        "stalled: no class change within the step budget or no step possible (undetermined, never margins)."
    )
    doc.table(result.status)
    for section in sections:
        section(doc, result, out)
    metadata_section(doc, run)
    return write_document(doc, out)


def _item_caption(item: GalleryItem, names: list[str]) -> str:
    hit = names[item.first_hit] if item.first_hit >= 0 else "none"
    check = (
        "re-traced path reproduces the stored FR length and first hit"
        if item.reproduces
        else f"re-traced path differs from the stored one (FR length {item.stored_fr_length:.4g}, first hit "
        f"{names[item.stored_first_hit] if item.stored_first_hit >= 0 else 'none'})"
    )
    return (
        f"{item.role}: image {item.key[0]}, {names[item.source]} toward {names[item.target]}, first hit {hit}, "
        f"FR length {item.fr_length:.4g}, L2 {item.l2:.4g} ({check})"
    )


def gallery_section(doc: Document, result: RunAnalysis, out: Path, rebuild: Rebuild) -> None:
    """Per shown class, what its smallest-margin, median-margin and a shielded path did to the image."""
    names = result.run.class_names
    doc.heading("What the paths did to the images")
    selected = select_gallery_paths(result.run.paths, shown_classes(result, MAX_GALLERY_CLASSES))
    if selected.empty:
        doc.text("No gallery: no path of this run changed the class.")
        return
    try:
        items = gallery_items(result.run, selected, rebuild)
    except Exception as error:  # a user's own model or missing data: the rest of the report stands
        doc.text(
            f"No gallery: the run's model and data could not be rebuilt from run.json to re-trace its paths "
            f"({type(error).__name__}: {error}). The rest of the report does not need them."
        )
        return
    doc.text(
        "Paths re-traced from run.json's configuration with every point recorded (cached in the run "
        "folder). Per class: the path of smallest FR margin, the median image's shortest path and a "
        "shielded path if any. Columns: input, end point just past the class change, the perturbation "
        "amplified around grey (factor in its title), class probabilities against the FR length travelled."
    )
    for c in dict.fromkeys(item.source for item in items):
        mine = [item for item in items if item.source == c]
        figure = plots.plot_gallery(mine, names, out / f"gallery_{c}.png", title=f"Paths from {names[c]}")
        doc.figure(figure, "; ".join(_item_caption(item, names) for item in mine) + ".")


def metadata_section(doc: Document, run: Run) -> None:
    """The run's metadata as a compact table, with the raw run.json folded below it."""
    doc.heading("Run metadata")
    doc.table(header_table(run))
    doc.details("Raw configuration (run.json)", raw_info(run))


def _class_table_section(doc: Document, result: RunAnalysis) -> None:
    doc.heading("Per-class table")
    doc.text(
        "Estimates with 95% cluster-bootstrap intervals in brackets (images resampled within "
        "their class; the paths of one image are not independent). Also in `class_table.csv`."
    )
    shown = shown_classes(result)
    if len(shown) < len(result.table):
        doc.text(
            f"{len(result.table)} classes: the {len(shown) // 2} most robust and the {len(shown) // 2} most "
            "fragile (by vulnerability rank) are shown; every class is in `class_table.csv`."
        )
    doc.table(display_class_table(result.table.iloc[shown]))
    definitions = pd.DataFrame(CLASS_TABLE_COLUMNS, columns=["column", "definition"])
    doc.table(definitions)


def _paper_section(doc: Document, result: RunAnalysis) -> None:
    doc.heading("Ours beside the paper's table")
    doc.text(
        "The paper's table (ResNet, 800 CIFAR-10 test images, 3,659 successful paths) is "
        "internally inconsistent: its shielding % column sums to 316% and its rank does not "
        "follow its mean FR margin (ship 3.45 > airplane 3.21, yet airplane is rank 1). Our "
        "shielding % is a per-class rate (see the column definitions); differences are ours "
        "minus the paper's."
    )
    doc.table(_paper_display(result.paper))
    doc.heading("The paper's table", level=3)
    doc.table(
        PAPER_TABLE.rename(
            columns={
                "name": "class",
                "shielding_pct": "Shielding %",
                "mean_fr_margin": "Mean FR margin",
                "mean_l2": "Mean L2",
                "vuln_rank": "Vuln rank",
            }
        )
    )


def rankings_section(doc: Document, result: RunAnalysis, suffix: str = "") -> None:
    """FR-versus-L2 correlations (with baselines) and the class rankings side by side."""
    if result.fr_l2 is not None:
        doc.heading("FR margins versus minimal L2 attacks" + suffix)
        doc.text(
            "Spearman and Kendall rank correlations between per-image FR margins (min over "
            "targets) and the minimal L2 distance of each attack (`best` = min over attacks), "
            "and between their class means; 95% cluster-bootstrap intervals in brackets. "
            "Failed attacks (L2 = inf) are excluded and counted."
        )
        note = box_note(result)
        if note is not None:
            doc.warning(note)
        fr = result.fr_l2
        doc.table(
            pd.DataFrame(
                {
                    "attack": fr["attack"],
                    "level": fr["level"],
                    "n": fr["n"],
                    "excluded": fr["n_excluded"],
                    "Spearman [95% CI]": interval_column(fr, "spearman", 3),
                    "Kendall [95% CI]": interval_column(fr, "kendall", 3),
                }
            )
        )
    doc.heading("Class rankings side by side" + suffix)
    rankings = result.rankings.rename(columns={"name": "class"})
    agreement = result.ranking_agreement.rename(columns={"versus": "FR ranking versus"})
    if result.cifar10:
        doc.text(
            "1 = most robust. FR: the paper's column, our mean FR length over successful paths "
            "(the per-image margins above rank classes slightly differently); L2: class mean of "
            "the best attack's minimal L2 (with baselines); paper: its Vuln rank; literature: "
            "tiers of class-wise robustness reported for CIFAR-10 (cat most vulnerable, then "
            "bird/deer/dog; automobile, truck, ship most robust), as tier mid-ranks."
        )
    else:
        doc.text(
            "1 = most robust. FR: our mean FR length over successful paths; L2: class mean of the "
            "best attack's minimal L2 (with baselines). The paper's and the literature's rankings "
            "are for CIFAR-10 only."
        )
        rankings = rankings.drop(columns=[c for c in ("rank_paper", "rank_literature") if c in rankings])
        if "FR ranking versus" in agreement:
            agreement = agreement[~agreement["FR ranking versus"].astype(str).str.contains("paper|literature")]
    shown = shown_classes(result)
    doc.table(rankings.iloc[shown] if len(shown) < len(rankings) else rankings)
    doc.table(agreement)
