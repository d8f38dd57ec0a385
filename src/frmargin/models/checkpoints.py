"""Checkpoints as training scripts write them: find the state dict, map its tensors, strip prefixes.

``load_weights(net, path)`` loads a weight file strictly into ``net`` and says what it found:

- the file is read with ``torch.load(path, map_location="cpu", weights_only=True)``, so tensors
  saved on a GPU load on a machine without one, or with ``safetensors.torch.load_file`` for a
  safetensors file (by suffix or content; the ``models`` extra installs safetensors);
- the state dict (parameter name -> tensor) is found where it is: at the top level, nested under
  a key (``state_dict``, ``model``, ``model_state_dict``, ``net``, ``ema``, ...) or wrapped in a
  list or tuple; ``key`` (``--weights-key``, a path such as ``state_dict/0``) names it;
- the ``module.`` prefixes of ``DataParallel``/``DistributedDataParallel`` and the ``_orig_mod.``
  prefixes of ``torch.compile`` are stripped when every name carries them and the model's own
  names do not.

When the file holds several state dicts that fit the model, or none that does, one error lists
the state dicts found and the missing, unexpected and reshaped parameter names (the first few and
the counts), before anything else runs.

Example:
    >>> facts = load_weights(net, "checkpoint.pth")  # doctest: +SKIP
    >>> facts["weights_layout"]["key"], facts["weights_layout"]["saved_on"]  # doctest: +SKIP
    ('state_dict/0', ['cuda:0'])
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.types import Storage

from ..errors import FrmarginError

__all__ = ["KEY_SEPARATOR", "PREFIXES", "Layout", "file_sha256", "find_state_dict", "load_weights", "read_weights"]

#: the prefixes of wrapped modules: DataParallel/DistributedDataParallel, torch.compile
PREFIXES = ("module.", "_orig_mod.")
#: separates the levels of a key path (``state_dict/0``)
KEY_SEPARATOR = "/"
#: how deep nested containers are searched for a state dict
MAX_DEPTH = 4
#: names shown in an error (then the count)
SHOWN = 5
SAFETENSORS_INSTALL = "pip install 'frmargin[models]' (or pip install safetensors)"

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Layout:
    """Where the state dict was in a weight file, as run.json records it (``weights_layout``)."""

    format: str  # "torch.save" or "safetensors"
    key: str  # key path of the state dict in the file, "" at the top level
    prefixes_stripped: tuple[str, ...]
    tensors: int
    saved_on: tuple[str, ...]  # the storage locations the file names (torch.save files)
    map_location: str = "cpu"

    def as_dict(self) -> dict:
        """JSON-friendly entries."""
        d = asdict(self)
        return {**d, "prefixes_stripped": list(self.prefixes_stripped), "saved_on": list(self.saved_on)}


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    """A ``.safetensors`` suffix, or a safetensors header: 8-byte length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n <= path.stat().st_size - 8


def read_weights(path: Path, shown: str) -> tuple[object, str, tuple[str, ...]]:
    """(the file's content, its format, the storage locations it names), read safely on the CPU."""
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise FrmarginError(
                f"option '--weights': {shown!r} is a safetensors file; reading it needs the safetensors "
                f"package: {SAFETENSORS_INSTALL}"
            ) from None
        try:
            return load_file(str(path), device="cpu"), "safetensors", ()
        except Exception as e:
            raise FrmarginError(f"option '--weights': {shown!r} is not a readable safetensors file ({e})") from None
    seen: set[str] = set()

    def to_cpu(storage: Storage, location: str) -> Storage:
        seen.add(location)  # the storage is read into CPU memory; its saved device is only recorded
        return storage

    try:
        content = torch.load(path, map_location=to_cpu, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FrmarginError(
            f"option '--weights': {shown!r} cannot be read with weights_only=True ({first[:200]}); expected a "
            "file of tensors, e.g. torch.save(model.state_dict(), FILE), not a pickled module"
        ) from None
    return content, "torch.save", tuple(sorted(seen))


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _children(obj: object) -> list[tuple[str, object]]:
    if isinstance(obj, Mapping):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    return []


def _candidates(obj: object, where: tuple[str, ...] = ()) -> list[tuple[str, State]]:
    """Every state dict in ``obj`` with its key path (depth-first, at most ``MAX_DEPTH`` levels)."""
    if _is_state_dict(obj):
        return [(KEY_SEPARATOR.join(where), dict(obj))]  # type: ignore[call-overload]
    if len(where) >= MAX_DEPTH:
        return []
    return [c for name, child in _children(obj) for c in _candidates(child, (*where, name))]


def _follow(obj: object, key: str, shown: str) -> object:
    """The entry of ``obj`` at the key path ``key`` (a whole key first, then split at ``/``)."""
    if isinstance(obj, Mapping) and key in obj:
        return obj[key]
    for part in key.split(KEY_SEPARATOR):
        entries = dict(_children(obj))
        if part not in entries:
            listed = ", ".join(repr(k) for k in list(entries)[:10]) or "none"
            raise FrmarginError(
                f"option '--weights-key': got {key!r}, but {shown!r} has no entry {part!r} there (entries: "
                f"{listed}); expected a key path such as state_dict or state_dict/0"
            )
        obj = entries[part]
    return obj


def _strip(state: State, wanted: set[str]) -> tuple[State, tuple[str, ...]]:
    """``state`` with the wrappers' prefixes removed while every name has one, the names do not fit
    ``wanted`` yet, and removing it does not lose names that fit."""
    stripped: list[str] = []
    while set(state) != wanted:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        shorter = {k[len(prefix) :]: v for k, v in state.items()}
        if len(set(shorter) & wanted) < len(set(state) & wanted):  # the model's own names carry it
            break
        state = shorter
        stripped.append(prefix)
    return state, tuple(stripped)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f", ... (+{len(names) - SHOWN} more)" if len(names) > SHOWN else "")


