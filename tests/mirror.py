"""Where the offline asset mirror is, for tests that need the real weights and images.

FRMARGIN_MIRROR if set, else ``../shared/assets`` beside the repository (as in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NEEDED = ("weights/resnet20-12fca82f.th", "data/cifar10-test-exact.npz")


def find_mirror() -> Path | None:
    value = os.environ.get("FRMARGIN_MIRROR", "").strip()
    folder = Path(value) if value else Path(__file__).resolve().parents[2] / "shared" / "assets"
    return folder if all((folder / n).is_file() for n in NEEDED) else None


MIRROR = find_mirror()
needs_mirror = pytest.mark.skipif(
    MIRROR is None, reason="offline asset mirror (resnet20 weights, cifar10-exact) not found; set FRMARGIN_MIRROR"
)
