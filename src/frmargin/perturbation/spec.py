"""The text of a perturbation model (``TraceOptions.perturbation``): parsed, checked and made
canonical before any model is loaded.

Families (``FAMILIES``):

- ``pixels``: every input coordinate (the default; paths are traced in x itself);
- ``dct:K``: the K lowest frequencies of the orthonormal 2-D DCT in zig-zag order, the same
  pattern on every channel (K <= H x W);
- ``color``: a gain and an offset per channel (K = 2 x channels);
- ``random:K`` or ``random:K:SEED``: K orthonormal directions drawn with SEED (default 0; a run
  draws with its ``--seed``);
- ``basis:FILE.npy``: the user's array of shape (K, *input_shape).

``K`` may be ``full``: the family's every direction. A basis file is hashed when the text is
parsed: its canonical text ``basis:FILE.npy#sha256=HEX`` (16 hex digits) enters run.json and the
fingerprint, so a changed file is another run. Checks that need the input shape (K at most the
family's dimension, the basis file's shape, finiteness and rank) are ``bases.build_basis``'s.

Importing this module imports neither torch nor numpy.

Example:
    >>> parse_perturbation("DCT:16").text
    'dct:16'
    >>> parse_perturbation("random:8").seed is None
    True
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from ..errors import bad_argument, did_you_mean

__all__ = ["DEFAULT", "FAMILIES", "HASH_DIGITS", "PerturbationSpec", "file_hash", "parse_perturbation"]

#: the family names a user writes, and what follows each
FAMILIES = {
    "pixels": "",
    "dct": ":K",
    "color": "",
    "random": ":K[:SEED]",
    "basis": ":FILE.npy",
}
DEFAULT = "pixels"
#: hex digits of a basis file's sha256 kept in the canonical text
HASH_DIGITS = 16
_HASH_MARK = "#sha256="
_EXPECTED = "pixels, dct:K, color, random:K[:SEED] or basis:FILE.npy (K a positive integer or full)"


@dataclass(frozen=True)
class PerturbationSpec:
    """A parsed perturbation model.

    Attributes:
        family: one of ``FAMILIES``.
        k: the number of directions asked for (None: ``full``, or fixed by the family or file).
        seed: the seed of ``random`` (None: the caller's, default 0).
        path: the basis file (``basis``); sha256: its hash (HASH_DIGITS hex digits).
    """

    family: str
    k: int | None = None
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None

    @property
    def text(self) -> str:
        """The canonical text (what run.json and the fingerprint record)."""
        if self.family in ("pixels", "color"):
            return self.family
        if self.family == "basis":
            return f"basis:{self.path}{_HASH_MARK}{self.sha256}"
        k = "full" if self.k is None else str(self.k)
        seed = "" if self.seed is None else f":{self.seed}"
        return f"{self.family}:{k}{seed}"

    @property
    def is_pixels(self) -> bool:
        """Paths are traced in x itself."""
        return self.family == "pixels"

    def with_seed(self, seed: int) -> PerturbationSpec:
        """A ``random`` spec drawn with ``seed`` when it names none (other families as they are)."""
        if self.family != "random" or self.seed is not None:
            return self
        return PerturbationSpec(self.family, self.k, seed)


def file_hash(path: str) -> str:
    """The first HASH_DIGITS hex digits of the sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:HASH_DIGITS]


def _count(text: str, value: object, what: str, name: str) -> int | None:
    """K (or SEED) from ``text``: a positive integer, or None for ``full`` (K only)."""
    if what == "K" and text.strip().lower() == "full":
        return None
    try:
        n = int(text)
    except ValueError:
        n = -1
    least = 1 if what == "K" else 0
    if n < least or str(n) != text.strip():
        expected = "an integer >= 1 or full" if what == "K" else "an integer >= 0"
        raise bad_argument(name, value, f"{what} in {text!r} to be {expected} ({_EXPECTED})")
    return n


def parse_perturbation(value: object, name: str = "perturbation") -> PerturbationSpec:
    """The ``PerturbationSpec`` of ``value`` (text as a user writes it, or a spec); a
    FrmarginError naming the option (``name``, as the caller spells it) for an unknown family,
    a bad K or SEED, or a basis file that cannot be read (its shape is checked against the
    input's when it is loaded).

    Example:
        >>> parse_perturbation("random:full:3").text
        'random:full:3'
    """
    if isinstance(value, PerturbationSpec):
        return value
    if not isinstance(value, str) or not value.strip():
        raise bad_argument(name, value, _EXPECTED)
    family, _, rest = value.strip().partition(":")
    family = family.lower()
    if family not in FAMILIES:
        raise bad_argument(name, value, f"{_EXPECTED}{did_you_mean(family, FAMILIES)}")
    if family in ("pixels", "color"):
        if rest:
            raise bad_argument(name, value, f"{family!r} without ':' ({_EXPECTED})")
        return PerturbationSpec(family)
    if not rest:
        raise bad_argument(name, value, f"{family}{FAMILIES[family]} ({_EXPECTED})")
    if family == "basis":
        return _basis(value, rest, name)
    parts = rest.split(":")
    if len(parts) > (2 if family == "random" else 1):
        raise bad_argument(name, value, f"{family}{FAMILIES[family]} ({_EXPECTED})")
    k = _count(parts[0], value, "K", name)
    seed = _count(parts[1], value, "SEED", name) if len(parts) == 2 else None
    return PerturbationSpec(family, k, seed)


def _basis(value: str, rest: str, name: str) -> PerturbationSpec:
    """``basis:FILE.npy`` (hashed now) or its canonical ``basis:FILE.npy#sha256=HEX``."""
    path, mark, recorded = rest.rpartition(_HASH_MARK) if _HASH_MARK in rest else (rest, "", "")
    if mark and not (len(recorded) == HASH_DIGITS and all(c in "0123456789abcdef" for c in recorded)):
        raise bad_argument(name, value, f"basis:FILE.npy{_HASH_MARK}<{HASH_DIGITS} hex digits>")
    if not path.endswith(".npy"):
        raise bad_argument(name, value, "basis:FILE.npy, a NumPy .npy file of shape (K, *input_shape)")
    if recorded:  # a recorded run: the file is checked against the hash when it is loaded
        return PerturbationSpec("basis", path=path, sha256=recorded)
    if not os.path.isfile(path):
        raise bad_argument(name, value, f"basis:FILE.npy with an existing file ({path!r} not found)")
    try:
        digest = file_hash(path)
    except OSError as err:
        raise bad_argument(name, value, f"a readable basis file ({err.strerror})") from None
    return PerturbationSpec("basis", path=path, sha256=digest)
