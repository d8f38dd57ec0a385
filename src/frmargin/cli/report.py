"""``frmargin report`` and ``frmargin demo``: pages from run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import FrmarginError
from .app import app, set_threads

__all__ = ["demo", "report"]


@app.command()
def report(
    dirs: list[Path] = typer.Argument(..., help="Run folders (several give a comparison), or one study folder."),
    out: Optional[Path] = typer.Option(None, help="Where to write (default: the run folder)."),
) -> None:
    """Per-class table, figures, report.html and report.md from one or more runs (or the study
    report of one study folder)."""
    from ..runs.folder import check_run_folder, run_is_complete

    if len(dirs) == 1 and (dirs[0] / "study.json").is_file():
        _study_report(dirs[0], out)
        return
    for directory in dirs:  # a wrong folder is said at once, before the report stack loads
        check_run_folder(directory)
        if not run_is_complete(directory):
            typer.echo(
                f"frmargin: warning: {directory} is an incomplete run (not finished, or still running): "
                "its tables are partial; finish it with frmargin run ... --resume",
                err=True,
            )
    from ..report import report_command

    report_command(dirs, out)


def _study_report(directory: Path, out: Optional[Path]) -> None:
    """``frmargin report STUDY_DIR``: the study report, also of an unfinished study."""
    if out is not None and Path(out).resolve() != Path(directory).resolve():
        raise FrmarginError(
            f"option '--out': got {str(out)!r} for the study folder {str(directory)!r}, expected none "
            "(a study report is written into its study folder)"
        )
    from ..report.study import study_report
    from ..runs.study_runner import pending_runs, read_study

    pending = pending_runs(read_study(directory))
    if pending:
        typer.echo(
            f"frmargin: warning: {directory} is an unfinished study ({len(pending)} runs not finished): the "
            "report covers the finished runs; rerun the study command to finish it",
            err=True,
        )
    typer.echo(f"study report: {study_report(directory)}")


@app.command()
def demo(
    toy: bool = typer.Option(False, help="The 2-D toy problem instead of ResNet-20 / CIFAR-10."),
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    images: int = typer.Option(30, help="Images (demo size; the paper used 800)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (1 is best on a shared machine)."),
) -> None:
    """A few-minute run of the main job (resnet20, CIFAR-10) and its report."""
    set_threads(threads)
    if toy:
        from ..demo.toy import run_toy_demo

        summary = run_toy_demo(out / "toy" if out == Path("runs/demo") else out)
        typer.echo(f"toy demo written: {', '.join(str(f) for f in summary['files'].values())}")
        return
    from ..demo.cifar import run_demo

    typer.echo(f"report: {run_demo(out, images)}")
