"""User-facing errors.

Every error a user can cause is a ``ValueError`` subclass whose message names the argument,
what was received and what was expected. The CLI prints such errors as one line.
"""

from __future__ import annotations

from collections.abc import Iterable


class FrmarginError(ValueError):
    """An error caused by input or environment, reported to the user as one line."""


class AssetError(FrmarginError):
    """A weight or data file is missing, unreadable or fails its checksum."""


def bad_argument(name: str, received: object, expected: str) -> FrmarginError:
    """Build the standard message: ``argument NAME: got RECEIVED, expected EXPECTED``.

    Example:
        >>> raise bad_argument("target", 3, "a class index different from source")
    """
    text = repr(received)
    if len(text) > 200:
        text = text[:197] + "..."
    return FrmarginError(f"argument {name!r}: got {text}, expected {expected}")


class DiskFullError(OSError, FrmarginError):
    """No space left while writing a file: an OSError (errno ENOSPC) whose text names the file and
    the fix, printed by the CLI as one line like any FrmarginError."""

    def __str__(self) -> str:
        return str(self.strerror)


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, else an empty string.

    Example:
        >>> did_you_mean("resnt20", ["resnet20", "resnet32"])
        " (did you mean 'resnet20'?)"
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
