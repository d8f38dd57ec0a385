"""Getting a verified copy: ``fetch`` (local copy, else download) and the HTTP download itself.

Downloads go to ``<file>.part`` under an advisory lock (resumed with an HTTP range request, retried
with back-off) and are renamed into place only after their checksum matches; a partial file is never
used. With a mirror set, upstream addresses are never contacted.

(The module is ``downloads`` rather than ``download`` so that it is not shadowed by the function
``frmargin.assets.download``.)

Example:
    >>> fetch("resnet20")  # doctest: +SKIP
    PosixPath('/home/me/.cache/frmargin/weights/resnet20-12fca82f.th')
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path

from ..errors import AssetError
from . import store
from .registry import Asset, AssetMissingError, get_asset
from .store import ENV_MIRROR, is_url, local_copy, mirror_candidates, mirror_setting, store_path, verify_file

__all__ = ["ENV_DEADLINE", "download", "download_deadline", "fetch"]

CHUNK_BYTES = 1 << 16  # small read blocks: a slow server cannot hold one read for long
DOWNLOAD_RETRIES = 3
DOWNLOAD_TIMEOUT_S = 30.0  # stall timeout: no byte for this long ends an attempt
DOWNLOAD_DEADLINE_S = 1800.0  # overall deadline of one download, all attempts together
#: environment variable overriding ``DOWNLOAD_DEADLINE_S`` (seconds > 0)
ENV_DEADLINE = "FRMARGIN_DOWNLOAD_DEADLINE"
#: size cap of a download whose asset records no size (the largest asset is ~170 MB)
DOWNLOAD_CAP_BYTES = 1 << 30
RETRY_BACKOFF_S = 0.5
_NOT_FOUND_CODES = (401, 403, 404, 410)


class _Unreachable(Exception):
    """A source could not deliver the file (network error, HTTP 404, ...)."""


class _TooBig(Exception):
    """A source delivers more bytes than the asset can have."""


class _TooSlow(Exception):
    """The overall deadline of a download passed."""


def download_deadline() -> float:
    """Seconds one download may take, all attempts together: ``$FRMARGIN_DOWNLOAD_DEADLINE``,
    else ``DOWNLOAD_DEADLINE_S``.

    Raises:
        AssetError: the variable is not a number of seconds > 0.
    """
    text = os.environ.get(ENV_DEADLINE, "").strip()
    if not text:
        return DOWNLOAD_DEADLINE_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise AssetError(f"environment variable {ENV_DEADLINE}: got {text!r}, expected a number of seconds > 0")
    return value


@contextlib.contextmanager
def _file_lock(target: Path) -> Iterator[None]:
    """An advisory lock next to ``target`` so concurrent processes do not write one file twice."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = target.with_name(target.name + ".lock")
    with open(lock, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _size_cap(a: Asset) -> int:
    return a.size if a.size is not None else DOWNLOAD_CAP_BYTES


def _cap_text(a: Asset) -> str:
    """How the refusal names the cap: the asset's size, else the general cap."""
    return f"the expected {a.size} bytes" if a.size is not None else f"the cap of {DOWNLOAD_CAP_BYTES} bytes"


def _download_once(
    url: str,
    part: Path,
    label: str,
    progress: bool,
    timeout: float,
    cap: int = DOWNLOAD_CAP_BYTES,
    deadline: float = float("inf"),
    cap_text: str = "the cap",
) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size when the server allows;
    at most ``cap`` bytes in all, until the ``time.monotonic()`` ``deadline``."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    if offset > cap:  # a stale part bigger than the file can be
        raise _TooBig(f"the partial file holds {offset} bytes, more than {cap_text}")
    request = urllib.request.Request(url, headers={"User-Agent": "frmargin"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    left = deadline - time.monotonic()
    if left <= 0:
        raise _TooSlow(f"{offset} bytes received")
    try:  # no read waits past the deadline by more than what was left of it when connecting
        response = urllib.request.urlopen(request, timeout=min(timeout, left))
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the part file is already complete: the checksum decides
            return
        raise
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the range: start again
        if offset and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise _Unreachable(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if expected is not None and offset + expected > cap:
            raise _TooBig(f"the server announces {offset + expected} bytes, more than {cap_text}")
        received = 0
        with (
            open(part, "ab" if offset else "wb") as out,
            tqdm(
                total=None if expected is None else offset + expected,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            read = getattr(response, "read1", response.read)
            while chunk := read(CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
                if offset + received > cap:
                    raise _TooBig(f"more than {cap_text} arrived")
                if time.monotonic() > deadline:
                    raise _TooSlow(f"{offset + received} bytes received")
    if expected is not None and received < expected:
        raise _Unreachable(f"connection closed after {received} of {expected} bytes")


def _attempts(url: str, part: Path, a: Asset, progress: bool, retries: int, timeout: float, seconds: float) -> None:
    """Up to ``retries`` attempts with back-off, all within ``seconds``; a 'not found' answer
    ends them at once.

    Raises:
        AssetError: more bytes than the asset has arrived (nothing is kept), or the deadline
            passed (the partial file is kept for the next call to resume).
        AssetMissingError: the last attempt failed.
    """
    last: Exception | None = None
    deadline = time.monotonic() + seconds

    def too_slow(done: str) -> AssetError:
        return AssetError(
            f"download of {a.filename!r} from {url} did not finish within the deadline of {seconds:g} s "
            f"({done}); the partial file {str(part)!r} is kept and the next try resumes it. The server is "
            f"too slow: try again later, another mirror ({ENV_MIRROR}), or a longer deadline ({ENV_DEADLINE}=SECONDS)"
        )

    for attempt in range(max(1, retries)):
        try:
            _download_once(url, part, a.filename, progress, timeout, _size_cap(a), deadline, _cap_text(a))
            return
        except _TooBig as e:
            part.unlink(missing_ok=True)
            raise AssetError(f"download of {a.filename!r} from {url} refused: {e}; nothing was kept") from None
        except _TooSlow as e:
            raise too_slow(str(e)) from None
        except urllib.error.HTTPError as e:
            last = e
            if e.code in _NOT_FOUND_CODES:
                break
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                part.unlink(missing_ok=True)
                raise AssetError(
                    f"cannot write {str(part)!r} (download of {a.filename!r}): no space left on the device; "
                    "the partial file was removed; free space or set FRMARGIN_HOME to a roomier folder"
                ) from None
            last = e
        except (HTTPException, _Unreachable) as e:
            last = e
        if time.monotonic() >= deadline:  # e.g. a read that timed out at the deadline
            size = part.stat().st_size if part.exists() else 0
            raise too_slow(f"{size} bytes received; last: {type(last).__name__}: {last}")
        if attempt + 1 < retries:
            time.sleep(RETRY_BACKOFF_S * 2**attempt)
    raise AssetMissingError(f"{url}: {type(last).__name__}: {last}")


def download(
    url: str,
    dest: str | Path,
    asset: str | Asset,
    *,
    progress: bool = True,
    retries: int = DOWNLOAD_RETRIES,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    deadline: float | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming and retrying, and verify it.

    The data go to ``dest.part``; after ``retries`` failed attempts the part file is kept so a later
    call resumes it. ``dest`` appears only once the checksum matches. ``timeout`` ends an attempt
    that receives nothing for that long; ``deadline`` (seconds, default ``download_deadline()``)
    ends the whole download. More bytes than the asset's recorded ``size`` (else
    ``DOWNLOAD_CAP_BYTES``) are refused at once.

    Raises:
        AssetError: the downloaded file fails its checksum (the part file is removed), is larger
            than expected, the deadline passed, or ``dest``'s folder is a file or not writable.
        AssetMissingError: the address could not deliver the file.
    """
    a = get_asset(asset)
    dest = Path(dest)
    seconds = download_deadline() if deadline is None else float(deadline)
    if not seconds > 0:
        raise AssetError(f"argument 'deadline': got {deadline!r}, expected a number of seconds > 0")
    store.writable_folder(dest.parent)
    part = dest.with_name(dest.name + ".part")
    try:
        with _file_lock(dest):
            if dest.exists():  # another process finished it meanwhile
                return verify_file(dest, a)
            fresh_retry_done = False
            while True:
                resumed = part.exists() and part.stat().st_size > 0
                _attempts(url, part, a, progress, retries, timeout, seconds)
                actual = store.hash_file(part, a.algorithm)
                if actual == a.digest:
                    break
                part.unlink()
                if resumed and not fresh_retry_done:
                    fresh_retry_done = True  # the stale start of a resumed file may be the culprit
                    continue
                raise AssetError(
                    f"download of {a.filename!r} (asset {a.name!r}) from {url} fails its checksum: got "
                    f"{a.algorithm} {actual}, expected {a.algorithm} {a.digest}; the partial file "
                    f"{str(part)!r} was removed and nothing was used"
                )
            os.replace(part, dest)
            store.write_cache_entry(str(dest.resolve()), {**store._stat_key(dest.stat()), a.algorithm: a.digest})
    finally:
        with contextlib.suppress(OSError):
            dest.with_name(dest.name + ".lock").unlink()
    return dest


def fetch(asset: str | Asset, *, download_missing: bool = True, progress: bool = True) -> Path:
    """Path of a verified local copy of ``asset``, downloading it into the home folder if needed.

    Args:
        asset: a registry name (see ``ASSETS``) or an ``Asset``.
        download_missing: when False, only local copies (home folder, mirror folder) are used.
        progress: show a progress bar on stderr while downloading.

    Raises:
        AssetError: a copy exists but fails its checksum.
        AssetMissingError: no copy could be found or downloaded; the message lists where it was
            looked for and how to supply it.

    Example:
        >>> fetch("resnet20")  # doctest: +SKIP
        PosixPath('/home/me/.cache/frmargin/weights/resnet20-12fca82f.th')
    """
    a = get_asset(asset)
    looked: list[str] = []
    local = local_copy(a, looked)
    if local is not None:
        return verify_file(local, a)
    base = mirror_setting()
    if base is None:
        urls = list(a.urls)
    elif is_url(base):
        urls = mirror_candidates(a, base)
    else:
        urls = []
    failures: list[str] = []
    if download_missing:
        for url in urls:
            try:
                return download(url, store_path(a), a, progress=progress)
            except AssetMissingError as e:
                failures.append(str(e))
    raise AssetMissingError(_missing_message(a, looked, urls if download_missing else [], failures, base))


def _missing_message(a: Asset, looked: list[str], urls: list[str], failures: list[str], base: str | None) -> str:
    parts = [f"asset {a.name!r}: file {a.filename!r} ({a.algorithm} {a.digest}) is missing."]
    parts.append("Looked in: " + ", ".join(looked) + ".")
    if failures:
        parts.append("Downloads failed: " + "; ".join(failures) + ".")
    elif not urls and base is None and not a.urls:
        parts.append("It has no upstream address (it is distributed through a mirror only).")
    elif not urls and base is not None and not is_url(base):
        parts.append(f"{ENV_MIRROR} is a folder, so upstream was not contacted.")
    how = (
        f"To supply it, set {ENV_MIRROR} to a folder holding {a.kind}/{a.filename} "
        "(or an http(s) base address serving it)"
    )
    how += f", or put the file at {str(store_path(a))!r}"
    if a.urls:
        how += f" (upstream: {a.urls[0]}" + (f"; unset {ENV_MIRROR} to download from there)" if base else ")")
    parts.append(how + ".")
    return " ".join(parts)
