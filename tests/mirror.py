"""Where the offline asset mirror is, for tests that need the real weights and images.

FRMARGIN_MIRROR if set, else ``../shared/assets`` beside the repository (as in CI);
``FRMARGIN_TEST_MIRROR=off`` (``make test-fast``) hides it, so the tests that need it skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NEEDED = ("weights/resnet20-12fca82f.th", "data/cifar10-test-exact.npz")


def mirror_folder() -> Path:
    """The folder the mirror is expected in (it may be missing or incomplete)."""
    if os.environ.get("FRMARGIN_TEST_MIRROR", "").strip().lower() == "off":
        return Path(__file__).resolve().parent / "no-mirror"  # never exists
    value = os.environ.get("FRMARGIN_MIRROR", "").strip()
    return Path(value) if value else Path(__file__).resolve().parents[2] / "shared" / "assets"


def find_mirror() -> Path | None:
    folder = mirror_folder()
    return folder if all((folder / n).is_file() for n in NEEDED) else None


#: the mirror folder for tests that check their own files in it (skip when its parts are absent)
REAL_MIRROR = mirror_folder()
MIRROR = find_mirror()
needs_mirror = pytest.mark.skipif(
    MIRROR is None, reason="offline asset mirror (resnet20 weights, cifar10-exact) not found; set FRMARGIN_MIRROR"
)
