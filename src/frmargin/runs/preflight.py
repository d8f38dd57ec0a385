"""What a run is made from, and the checks before any tracing.

``resolve_inputs`` turns a configuration (and optionally a module and data handed in from Python)
into the model, its identity, the dataset and its identity. ``preflight`` (the one owner of the
input checks) runs one forward pass on one image and refuses, with one line naming what the model
expects and what the data hold, an input shape that does not fit, outputs that are not (B, C)
logits, labels outside [0, C), non-finite logits, or images outside the input range. ``chance_warning`` says when the
accuracy on the selection is near chance (<= 1.5 / C).

Example:
    >>> model, model_id, data = resolve_inputs(RunConfig(data="cifar10-exact"))  # doctest: +SKIP
    >>> preflight(model, data, RunConfig())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..data.dataset import Dataset, generic_class_names
from ..data.load import load_dataset
from ..errors import FrmarginError, bad_argument
from ..temperature import HELD_OUT_IMAGES, Temperature, fit_summary, held_out_indices
from . import folder
from .config import RunConfig
from .identity import data_identity, model_identity
from .targets import select_images

__all__ = [
    "CHANCE_FACTOR",
    "apply_temperature",
    "as_dataset",
    "chance_warning",
    "load_run_model",
    "preflight",
    "resolve_data",
    "resolve_inputs",
    "run_temperature",
]

#: accuracy at or below CHANCE_FACTOR / C is reported as near chance
CHANCE_FACTOR = 1.5


def as_dataset(data: object) -> Dataset:
    """A ``Dataset`` as is, or ``(images (N, C, H, W), labels (N,))`` tensors from Python."""
    if isinstance(data, Dataset):
        return data
    if not (isinstance(data, Sequence) and len(data) == 2):
        raise FrmarginError(
            f"argument 'data': got {type(data).__name__}, expected a Dataset, (images, labels) tensors or None"
        )
    images, labels = (torch.as_tensor(t) for t in data)
    if not images.is_floating_point() or images.ndim < 2:
        raise FrmarginError(
            f"argument 'data': got images {images.dtype} {tuple(images.shape)}, expected floats (N, C, H, W)"
        )
    if labels.is_floating_point() or labels.shape != (images.shape[0],) or (labels.numel() and labels.min() < 0):
        raise FrmarginError(
            f"argument 'data': got labels {labels.dtype} {tuple(labels.shape)}, "
            f"expected non-negative integers of shape ({images.shape[0]},)"
        )
    labels = labels.long()
    names = generic_class_names(int(labels.max()) + 1 if labels.numel() else 0)
    identity = data_identity(images, labels, names, "python")
    return Dataset(
        name="python",
        images=images.detach().float() if images.dtype != torch.float64 else images.detach(),
        labels=labels,
        class_names=names,
        test_index=torch.arange(images.shape[0]),
        source="in-memory tensors from Python",
        identity=identity,
    )


def resolve_inputs(
    config: RunConfig, model: nn.Module | None = None, data: object = None
) -> tuple[RunConfig, nn.Module, dict, Dataset]:
    """The configuration as recorded (``model``/``data`` named ``python:...`` when handed in),
    the model (eval mode, frozen, its output read as logits: ``LogitsOf``), its identity and the
    dataset (with its identity). A ``timm:NAME`` model is built for the data's classes, so the data
    are loaded first for it."""
    from ..models.custom import parse_normalize
    from ..models.ecosystem import ecosystem_of
    from ..models.outputs import LogitsOf

    dataset = None
    if model is not None:
        if not isinstance(model, nn.Module):
            raise FrmarginError(f"argument 'model': got {type(model).__name__}, expected an nn.Module or None")
        if config.normalize is not None:
            from ..models import Normalized

            model = Normalized(model, *parse_normalize(config.normalize))
        net = model.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        config = dataclasses.replace(config, model=f"python:{type(model).__name__}")
        identity = model_identity(net, name=config.model, kind="python module")
        net = LogitsOf(net, config.output).eval()  # after the identity: the weights' hash is the module's
    else:
        if ecosystem_of(config.model) == "timm":
            config, dataset = _with_data(config, data)
        net, identity = load_run_model(config, len(dataset.class_names) if dataset is not None else None)
        timm_norm = identity.get("timm_normalization")
        if timm_norm is not None and config.normalize is None:
            mean, std = (",".join(f"{v:.4g}" for v in timm_norm[k]) for k in ("mean", "std"))
            _note(
                f"timm's configuration of {config.model} normalizes inputs with mean {mean} and std {std}; "
                f"pass --normalize {mean}:{std} if the weights expect it"
            )
    if dataset is None:
        config, dataset = _with_data(config, data)
    return config, net, identity, dataset


def _with_data(config: RunConfig, data: object) -> tuple[RunConfig, Dataset]:
    if data is not None:
        return dataclasses.replace(config, data="python"), as_dataset(data)
    return config, resolve_data(config.data, config.resize)


def load_run_model(config: RunConfig, n_classes: int | None = None) -> tuple[nn.Module, dict]:
    """The model a configuration names, as a run traces it before its temperature: registered or a
    user's (factory, file, ``timm:NAME`` for ``n_classes`` classes, ``robustbench:NAME``), with its
    weights, normalization and output reading (``LogitsOf``); and its identity.

    Example:
        >>> net, identity = load_run_model(RunConfig(model="mymodels:cnn", weights="cnn.pt"))  # doctest: +SKIP
    """
    from ..models import is_registered, load_model
    from ..models.custom import load_user_model, parse_normalize
    from ..models.ecosystem import ecosystem_of, robustbench_dataset
    from ..models.outputs import LogitsOf

    normalize = parse_normalize(config.normalize) if config.normalize is not None else None
    if is_registered(config.model):
        net = load_model(config.model, weights=config.weights, normalize=normalize)
        if config.output is not None:
            net = LogitsOf(net, config.output).eval()
        return net, model_identity(config.model)
    options: dict = {}
    eco = ecosystem_of(config.model)
    if eco == "timm":
        options["num_classes"] = n_classes
    elif eco == "robustbench":
        options.update(
            model_dir=config.model_dir,
            threat_model=config.threat_model,
            model_dataset=robustbench_dataset(config.model_dataset, config.data),
        )
    net, facts = load_user_model(
        config.model,
        weights=config.weights,
        weights_sha256=config.weights_sha256,
        weights_key=config.weights_key,
        normalize=normalize,
        **options,
    )
    identity = model_identity(net, name=config.model, **facts)
    return LogitsOf(net, config.output).eval(), identity  # after the identity: the weights' hash is the module's


def _note(text: str) -> None:
    """A note on stderr (rank 0 only under torchrun)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"frmargin: note: {text}", file=sys.stderr)


