"""Where files are kept and looked for, and their checksums: home folder, mirror, verification cache.

The home folder is ``$FRMARGIN_HOME`` (default: the user cache folder); a mirror is
``$FRMARGIN_MIRROR`` (a folder used in place, or an http(s) base address). Files up to
``ALWAYS_HASH_BYTES`` (weights) are hashed on every verification. Checks of bigger files are cached
in ``<home>/verified.json`` by path, size, inode, and modification and status-change times: an
in-place edit changes the status-change time (ctime), which no user call can set back.

Example:
    >>> store_path("resnet20").name
    'resnet20-12fca82f.th'
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import AssetError, bad_argument
from .registry import ALGORITHMS, Asset, get_asset

__all__ = [
    "ENV_HOME",
    "ENV_MIRROR",
    "AssetStatus",
    "asset_status",
    "cached_digest",
    "file_digest",
    "home_dir",
    "local_copy",
    "mirror_candidates",
    "mirror_setting",
    "store_path",
    "verify_file",
    "writable_folder",
]

ENV_HOME = "FRMARGIN_HOME"
ENV_MIRROR = "FRMARGIN_MIRROR"
CHUNK_BYTES = 1 << 20
CACHE_FILE = "verified.json"
#: files up to this size are hashed on every verification (no cache): weights, small data
ALWAYS_HASH_BYTES = 16 << 20


def _stat_key(st: os.stat_result) -> dict:
    """What a cached digest is valid for: an in-place edit changes ``ctime_ns`` (utime cannot
    restore it), a replaced file its inode."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


# ----------------------------------------------------------------------------- locations


def home_dir() -> Path:
    """The home folder: ``$FRMARGIN_HOME`` or the user cache folder. Not created here."""
    value = os.environ.get(ENV_HOME, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("frmargin", appauthor=False))


def writable_folder(folder: Path) -> Path:
    """``folder`` (the home folder or one inside it, e.g. ``<home>/weights``), created if needed
    and checked to be writable.

    Raises:
        AssetError: a file stands where a folder of the path is expected, or the folder cannot be
            created or written; the message names the path and says to set ``FRMARGIN_HOME``.
    """
    folder = Path(folder)
    home = home_dir()
    inside = folder == home or home in folder.parents
    name = f"the frmargin home folder {str(home)!r}" if inside else f"the folder {str(folder)!r}"
    how = f"set {ENV_HOME} to a writable folder (e.g. export {ENV_HOME}=/tmp/frmargin-home)"
    for p in (folder, *folder.parents):  # the first file on the way names the problem
        if p.exists() and not p.is_dir():
            where = "is a file" if p == (home if inside else folder) else f"cannot be used: {str(p)!r} is a file"
            raise AssetError(f"{name} {where}, expected a folder; {how}, or move the file")
        if p.is_dir():
            break
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as err:
        failed = Path(err.filename) if err.filename else folder
        raise AssetError(
            f"{name} is not writable: cannot write into {str(folder if failed == probe else failed)!r} ({err.strerror or err}); {how}, "
            "or make that folder writable"
        ) from None
    return folder


def is_url(value: str) -> bool:
    """True for an http(s) address."""
    return value.startswith(("http://", "https://"))


def mirror_setting() -> str | None:
    """``$FRMARGIN_MIRROR`` (a folder or an http(s) base address), or None when unset.

    Raises:
        AssetError: the variable names a folder that does not exist.
    """
    value = os.environ.get(ENV_MIRROR, "").strip()
    if not value:
        return None
    if is_url(value):
        return value.rstrip("/")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise AssetError(
            f"environment variable {ENV_MIRROR}: got {value!r}, expected an existing folder "
            "or an http(s) base address (unset it to use the upstream addresses)"
        )
    return str(folder.resolve())


def store_path(asset: str | Asset) -> Path:
    """Where the asset lives in the home folder: ``<home>/<kind>/<file>``."""
    a = get_asset(asset)
    return home_dir() / a.kind / a.filename


def mirror_candidates(asset: str | Asset, base: str) -> list[str]:
    """Paths or addresses a mirror ``base`` is searched at, in order."""
    a = get_asset(asset)
    names = (a.filename, *a.alt_names)
    sep = "/" if is_url(base) else os.sep
    return [base + sep + a.kind + sep + n for n in names] + [base + sep + n for n in names]


def local_copy(asset: str | Asset, looked: list[str] | None = None) -> Path | None:
    """The first existing copy in the home folder or a mirror folder (not yet verified).

    Every place looked at is appended to ``looked`` (for error messages).
    """
    a = get_asset(asset)
    looked = [] if looked is None else looked
    home_file = store_path(a)
    looked.append(str(home_file))
    if home_file.is_file():
        return home_file
    base = mirror_setting()
    if base is not None and not is_url(base):
        for candidate in mirror_candidates(a, base):
            looked.append(candidate)
            if os.path.isfile(candidate):
                return Path(candidate)
    return None


