"""Command-line interface: thin typer commands over ``runs``, ``report`` and the asset store.

Each command imports what it needs inside its body, so ``frmargin --help`` imports no torch.

Errors a user can cause print as one line on stderr with exit status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from .errors import FrmarginError
from .threads import apply_threads

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fisher-Rao margins, natural-gradient paths and class shielding of classifiers.",
)
_DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _DEBUG["on"] = debug


def _parse_box(box: Optional[str]) -> tuple[float, float] | None:
    if box is None or box.lower() == "none":
        return None
    try:
        lo, hi = (float(v) for v in box.split(","))
    except ValueError:
        raise FrmarginError(f"option '--box': got {box!r}, expected 'LO,HI' (e.g. 0,1) or 'none'") from None
    if not lo < hi:
        raise FrmarginError(f"option '--box': got {box!r}, expected LO < HI")
    return lo, hi


def _set_threads(threads: Optional[int]) -> None:
    """torch's CPU threads: ``--threads``, or a default that does not oversubscribe the machine."""
    if threads is not None and threads < 1:
        raise FrmarginError(f"option '--threads': got {threads}, expected a positive number of CPU threads (e.g. 1)")
    apply_threads(threads)


def _parse_pair(option: str, text: Optional[str], kind: type, example: str) -> tuple | None:
    """``"A,B"`` -> (A, B) of ``kind``, or None; a bad value names the option."""
    if text is None:
        return None
    try:
        a, b = (kind(v) for v in text.split(","))
    except ValueError:
        raise FrmarginError(f"option '{option}': got {text!r}, expected {example}") from None
    return a, b


def _accuracy_options(eta, rtol, atol, logit_step) -> dict:
    opts = {"eta": eta, "rtol": rtol, "atol": atol, "logit_step": logit_step}
    return {k: v for k, v in opts.items() if v is not None}


