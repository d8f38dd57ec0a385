"""Perturbation models: an input is perturbed as x = x0 + B(x0) u with u in R^K, and paths are
traced in u (``TraceOptions.perturbation``).

Modules: ``spec`` (the model's text: parsed, checked and made canonical, without torch),
``bases`` (the directions of each family for an input shape, checked, and the ``Subspace``
around start points), ``margin`` (the true Fisher-Rao margin within the subspace, a path-energy
minimization in u), ``oracles`` (exact references for K = 1 and K = 2) and ``validity`` (how far a
perturbed input leaves the valid range). The tracing in u itself is ``frmargin.paths.subspace``.
Names load on first use, so ``frmargin.perturbation.spec`` imports no torch.
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_attribute, lazy_dir

_LAZY = {
    "FAMILIES": ".spec",
    "PerturbationSpec": ".spec",
    "parse_perturbation": ".spec",
    "Subspace": ".bases",
    "build_subspace": ".bases",
    "family_basis": ".bases",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
