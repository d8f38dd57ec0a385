"""The typer application every command registers on, its ``--debug`` switch and the shared
parsing helpers of the commands' options."""

from __future__ import annotations

import os
from typing import Optional

import typer

from ..errors import FrmarginError
from ..threads import apply_threads

__all__ = ["DEBUG", "app", "parse_pair", "resolve_device", "set_threads"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fisher-Rao margins, natural-gradient paths and class shielding of classifiers.",
)
#: whether errors show their traceback (``frmargin --debug ...``)
DEBUG = {"on": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    DEBUG["on"] = debug


def set_threads(threads: Optional[int]) -> None:
    """torch's CPU threads: ``--threads``, or a default that does not oversubscribe the machine."""
    if threads is not None and threads < 1:
        raise FrmarginError(f"option '--threads': got {threads}, expected a positive number of CPU threads (e.g. 1)")
    apply_threads(threads)


def resolve_device(device: str) -> str:
    """``auto``: CUDA when there is a GPU (the rank's own under torchrun), else the CPU."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{os.environ['LOCAL_RANK']}" if "LOCAL_RANK" in os.environ else "cuda"


def parse_pair(option: str, text: Optional[str], kind: type, example: str) -> tuple | None:
    """``"A,B"`` -> (A, B) of ``kind``, or None; a bad value names the option."""
    if text is None:
        return None
    try:
        a, b = (kind(v) for v in text.split(","))
    except ValueError:
        raise FrmarginError(f"option '{option}': got {text!r}, expected {example}") from None
    return a, b
