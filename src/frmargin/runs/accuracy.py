"""What a user checks before a long run: a model's top-1 accuracy, its median confidence and the
temperature that calibrates it, on the data a run would use (``frmargin accuracy``).

The model and data are resolved as a run resolves them (``resolve_inputs``: the same weight files,
output reading, normalization and input checks), and the logits are computed once, batched.

Example:
    >>> summary = model_accuracy(RunConfig(model="resnet20", data="cifar10-exact"), limit=100)  # doctest: +SKIP
    >>> print("\\n".join(summary.lines()))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..temperature import TemperatureFit, fit_temperature_logits, model_logits
from .config import RunConfig
from .preflight import preflight, resolve_inputs

__all__ = ["AccuracySummary", "model_accuracy"]


@dataclass(frozen=True)
class AccuracySummary:
    """Top-1 accuracy, median confidence (the largest softmax probability at T = 1) and the
    NLL-optimal temperature of a model on the first ``n`` images of a dataset."""

    model: str
    data: str
    source: str
    caveat: str | None
    n: int
    correct: int
    median_confidence: float
    fit: TemperatureFit

    @property
    def accuracy(self) -> float:
        """The fraction of images classified correctly."""
        return self.correct / self.n

    def top1_lines(self) -> list[str]:
        """The data caveat (if any) and the top-1 line."""
        head = [f"CAVEAT: {self.caveat}"] if self.caveat else []
        pct = 100 * self.accuracy
        return [*head, f"{self.model} on {self.data} ({self.source}): top-1 {pct:.2f}% ({self.correct}/{self.n})"]

    def lines(self) -> list[str]:
        """``top1_lines`` and the confidence and temperature lines."""
        fit = self.fit
        return [
            *self.top1_lines(),
            f"median confidence {_confidence(self.median_confidence)} (largest softmax probability, T = 1)",
            f"temperature {fit.temperature:.4g}: NLL-optimal on these {fit.n_images} images (mean NLL "
            f"{fit.nll_before:.4g} at T = 1, {fit.nll_after:.4g} at T); frmargin run --temperature auto fits it "
            "on held-out images",
        ]


def _confidence(p: float) -> str:
    """A probability with 4 decimals, or as ``1 - eps`` when it would print as 1.0000."""
    return f"{p:.4f}" if p < 0.99995 else f"1 - {1 - p:.2g}"


def model_accuracy(config: RunConfig, limit: int | None = None) -> AccuracySummary:
    """The ``AccuracySummary`` of ``config``'s model on the first ``limit`` images of its data
    (all when None), on ``config.device`` in ``config.dtype``.

    Raises:
        FrmarginError: what a run would refuse before tracing (model, weights, data, output).
    """
    config, net, identity, dataset = resolve_inputs(config)
    data = dataset.head(limit)
    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    net = net.to(device=device, dtype=dtype)
    preflight(net, data, config, device, dtype, identity)
    logits = model_logits(net, data.images.to(device=device, dtype=dtype)).cpu()
    labels = data.labels
    correct = int((logits.argmax(-1) == labels).sum())
    confidence = torch.softmax(logits.to(torch.float64), -1).amax(-1)
    return AccuracySummary(
        model=config.model,
        data=data.name,
        source=data.source,
        caveat=data.caveat,
        n=len(data),
        correct=correct,
        median_confidence=float(confidence.quantile(0.5)),
        fit=fit_temperature_logits(logits, labels),
    )
