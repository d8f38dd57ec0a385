"""The stepper registry: the ``method`` a user writes -> the factory of its stepper.

As torchdiffeq's ``SOLVERS``: ``STEPPERS[opts.method](net, opts)`` builds the stepper of a
chunk of paths. ``converged`` composes the converged stepper from parts with one job each
(``step_types`` holds their protocols):

- step-size control: ``step_control.StepControl`` (both metrics);
- direction: ``directions.RowDirection`` (Fisher: Jacobian rows solved by the projection) or
  ``directions.GradientDirection`` (Euclidean: one vjp and one jvp);
- step attempt: ``predictor_corrector.PredictorCorrector`` (Fisher) or ``euclidean.LinearStep``;
- fallback round: ``predictor_corrector.StartLines`` (Fisher) or none;
- projection: ``damped.DampedFree`` (free space with the damped continuation, the default),
  ``directions.FreeSpace`` (``continuation="none"``, and in u) or, in a box, ``box.Box`` (Fisher); the Euclidean steps
  freeze the coordinates a bound stops and clamp their steps instead;
- with a perturbation model (paths in u): ``reachability.Reachability`` watches the direction
  and judges stalled paths (``SubspaceFlow`` around the projection, ``WatchedDirection`` around
  the Euclidean gradient): a flow that cannot reach a class change ends early.

``paper`` is the paper's unit damped natural-gradient step (``paper.PaperStepper``).

How to add a stepper: write a ``step_types.Stepper`` (``propose(idx)`` yields ``Step``s for
the tracer to book and never books them; it finishes the paths it cannot move) or compose one
from the parts above, and register a factory ``(net, opts) -> Stepper`` here under the method
name users write (the name must also be one of ``options.METHODS``). A new direction, step
attempt or projection implements its protocol in ``step_types`` and is wired in ``converged``.
"""

from __future__ import annotations

from collections.abc import Callable

from .box import Box
from .damped import DampedFree
from .directions import FreeSpace, GradientDirection, RowDirection
from .euclidean import LinearStep
from .options import ResolvedOptions
from .paper import PaperStepper
from .predictor_corrector import PredictorCorrector, StartLines
from .reachability import Reachability, SubspaceFlow, WatchedDirection
from .state import Network
from .step_control import StepControl
from .step_types import Projection, Stepper

__all__ = ["STEPPERS", "converged", "make_stepper"]


def converged(net: Network, opts: ResolvedOptions) -> Stepper:
    """The converged stepper of ``opts.metric``: Fisher steps (predictor-corrector, in the box
    ``opts.box`` through the ``Box`` projection) or Euclidean ones (linear gradient steps)."""
    reach = Reachability(net, opts) if opts.perturbation != "pixels" else None
    if opts.metric == "euclidean":
        gradient = GradientDirection(net, opts)
        if reach is not None:  # in u: the flow's reachability is watched (``reachability``)
            watched = WatchedDirection(gradient, reach)
            return StepControl(
                net, opts, watched, LinearStep(net, opts), projection=SubspaceFlow(FreeSpace(net, opts), reach)
            )
        return StepControl(net, opts, gradient, LinearStep(net, opts))
    projection: Projection
    if opts.box is not None:
        projection = Box(net, opts)
    elif opts.continuation == "damped":  # free pixels only (``TraceOptions.damped_continuation``)
        projection = DampedFree(net, opts)
    else:
        projection = FreeSpace(net, opts)
    if reach is not None:
        projection = SubspaceFlow(projection, reach)
    lines = StartLines(net)
    attempt = PredictorCorrector(net, opts, projection, lines)
    return StepControl(net, opts, RowDirection(net, projection), attempt, fallback=lines, projection=projection)


STEPPERS: dict[str, Callable[[Network, ResolvedOptions], Stepper]] = {
    "converged": converged,
    "paper": PaperStepper,
}


def make_stepper(net: Network, opts: ResolvedOptions) -> Stepper:
    """The stepper ``STEPPERS[opts.method]`` for the paths of ``net``."""
    return STEPPERS[opts.method](net, opts)
