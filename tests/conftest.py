"""Small models and the one comparison helper shared by the tests of the core modules.

Threads are pinned to one at import (the test machine is shared) and the global seed is set;
every factory takes its own seed, so a case is reproducible on its own.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

torch.set_num_threads(1)
torch.manual_seed(0)

DTYPES = (torch.float32, torch.float64)
DTYPE_IDS = {torch.float32: "f32", torch.float64: "f64"}


# --------------------------------------------------------------------------- comparison


def assert_close(actual, expected, rtol: float, atol: float, what: str, worst: int = 5) -> None:
    """Assert |actual - expected| <= atol + rtol |expected| entrywise, comparing in float64.

    Always asserts (shape, finiteness pattern and values); on failure the message names
    ``what`` and lists the ``worst`` entries by err / tolerance.
    """
    a = torch.as_tensor(actual).detach().to("cpu", torch.float64)
    e = torch.as_tensor(expected).detach().to("cpu", torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    if a.numel() == 0:
        return
    fa, fe = torch.isfinite(a), torch.isfinite(e)
    mismatch = (fa != fe) | (~fa & ~fe & ~((a == e) | (a.isnan() & e.isnan())))
    assert not mismatch.any(), (
        f"{what}: non-finite pattern differs at {mismatch.nonzero()[:worst].tolist()}: "
        f"actual {a[mismatch][:worst].tolist()}, expected {e[mismatch][:worst].tolist()}"
    )
    err = torch.where(fa, (a - e).abs(), torch.zeros_like(a))
    tol = atol + rtol * torch.where(fe, e.abs(), torch.zeros_like(e))
    ratio = err / tol.clamp_min(1e-300)
    bad = ratio > 1
    if bad.any():
        flat = ratio.reshape(-1)
        order = flat.argsort(descending=True)[:worst]
        lines = []
        for i in order.tolist():
            idx = tuple(int(v) for v in torch.unravel_index(torch.tensor(i), a.shape)) if a.ndim else ()
            lines.append(
                f"  at {idx}: actual {a.reshape(-1)[i].item():.10g}, expected {e.reshape(-1)[i].item():.10g}, "
                f"|err| {err.reshape(-1)[i].item():.3g} = {flat[i].item():.3g} x tol"
            )
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {a.numel()} entries outside rtol={rtol:g}, atol={atol:g}; worst:\n"
            + "\n".join(lines)
        )


# --------------------------------------------------------------------------- models


def _finish(model: nn.Module, seed: int, dtype: torch.dtype, scale: float) -> nn.Module:
    model = model.to(dtype)
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return model.eval()


def make_mlp(
    D: int = 16,
    C: int = 5,
    width: int = 32,
    depth: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    scale: float = 1.0,
) -> nn.Module:
    """Tanh MLP (B, D) -> (B, C) logits in eval mode; ``scale`` multiplies the last layer
    (larger scale, more confident predictions)."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    d = D
    for _ in range(depth):
        lin = nn.Linear(d, width)
        layers += [lin, nn.Tanh()]
        d = width
    layers.append(nn.Linear(d, C))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 1.5 / math.sqrt(m.in_features))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)
    return _finish(model, seed, dtype, scale)


def make_cnn(
    in_ch: int = 1,
    size: int = 8,
    C: int = 5,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    batchnorm: bool = False,
    scale: float = 1.0,
) -> nn.Module:
    """Tiny CNN (B, in_ch, size, size) -> (B, C); with ``batchnorm`` its BN layers hold random
    running statistics and are in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        feats: list[nn.Module] = [nn.Conv2d(in_ch, 4, 3, padding=1)]
        if batchnorm:
            feats.append(nn.BatchNorm2d(4))
        feats += [nn.Tanh(), nn.Conv2d(4, 6, 3, stride=2, padding=1)]
        if batchnorm:
            feats.append(nn.BatchNorm2d(6))
        feats += [nn.Tanh(), nn.Flatten(), nn.Linear(6 * ((size + 1) // 2) ** 2, C)]
        model = nn.Sequential(*feats)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(2.0)
    return _finish(model, seed, dtype, scale)


def make_linear(
    D: int = 8, C: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 1.0
) -> nn.Module:
    """Multi-class linear model z = W x + b."""
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(D, C)
    with torch.no_grad():
        model.weight.copy_(torch.randn(C, D, generator=gen) / math.sqrt(D))
        model.bias.copy_(0.3 * torch.randn(C, generator=gen))
    model = nn.Sequential(model)
    return _finish(model, seed, dtype, scale)


class Logistic(nn.Module):
    """Binary logistic regression with logits (0, w.x + b)."""

    def __init__(self, D: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(D, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(1, D, generator=gen) / math.sqrt(D))
            self.lin.bias.copy_(0.2 * torch.randn(1, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lin(x)
        return torch.cat([torch.zeros_like(s), s], -1)


def make_logistic(D: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> nn.Module:
    return _finish(Logistic(D, seed), seed, dtype, scale)


def make_inputs(
    shape: tuple[int, ...], n: int, seed: int = 0, dtype: torch.dtype = torch.float64, scale: float = 1.0
) -> torch.Tensor:
    """n standard-normal inputs of ``shape`` (times ``scale``)."""
    gen = torch.Generator().manual_seed(seed + 1000)
    return (scale * torch.randn((n, *shape), generator=gen, dtype=torch.float64)).to(dtype)


def predictions(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities in float64, argmax) at x."""
    with torch.no_grad():
        z = model(x)
    return torch.softmax(z.to(torch.float64), -1), z.argmax(-1)


def all_pairs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (input, target != argmax) pair: repeated x, source, target."""
    p, y = predictions(model, x)
    C = p.shape[-1]
    rows, tgts = [], []
    for i in range(x.shape[0]):
        for k in range(C):
            if k != int(y[i]):
                rows.append(i)
                tgts.append(k)
    rows_t = torch.tensor(rows)
    return x[rows_t], y[rows_t], torch.tensor(tgts)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def home(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """An empty asset home folder, no mirror, no proxies, no download back-off."""
    from frmargin import assets

    h = tmp_path / "home"
    monkeypatch.setenv("FRMARGIN_HOME", str(h))
    monkeypatch.delenv("FRMARGIN_MIRROR", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(assets.downloads, "RETRY_BACKOFF_S", 0.0)
    return h


@pytest.fixture
def mirror_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The offline asset mirror and an empty home for one test (skips without the mirror); the
    environment for its subprocesses, one thread each."""
    from mirror import MIRROR  # here, so that benchmarks can load this module as a helper

    if MIRROR is None:
        pytest.skip("offline asset mirror not found")
    monkeypatch.setenv("FRMARGIN_MIRROR", str(MIRROR))
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
