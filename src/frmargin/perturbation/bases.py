"""The directions of a perturbation model for inputs of a given shape, checked, and the subspace
``x = x0 + B(x0) u`` they span around start points (``Subspace``).

Input shapes: (channels, H, W) images, (H, W) one channel, or (W,) vectors (one channel, one
row). ``dct`` patterns are products of orthonormal 1-D DCT-II functions, ordered by zig-zag
(JPEG's order over the anti-diagonals), the same pattern on every channel and scaled by
1 / sqrt(channels): orthonormal. ``random`` directions are the orthonormalized (QR) columns of
a Gaussian matrix drawn with the seed. ``color`` directions depend on x0: the gain of channel c
is x0 on channel c (zero elsewhere), its offset the indicator of channel c; u is then the
(gain, offset) of each channel. A ``basis`` file is used as is (not orthonormalized).

Shapes: n start points, m of them in a call (``rows``), K directions, *S the input shape,
D = prod(S).

Example:
    >>> B = family_basis(parse_perturbation("dct:3"), (1, 4, 4), torch.float64)
    >>> torch.allclose(B.reshape(3, -1) @ B.reshape(3, -1).T, torch.eye(3, dtype=torch.float64))
    True
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import torch

from ..errors import FrmarginError, bad_argument
from ..options import spell
from .spec import HASH_DIGITS, PerturbationSpec, file_hash, parse_perturbation

__all__ = ["Subspace", "build_subspace", "dct_patterns", "family_basis", "family_dimension", "zigzag"]


def _layout(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, H, W) of an input shape."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if len(shape) == 1:
        return 1, 1, shape[0]
    raise bad_argument(spell("perturbation"), f"inputs of shape {shape}", "(channels, H, W), (H, W) or (W,) inputs")


def family_dimension(spec: PerturbationSpec, shape: tuple[int, ...]) -> int:
    """The most directions the family has for inputs of ``shape`` (a basis file: its K)."""
    channels, H, W = _layout(shape)
    return {"pixels": math.prod(shape), "dct": H * W, "color": 2 * channels, "random": math.prod(shape)}.get(
        spec.family, 0
    )


def zigzag(H: int, W: int) -> list[tuple[int, int]]:
    """The frequency pairs (row, column) of an H x W DCT in JPEG's zig-zag order.

    Example:
        >>> zigzag(3, 3)[:6]
        [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2)]
    """
    pairs = [(i, j) for i in range(H) for j in range(W)]
    return sorted(pairs, key=lambda ij: (ij[0] + ij[1], ij[0] if (ij[0] + ij[1]) % 2 else -ij[0]))


def _dct_1d(N: int) -> torch.Tensor:
    """(N, N) float64 orthonormal DCT-II: row k is the k-th basis function."""
    n = torch.arange(N, dtype=torch.float64)
    k = n[:, None]
    out = torch.cos(math.pi * (2 * n[None] + 1) * k / (2 * N)) * math.sqrt(2.0 / N)
    out[0] /= math.sqrt(2.0)
    return out


def dct_patterns(K: int, H: int, W: int) -> torch.Tensor:
    """(K, H, W) float64: the K lowest orthonormal 2-D DCT patterns in zig-zag order."""
    rows, cols = _dct_1d(H), _dct_1d(W)
    return torch.stack([rows[i][:, None] * cols[j][None, :] for i, j in zigzag(H, W)[:K]])


@functools.lru_cache(maxsize=8)
def _shared(family: str, k: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(K, *S) float64 directions of ``dct`` or ``random`` (cached: a full random basis is a QR of
    a D x D matrix)."""
    channels, H, W = _layout(shape)
    if family == "dct":
        pattern = dct_patterns(k, H, W) / math.sqrt(channels)
        return pattern[:, None].expand(k, channels, H, W).reshape(k, *shape).contiguous()
    D = math.prod(shape)
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn(D, k, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r))[None, :]  # the QR's sign convention fixed: Haar-distributed
    return q.T.reshape(k, *shape).contiguous()


def _load_file(spec: PerturbationSpec, shape: tuple[int, ...]) -> torch.Tensor:
    """(K, *S) float64 directions of a basis file, checked: its hash, shape, finiteness and rank."""
    import numpy as np

    name, path = spell("perturbation"), str(spec.path)
    try:
        now = file_hash(path)
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise bad_argument(name, spec.text, f"a readable .npy basis file ({err})") from None
    if now != spec.sha256:
        raise bad_argument(name, spec.text, f"the basis file recorded (its sha256 is now {now})")
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape or array.shape[0] < 1:
        raise bad_argument(name, f"basis of shape {array.shape}", f"(K, {', '.join(map(str, shape))}), K >= 1")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise bad_argument(name, f"basis {path!r} of dtype {array.dtype}", "finite numbers")
    basis = torch.as_tensor(np.asarray(array, dtype=np.float64))
    K, D = basis.shape[0], math.prod(shape)
    if K > D:
        raise bad_argument(name, f"basis of {K} directions", f"at most the input dimension {D}")
    rank = int(torch.linalg.matrix_rank(basis.reshape(K, D)))
    if rank < K:
        raise bad_argument(name, f"basis {path!r} of rank {rank} for K = {K}", "linearly independent directions")
    return basis


