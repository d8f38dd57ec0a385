"""The command line: thin typer commands over ``runs``, ``report``, ``demo`` and the asset store.

``app`` (``app.py``) holds the typer application; each command module registers its commands on
it: ``run`` (``frmargin run``, ``frmargin study``), ``report`` (``frmargin report``, ``frmargin
demo``), ``assets`` (``frmargin assets``, ``frmargin accuracy``). ``options`` generates the
tracing options of ``run`` and ``study`` from ``frmargin.options.TraceOptions``. Commands import
what they need inside their bodies, so ``frmargin --help`` imports no torch.

Errors a user can cause print as one line on stderr with exit status 2 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import sys

import typer

from ..errors import FrmarginError
from . import assets, report, run
from .app import DEBUG, app

__all__ = ["DEBUG", "app", "assets", "main", "report", "run"]


def _one_line(err: BaseException) -> str:
    """The message of a user error on one line; an OSError names its file and the fix."""
    if isinstance(err, OSError) and not isinstance(err, FrmarginError):  # DiskFullError has its text
        import errno

        where = f" {err.filename!r}" if err.filename else ""
        what = err.strerror or str(err)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = "free space, then rerun the same command with --resume"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = "choose a writable place (--out, or FRMARGIN_HOME for the asset store)"
        elif err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            advice = "a file stands where a folder is expected (check --out and FRMARGIN_HOME)"
        else:
            advice = "check the path and its permissions"
        return f"cannot use{where}: {what}; {advice}"
    return " ".join(str(err).split())


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr."""
    import warnings

    warnings.filterwarnings("ignore", module="matplotlib")  # font and layout chatter of the figures
    try:
        app()
    except (FrmarginError, OSError) as err:
        if DEBUG["on"]:
            raise
        typer.echo(f"frmargin: error: {_one_line(err)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("frmargin: interrupted (finished results are kept; rerun with --resume)", err=True)
        sys.exit(130)
    except Exception as err:  # anything unexpected: still one line unless --debug
        if DEBUG["on"]:
            raise
        typer.echo(f"frmargin: error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
