"""The options that say which model a command uses and how it is read, shared by ``frmargin run``
and ``frmargin accuracy``.

``with_model_options`` adds ``--model``, the weight options, ``--output``, the input options and
RobustBench's options to a typer command and hands the command their values as ``model_options``:
keyword arguments of ``RunConfig`` (``--input-range`` and ``--resize`` parsed).

Example:
    >>> @app.command()  # doctest: +SKIP
    ... @with_model_options()
    ... def accuracy(*, model_options: dict) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Optional

import typer

from .app import parse_pair

__all__ = ["MODEL_HELP", "MODEL_OPTIONS", "with_model_options"]

MODEL_HELP = (
    "A registered name (frmargin assets lists them), package.module:callable, file.py:callable, timm:NAME "
    "(with --weights), robustbench:NAME, a TorchScript file or a torch.export .pt2 archive."
)
PANEL = "Model"
#: name -> (type, default, help) of each option, in the order --help lists them
MODEL_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "model": (str, "resnet20", MODEL_HELP),
    "weights": (
        Optional[str],
        None,
        "Weight file of a factory or timm model: a state dict, also nested (state_dict, model, ema, ...), in a "
        "list, with module./_orig_mod. prefixes, saved on any device, or .safetensors (read with weights_only=True).",
    ),
    "weights_key": (Optional[str], None, "Where the state dict is in --weights, e.g. state_dict or model/0."),
    "weights_sha256": (Optional[str], None, "Expected sha256 of --weights, checked before reading."),
    "output": (
        Optional[str],
        None,
        "Where the logits are in the model's output: logits, a KEY or an INDEX (default: a tensor, .logits, "
        "a 'logits' entry or a tuple's first element).",
    ),
    "normalize": (Optional[str], None, "MEANS:STDS per channel: wrap a model that expects normalized inputs."),
    "input_range": (str, "0,1", "LO,HI: the valid input range (attack bounds; --box inside it)."),
    "resize": (Optional[str], None, "H,W: resize the images of an image folder."),
    "threat_model": (Optional[str], None, "RobustBench's threat model of robustbench:NAME: Linf (default), L2, ..."),
    "model_dir": (Optional[str], None, "RobustBench's model folder of robustbench:NAME (default: models)."),
    "model_dataset": (
        Optional[str],
        None,
        "RobustBench's dataset of robustbench:NAME: cifar10, cifar100 or imagenet (default: cifar10 for CIFAR-10 data).",
    ),
}


def _parameter(name: str) -> inspect.Parameter:
    kind, default, text = MODEL_OPTIONS[name]
    option = typer.Option(default, help=text, rich_help_panel=PANEL, show_default=default is not None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)


def _config_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The ``RunConfig`` keyword arguments of the options' values."""
    out = dict(values)
    out["input_range"] = parse_pair("--input-range", values["input_range"], float, "LO,HI (e.g. 0,1)") or (0.0, 1.0)
    out["resize"] = parse_pair("--resize", values["resize"], int, "H,W in pixels (e.g. 32,32)")
    return out


def with_model_options() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the command gets the options of ``MODEL_OPTIONS`` and is called with
    ``model_options`` (``RunConfig`` keyword arguments) built from them."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        params = [p for name, p in own.parameters.items() if name != "model_options"]
        generated = [_parameter(name) for name in MODEL_OPTIONS]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {name: kwargs.pop(name) for name in MODEL_OPTIONS}
            return command(model_options=_config_fields(chosen), **kwargs)

        keyword_only = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in [*generated, *params]]
        signature = own.replace(parameters=keyword_only)
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        wrapper.__annotations__["return"] = own.return_annotation
        del wrapper.__wrapped__  # typer reads the signature set here, not the command's
        return wrapper

    return decorate