# ----------------------------------------------------------------------------- verification


def _cache_path() -> Path:
    return home_dir() / CACHE_FILE


def _read_cache() -> dict[str, dict]:
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache_entry(key: str, entry: dict) -> None:
    """Record ``entry`` (size, mtime_ns, digests) for the file ``key``; best effort: a cache that
    cannot be written only costs a re-hash next time."""
    cache = _read_cache()
    cache[key] = entry
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def _hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def hash_file(path: Path, algorithm: str) -> str:
    """Hex digest of a file, always computed (no cache)."""
    return _hash_file(path, algorithm)


def cached_digest(path: str | Path, algorithm: str) -> str | None:
    """The digest recorded for ``path`` if its size and modification time are unchanged, else None."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        return None
    entry = _read_cache().get(str(p))
    if not entry or any(entry.get(k) != v for k, v in _stat_key(st).items()):
        return None
    value = entry.get(algorithm)
    return value if isinstance(value, str) else None


def file_digest(path: str | Path, algorithm: str = "sha256", *, cached: bool = True) -> str:
    """Hex digest of a file, cached by path, size, inode, mtime and ctime in the home folder
    (``cached=False``, and any file up to ``ALWAYS_HASH_BYTES``: always hashed).

    Example:
        >>> file_digest("weights.th")  # doctest: +SKIP
        '12fca82f...'
    """
    if algorithm not in ALGORITHMS:
        raise bad_argument("algorithm", algorithm, f"one of {ALGORITHMS}")
    p = Path(path).resolve()
    st = p.stat()
    if cached and st.st_size > ALWAYS_HASH_BYTES:
        hit = cached_digest(p, algorithm)
        if hit is not None:
            return hit
    value = hash_file(p, algorithm)
    entry = _read_cache().get(str(p), {})
    if any(entry.get(k) != v for k, v in _stat_key(st).items()):
        entry = _stat_key(st)
    entry[algorithm] = value
    write_cache_entry(str(p), entry)
    return value


def verify_file(path: str | Path, asset: str | Asset) -> Path:
    """Check a file against the asset's checksum (files up to ``ALWAYS_HASH_BYTES`` are hashed
    every time, bigger ones through the content-keyed cache); return its path.

    Raises:
        AssetError: the checksum does not match; the message names the file and both checksums.
    """
    a = get_asset(asset)
    p = Path(path)
    actual = file_digest(p, a.algorithm)
    if actual != a.digest:
        raise AssetError(
            f"file {str(p)!r} (asset {a.name!r}) fails its checksum: got {a.algorithm} {actual}, "
            f"expected {a.algorithm} {a.digest}. The file is corrupt or not the expected one; "
            "delete it (it is fetched again) or replace it with a good copy"
        )
    return p


# ----------------------------------------------------------------------------- status


@dataclass(frozen=True)
class AssetStatus:
    """State of one asset for ``frmargin assets``.

    Attributes:
        asset: the asset.
        state: ``"verified"`` (checksum matched), ``"present"`` (not checked), ``"corrupt"`` or ``"missing"``.
        path: the local copy, or None.
        origin: where the copy is, or where it would come from.
    """

    asset: Asset
    state: str
    path: Path | None
    origin: str


def asset_status(asset: str | Asset, *, verify: bool = True) -> AssetStatus:
    """Where ``asset`` is and whether it is verified; never downloads.

    With ``verify=False`` nothing is hashed and nothing is called verified: a present file is
    ``"present"`` (``"corrupt"`` when an earlier check of this very content failed).

    Example:
        >>> asset_status("resnet20", verify=False).state  # doctest: +SKIP
        'present'
    """
    a = get_asset(asset)
    try:
        base = mirror_setting()
    except AssetError:
        base = None
    local = local_copy(a)
    if local is not None:
        origin = "home" if local == store_path(a) else "mirror folder"
        if verify:
            state = "verified" if file_digest(local, a.algorithm) == a.digest else "corrupt"
        else:
            hit = cached_digest(local, a.algorithm)
            state = "corrupt" if hit is not None and hit != a.digest else "present"
        return AssetStatus(a, state, local, origin)
    if base is not None and is_url(base):
        origin = f"mirror {base}"
    elif base is None and a.urls:
        origin = f"upstream {a.urls[0]}"
    elif base is not None:
        origin = f"not in mirror {base}"
    else:
        origin = f"mirror only: set {ENV_MIRROR}"
    return AssetStatus(a, "missing", None, origin)
