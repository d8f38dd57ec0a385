"""The run folder's lock: one run owns a folder at a time.

The lock is a file ``.lock`` in the run folder, created with ``O_CREAT | O_EXCL`` (atomic on
local file systems) and holding the owner's pid, host and start time. It is removed when the
owner exits (normally, by an exception or by Ctrl-C). A lock left by a process that was killed
(``kill -9``) is stale: when its host is this host and its pid no longer runs, it is taken over.
A lock from another host is never taken over (its pid cannot be checked); the message says how
to remove it.

Example:
    >>> with RunLock(Path("runs/r20")):  # doctest: +SKIP
    ...     pass  # trace, write parts, update run.json
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from ..errors import FrmarginError

__all__ = ["LOCK_FILE", "RunLock", "lock_holder"]

LOCK_FILE = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, but under another user
        return True
    except OSError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process not yet reaped (e.g. a torchrun rank whose launcher was killed too) holds
    nothing, though ``kill(pid, 0)`` still finds it (Linux: its state in /proc is Z)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def lock_holder(folder: Path) -> dict | None:
    """The holder recorded in ``folder``'s lock (pid, host, started), None when unlocked."""
    try:
        holder = json.loads((Path(folder) / LOCK_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "started": None}
    return holder if isinstance(holder, dict) else {"pid": None, "host": None, "started": None}


def _is_stale(holder: dict) -> bool:
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return pid != os.getpid() and not _pid_alive(pid)


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {when}"


class RunLock:
    """Exclusive ownership of a run folder (a context manager; ``acquire``/``release`` by hand too).

    Raises:
        FrmarginError: another live process holds the folder; the message names the folder and
            the holder, and says what to do.
    """

    def __init__(self, folder: Path, option: str = "--out") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.option = option
        self.held = False

    def acquire(self) -> RunLock:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(3):  # a stale lock is removed and the creation retried
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = lock_holder(self.folder)
                if holder is None:
                    continue  # released between our attempt and the read
                if _is_stale(holder):
                    self.path.unlink(missing_ok=True)
                    continue
                raise FrmarginError(
                    f"option '{self.option}': run folder {str(self.folder)!r} is in use by another run "
                    f"({_describe(holder)}); wait for it to finish or choose another folder (if that "
                    f"process is gone, e.g. on another machine, delete {str(self.path)!r})"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(record)
            self.held = True
            return self
        raise FrmarginError(f"option '{self.option}': could not lock {str(self.folder)!r}; try again")

    def release(self) -> None:
        if self.held:
            self.held = False
            holder = lock_holder(self.folder)
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