def _mismatch(state: State, expected: Mapping[str, torch.Tensor]) -> str:
    """What does not fit, as text ("" when the state dict fits)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if reshaped:
        shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}" for k in reshaped]
        parts.append(f"{len(reshaped)} of another shape ({_names(shapes)})")
    return "; ".join(parts)


def _where(key: str) -> str:
    return repr(key) if key else "the top level"


def find_state_dict(content: object, net: nn.Module, shown: str, key: str | None = None) -> tuple[State, str, tuple]:
    """(the state dict that fits ``net``, its key path, the prefixes stripped) in a file's content.

    Raises:
        FrmarginError: no state dict; several that fit (``--weights-key`` chooses); none that fits
            (the missing, unexpected and reshaped names of the closest one).
    """
    expected = net.state_dict()
    root = content if key is None else _follow(content, key, shown)
    found = [
        (KEY_SEPARATOR.join(p for p in (key or "", where) if p), *_strip(state, set(expected)))
        for where, state in _candidates(root)
    ]
    if not found:
        kind = type(root).__name__
        entries = f" with entries {', '.join(repr(k) for k, _ in _children(root)[:10])}" if _children(root) else ""
        raise FrmarginError(
            f"option '--weights': {shown!r} holds no state dict ({kind}{entries} at {_where(key or '')}); expected "
            "parameter names mapped to tensors, at the top level, under a key or in a list"
        )
    fitting = [f for f in found if not _mismatch(f[1], expected)]
    if len(fitting) == 1:
        return fitting[0][1], fitting[0][0], fitting[0][2]
    listed = ", ".join(_where(f[0]) for f in found)
    if fitting:
        raise FrmarginError(
            f"option '--weights': {shown!r} holds {len(fitting)} state dicts that fit the model (at "
            f"{', '.join(_where(f[0]) for f in fitting)}), expected one: choose with --weights-key KEY"
        )
    best = max(found, key=lambda f: len(set(f[1]) & set(expected)))
    stripped = f", prefixes stripped: {' '.join(best[2])}" if best[2] else ""
    others = f"; state dicts in the file: {listed} (--weights-key KEY chooses one)" if len(found) > 1 else ""
    raise FrmarginError(
        f"option '--weights': {shown!r} does not fit the model: the state dict at {_where(best[0])}{stripped} "
        f"({len(best[1])} tensors, the model has {len(expected)}): {_mismatch(best[1], expected)}{others}; "
        "check --model and --weights"
    )


def load_weights(net: nn.Module, weights: str | Path, *, key: str | None = None, sha256: str | None = None) -> dict:
    """Load the state dict of a weight file into ``net`` (strict), after the optional checksum.

    Returns:
        the identity facts: ``weights`` (the path), ``weights_sha256`` (the file's) and
        ``weights_layout`` (``Layout.as_dict()``).

    Raises:
        FrmarginError: naming ``--weights``, ``--weights-sha256`` or ``--weights-key``.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FrmarginError(f"option '--weights': got {str(weights)!r}, expected an existing file")
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256.lower():
        raise FrmarginError(f"option '--weights-sha256': got {sha256}, but {str(weights)!r} has sha256 {digest}")
    content, fmt, saved_on = read_weights(path, str(weights))
    state, where, stripped = find_state_dict(content, net, str(weights), key)
    net.load_state_dict(state, strict=True)
    layout = Layout(format=fmt, key=where, prefixes_stripped=stripped, tensors=len(state), saved_on=saved_on)
    return {"weights": str(weights), "weights_sha256": digest, "weights_layout": layout.as_dict()}
