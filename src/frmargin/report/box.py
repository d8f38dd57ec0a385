"""The report's box section: where the box binds, per class, and how much it raises margins
above the softmax-only bound (only for runs made with a box)."""

from __future__ import annotations

import pandas as pd

from frmargin.analysis.box import BOX_TABLE_COLUMNS, box_table
from frmargin.report.document import Document
from frmargin.runs.folder import Run


def box_section(doc: Document, run: Run) -> None:
    """Append the box section to ``doc`` when the run's paths carry box statistics."""
    if not run.info.get("box") or "bound_share" not in run.paths:
        return
    doc.heading("Box constraint")
    doc.text(
        f"Paths kept inside the box {tuple(run.info['box'])} by the projected natural-gradient flow "
        "(an active set of coordinates held at a bound, the Fisher direction from the Jacobian "
        "restricted to the free ones). LB is the unconstrained margin (softmax only); the in-box "
        "margin estimate minimizes the FR length of a discretized path to the boundary inside "
        "the box, started from the traced path, and never exceeds it. The unconstrained flow's "
        "shielding is the closed form's prediction on the same paths."
    )
    table = box_table(run.paths, run.class_names).round(3)
    doc.table(table.reset_index(names="class"))
    doc.table(pd.DataFrame(BOX_TABLE_COLUMNS, columns=["column", "definition"]))
