"""Models named as the ecosystem names them: ``timm:NAME`` and ``robustbench:NAME``.

- ``timm:NAME`` is ``timm.create_model(NAME, pretrained=False, num_classes=C)`` (C: the classes of
  the data) with the weights of ``--weights`` (any layout ``checkpoints`` reads, e.g. the
  ``model.safetensors`` of a Hugging Face cache). timm models expect normalized inputs: pass
  ``--normalize`` (a note says what timm's configuration of the model uses).
- ``robustbench:NAME`` is ``robustbench.utils.load_model(NAME, model_dir=DIR, dataset=D,
  threat_model=T)``: RobustBench's own loader, which reads ``DIR/D/T/NAME.pt`` (and downloads it
  there when it is missing). RobustBench models take inputs in [0, 1] and normalize inside.

Both libraries are optional; when one is missing, one error says what to install.

Example:
    >>> net, facts = load_timm("resnet18", num_classes=10)  # doctest: +SKIP
    >>> facts["kind"]  # doctest: +SKIP
    'timm'
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from torch import nn

from ..errors import FrmarginError, bad_argument

__all__ = [
    "DATASETS",
    "ECOSYSTEMS",
    "THREAT_MODELS",
    "check_ecosystem_options",
    "ecosystem_of",
    "load_robustbench",
    "load_timm",
    "robustbench_dataset",
]

#: the prefixes of ``--model`` that name a library's model
ECOSYSTEMS = ("timm", "robustbench")
#: RobustBench's threat models and datasets
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")
DATASETS = ("cifar10", "cifar100", "imagenet")
#: RobustBench's default ``model_dir``
DEFAULT_MODEL_DIR = "models"
INSTALL = {
    "timm": "pip install 'frmargin[timm]' (or pip install timm, with the torchvision of your torch)",
    "robustbench": "pip install 'frmargin[robustbench]' (or pip install robustbench)",
}


def ecosystem_of(spec: str) -> str | None:
    """``"timm"`` or ``"robustbench"`` for ``timm:NAME`` / ``robustbench:NAME``, else None.

    Example:
        >>> ecosystem_of("timm:resnet18"), ecosystem_of("mymodels:factory")
        ('timm', None)
    """
    prefix, sep, _ = spec.partition(":")
    return prefix if sep and prefix in ECOSYSTEMS else None


def _require(package: str, spec: str) -> ModuleType:
    """The imported ``package``, or one error saying what to install."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != package.split(".")[0]:
            why = f"it cannot be imported here (a package it needs is missing: {err.name})"
        else:
            why = "it is not installed"
        raise FrmarginError(
            f"option '--model': {spec} needs the {package.split('.')[0]} package, but {why}; "
            f"install it: {INSTALL[package.split('.')[0]]}"
        ) from None
    except Exception as err:  # a package built for another torch fails on import
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise FrmarginError(
            f"option '--model': {spec} needs the {package.split('.')[0]} package, but importing it fails "
            f"({type(err).__name__}: {first}); install a version that fits this torch: {INSTALL[package.split('.')[0]]}"
        ) from None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _checked_module(net: object, spec: str, what: str) -> nn.Module:
    if not isinstance(net, nn.Module):
        raise FrmarginError(f"option '--model': {what} returned {type(net).__name__} for {spec}, expected an nn.Module")
    return net


def load_timm(name: str, num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """``timm.create_model(name, pretrained=False, num_classes=num_classes)`` (timm's default
    classes when None) and its identity facts, with timm's normalization when it states one."""
    spec = f"timm:{name}"
    timm = _require("timm", spec)
    kwargs: dict = {} if num_classes is None else {"num_classes": num_classes}
    try:
        net = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as err:  # timm raises RuntimeError for an unknown name
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise FrmarginError(
            f"option '--model': timm cannot build {name!r} ({type(err).__name__}: {first}); expected a name "
            "from timm.list_models()"
        ) from None
    net = _checked_module(net, spec, "timm.create_model")
    facts: dict = {"kind": "timm", "library": "timm", "library_version": _version("timm"), "architecture": name}
    cfg = getattr(net, "pretrained_cfg", None) or {}
    if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
        facts["timm_normalization"] = {"mean": list(cfg["mean"]), "std": list(cfg["std"])}
    return net, facts


def load_robustbench(
    name: str, *, model_dir: str | None = None, dataset: str = "cifar10", threat_model: str = "Linf"
) -> tuple[nn.Module, dict]:
    """RobustBench's ``load_model`` from a local model folder, and the identity facts."""
    spec = f"robustbench:{name}"
    utils = _require("robustbench.utils", spec)
    folder = str(Path(model_dir or DEFAULT_MODEL_DIR).expanduser())
    load: Callable[..., object] = utils.load_model
    try:
        net = load(name, model_dir=folder, dataset=dataset, threat_model=threat_model)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        where = Path(folder) / dataset / threat_model / f"{name}.pt"
        raise FrmarginError(
            f"option '--model': RobustBench cannot load {name!r} for {dataset}/{threat_model} "
            f"({type(err).__name__}: {first}); expected a model of its zoo, its checkpoint at {str(where)!r} "
            "when offline"
        ) from None
    net = _checked_module(net, spec, "robustbench.utils.load_model")
    facts = {
        "kind": "robustbench",
        "library": "robustbench",
        "library_version": _version("robustbench"),
        "dataset": dataset,
        "threat_model": threat_model,
        "model_dir": folder,
    }
    return net, facts


def robustbench_dataset(model_dataset: str | None, data: str) -> str:
    """RobustBench's dataset of a run: ``--model-dataset``, else ``cifar10`` for CIFAR-10 data."""
    if model_dataset is not None:
        return model_dataset
    if data == "auto" or data.startswith("cifar10"):
        return "cifar10"
    raise FrmarginError(
        f"option '--model-dataset': none given with --model robustbench:NAME and --data {data!r}, expected "
        f"RobustBench's dataset of the model: one of {', '.join(DATASETS)}"
    )


def check_ecosystem_options(
    spell: Callable[[str], str],
    model: str,
    weights: str | None,
    threat_model: str | None,
    model_dir: str | None,
    model_dataset: str | None,
) -> None:
    """Refuse, before any work, options that do not fit ``--model`` (``spell``: how the caller
    names options)."""
    eco = ecosystem_of(model) if isinstance(model, str) else None
    if eco is not None and not model.partition(":")[2]:
        raise bad_argument(spell("model"), model, f"{eco}:NAME with a model name")
    if eco == "timm" and weights is None:
        raise bad_argument(
            spell("weights"), None, f"a weight file with --model {model}: timm builds the architecture only"
        )
    if eco == "robustbench" and weights is not None:
        raise bad_argument(spell("weights"), weights, f"none with --model {model}: RobustBench loads its own weights")
    for name, value, choices in (
        ("threat_model", threat_model, THREAT_MODELS),
        ("model_dataset", model_dataset, DATASETS),
        ("model_dir", model_dir, None),
    ):
        if value is None:
            continue
        if eco != "robustbench":
            raise bad_argument(spell(name), value, "it only with --model robustbench:NAME")
        if choices is not None and value not in choices:
            raise bad_argument(spell(name), value, f"one of {', '.join(choices)}")
