"""Which frmargin code made a session: the package version and, when the package is imported
from a git checkout, the commit (with ``+modified`` when its ``src`` differs from that commit).

A resumed run records each session's code; a resume with other code than the run's earlier
sessions is said on stderr (it continues: results are then mixed from two versions of the code,
which the fingerprint cannot see).

Example:
    >>> source_version().startswith(package_version())
    True
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["code_change", "package_version", "source_version"]


def package_version() -> str:
    import importlib.metadata as md

    try:
        return md.version("frmargin")
    except md.PackageNotFoundError:
        return "unknown"


@functools.cache
def source_version() -> str:
    """``"0.1.0"``, or ``"0.1.0 (git 9cce9b7)"`` / ``"... +modified"`` from a git checkout."""
    version = package_version()
    root = Path(__file__).resolve().parents[3]  # src/frmargin/runs/provenance.py -> the checkout
    if not (root / ".git").exists():
        return version
    try:

        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                                  check=True).stdout.strip()  # fmt: skip

        commit = git("rev-parse", "--short", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no", "--", "src"))
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (git {commit}{' +modified' if modified else ''})"


def code_change(sessions: list[dict], current: str) -> str | None:
    """The code of earlier sessions that differs from ``current``, or None."""
    earlier = sorted({s["frmargin"] for s in sessions if s.get("frmargin") and s["frmargin"] != current})
    return ", ".join(earlier) if earlier else None
