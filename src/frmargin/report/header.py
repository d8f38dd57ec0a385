"""The frame of a run's report: its banners (incomplete run, data, method, metric caveats) and the
compact run-metadata table at the end of the page (raw run.json folded beside it).

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


def data_caveat(info: dict) -> str | None:
    """The run's data caveat from run.json (``data_caveat``), or None when it has none."""
    caveat = info.get("data_caveat")
    return str(caveat) if caveat else None


def box_text(info: dict) -> str:
    """The run's box (valid-input range) in words: ``[lo, hi]`` or "none (unconstrained)"."""
    box = info.get("box")
    if box is None or box is False:
        return "none (paths unconstrained)"
    if isinstance(box, (list, tuple)) and len(box) == 2:
        return f"[{format_cell(float(box[0]))}, {format_cell(float(box[1]))}]"
    return "yes" if box is True else str(box)


def incomplete_note(info: dict) -> str | None:
    """Why the run is not complete (run.json ``status`` other than "complete"), or None.

    A run.json without a status (written before runs recorded one) counts as complete.
    """
    status = info.get("status")
    if status is None or status == "complete":
        return None
    sessions = info.get("sessions") or []
    traced = sum(int(s.get("paths_traced", 0)) for s in sessions if isinstance(s, dict))
    return (
        f"incomplete run: run.json has status {status!r}, not 'complete' (the run was interrupted "
        f"or is still running; {traced} paths recorded by finished sessions). Every number below "
        "describes the paths traced so far; resume the run (`frmargin run ... --resume`) to finish it."
    )


def caveats(run: Run) -> list[str]:
    """Warnings of a run's page: incomplete run, data caveat, method and metric caveats, notes."""
    info = run.info
    out = []
    incomplete = incomplete_note(info)
    if incomplete is not None:
        out.append(incomplete)
    caveat = data_caveat(info)
    if caveat is not None:
        text = caveat[:1].upper() + caveat[1:]
        out.append(
            f"{text}. Accuracy, margins and every number below describe these data and are not "
            "directly comparable with results on the original test set (source under Run metadata)."
        )
    if info.get("method") == "paper":
        out.append(
            "method 'paper' follows the paper's algorithm (with the sign erratum fixed): "
            "`fr_length` is the chord-sum FR length of the traced path, while the paper's "
            "own D_FR is the step count (`mean steps`), which depends on the damping and the "
            "step size, not only on the model (documentation: Method, the paper's errata)."
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


def accuracy_text(info: dict) -> str:
    """Top-1 accuracy on the selection with the count of correct images."""
    accuracy = info.get("accuracy")
    text = MISSING if accuracy is None else f"{100 * float(accuracy):.1f}%"
    if info.get("n_correct") is not None:
        text += f" ({info['n_correct']} of {info.get('images', MISSING)} correct)"
    return text


def header_table(run: Run) -> pd.DataFrame:
    """Compact rows (field, value) of the run's metadata; the raw run.json goes in ``raw_info``."""
    info, paths = run.info, run.paths
    n_images = len(run.images) if run.images is not None else MISSING
    timing = info.get("timing")
    timing_text = (
        ", ".join(f"{k} {format_cell(float(v))} s" for k, v in timing.items())
        if isinstance(timing, dict)
        else _mapping_text(timing)
    )
    identity = info.get("model_identity")
    model: dict = identity if isinstance(identity, dict) else {}
    rows = [
        (
            "model",
            str(info.get("model", MISSING)) + (f" ({model['architecture']})" if model.get("architecture") else ""),
        ),
        ("data", info.get("data", MISSING)),
        ("data source", info.get("data_source", MISSING)),
        ("accuracy (top-1 on the selection)", accuracy_text(info)),
        (
            "images requested / selected / with paths",
            f"{info.get('images', MISSING)} / {n_images} / {paths['image_index'].nunique()}",
        ),
        ("paths (successful)", f"{len(paths)} ({int(paths['success'].astype(bool).sum())})"),
        (
            "method / metric / until",
            f"{info.get('method', MISSING)} / {info.get('metric', MISSING)} / {info.get('until', MISSING)}",
        ),
        ("box (valid-input range of the paths)", box_text(info)),
        ("seed", format_cell(info.get("seed"))),
        (
            "baselines",
            ", ".join(sorted(run.baselines["attack"].astype(str).unique()))
            if run.baselines is not None and len(run.baselines)
            else "none",
        ),
        ("tracer options", _mapping_text(info.get("tracer_options"))),
        ("status", str(info.get("status", MISSING))),
        ("timing", timing_text),
        ("versions", _mapping_text(info.get("versions"))),
        ("run folder", str(run.directory)),
    ]
    return pd.DataFrame(rows, columns=["field", "value"])


def raw_info(run: Run) -> str:
    """run.json as loaded (indented JSON), for the folded raw configuration."""
    return json.dumps(run.info, indent=2, default=str)
