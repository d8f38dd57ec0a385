"""The command line's tracing options, generated from the fields of ``TraceOptions``.

``with_trace_options`` adds one ``--option`` per field of ``frmargin.options.TraceOptions`` to a
typer command (name, default, help and value type from the field) and hands the command one
checked ``TraceOptions`` as ``trace``; errors name the options as the command line spells them.
A field added to ``TraceOptions`` is an option of ``frmargin run`` and ``frmargin study`` with no
other change.

Example:
    >>> @app.command()  # doctest: +SKIP
    ... @with_trace_options()
    ... def run(images: int = typer.Option(800), *, trace: TraceOptions) -> None: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any, Optional

import typer

from ..options import TraceOptions, cli_spelling, spelled

__all__ = ["TRACE_PANELS", "cli_type", "trace_option_fields", "with_trace_options"]

#: the --help panel of each group of fields
TRACE_PANELS = {"tracing": "Tracing", "accuracy": "Accuracy (converged mode)", "execution": "Execution"}

#: the value type typer parses for each field annotation (a box is given as the text LO,HI)
_TYPES: dict[str, Any] = {
    "str": str,
    "float": float,
    "int": int,
    "bool": bool,
    "float | None": Optional[float],
    "int | None": Optional[int],
    "str | None": Optional[str],
    "tuple[float, float] | None": Optional[str],
}


def cli_type(f: Field[Any]) -> Any:
    """The type typer parses for field ``f`` of ``TraceOptions``."""
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        return _TYPES[annotation]
    except KeyError:
        raise TypeError(f"TraceOptions.{f.name}: no command-line type for annotation {annotation!r}") from None


def trace_option_fields(exclude: tuple[str, ...] = ()) -> list[Field[Any]]:
    """The fields of ``TraceOptions`` that become options (all but ``exclude``)."""
    return [f for f in fields(TraceOptions) if f.name not in exclude]


def _parameter(f: Field[Any]) -> inspect.Parameter:
    default = None if f.default is MISSING else f.default
    option = typer.Option(
        default,
        cli_spelling(f.name),
        help=f.metadata["help"],
        metavar=f.metadata.get("metavar"),
        rich_help_panel=TRACE_PANELS[f.metadata["group"]],
        show_default=default is not None,
    )
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=cli_type(f))


def with_trace_options(exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: the command gets every ``TraceOptions`` field but ``exclude`` as an option and is
    called with ``trace=TraceOptions(...)`` built from them (checked with command-line spelling)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        params = [p for name, p in own.parameters.items() if name != "trace"]
        generated = [_parameter(f) for f in trace_option_fields(exclude)]
        names = {f.name for f in trace_option_fields(exclude)}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {name: kwargs.pop(name) for name in names}
            with spelled(cli_spelling):
                trace = TraceOptions(**chosen)
            return command(trace=trace, **kwargs)

        signature = own.replace(parameters=[*params, *generated])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        wrapper.__annotations__["return"] = own.return_annotation
        del wrapper.__wrapped__  # typer reads the signature set here, not the command's
        return wrapper

    return decorate
