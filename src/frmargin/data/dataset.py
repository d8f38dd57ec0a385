"""The ``Dataset`` record: images, labels and their provenance.

Example:
    >>> import torch
    >>> ds = Dataset("toy", torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]), ("a", "b"), torch.arange(2), "made up")
    >>> ds.head(1).header()
    ['data: toy (1 images)', 'source: made up']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import bad_argument
from .classes import CIFAR10_CLASSES

__all__ = ["CIFAR10_CLASSES", "JPEG_CAVEAT", "Dataset", "generic_class_names"]

JPEG_CAVEAT = (
    "data: JPEG (quality ~75) copy of the CIFAR-10 test split, not the official images; "
    "standard ResNets lose about 10 points of accuracy on it"
)


def generic_class_names(n_classes: int) -> tuple[str, ...]:
    """``class 0 .. class C-1``: the names of data that bring none.

    Example:
        >>> generic_class_names(2)
        ('class 0', 'class 1')
    """
    return tuple(f"class {c}" for c in range(n_classes))


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with labels and their provenance.

    Attributes:
        name: ``cifar10``, ``cifar10-jpeg``, ``cifar10-exact`` or the path it was loaded from.
        images: (N, C, H, W) float32 in [0, 1] (C, H, W = 3, 32, 32 for CIFAR-10).
        labels: (N,) int64.
        class_names: one name per class.
        test_index: (N,) int64, position of each image in the official test split (or in the file).
        source: human-readable provenance.
        identity: ``name``, ``sha256`` of the file the images come from, ``source``, ``num_images``;
            fit for recording in result files.
        caveat: a warning every report made from this data must show in its header, or None.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    test_index: torch.Tensor
    source: str
    identity: dict = field(default_factory=dict)
    caveat: str | None = None

    @property
    def is_jpeg_copy(self) -> bool:
        """True for the JPEG copy of CIFAR-10 (its accuracies are not the published ones)."""
        return self.name == "cifar10-jpeg"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` images (all when None).

        Example:
            >>> len(load_dataset("cifar10-exact").head(10))  # doctest: +SKIP
            10
        """
        if limit is None:
            return self
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise bad_argument("limit", limit, "a positive integer or None")
        n = min(limit, len(self))
        identity = {**self.identity, "num_images": n}
        return dataclasses.replace(
            self,
            images=self.images[:n],
            labels=self.labels[:n],
            test_index=self.test_index[:n],
            identity=identity,
        )

    def header(self) -> list[str]:
        """Lines for the header of a report or run: data name, size, source and the caveat."""
        lines = [f"data: {self.name} ({len(self)} images)", f"source: {self.source}"]
        if self.caveat:
            lines.append(f"CAVEAT: {self.caveat}")
        return lines