def family_basis(spec: PerturbationSpec, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """(K, *S) directions shared by every start point (``dct``, ``random``, ``basis``), checked
    against the input shape: FrmarginError naming the option for K larger than the family's
    dimension or a bad basis file."""
    spec = parse_perturbation(spec, spell("perturbation"))
    if spec.family == "basis":
        return _load_file(spec, shape).to(dtype)
    if spec.family not in ("dct", "random"):
        raise bad_argument(spell("perturbation"), spec.text, "dct, random or basis (directions shared by all inputs)")
    limit = family_dimension(spec, shape)
    k = limit if spec.k is None else spec.k
    if k > limit:
        what = "H x W frequencies" if spec.family == "dct" else "input dimensions"
        raise bad_argument(
            spell("perturbation"), spec.text, f"K <= {limit} ({what} of inputs of shape {tuple(shape)}), or full"
        )
    return _shared(spec.family, k, 0 if spec.seed is None else spec.seed, tuple(shape)).to(dtype)


def _color(x0: torch.Tensor) -> torch.Tensor:
    """(n, 2 channels, *S): each channel's gain (x0 on the channel) then its offset (indicator)."""
    n, shape = x0.shape[0], tuple(x0.shape[1:])
    channels, H, W = _layout(shape)
    x = x0.reshape(n, channels, H * W)
    eye = torch.eye(channels, dtype=x0.dtype, device=x0.device)
    gain = eye[None, :, :, None] * x[:, None]  # (n, channels, channels, HW)
    offset = eye[None, :, :, None].expand(n, channels, channels, H * W)
    return torch.cat([gain, offset], 1).reshape(n, 2 * channels, *shape)


@dataclass(frozen=True)
class Subspace:
    """x = x0 + B(x0) u around n start points.

    Attributes:
        spec: the perturbation model; x0: (n, *S) start points.
        basis: (K, *S) shared directions, or (n, K, *S) per start point (``color``).
    """

    spec: PerturbationSpec
    x0: torch.Tensor
    basis: torch.Tensor

    @property
    def k(self) -> int:
        """K, the dimension of u."""
        return int(self.basis.shape[-1 - (self.x0.ndim - 1)])

    @property
    def shared(self) -> bool:
        """The directions are the same for every start point."""
        return self.basis.ndim == self.x0.ndim

    def directions(self, rows: torch.Tensor) -> torch.Tensor:
        """(m, K, D) flattened directions of the start points ``rows`` (m,) (a view when shared)."""
        m, D = rows.numel(), self.x0[0].numel()
        if self.shared:
            return self.basis.reshape(1, self.k, D).expand(m, self.k, D)
        return self.basis[rows].reshape(m, self.k, D)

    def displacement(self, rows: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """B(x0) u (m, *S) of the start points ``rows`` (m,) at u (m, K)."""
        S = self.x0.shape[1:]
        if self.shared:
            return (u @ self.basis.reshape(self.k, -1)).reshape(-1, *S)
        return torch.bmm(u[:, None, :], self.directions(rows))[:, 0].reshape(-1, *S)

    def embed(self, rows: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """x = x0 + B(x0) u (m, *S) of the start points ``rows`` (m,) at u (m, K)."""
        return self.x0[rows] + self.displacement(rows, u)

    def take(self, rows: torch.Tensor) -> Subspace:
        """The subspace around the start points ``rows`` (m,) only."""
        return Subspace(self.spec, self.x0[rows], self.basis if self.shared else self.basis[rows])


def build_subspace(spec: PerturbationSpec | str, x0: torch.Tensor, seed: int = 0) -> Subspace:
    """The subspace of ``spec`` around the start points x0 (n, *S), in x0's dtype and device
    (``random`` without a seed is drawn with ``seed``); checked before any tracing.

    Example:
        >>> s = build_subspace("color", torch.rand(2, 3, 4, 4))
        >>> s.k, s.embed(torch.tensor([0]), torch.zeros(1, 6)).shape
        (6, torch.Size([1, 3, 4, 4]))
    """
    parsed = parse_perturbation(spec, spell("perturbation")).with_seed(seed)
    shape = tuple(x0.shape[1:])
    if parsed.is_pixels:
        raise FrmarginError("pixels is no subspace: trace x itself (trace_paths does)")
    if parsed.family == "color":
        return Subspace(parsed, x0, _color(x0))
    basis = family_basis(parsed, shape, x0.dtype).to(x0.device)
    return Subspace(parsed, x0, basis)


def describe(spec: PerturbationSpec | str, shape: tuple[int, ...], seed: int = 0) -> dict[str, object]:
    """What run.json records of a perturbation model for inputs of ``shape``: its canonical
    text, family, K, the seed of ``random`` and the sha256 (first 16 hex digits) of the
    directions: of the float64 array for dct and random, of the file for basis; none for color
    (its directions are x0's). The directions are built, so K is checked against the shape.

    Example:
        >>> describe("dct:full", (3, 32, 32))["k"]
        1024
    """
    parsed = parse_perturbation(spec, spell("perturbation")).with_seed(seed)
    if parsed.family == "color":  # directions of x0 itself: no basis to hash
        k = family_dimension(parsed, shape)
        return {"model": parsed.text, "family": "color", "k": k, "seed": None, "basis_sha256": None}
    basis = family_basis(parsed, shape, torch.float64)  # checked against the input shape here
    digest = parsed.sha256 or hashlib.sha256(basis.contiguous().numpy().tobytes()).hexdigest()[:HASH_DIGITS]
    return {
        "model": parsed.text,
        "family": parsed.family,
        "k": int(basis.shape[0]),
        "seed": parsed.seed,
        "basis_sha256": digest,
    }
