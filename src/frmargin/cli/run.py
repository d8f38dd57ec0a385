"""``frmargin run`` and ``frmargin study``: trace paths into run folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from ..errors import FrmarginError
from ..options import TraceOptions
from ..runs.box_estimate import BOX_MARGIN_HELP
from .app import app, resolve_device, set_threads
from .model_options import with_model_options
from .options import with_trace_options

__all__ = ["run", "study"]


def _parse_temperature(text: str) -> float | str:
    from ..runs.study import parse_temperatures

    values = parse_temperatures(text)
    if len(values) != 1:
        raise FrmarginError(f"option '--temperature': got {text!r}, expected one number > 0 or 'auto'")
    return values[0]


@app.command()
@with_trace_options()
@with_model_options()
def run(
    data: str = typer.Option(
        "auto", help="cifar10, cifar10-jpeg, cifar10-exact, auto, a .npz path or an image folder root/<class>/<file>."
    ),
    images: int = typer.Option(800, help="Images to select: N/C per class (N < C: N classes drawn with the seed)."),
    out: Path = typer.Option(Path("runs/latest"), help="Output folder."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in --out."),
    seed: int = typer.Option(0, help="Seed of the image selection."),
    baselines: str = typer.Option(
        "", help="Comma-separated min-L2 attacks among deepfool, fmn, best, ossa, tssa, random, e.g. deepfool,fmn."
    ),
    chunk_images: int = typer.Option(4, help="Images per results chunk (checkpoint granularity)."),
    dtype: str = typer.Option("float32", help="float32 or float64."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for torch (default: free cores of this process, shared among torchrun ranks)."
    ),
    targets: Optional[str] = typer.Option(
        None, help="all, top:K, random:K or a list 3,5,7 (default: all when C <= 10, else top:9)."
    ),
    temperature: str = typer.Option(
        "1", help="Divide the logits by T (a number > 0), or auto: the NLL-optimal T on held-out test images."
    ),
    *,
    trace: TraceOptions,
    model_options: dict,
) -> None:
    """Trace paths from N images to every other class and write DIR/paths.parquet, run.json."""
    from ..runs.config import RunConfig, cli_spelling
    from ..runs.experiment import run_experiment

    set_threads(threads)
    config = RunConfig(
        **model_options,
        data=data,
        images=images,
        seed=seed,
        trace=trace,
        baselines=tuple(b for b in baselines.split(",") if b),
        chunk_images=chunk_images,
        dtype=dtype,
        device=resolve_device(device),
        temperature=_parse_temperature(temperature),
        targets=targets,
    )
    config.validate(spell=cli_spelling)  # every option checked before the folder is touched
    folder = run_experiment(config, out, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"results in {folder} (make the report with: frmargin report {folder})")


@app.command()
@with_trace_options(exclude=("metric",))
def study(
    models: str = typer.Option(..., help="Comma-separated model names (frmargin.list_models())."),
    images: int = typer.Option(100, help="Images, stratified, the same for every model."),
    metrics: str = typer.Option(
        "fisher,euclidean", help="Comma-separated: fisher (at every temperature), euclidean (at the first)."
    ),
    baselines: str = typer.Option("", help="Comma-separated min-L2 attacks (with the first run of a model), e.g. fmn."),
    temperature: str = typer.Option("1", help="Comma-separated temperatures: numbers > 0 and/or auto."),
    box_margin: str = typer.Option("candidates:1.05", help=BOX_MARGIN_HELP),
    closed_form: bool = typer.Option(
        True, help="Per model, the logits of every image of --data (one inference pass): accuracy, closed-form margins."
    ),
    out: Path = typer.Option(Path("runs/study"), help="Study folder (rerun the command to resume)."),
    data: str = typer.Option("auto", help="cifar10, cifar10-jpeg, cifar10-exact, a .npz path, or auto."),
    seed: int = typer.Option(0, help="Seed of the image selection."),
    chunk_images: int = typer.Option(4, help="Images per results chunk (checkpoint granularity)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads for torch (default: free cores of this process, shared among torchrun ranks)."
    ),
    progress: bool = typer.Option(True, help="One progress display for the whole study (paths, rate, time left)."),
    *,
    trace: TraceOptions,
) -> None:
    """Run (and resume) every model's runs on the same images, then the study report.

    Per model: the closed-form pass over every image, natural-gradient paths at each temperature,
    Euclidean paths once, and with --box the natural-gradient flow in the box. Under torchrun the
    chunks of every run are shared over the ranks."""
    from ..runs.config import cli_spelling
    from ..runs.study import StudyPlan, known_models, parse_list, parse_temperatures, validate_plan
    from ..runs.study_runner import run_study

    plan = StudyPlan(
        models=parse_list(models, "models"),
        images=images,
        metrics=parse_list(metrics, "metrics"),
        baselines=parse_list(baselines, "baselines") if baselines.strip() else (),
        temperatures=parse_temperatures(temperature),
        data=data,
        seed=seed,
        chunk_images=chunk_images,
        device=resolve_device(device),
        trace=trace,
        box_margin=box_margin,
        closed_form=closed_form,
    )
    validate_plan(plan, known_models(), cli_spelling)  # before any model or data is loaded
    set_threads(threads)
    run_study(plan, out, progress=progress, spell=cli_spelling)
    if int(os.environ.get("RANK", "0")) == 0:
        from ..report.study import study_report

        typer.echo(f"study report: {study_report(out)}")
