"""The temperature of a run: 1, a given T, or ``auto`` (NLL-optimal on held-out test images).

``auto`` fits T on up to ``HELD_OUT_IMAGES`` images of the dataset that are *not* in the run's
selection (a fixed subset drawn with the run's seed), and records T, the subset and the NLL
before and after in run.json. A resumed run reuses the recorded T (no refit), so every chunk of a
run sees the same model.

Example:
    >>> model, entries = apply_temperature(model, data, RunConfig(temperature="auto"), out, device)  # doctest: +SKIP
    >>> entries["temperature"]  # doctest: +SKIP
    1.63
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..calibration import fit_summary, held_out_indices
from ..models.temperature import Temperature
from . import folder
from .config import RunConfig

__all__ = ["HELD_OUT_IMAGES", "apply_temperature", "run_temperature"]

#: at most this many held-out images for ``--temperature auto``
HELD_OUT_IMAGES = 2000


def _recorded(out: Path) -> float | None:
    """The temperature a run.json in ``out`` recorded (a resumed run), else None."""
    info = folder.read_run_info(out) if (Path(out) / folder.RUN_FILE).exists() else None
    value = info.get("temperature") if info else None
    return float(value) if value is not None else None


def run_temperature(model: nn.Module, data, config: RunConfig, device: torch.device) -> dict:
    """The run.json entries of the temperature: ``temperature`` (the T used) and, for ``auto``,
    ``temperature_fit`` (NLL before/after, image count, seed) and ``temperature_images`` (the
    held-out dataset indices)."""
    if config.temperature != "auto":
        return {"temperature": float(config.temperature)}
    from .experiment import select_images

    labels = data.labels.numpy()
    selected = select_images(labels, config.images, len(data.class_names), config.seed)
    held = held_out_indices(len(labels), selected, HELD_OUT_IMAGES, config.seed)
    if held.size == 0:
        from ..errors import bad_argument

        raise bad_argument("temperature", "auto", "a dataset with images outside the run's selection to fit T on")
    index = torch.as_tensor(held)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    fit = fit_summary(model, data.images[index].to(device=device, dtype=dtype), data.labels[index].to(device))
    return {
        "temperature": fit.temperature,
        "temperature_fit": {
            **fit.as_dict(),
            "requested": "auto",
            "images": "test images outside the selection, a fixed subset drawn with the run's seed",
            "seed": config.seed,
        },
        "temperature_images": held.tolist(),
    }


def apply_temperature(model: nn.Module, data, config: RunConfig, out: Path, device: torch.device):
    """(the model to trace, the run.json entries): ``Temperature(model, T)`` when T != 1.

    A run.json in ``out`` that already records a temperature (a resumed run) is reused.
    """
    recorded = _recorded(out)
    if recorded is not None:
        entries: dict = {"temperature": recorded}
    else:
        entries = run_temperature(model, data, config, device)
    t = float(entries["temperature"])
    return (model if t == 1.0 else Temperature(model, t)), entries
