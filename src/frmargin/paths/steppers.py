"""The stepper registry: ``TracerOptions.stepper`` -> the class that proposes the steps.

As torchdiffeq's ``SOLVERS``: ``fisher`` (converged, predictor-corrector on the simplex
line), ``fisher-box`` (the same in a box, with the projected direction of ``box``),
``euclidean`` (converged, plain gradient steps) and ``paper`` (the paper's unit damped
natural-gradient steps). A stepper's ``propose(idx)`` yields ``Step``s for the tracer to
accept and never books them; it finishes the paths it cannot move (``nonfinite``, ``stalled``)
and keeps its step-size control in the state.
"""

from __future__ import annotations

from .base import Direction, Step, Stepper, descent_gradient, row_direction
from .box import BoxFisherStepper
from .converged import EuclideanStepper
from .corrector import FisherStepper
from .options import TracerOptions
from .paper import PaperStepper
from .state import Network

__all__ = [
    "STEPPERS",
    "BoxFisherStepper",
    "Direction",
    "EuclideanStepper",
    "FisherStepper",
    "PaperStepper",
    "Step",
    "Stepper",
    "descent_gradient",
    "make_stepper",
    "row_direction",
]

STEPPERS: dict[str, type[Stepper]] = {
    "fisher": FisherStepper,
    "fisher-box": BoxFisherStepper,
    "euclidean": EuclideanStepper,
    "paper": PaperStepper,
}


def make_stepper(net: Network, opts: TracerOptions) -> Stepper:
    """The stepper ``STEPPERS[opts.stepper]`` for the paths of ``net``."""
    return STEPPERS[opts.stepper](net, opts)
