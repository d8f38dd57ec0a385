"""mkdocs hook: the command-line reference, generated from the typer application itself.

A page that contains ``<!-- cli-reference -->`` gets, in its place, one section per command of
``frmargin`` with its help text, usage line and a table of every argument and option (name,
type, default, help), read from the click command objects that typer builds
(``typer.main.get_command``). Nothing is retyped, so the page cannot drift from
``frmargin COMMAND --help``. Recent typer releases carry their own copy of click, so the
objects are read by their attributes, not checked against the ``click`` package's classes.

The application is located by ``CLI_APP`` alone ("module:attribute"); when the command line
moves to another module, change that one string.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

#: where the typer application lives
CLI_APP = "frmargin.cli:app"
MARKER = "<!-- cli-reference -->"
PROGRAM = "frmargin"


def load_app():
    """The typer application named by ``CLI_APP``."""
    module, _, attribute = CLI_APP.partition(":")
    return getattr(importlib.import_module(module), attribute)


def root_command(app=None) -> Any:
    """The click command (a group) typer builds from ``app`` (default: ``load_app()``)."""
    import typer.main

    return typer.main.get_command(load_app() if app is None else app)


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell (no pipes, no HTML)."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _is_argument(param: Any) -> bool:
    return param.param_type_name == "argument"


def _is_flag(param: Any) -> bool:
    return not _is_argument(param) and bool(getattr(param, "is_flag", False))


def _default(param: Any) -> str:
    secondary = getattr(param, "secondary_opts", [])
    if _is_flag(param) and secondary:
        return f"`{param.opts[0] if param.default else secondary[0]}`"
    if _is_flag(param):
        return "on" if param.default else "off"
    if param.required:
        return "required"
    default = param.default
    if default is None or default == "" or (isinstance(default, (list, tuple)) and not default):
        return "none"
    if isinstance(default, Path):
        default = str(default)
    return f"`{default}`"


def _names(param: Any) -> str:
    if _is_argument(param):
        dots = " ..." if param.nargs == -1 else ""
        return f"`{param.name.upper()}{dots}` (argument)"
    names = list(param.opts)
    secondary = getattr(param, "secondary_opts", [])
    if secondary:
        names = [f"{param.opts[0]}/{secondary[0]}"]
    return ", ".join(f"`{n}`" for n in names)


def _type(param: Any) -> str:
    if _is_flag(param):
        return "flag"
    bare = getattr(param, "bare_type", None)
    name = bare() if callable(bare) else getattr(getattr(param, "type", None), "name", "text")
    return _cell(name)


def _usage(command: Any, path: str, params: list) -> str:
    """``frmargin run [OPTIONS]``, ``frmargin report [OPTIONS] DIRS...``, ``frmargin [OPTIONS] COMMAND``."""
    pieces = [path, "[OPTIONS]"]
    for param in params:
        if _is_argument(param):
            pieces.append(param.name.upper() + ("..." if param.nargs == -1 else ""))
    if hasattr(command, "list_commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def command_markdown(command: Any, path: str) -> str:
    """Markdown for one command: heading, help, usage and its parameters' table."""
    lines = [f"## `{path}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    params = [p for p in command.params if not getattr(p, "hidden", False) and p.name != "help"]
    lines += ["```text", _usage(command, path, params), "```", ""]
    if params:
        lines += ["| name | type | default | description |", "|---|---|---|---|"]
        for param in params:
            help_text = getattr(param, "help", None) or ""
            lines.append(f"| {_names(param)} | {_type(param)} | {_default(param)} | {_cell(help_text)} |")
        lines.append("")
    return "\n".join(lines)


def walk(command: Any, path: str = PROGRAM) -> list[tuple[str, Any]]:
    """(path, command) for ``command`` and every visible subcommand, depth first, in the
    application's order (groups nested in groups included)."""
    found = [(path, command)]
    if hasattr(command, "list_commands"):
        ctx = type(command).context_class(command, info_name=path)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                found += walk(sub, f"{path} {name}")
    return found


def cli_markdown(root: Any = None) -> str:
    """The whole reference: the program's own options, then every command in order."""
    root = root_command() if root is None else root
    return "\n".join(command_markdown(command, path) for path, command in walk(root))


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())
