"""The report's box section: where the box binds, per class, and how much it raises margins
above the softmax-only bound (only for runs made with a box). It renders the box table of the
run's analysis (``RunAnalysis.box``, see ``report.result.analyze_box``) and computes nothing."""

from __future__ import annotations

import pandas as pd

from frmargin.analysis import BOX_TABLE_COLUMNS
from frmargin.report.document import Document
from frmargin.report.result import BoxAnalysis


def box_section(doc: Document, box: BoxAnalysis | None) -> None:
    """Append the box section to ``doc`` (nothing for ``None``: no box or no box statistics)."""
    if box is None:
        return
    doc.heading("Box constraint")
    doc.text(
        f"Paths kept inside the box {box.bounds} by the projected natural-gradient flow "
        "(an active set of coordinates held at a bound, the Fisher direction from the Jacobian "
        "restricted to the free ones). LB is the unconstrained margin (softmax only); the in-box "
        "margin estimate minimizes the FR length of a discretized path to the boundary inside "
        "the box, started from the traced path, and never exceeds it. The unconstrained flow's "
        "shielding is the closed form's prediction on the same paths."
    )
    doc.table(box.table.round(3).reset_index(names="class"))
    doc.table(pd.DataFrame(BOX_TABLE_COLUMNS, columns=["column", "definition"]))