def resolve_data(name: str, resize: tuple[int, int] | None = None) -> Dataset:
    """Load a dataset; ``auto`` = the official CIFAR-10 test split (tarball or lossless copy),
    else the JPEG copy (said in run.json and the report)."""
    try:
        return load_dataset(name, resize=resize)
    except FrmarginError as err:  # name the CLI option, keep the loader's detail and class
        raise type(err)(f"option '--data': {err}") from None


def preflight(
    model: nn.Module,
    data: Dataset,
    config: RunConfig,
    device: torch.device,
    dtype: torch.dtype,
    identity: dict | None = None,
) -> int:
    """One forward pass on one image (two when there are two: a fixed batch size shows); returns C.

    Raises:
        FrmarginError: one line naming ``--model``/``--data``, the model's expected input shape and
            the data's shape (or the output received and what was expected).
    """
    if len(data) == 0:
        raise FrmarginError(f"option '--data': {data.name} holds no images")
    shape = tuple(data.images.shape[1:])
    lo, hi = (float(v) for v in config.input_range)
    x_min, x_max = float(data.images.min()), float(data.images.max())
    if x_min < lo or x_max > hi:
        raise FrmarginError(
            f"option '--input-range': the data {data.name} hold values in [{x_min:.4g}, {x_max:.4g}], "
            f"expected inside the input range [{lo:g}, {hi:g}] (set --input-range LO,HI)"
        )
    declared = _declared_shape(identity or {})
    if declared is not None and declared != shape:
        raise FrmarginError(
            f"option '--data': data {data.name} have shape {shape} (C, H, W), but the model {config.model} "
            f"expects {declared}"
        )
    x = data.images[: min(2, len(data))].to(device=device, dtype=dtype)
    try:
        with torch.no_grad():
            z = model(x)
    except FrmarginError:  # an output that cannot be read as logits (``LogitsOf``) says so itself
        raise
    except Exception as err:
        expected = _expected_input(model)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FrmarginError(
            f"option '--model': {config.model} cannot take the data's images: data {data.name} have shape "
            f"{shape} (C, H, W), the model expects {expected} ({type(err).__name__}: {first[:200]})"
        ) from None
    if isinstance(z, (tuple, list, dict)):
        raise FrmarginError(
            f"option '--model': {config.model} returned a {type(z).__name__}, expected one logits tensor (B, C): "
            "wrap the model to return its logits"
        )
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != x.shape[0]:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise FrmarginError(
            f"option '--model': {config.model} returned output {got} for input {tuple(x.shape)}, "
            f"expected logits ({x.shape[0]}, C)"
        )
    _record_output(model, config, identity)
    C = int(z.shape[1])
    n_labels = int(data.labels.max()) + 1
    if int(data.labels.min()) < 0:
        raise FrmarginError(
            f"option '--data': labels in [{int(data.labels.min())}, {n_labels - 1}], expected class indices "
            f"in [0, {C}) for the model's {C} outputs"
        )
    if C < 2 or n_labels > C or len(data.class_names) != C:
        raise FrmarginError(
            f"option '--model': {config.model} gives {C} logits per image for input {shape}, but the data "
            f"{data.name} have {len(data.class_names)} classes (labels 0..{n_labels - 1}); expected as many logits as classes"
        )
    if not torch.isfinite(z).all():
        raise FrmarginError(f"option '--model': {config.model} gives non-finite logits on the data's first image")
    return C


