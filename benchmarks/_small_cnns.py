"""Small CNNs of families the zoo does not have, trained here, for the step-control benchmarks.

``small:NAME`` builds the family NAME and trains it, seeded and on one thread (so the same
weights on every run), on images 0 to 7,999 of the official CIFAR-10 test split, with half of
every batch replaced by an FGSM perturbation of L-inf 4/255 (a quick form of the mixed clean and
adversarial training of cnn-a-mix), 10 epochs. Benchmarks then use images from 9,000 on. Under
a minute per model on one core; accuracy on images 9,000 to 9,999: vgg 53%, bn 38%, res 33%
(small, weakly fitted networks, as the point is their geometry). Families:

- ``vgg``: two 3x3 convolutions with ReLU, each followed by 2x2 max-pooling, and a linear layer;
- ``bn``: two strided convolutions with eval-mode batch norm and ReLU, global average pooling;
- ``res``: a leaky-ReLU residual block between a stem and a strided convolution.
"""

from __future__ import annotations

import torch
from torch import nn

#: first image of the split the benchmarks may use (the ones before are the training set)
HELD_OUT = 9000
TRAIN = 8000
EPOCHS = 10
EPS = 4 / 255


class Residual(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 3, padding=1))
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def build(family: str) -> nn.Module:
    """The untrained network of ``family`` (vgg, bn, res) for 3 x 32 x 32 inputs, 10 classes."""
    if family == "vgg":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
        )  # fmt: skip
    if family == "bn":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip
    if family == "res":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.LeakyReLU(0.1), Residual(16),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip
    raise SystemExit(f"--set models: unknown small CNN family {family!r}, expected vgg, bn or res")


def trained(name: str) -> nn.Module:
    """``small:FAMILY`` trained as the module docstring says, in eval mode, frozen."""
    import frmargin

    family = name.split(":", 1)[1]
    ds = frmargin.load_dataset("cifar10", progress=False)
    x, y = ds.images[:TRAIN], ds.labels[:TRAIN]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build(family)
            opt = torch.optim.Adam(model.parameters(), lr=2e-3)
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(EPOCHS):
                order = torch.randperm(TRAIN)
                for start in range(0, TRAIN, 128):
                    xb, yb = x[order[start : start + 128]], y[order[start : start + 128]]
                    half = len(yb) // 2
                    xa = xb[:half].clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(loss_fn(model(xa), yb[:half]), xa)
                    adv = (xa + EPS * grad.sign()).clamp(0, 1).detach()
                    opt.zero_grad()
                    loss_fn(model(torch.cat([adv, xb[half:]])), yb).backward()
                    opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
