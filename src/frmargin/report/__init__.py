"""``frmargin report DIR [DIR2 ...]``: tables, figures and a self-contained HTML page per run.

A run is loaded (``runs.folder.load_run``), analysed once into a typed result (``result``:
``RunAnalysis``, its box table included), then rendered as typed blocks (``document``) to
Markdown and HTML (``render``): the page of one run (``single``, with ``box`` and the optional
``sections``) or the comparison of several (``compare``). For one run the report is written into
the run folder (or ``out``): ``class_table.csv``, ``class_table.md``, ``claims.csv``,
``image_margins.csv``, figures ``*.png``, ``report.md`` and ``report.html`` (figures embedded).
For several runs (or one folder holding paths of several methods or metrics) a comparison report
is written to ``out`` (default: ``report-compare`` next to the first folder).

Example:
    >>> build_report([Path("runs/resnet20")])
    PosixPath('runs/resnet20/report.html')
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from frmargin.analysis import DEFAULT_N_BOOT
from frmargin.errors import FrmarginError
from frmargin.report.compare import comparison_report, unique_labels
from frmargin.report.document import Headline, Summary, Verdict
from frmargin.report.gallery import Rebuild, rebuild_from_registry
from frmargin.report.header import incomplete_note
from frmargin.report.result import ComparisonAnalysis, RunAnalysis, analyze, analyze_comparison
from frmargin.report.single import single_report
from frmargin.report.summary import run_summary
from frmargin.runs.folder import Run, load_run, read_run_info, split_modes

COMPARE_FOLDER = "report-compare"


def build_report(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    rebuild: Rebuild | None = rebuild_from_registry,
) -> Path:
    """Write the report of one run, or the comparison of several, and return report.html's path.

    One folder with one method and metric: everything goes into the folder (or ``out``). Several
    folders, or one holding several methods/metrics: a comparison report goes into ``out``
    (default ``report-compare`` next to the first folder; the folder itself for a single folder).
    ``rebuild`` rebuilds a run's model and data for the gallery of a single run (None: no gallery;
    see ``report.gallery``).

    Example:
        >>> build_report([Path("runs/fisher"), Path("runs/euclid")])
        PosixPath('runs/report-compare/report.html')
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise FrmarginError("argument 'run_dirs': got an empty list, expected at least one run folder")
    runs = unique_labels([mode for d in dirs for mode in split_modes(load_run(d))])
    results = [analyze(run, n_boot=n_boot, seed=seed) for run in runs]
    if len(results) == 1:
        return single_report(results[0], Path(out) if out is not None else dirs[0], rebuild=rebuild)
    if out is None:
        out = dirs[0] if len(dirs) == 1 else dirs[0].resolve().parent / COMPARE_FOLDER
    return comparison_report(analyze_comparison(results), Path(out))


def report_command(dirs: list[Path], out: Path | None = None) -> None:
    """CLI body of ``frmargin report DIR [DIR2 ...] [--out OUT]``: build and print where it is.

    An incomplete run is reported (with a banner at the top of its page) and warned about on
    stderr; the exit status stays 0.
    """
    for directory in dirs:
        info = read_run_info(Path(directory)) if Path(directory).is_dir() else None
        note = incomplete_note(info) if info is not None else None
        if note is not None:
            print(f"warning: {directory}: {note}", file=sys.stderr)
    page = build_report(dirs, out)
    print(f"report: {page}")
    print(f"markdown: {page.with_name('report.md')}")


__all__ = [
    "ComparisonAnalysis",
    "Headline",
    "Run",
    "RunAnalysis",
    "Summary",
    "Verdict",
    "analyze",
    "analyze_comparison",
    "build_report",
    "load_run",
    "report_command",
    "run_summary",
    "split_modes",
]
