"""The header of a run's report: its caveats (data, method, metric) and the run.json table.

The data caveat comes from run.json's ``data_caveat`` (written by the runner from the dataset's
identity); the data source text is shown, never searched.

Example:
    >>> caveats(load_run(Path("runs/resnet20")))
"""

from __future__ import annotations

import json

import pandas as pd

from frmargin.report.format import MISSING, format_cell
from frmargin.runs.folder import Run

#: run.json keys shown in the header's first rows; every other key follows, as JSON
HEADER_KEYS = (
    "model",
    "data",
    "data_source",
    "class_names",
    "method",
    "metric",
    "until",
    "box",
    "images",
    "seed",
    "accuracy",
    "n_correct",
    "timing",
    "versions",
    "tracer_options",
)


def data_caveat(info: dict) -> str | None:
    """The run's data caveat from run.json (``data_caveat``), or None when it has none."""
    caveat = info.get("data_caveat")
    return str(caveat) if caveat else None


def caveats(run: Run) -> list[str]:
    """Warnings of a run's page: its data caveat, method and metric caveats, loading notes."""
    info = run.info
    out = []
    caveat = data_caveat(info)
    if caveat is not None:
        out.append(
            f"the data are not the original test set ({info.get('data_source')}); {caveat}. "
            "Accuracy, margins and every number below describe these data; they are not "
            "directly comparable with results on the original data."
        )
    if info.get("method") == "paper":
        out.append(
            "method 'paper' follows the paper's algorithm (with the sign erratum fixed): "
            "`fr_length` is the chord-sum FR length of the traced path, while the paper's "
            "own D_FR is the step count (`mean steps`), which depends on the damping and the "
            "step size, not only on the model (METHOD.md section 2, erratum 2)."
        )
    if info.get("metric") == "euclidean":
        out.append(
            "metric 'euclidean': paths follow plain gradients, not natural gradients; their "
            "lengths are still measured in FR length but are not FR geodesic margins."
        )
    return out + list(run.notes)


def _mapping_text(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()) or MISSING
    return MISSING if value is None else str(value)


def header_table(run: Run) -> pd.DataFrame:
    """Rows (field, value) describing the run: run.json settings, counts, timing, versions."""
    info, paths = run.info, run.paths
    n_images = len(run.images) if run.images is not None else MISSING
    accuracy = info.get("accuracy")
    acc_text = MISSING if accuracy is None else f"{100 * float(accuracy):.1f}%"
    if info.get("n_correct") is not None:
        acc_text += f" ({info['n_correct']} correct)"
    timing = info.get("timing")
    timing_text = (
        ", ".join(f"{k} {format_cell(float(v))} s" for k, v in timing.items())
        if isinstance(timing, dict)
        else _mapping_text(timing)
    )
    rows = [
        ("model", info.get("model", MISSING)),
        ("data", info.get("data", MISSING)),
        ("data source", info.get("data_source", MISSING) + ("  [SEE THE DATA CAVEAT]" if data_caveat(info) else "")),
        ("accuracy (top-1 on the selection)", acc_text),
        (
            "images requested / selected / with paths",
            f"{info.get('images', MISSING)} / {n_images} / {paths['image_index'].nunique()}",
        ),
        ("paths (successful)", f"{len(paths)} ({int(paths['success'].astype(bool).sum())})"),
        (
            "method / metric / until",
            f"{info.get('method', MISSING)} / {info.get('metric', MISSING)} / {info.get('until', MISSING)}",
        ),
        ("box constraint", format_cell(info.get("box"))),
        ("seed", format_cell(info.get("seed"))),
        (
            "baselines",
            ", ".join(sorted(run.baselines["attack"].astype(str).unique()))
            if run.baselines is not None and len(run.baselines)
            else "none",
        ),
        ("tracer options", _mapping_text(info.get("tracer_options"))),
        ("timing", timing_text),
        ("versions", _mapping_text(info.get("versions"))),
        ("run folder", str(run.directory)),
    ]
    extra = {k: v for k, v in info.items() if k not in HEADER_KEYS}
    for key, value in extra.items():
        text = json.dumps(value, default=str)
        rows.append((key, text if len(text) <= 300 else text[:297] + "..."))
    return pd.DataFrame(rows, columns=["field", "value"])
