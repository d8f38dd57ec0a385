"""Synthetic 8x8 "digit-like" images (strokes on an exact-zero background) and tiny models
trained on them in a second or two: data where the box (0, 1) binds, since most pixels sit at 0
and the strokes' cores at 1.

Everything is deterministic given the seeds; the models are float64 and in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

#: classes of the synthetic digits: a stroke pattern each
N_CLASSES = 5


def _templates() -> torch.Tensor:
    """(N_CLASSES, 8, 8) stroke templates in [0, 1]."""
    t = torch.zeros(N_CLASSES, 8, 8, dtype=torch.float64)
    t[0, 1:7, 2] = t[0, 1:7, 5] = t[0, 1, 2:6] = t[0, 6, 2:6] = 1.0  # ring
    t[1, 1:7, 4] = 1.0  # bar
    t[2, 1, 2:6] = t[2, 1:4, 5] = t[2, 4, 2:6] = t[2, 4:7, 2] = t[2, 6, 2:6] = 1.0  # "2"
    t[3, 3:5, 1:7] = 1.0  # thick horizontal
    t[4, torch.arange(1, 7), torch.arange(1, 7)] = 1.0  # diagonal
    return t


def digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (n, 1, 8, 8) float64 in [0, 1] with many exact zeros, and labels (n,)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % N_CLASSES
    base = _templates()[labels]
    shift = torch.randint(-1, 2, (n, 2), generator=gen)
    imgs = torch.stack([torch.roll(b, (int(s[0]), int(s[1])), (0, 1)) for b, s in zip(base, shift)])
    noise = torch.randn(imgs.shape, generator=gen, dtype=torch.float64)
    imgs = (imgs * (0.75 + 0.5 * torch.rand(n, 1, 1, generator=gen, dtype=torch.float64)) + 0.15 * noise) * (imgs > 0)
    # faint smudges next to the strokes, exact zeros elsewhere
    smudge = (torch.rand(imgs.shape, generator=gen, dtype=torch.float64) < 0.08) * 0.3
    imgs = (imgs + smudge * torch.rand(imgs.shape, generator=gen, dtype=torch.float64)).clamp(0.0, 1.0)
    return imgs[:, None], labels


def _train(model: nn.Module, seed: int, steps: int = 150) -> nn.Module:
    x, y = digits(400, seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def digit_mlp(seed: int = 0) -> nn.Module:
    """64 -> 32 -> N_CLASSES tanh MLP trained on ``digits``."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, N_CLASSES)).double()
    return _train(model, seed)


def digit_cnn(seed: int = 0) -> nn.Module:
    """Conv(1, 6, 3) -> ReLU -> Linear(216, N_CLASSES) trained on ``digits``."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, N_CLASSES)).double()
    return _train(model, seed)