@app.command()
def run(
    model: str = typer.Option(
        "resnet20",
        help="A registered name (frmargin assets lists them), package.module:callable, file.py:callable, "
        "a TorchScript file or a torch.export .pt2 archive.",
    ),
    data: str = typer.Option(
        "auto", help="cifar10, cifar10-jpeg, cifar10-exact, auto, a .npz path or an image folder root/<class>/<file>."
    ),
    weights: Optional[str] = typer.Option(None, help="State dict for a factory model (read with weights_only=True)."),
    weights_sha256: Optional[str] = typer.Option(None, help="Expected sha256 of --weights, checked before reading."),
    normalize: Optional[str] = typer.Option(
        None, help="MEANS:STDS per channel: wrap a model that expects normalized inputs."
    ),
    input_range: str = typer.Option("0,1", help="LO,HI: the valid input range (attack bounds; --box inside it)."),
    resize: Optional[str] = typer.Option(None, help="H,W: resize the images of an image folder."),
    images: int = typer.Option(800, help="Images to select: N/C per class (N < C: N classes drawn with the seed)."),
    method: str = typer.Option("converged", help="converged (default) or paper."),
    metric: str = typer.Option("fisher", help="fisher (natural gradient) or euclidean."),
    until: str = typer.Option("first_flip", help="first_flip or target."),
    box: Optional[str] = typer.Option(None, help="Keep inputs in LO,HI (e.g. 0,1); default none."),
    batch_size: int = typer.Option(64, help="Paths traced together (bounds memory)."),
    out: Path = typer.Option(Path("runs/latest"), help="Output folder."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    seed: int = typer.Option(0, help="Seed of the image selection."),
    damping: Optional[float] = typer.Option(None, help="Damping lam (default 1e-14 converged, 1e-3 paper)."),
    damping_mode: str = typer.Option("relative", help="relative (to the largest eigenvalue of G) or absolute."),
    solver: str = typer.Option("exact", help="exact or cg (paper mode)."),
    max_steps: Optional[int] = typer.Option(None, help="Step budget per path."),
    eta: Optional[float] = typer.Option(None, help="Largest FR length of one step."),
    rtol: Optional[float] = typer.Option(None, help="Relative corrector tolerance."),
    atol: Optional[float] = typer.Option(None, help="Absolute FR tolerance of a corrected point."),
    logit_step: Optional[float] = typer.Option(None, help="First cap on a step's log-probability change."),
    baselines: str = typer.Option("", help="Comma-separated min-L2 attacks, e.g. deepfool,fmn."),
    chunk_images: int = typer.Option(4, help="Images per results chunk (checkpoint granularity)."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for torch (default: free cores of this process, shared among torchrun ranks)."
    ),
    top_classes: Optional[int] = typer.Option(
        None,
        help="Per path, keep the M most probable classes and lump the rest (M + 1 Jacobian rows; "
        "default 20 when C > 100, else every class).",
    ),
    targets: Optional[str] = typer.Option(
        None, help="all, top:K, random:K or a list 3,5,7 (default: all when C <= 10, else top:9)."
    ),
    memory_budget: Optional[str] = typer.Option(
        None, help="Most memory one batch of paths may hold, e.g. 4GB, 500MB (default: a safe share of free memory)."
    ),
    temperature: str = typer.Option(
        "1", help="Divide the logits by T (a number > 0), or auto: the NLL-optimal T on held-out test images."
    ),
) -> None:
    """Trace paths from N images to every other class and write DIR/paths.parquet, run.json."""
    from .runs.config import RunConfig, cli_spelling
    from .runs.experiment import run_experiment

    _set_threads(threads)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if "LOCAL_RANK" in os.environ and device == "cuda":
            device = f"cuda:{os.environ['LOCAL_RANK']}"
    config = RunConfig(
        model=model,
        data=data,
        images=images,
        method=method,
        metric=metric,
        until=until,
        box=_parse_box(box),
        batch_size=batch_size,
        seed=seed,
        damping=damping,
        damping_mode=damping_mode,
        solver=solver,
        max_steps=max_steps,
        accuracy=_accuracy_options(eta, rtol, atol, logit_step),
        baselines=tuple(b for b in baselines.split(",") if b),
        chunk_images=chunk_images,
        dtype=dtype,
        device=device,
        top_classes=top_classes,
        weights=weights,
        weights_sha256=weights_sha256,
        normalize=normalize,
        input_range=_parse_pair("--input-range", input_range, float, "LO,HI (e.g. 0,1)") or (0.0, 1.0),
        resize=_parse_pair("--resize", resize, int, "H,W in pixels (e.g. 32,32)"),
        temperature=_parse_temperature(temperature),
        targets=targets,
        memory_budget=memory_budget,
    )
    config.validate(spell=cli_spelling)  # every option checked before the folder is touched
    folder = run_experiment(config, out, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"results in {folder} (make the report with: frmargin report {folder})")


def _parse_temperature(text: str) -> float | str:
    from .runs.study import parse_temperatures

    values = parse_temperatures(text)
    if len(values) != 1:
        raise FrmarginError(f"option '--temperature': got {text!r}, expected one number > 0 or 'auto'")
    return values[0]


@app.command()
def study(
    models: str = typer.Option(..., help="Comma-separated model names (frmargin.list_models())."),
    images: int = typer.Option(100, help="Images, stratified, the same for every model."),
    metrics: str = typer.Option("fisher,euclidean", help="Comma-separated: fisher, euclidean."),
    baselines: str = typer.Option("", help="Comma-separated min-L2 attacks (with the first metric), e.g. fmn."),
    temperature: str = typer.Option("1", help="Comma-separated temperatures: numbers > 0 and/or auto."),
    out: Path = typer.Option(Path("runs/study"), help="Study folder (rerun the command to resume)."),
    data: str = typer.Option("auto", help="cifar10, cifar10-jpeg, cifar10-exact, a .npz path, or auto."),
    seed: int = typer.Option(0, help="Seed of the image selection."),
    chunk_images: int = typer.Option(4, help="Images per results chunk (checkpoint granularity)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    progress: bool = typer.Option(True, help="Show a progress bar per run."),
) -> None:
    """Run (and resume) one run folder per model and metric on the same images, then the study report."""
    from .runs.study import StudyPlan, parse_list, parse_temperatures

    plan = StudyPlan(
        models=parse_list(models, "models"),
        images=images,
        metrics=parse_list(metrics, "metrics"),
        baselines=parse_list(baselines, "baselines") if baselines.strip() else (),
        temperatures=parse_temperatures(temperature),
        data=data,
        seed=seed,
        chunk_images=chunk_images,
        device=device,
    )
    from .runs.study import run_study, validate_plan

    validate_plan(plan, _zoo())  # before any model or data is loaded
    _set_threads(threads)
    if device == "auto":
        import torch

        plan = replace(plan, device="cuda" if torch.cuda.is_available() else "cpu")
    run_study(plan, out, progress=progress)
    from .report.study import study_report

    typer.echo(f"study report: {study_report(out)}")


def _zoo() -> dict[str, dict]:
    from .runs.study import known_models

    return known_models()


@app.command()
def report(
    dirs: list[Path] = typer.Argument(..., help="Run folders (several give a comparison), or one study folder."),
    out: Optional[Path] = typer.Option(None, help="Where to write (default: the run folder)."),
) -> None:
    """Per-class table, figures, report.html and report.md from one or more runs (or the study
    report of one study folder)."""
    from .runs.folder import check_run_folder, run_is_complete

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
    from .report import report_command

    report_command(dirs, out)


def _study_report(directory: Path, out: Optional[Path]) -> None:
    """``frmargin report STUDY_DIR``: the study report, also of an unfinished study."""
    if out is not None and Path(out).resolve() != Path(directory).resolve():
        raise FrmarginError(
            f"option '--out': got {str(out)!r} for the study folder {str(directory)!r}, expected none "
            "(a study report is written into its study folder)"
        )
    from .report.study import pending_runs, study_report
    from .runs.study import read_study

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
    _set_threads(threads)
    if toy:
        from .toy import run_toy_demo

        summary = run_toy_demo(out / "toy" if out == Path("runs/demo") else out)
        typer.echo(f"toy demo written: {', '.join(str(f) for f in summary['files'].values())}")
        return
    from .report import build_report
    from .runs.config import RunConfig
    from .runs.experiment import run_experiment
    from .runs.folder import RUN_FILE

    apply_threads(None)
    config = RunConfig(images=images, baselines=("deepfool",))
    # a finished or interrupted demo in the same folder is continued, not redone
    folder = run_experiment(config, out, resume=(out / RUN_FILE).exists(), progress=True)
    page = build_report([folder])
    typer.echo(f"report: {page}")


@app.command()
def assets(verify: bool = typer.Option(True, help="Verify checksums of present files.")) -> None:
    """List every known weight and data file with its state."""
    from .cli_assets import assets_command

    assets_command(verify=verify)


@app.command()
def accuracy(
    model: str = typer.Option("resnet20", help="Model name."),
    data: str = typer.Option("cifar10-exact", help="Dataset name or .npz path."),
    limit: Optional[int] = typer.Option(None, help="Use the first N images."),
) -> None:
    """Top-1 accuracy of a model on a dataset, with the data source."""
    from .cli_assets import accuracy_command

    if limit is not None and limit < 1:
        raise FrmarginError(f"option '--limit': got {limit}, expected a positive number")
    accuracy_command(model, data, limit)


def _one_line(err: BaseException) -> str:
    """The message of a user error on one line; an OSError names its file and the fix."""
    if isinstance(err, OSError) and not isinstance(err, FrmarginError):  # DiskFullError has its text
        import errno

        where = f" {err.filename!r}" if err.filename else ""
        what = err.strerror or str(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = "free space, then rerun the same command with --resume"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = "choose a writable place (--out, or FRMARGIN_HOME for the asset store)"
        elif err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            advice = "a file stands where a folder is expected (check --out and FRMARGIN_HOME)"
        else:
            advice = "check the path and its permissions"
        return f"cannot use{where}: {what}; {advice}"
    return " ".join(str(err).split())


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr."""
    import warnings

    warnings.filterwarnings("ignore", module="matplotlib")  # font and layout chatter of the figures
    try:
        app()
    except (FrmarginError, OSError) as err:
        if _DEBUG["on"]:
            raise
        typer.echo(f"frmargin: error: {_one_line(err)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("frmargin: interrupted (finished results are kept; rerun with --resume)", err=True)
        sys.exit(130)
    except Exception as err:  # anything unexpected: still one line unless --debug
        if _DEBUG["on"]:
            raise
        typer.echo(f"frmargin: error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
