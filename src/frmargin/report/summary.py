"""The findings block at the top of every page, built from an analysed run as a typed ``Summary``.

``run_summary`` reads a ``RunAnalysis`` (it computes nothing: every number comes from the
analysis), and ``Document.summary`` appends the result; a comparison or study page builds its own
``Summary`` (facts, headlines, verdicts, findings) and appends it the same way, so every page
starts with the same block.

Example:
    >>> doc.summary(run_summary(analyze(load_run(Path("runs/resnet20")))))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.report.document import Headline, Summary, Verdict
from frmargin.report.format import MISSING, format_interval
from frmargin.report.header import accuracy_text, box_text
from frmargin.report.result import RunAnalysis

#: the bounds every baseline attack uses today (``baselines.DEFAULTS["bounds"]``)
ATTACK_BOUNDS = (0.0, 1.0)


def _headline_row(result: RunAnalysis, statistic: str) -> pd.Series:
    return result.headlines.set_index("statistic").loc[statistic]


def _interval(row: pd.Series, decimals: int, unit: str = "") -> str:
    return format_interval(row["value"], row["ci_low"], row["ci_high"], decimals) + unit


def _class_extremes(result: RunAnalysis) -> tuple[Headline, Headline] | None:
    table = result.table
    ranked = table[np.isfinite(table["vuln_rank"].to_numpy(float))]
    if ranked.empty:
        return None
    top, bottom = ranked.loc[ranked["vuln_rank"].idxmin()], ranked.loc[ranked["vuln_rank"].idxmax()]

    def card(row: pd.Series, label: str) -> Headline:
        value = format_interval(row["mean_fr_margin"], row["mean_fr_margin_lo"], row["mean_fr_margin_hi"], 3)
        return Headline(f"{label}: {row['name']}", value, f"mean FR length to the class change, {row['n_paths']} paths")

    return card(top, "most robust class"), card(bottom, "most fragile class")


def box_note(result: RunAnalysis) -> str | None:
    """A note when the FR paths and the baseline attacks did not share a valid-input range."""
    if result.fr_l2 is None:
        return None
    box = result.run.info.get("box")
    bounds = f"[{ATTACK_BOUNDS[0]:g}, {ATTACK_BOUNDS[1]:g}]"
    if box is None or box is False:
        return (
            f"FR paths were unconstrained (no box) while the baseline attacks were boxed to {bounds}: "
            "an FR path may leave the valid-input range where an attack may not, so FR-versus-L2 "
            "comparisons mix constrained and unconstrained distances."
        )
    if isinstance(box, (list, tuple)) and tuple(float(b) for b in box) != ATTACK_BOUNDS:
        return f"FR paths were boxed to {box_text(result.run.info)}, the baseline attacks to {bounds}."
    return None


def _findings(result: RunAnalysis) -> list[str]:
    out = []
    shielded = _headline_row(result, "shielded_pct")
    if int(shielded["numerator"]) == 0:
        out.append(
            "No successful path was shielded: every path that changed the class first hit its "
            "target, so the shielding statistics and claims 2 and 3 have no data."
        )
    else:
        out.append(
            f"{int(shielded['numerator'])} of {int(shielded['denominator'])} successful paths were shielded "
            "(their first class hit is not their target); the shielding landscape shows by which classes."
        )
    if result.fr_l2 is not None:
        fr = result.fr_l2
        attack = "best" if "best" in set(fr["attack"]) else str(fr["attack"].iloc[0])
        row = fr[(fr["attack"] == attack) & (fr["level"] == "image")].iloc[0]
        rho = format_interval(row["spearman"], row["spearman_lo"], row["spearman_hi"], 2)
        out.append(
            f"Per-image FR margins and the minimal L2 of the `{attack}` attack: Spearman {rho} over "
            f"{int(row['n'])} images."
        )
    note = box_note(result)
    if note is not None:
        out.append(note)
    return out


def run_summary(result: RunAnalysis) -> Summary:
    """The summary block of one run: facts, headline numbers with 95% intervals, verdicts."""
    info, paths = result.run.info, result.run.paths
    n_ok = int(paths["success"].astype(bool).sum())
    facts = (
        ("model", str(info.get("model", MISSING))),
        ("data", str(info.get("data", MISSING))),
        ("accuracy", accuracy_text(info)),
        ("paths", f"{len(paths)} traced, {n_ok} changed the class"),
        ("method / metric", f"{info.get('method', MISSING)} / {info.get('metric', MISSING)}"),
        ("box", box_text(info)),
    )
    margin = _headline_row(result, "image_margin")
    headlines = [
        Headline(
            "per-image FR margin (mean)",
            _interval(margin, 3),
            f"min over targets, {int(margin['numerator'])} of {int(margin['denominator'])} images",
        ),
    ]
    extremes = _class_extremes(result)
    if extremes is not None:
        headlines += list(extremes)
    shielded = _headline_row(result, "shielded_pct")
    headlines.append(
        Headline(
            "shielded paths (%)",
            _interval(shielded, 1) if shielded["numerator"] else "none (0%)",
            f"{int(shielded['numerator'])} of {int(shielded['denominator'])} successful paths",
        )
    )
    success = _headline_row(result, "success_pct")
    headlines.append(Headline("paths that changed the class (%)", _interval(success, 1), f"of {len(paths)} paths"))
    verdicts: tuple[Verdict, ...] = ()
    if result.cifar10:
        verdicts = tuple(
            Verdict(c, v, e if v == "not tested" else f"{format_interval(x, lo, hi, 3)}; {e}")
            for c, v, x, lo, hi, e in zip(
                result.claims["claim"],
                result.claims["verdict"],
                result.claims["value"],
                result.claims["ci_low"],
                result.claims["ci_high"],
                result.claims["explanation"],
            )
        )
    return Summary(facts=facts, headlines=tuple(headlines), verdicts=verdicts, findings=tuple(_findings(result)))
