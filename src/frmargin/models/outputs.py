"""Model outputs read as logits: Hugging Face outputs, dicts and tuples.

``LogitsOf(model, how)`` is ``model`` with a forward that returns the logits tensor (B, C) of
whatever ``model`` returns. ``how`` (``--output`` on the command line) is

- ``None`` (automatic): a tensor is the logits; otherwise the tensor ``.logits`` attribute of an
  object (Hugging Face's ``ImageClassifierOutput``), the ``"logits"`` entry of a dict, or the first
  element of a tuple or list;
- a key (e.g. ``logits``): that entry of a dict, else that attribute;
- an index (e.g. ``0``): that element of a tuple or list (of ``to_tuple()`` for objects with one).

Anything else is refused with one error saying what the model returned. ``LogitsOf.read`` says
where the logits were found (run.json records it). The tracer, ``DataFisher`` and
``min_l2_attack`` take callables that return the logits tensor; ``logits_of(model)`` adapts a
model for them.

Example:
    >>> class HF(nn.Module):
    ...     def forward(self, x):
    ...         return {"logits": 2 * x}
    >>> logits_of(HF())(torch.ones(1, 3))
    tensor([[2., 2., 2.]])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import FrmarginError

__all__ = ["LogitsOf", "describe_output", "logits_of", "parse_output"]

#: what is read as logits without --output
AUTOMATIC = (
    "a tensor, an object with a .logits tensor, a dict with a 'logits' tensor or a tuple whose first element "
    "is the logits"
)


def parse_output(how: object, option: str = "--output") -> str | int | None:
    """``None``/``"auto"`` -> None; an integer (or its text) -> the index; other text -> the key.

    Example:
        >>> parse_output("logits"), parse_output("1"), parse_output(None)
        ('logits', 1, None)
    """
    if how is None or how == "auto":
        return None
    if isinstance(how, int) and not isinstance(how, bool):
        return how
    if not isinstance(how, str) or not how.strip():
        raise FrmarginError(f"{_named(option)}: got {how!r}, expected logits, a KEY of the output or an INDEX")
    text = how.strip()
    return int(text) if text.lstrip("-").isdigit() else text


def describe_output(out: object) -> str:
    """A short description of a model's output, for messages and run.json.

    Example:
        >>> describe_output((torch.zeros(2, 3), None))
        'a tuple of 2 (Tensor (2, 3), NoneType)'
    """
    if isinstance(out, torch.Tensor):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, Mapping):
        keys = [str(k) for k in out][:8]
        return f"a {type(out).__name__} with keys {keys}"
    if isinstance(out, (tuple, list)):
        items = [f"Tensor {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__ for v in out[:3]]
        return f"a {type(out).__name__} of {len(out)} ({', '.join(items)}{', ...' if len(out) > 3 else ''})"
    return f"a {type(out).__name__}"


def _named(option: str) -> str:
    return f"option {option!r}" if option.startswith("--") else f"argument {option!r}"


def _automatic(out: object) -> tuple[object, str]:
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits, f"the .logits attribute of {type(out).__name__}"
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"], f"the 'logits' entry of {type(out).__name__}"
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], f"element 0 of {type(out).__name__} of {len(out)}"
    return None, ""


def _chosen(out: object, how: str | int) -> tuple[object, str]:
    if isinstance(how, int):
        items = out.to_tuple() if hasattr(out, "to_tuple") else out
        if isinstance(items, (tuple, list)) and -len(items) <= how < len(items):
            return items[how], f"element {how} of {type(out).__name__} of {len(items)}"
        return None, ""
    if isinstance(out, Mapping) and how in out:
        return out[how], f"the {how!r} entry of {type(out).__name__}"
    if not isinstance(out, (torch.Tensor, Mapping, tuple, list)) and hasattr(out, how):
        return getattr(out, how), f"the .{how} attribute of {type(out).__name__}"
    return None, ""


class LogitsOf(nn.Module):
    """``model`` with its output read as the logits tensor (see the module docstring).

    Args:
        model: a module (or callable) mapping (B, *S) to logits or to an output that holds them.
        how: None (automatic), a key or an index.
        option: how errors name the choice: ``--output`` (the command line) or ``how``.
    """

    def __init__(self, model: nn.Module, how: str | int | None = None, *, option: str = "--output") -> None:
        super().__init__()
        self.model = model
        self.how = parse_output(how, option)
        self.option = option
        self.read = ""  # where the logits were found at the last call ("" before the first)
        self.train(getattr(model, "training", False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, torch.Tensor) and self.how is None:
            self.read = "the output tensor"
            return out
        z, read = _automatic(out) if self.how is None else _chosen(out, self.how)
        if not isinstance(z, torch.Tensor):
            raise self._refusal(out)
        self.read = read
        return z

    @property
    def adapted(self) -> bool:
        """Whether the last output was not itself the logits tensor."""
        return bool(self.read) and self.read != "the output tensor"

    def _refusal(self, out: object) -> FrmarginError:
        cli = self.option.startswith("--")
        if self.how is None:
            model = "option '--model'" if cli else "argument 'model'"
            choose = "--output KEY|INDEX" if cli else f"{self.option}=KEY|INDEX"
            return FrmarginError(
                f"{model}: the model returned {describe_output(out)}, expected logits (B, C): {AUTOMATIC} "
                f"(choose another with {choose})"
            )
        if isinstance(out, torch.Tensor):
            return FrmarginError(
                f"{_named(self.option)}: got {self.how!r}, but the model returned {describe_output(out)}: it is "
                f"the logits already, expected no {self.option}"
            )
        return FrmarginError(
            f"{_named(self.option)}: got {self.how!r}, but the model returned {describe_output(out)} with no tensor "
            "there; expected the KEY or INDEX of its logits tensor"
        )


def logits_of(model: nn.Module, how: str | int | None = None) -> LogitsOf:
    """``model`` returning its logits tensor, for ``trace_paths``, ``DataFisher`` and ``min_l2_attack``.

    Example:
        >>> net = logits_of(nn.Sequential(nn.Linear(4, 3)).eval())
        >>> net(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    return LogitsOf(model, how, option="how")
