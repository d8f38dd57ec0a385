"""Optional sections of a run's page, appended after its tables and before its metadata.

A section is a callable ``(doc, result, out) -> None`` that appends blocks to ``doc`` (and may
write figures into ``out``); it appends nothing when its data are absent. Add one by listing it
in ``OPTIONAL_SECTIONS`` (e.g. the Fisher spectrum section of ``report.spectrum``: spectral attacks
and the top eigenvalue, for runs with a spectral attack among their baselines).

Example:
    >>> def my_section(doc, result, out):
    ...     doc.heading("My section")
    >>> single_report(result, out, sections=(*OPTIONAL_SECTIONS, my_section))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from frmargin.report.spectrum import spectrum_section

if TYPE_CHECKING:
    from frmargin.report.document import Document
    from frmargin.report.result import RunAnalysis

Section = Callable[["Document", "RunAnalysis", Path], None]

#: the optional sections every single-run page gets, in page order
OPTIONAL_SECTIONS: tuple[Section, ...] = (spectrum_section,)