def _record_output(model: nn.Module, config: RunConfig, identity: dict | None) -> None:
    """Where the logits were found in an output that is not itself the logits: said on stderr
    once and recorded in the model's identity (run.json's ``model_identity.output``)."""
    from ..models.outputs import LogitsOf

    if not (isinstance(model, LogitsOf) and model.adapted):
        return
    chosen = f"--output {config.output}" if config.output is not None else "automatically"
    if identity is not None:
        identity["output"] = {"logits": model.read, "chosen": chosen}
    how = f"chosen with {chosen}" if config.output is not None else "found automatically; --output chooses another"
    _note(f"the logits of {config.model} are read from {model.read} ({how})")


def _declared_shape(identity: dict) -> tuple[int, ...] | None:
    """The per-image input shape a model declares: its identity's ``input_shape``, else the
    ``(C, H, W)`` of a registered model's input description ("... shape (B, 3, 32, 32)")."""
    if identity.get("input_shape") is not None:
        return tuple(int(v) for v in identity["input_shape"])
    text = identity.get("input")
    match = re.search(r"shape \(B, ([\d, ]+)\)", text) if isinstance(text, str) else None
    return tuple(int(v) for v in match.group(1).split(",")) if match else None


def _expected_input(model: nn.Module) -> str:
    """The input the first layer expects, as far as it can be read from the module."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return f"({m.in_channels}, H, W) ({m.in_channels} channels, first layer Conv2d)"
        if isinstance(m, nn.Linear):
            return f"{m.in_features} values per image after flattening (first layer Linear)"
    return "another input shape"


def chance_warning(accuracy: float, n_classes: int, n_images: int) -> str | None:
    """The warning when ``accuracy`` is near chance (<= 1.5 / C), else None."""
    if accuracy > CHANCE_FACTOR / n_classes:
        return None
    return (
        f"accuracy on the selection is {100 * accuracy:.1f}% of {n_images} images, near chance for "
        f"{n_classes} classes (<= {100 * CHANCE_FACTOR / n_classes:.1f}%): check the model, data and "
        "normalization (--normalize, --input-range)"
    )


# the temperature of a run: 1, a given T, or ``auto`` (NLL-optimal on up to HELD_OUT_IMAGES test
# images *not* in the run's selection, a fixed subset drawn with the run's seed). A resumed run
# reuses the recorded T (no refit), so every chunk of a run sees the same model.


def _recorded(out: Path) -> float | None:
    """The temperature a run.json in ``out`` recorded (a resumed run), else None."""
    info = folder.read_run_info(out) if (Path(out) / folder.RUN_FILE).exists() else None
    value = info.get("temperature") if info else None
    return float(value) if value is not None else None


def run_temperature(model: nn.Module, data: Dataset, config: RunConfig, device: torch.device) -> dict:
    """The run.json entries of the temperature: ``temperature`` (the T used) and, for ``auto``,
    ``temperature_fit`` (NLL before/after, image count, seed) and ``temperature_images`` (the
    held-out dataset indices)."""
    if config.temperature != "auto":
        return {"temperature": float(config.temperature)}
    labels = data.labels.numpy()
    selected = select_images(labels, config.images, len(data.class_names), config.seed)
    held = held_out_indices(len(labels), selected, HELD_OUT_IMAGES, config.seed)
    if held.size == 0:
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


def apply_temperature(
    model: nn.Module, data: Dataset, config: RunConfig, out: Path, device: torch.device
) -> tuple[nn.Module, dict]:
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
