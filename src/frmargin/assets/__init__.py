"""The asset store: known weight and data files, where they are looked for, download, checksums.

Every file is looked up, in order, in

1. the home folder ``$FRMARGIN_HOME`` (default: the user cache folder, e.g. ``~/.cache/frmargin``),
   as ``<home>/<kind>/<file>`` with kind ``weights`` or ``data``;
2. the mirror ``$FRMARGIN_MIRROR`` when it is set: a folder (searched as ``<mirror>/<kind>/<file>``
   and ``<mirror>/<file>``, files are used in place) or an http(s) base address (same two layouts,
   downloaded into the home folder). A mirror replaces the upstream addresses: with a mirror set,
   upstream is never contacted;
3. otherwise the upstream addresses of the registry, downloaded into the home folder.

A file is used only after its checksum matches. Checks are cached in ``<home>/verified.json`` by
path, size and modification time, so a file that is already verified is not hashed again. Downloads
go to ``<file>.part`` (resumed with an HTTP range request, retried with back-off) and are renamed
into place only after their checksum matches; a partial file is never used.

Tests and advanced users can register extra assets or override checksums through the mutable
registry ``ASSETS`` (e.g. ``ASSETS["cifar10-python"] = dataclasses.replace(..., digest=...)``) or pass
an ``Asset`` instead of a name to every function here.

Modules: ``registry`` (the ``Asset`` table), ``store`` (home, mirror, verification cache, checksums,
status), ``downloads`` (``fetch`` and the HTTP download with its lock). Every public name is
importable from ``frmargin.assets``.

Example:
    >>> from frmargin import assets
    >>> path = assets.fetch("resnet20")  # doctest: +SKIP
"""

from __future__ import annotations

from .downloads import DOWNLOAD_RETRIES, DOWNLOAD_TIMEOUT_S, RETRY_BACKOFF_S, download, fetch
from .registry import ALGORITHMS, ASSETS, KINDS, Asset, AssetMissingError, get_asset
from .store import (
    CACHE_FILE,
    CHUNK_BYTES,
    ENV_HOME,
    ENV_MIRROR,
    AssetStatus,
    asset_status,
    cached_digest,
    file_digest,
    home_dir,
    local_copy,
    mirror_candidates,
    mirror_setting,
    store_path,
    verify_file,
    writable_folder,
)

__all__ = [
    "ALGORITHMS",
    "ASSETS",
    "CACHE_FILE",
    "CHUNK_BYTES",
    "DOWNLOAD_RETRIES",
    "DOWNLOAD_TIMEOUT_S",
    "ENV_HOME",
    "ENV_MIRROR",
    "KINDS",
    "RETRY_BACKOFF_S",
    "Asset",
    "AssetMissingError",
    "AssetStatus",
    "asset_status",
    "cached_digest",
    "download",
    "fetch",
    "file_digest",
    "get_asset",
    "home_dir",
    "local_copy",
    "mirror_candidates",
    "mirror_setting",
    "store_path",
    "verify_file",
    "writable_folder",
]
