"""Users' own models: factories, TorchScript files, ``torch.export`` archives, normalization.

``load_user_model(spec)`` accepts:

- ``package.module:callable`` or ``path/to/file.py:callable``: a factory called without arguments
  that returns an ``nn.Module``; with ``weights`` a checkpoint is loaded strictly after the
  optional ``weights_sha256`` check: a state dict found where training scripts put it, read with
  ``torch.load(..., weights_only=True)`` on the CPU or from a safetensors file (``checkpoints``).
- ``timm:NAME`` and ``robustbench:NAME``: a model built by timm (with ``weights``) or loaded by
  RobustBench (``ecosystem``).
- a TorchScript file (``torch.jit.save``), any suffix but ``.pt2``.
- a ``torch.export`` archive (``.pt2``, ``torch.export.save``). An exported program has no train or
  eval mode of its own (its graph was fixed at export time, and ``.eval()`` is not supported): it
  is treated as an inference graph, said in the identity (``mode``).

Every model comes back with frozen parameters and in eval mode; ``normalize=(mean, std)`` wraps
it in ``Normalized`` (inputs then in the valid range, e.g. [0, 1], normalized inside).

Example:
    >>> model, identity = load_user_model("mymodels:factory_cnn")  # doctest: +SKIP
    >>> identity["kind"]  # doctest: +SKIP
    'factory'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import FrmarginError
from .checkpoints import file_sha256, load_weights
from .ecosystem import ecosystem_of, load_robustbench, load_timm
from .wrappers import Normalized

__all__ = ["InferenceGraph", "load_user_model", "parse_normalize"]

OPTION = "--model"


class InferenceGraph(nn.Module):
    """A ``torch.export`` graph as a module that is always in eval mode.

    An exported program's mode was fixed when it was exported and its module refuses ``.eval()``;
    here ``train(mode)`` leaves every flag at eval, so checks and wrappers treat it as inference.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self.train(False)

    def train(self, mode: bool = True) -> InferenceGraph:
        for m in self.modules():
            m.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``"M1,M2,M3:S1,S2,S3"`` -> (means, stds), one per channel, stds > 0.

    Example:
        >>> parse_normalize("0.5:0.25")
        ((0.5,), (0.25,))
    """
    try:
        means_text, stds_text = text.split(":")
        means = tuple(float(v) for v in means_text.split(","))
        stds = tuple(float(v) for v in stds_text.split(","))
    except ValueError:
        raise FrmarginError(
            f"option '--normalize': got {text!r}, expected MEANS:STDS per channel, e.g. "
            "0.4914,0.4822,0.4465:0.2470,0.2435,0.2616"
        ) from None
    if len(means) != len(stds) or not all(s > 0 for s in stds):
        raise FrmarginError(
            f"option '--normalize': got {len(means)} means and {len(stds)} stds in {text!r}, "
            "expected as many means as stds, every std > 0"
        )
    return means, stds


def _factory(spec: str) -> object:
    """The callable named by ``module:callable`` or ``file.py:callable``."""
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FrmarginError(f"option '{OPTION}': got {spec!r}, but the file {where!r} does not exist")
        name = f"_frmargin_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise FrmarginError(f"option '{OPTION}': got {spec!r}, cannot import {where!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise FrmarginError(
                f"option '{OPTION}': got {spec!r}, cannot import module {where!r} ({err}); "
                "expected package.module:callable on the Python path, or path/to/file.py:callable"
            ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise FrmarginError(f"option '{OPTION}': got {spec!r}, but {where!r} has no callable {attr!r}")
    return fn


def _from_file(path: Path) -> tuple[nn.Module, dict]:
    if path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as e:
            raise FrmarginError(f"option '{OPTION}': {str(path)!r} is not a torch.export archive ({e})") from None
        net = InferenceGraph(program.module())
        return net, {"kind": "torch.export", "mode": "inference graph (torch.export; mode fixed at export time)"}
    try:
        with warnings.catch_warnings():  # torch says TorchScript is deprecated; the file is the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise FrmarginError(
            f"option '{OPTION}': {str(path)!r} is not a TorchScript file; expected a registered name, "
            "package.module:callable, path/to/file.py:callable (with --weights for a state dict), "
            "a TorchScript file or a torch.export .pt2 archive"
        ) from None
    return net, {"kind": "torchscript"}


def _ecosystem(spec: str, options: dict) -> tuple[nn.Module, dict]:
    """A ``timm:NAME`` or ``robustbench:NAME`` model (see ``ecosystem``)."""
    eco, _, name = spec.partition(":")
    if eco == "timm":
        return load_timm(name, options.get("num_classes"))
    return load_robustbench(
        name,
        model_dir=options.get("model_dir"),
        dataset=options.get("model_dataset") or "cifar10",
        threat_model=options.get("threat_model") or "Linf",
    )


def load_user_model(
    spec: str,
    *,
    weights: str | None = None,
    weights_sha256: str | None = None,
    weights_key: str | None = None,
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    **options: object,
) -> tuple[nn.Module, dict]:
    """A user's model (see the module docstring) and the facts for its identity.

    ``options``: ``num_classes`` (for ``timm:NAME``; timm's default when absent), ``model_dir``,
    ``model_dataset`` and ``threat_model`` (for ``robustbench:NAME``; ``models``, ``cifar10`` and
    ``Linf`` when absent).

    Raises:
        FrmarginError: naming ``--model``, ``--weights``, ``--weights-sha256`` or ``--weights-key``.
    """
    path = Path(spec).expanduser()
    facts: dict = {"spec": spec}
    if ecosystem_of(spec) is not None and not path.is_file():
        net, more = _ecosystem(spec, options)
        facts.update(more)
        if weights is not None:
            facts.update(load_weights(net, weights, key=weights_key, sha256=weights_sha256))
        net.eval()
    elif ":" in spec and not path.is_file():
        fn = _factory(spec)
        net = fn()  # type: ignore[operator]
        if not isinstance(net, nn.Module):
            raise FrmarginError(f"option '{OPTION}': {spec!r} returned {type(net).__name__}, expected an nn.Module")
        facts["kind"] = "factory"
        if weights is not None:
            facts.update(load_weights(net, weights, key=weights_key, sha256=weights_sha256))
        net.eval()
    elif path.is_file():
        if weights is not None:
            raise FrmarginError(f"option '--weights': got {weights!r}, expected none with a model file {spec!r}")
        net, more = _from_file(path)
        facts.update(more, file=str(path), sha256=file_sha256(path))
        net.eval()
    else:
        raise FrmarginError(
            f"option '{OPTION}': got {spec!r}, expected a registered name (frmargin assets lists them), "
            "package.module:callable, path/to/file.py:callable, timm:NAME, robustbench:NAME, a TorchScript "
            "file or a .pt2 archive"
        )
    if normalize is not None:
        net = Normalized(net, *normalize).eval()
        facts["normalization"] = {"name": "user", "mean": list(normalize[0]), "std": list(normalize[1])}
    for p in net.parameters():  # not net.requires_grad_: ScriptModules refuse it
        p.requires_grad_(False)
    return net, facts
