"""What the parts of a stepper hand each other, and the protocols of the parts.

A stepper (``Stepper``) proposes steps (``Step``) for the tracer to book. The converged stepper
(``step_control.StepControl``) is composed of parts with one job each, each a protocol here:
a ``DirectionSource`` (the descent direction at a point), a ``StepAttempt`` (one try of a step
at given sizes), a ``Fallback`` (which stalled steps get a second round) and a ``Projection``
(free space, or a box the direction is projected into). The values they pass: the
``Direction`` of a solve, where a step starts (``Start``) and the outcome of a try
(``Attempt``).

Shapes: m paths (``idx`` (m,) indices into the chunk), C classes, V classes of the view, *S
the input shape, D = prod(S). Everything on the simplex is float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Protocol

import torch

from .options import ResolvedOptions
from .simplex_line import segment_length
from .state import Network


@dataclass(frozen=True)
class Step:
    """A step proposed for paths ``idx`` (m,): from x_old (m, *S), logits z_old (m, C), to
    x_new, z_new. ``fr_step`` (m,) the FR step cap it was taken at (None: paper mode keeps no
    cap); ``planned`` (m,) bool marks steps aimed just past the boundary on the simplex line."""

    idx: torch.Tensor
    x_old: torch.Tensor
    z_old: torch.Tensor
    x_new: torch.Tensor
    z_new: torch.Tensor
    fr_step: torch.Tensor | None = None
    planned: torch.Tensor | None = None


@dataclass(frozen=True)
class Direction:
    """The descent direction of m paths and what its solve leaves for the corrector.

    v: (m, D) direction in x; zdot: (m, V) its centred logit velocity; weights: M = diag(p) -
    p p^T (m, V, V); factor: L^T (M = L L^T); gram: K = J J^T (m, V, V); damping: lam (m,);
    jacobian: (m, V, D) float64 rows used (box-held columns zeroed). The last four are None
    for a direction without Jacobian rows (the Euclidean vjp/jvp route). active: (m, D) the
    coordinates held at a bound of the box (``box.box_direction``), None without a box;
    turned: (m,) the paths whose active set changed since their last direction (``box.Box``).
    """

    v: torch.Tensor
    zdot: torch.Tensor
    weights: torch.Tensor
    factor: torch.Tensor | None = None
    gram: torch.Tensor | None = None
    damping: torch.Tensor | None = None
    jacobian: torch.Tensor | None = None
    active: torch.Tensor | None = None
    turned: torch.Tensor | None = None

    def take(self, rows: torch.Tensor) -> Direction:
        """The direction of paths ``rows`` (a mask or indices); tensors are copied."""
        kept = {f.name: getattr(self, f.name) for f in fields(self)}
        return Direction(**{k: None if t is None else t[rows] for k, t in kept.items()})  # type: ignore[arg-type]


#: (ok (m,) mask of the paths with a finite direction, then for those: z (k, C), p (k, V), direction)
Found = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Direction]


@dataclass(frozen=True)
class Start:
    """Where m paths start a step: indices, points (m, *S), logits (m, C), probabilities
    (m, V) of the view, p-velocity pdot (m, V), its Fisher speed (m,) and the direction."""

    idx: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    p: torch.Tensor
    pdot: torch.Tensor
    speed: torch.Tensor
    direction: Direction

    def take(self, rows: torch.Tensor) -> Start:
        """The paths ``rows`` (a mask or indices) of this start; tensors are copied."""
        return Start(
            self.idx[rows],
            self.x[rows],
            self.z[rows],
            self.p[rows],
            self.pdot[rows],
            self.speed[rows],
            self.direction.take(rows),
        )


@dataclass(frozen=True)
class Attempt:
    """The outcome of one try for m paths: new points (m, *S) and logits (m, C), accepted and
    nonfinite masks (m,), the relative miss theta (m,) of the linear prediction of the logit
    gap, and (predictor-corrector) which steps were aimed just past the boundary, how many
    corrections (forward passes) each took (m,) int64 and which the box touched (m,) (held
    coordinates, or coordinates a correction drove onto a bound)."""

    x_new: torch.Tensor
    z_new: torch.Tensor
    good: torch.Tensor
    nonfinite: torch.Tensor
    theta: torch.Tensor
    planned: torch.Tensor | None = None
    corrections: torch.Tensor | None = None
    touched: torch.Tensor | None = None


class Stepper:
    """A stepper: ``propose`` yields the steps of paths ``idx``; ``length`` measures one step.

    A stepper never books a step (the tracer does); it finishes the paths it cannot move
    (``nonfinite``, ``stalled``) and keeps its step-size control in the state."""

    #: whether a class change inside a step is located (else the step's end point is taken)
    locates = True

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        self.net = net
        self.opts = opts

    def propose(self, idx: torch.Tensor) -> Iterator[Step]:
        raise NotImplementedError

    def length(self, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
        """FR length (m,) of a step from pa to pb (m, V): the straight p-space segment between
        the accepted points (the flow's exact image where the Jacobian is a submersion, a
        second-order estimate elsewhere)."""
        return segment_length(pa, pb)


class DirectionSource(Protocol):
    """The descent direction at the start of a step."""

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        """The finite mask ok (m,), and z, p and the direction of the ok rows, at x (m, *S).
        Paths it stops for good (a KKT point of the box) it finishes and returns not ok."""
        ...


class StepAttempt(Protocol):
    """One try of a step at given sizes."""

    def begin(self, idx: torch.Tensor) -> None:
        """A step of paths ``idx`` (m,) begins (before its direction is evaluated)."""
        ...

    def __call__(self, s: Start, h: torch.Tensor, hz: torch.Tensor, retry: bool) -> Attempt:
        """Try the step of paths ``s`` at FR step h (m,) and logit step hz (m,); ``retry``:
        in the fallback round of the step."""
        ...


class Fallback(Protocol):
    """The fallback round: which stalled steps are tried again on another line."""

    def second_round(self, idx: torch.Tensor) -> torch.Tensor:
        """(m,) which of the stalled paths idx (m,) get the fallback round."""
        ...

    def fell_back(self, idx: torch.Tensor) -> None:
        """Paths idx (k,) had a step accepted in the fallback round."""
        ...


class Projection(Protocol):
    """Where the Fisher paths may go: free space (``directions.FreeSpace``) or a box
    (``box.Box``): the direction from Jacobian rows, what becomes of a stalled path, and the
    coordinates a correction drove onto a bound."""

    def direction(
        self, idx: torch.Tensor, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor
    ) -> tuple[Direction, torch.Tensor | None]:
        """The descent direction of the finite paths idx (k,) at x (k, *S) from their Jacobian
        rows J (k, V, D) and probabilities p (k, V); and the paths (k,) at a stationary point of
        the projection (None: there are none)."""
        ...

    def rescue(self, idx: torch.Tensor) -> torch.Tensor:
        """(k,) which of the stalled paths idx (k,) are retried from their point (the others
        end ``stalled``)."""
        ...

    def bind(self, x_new: torch.Tensor, J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """After a correction to x_new (m, *S): hold what it drove onto a bound, in the
        corrector's J (m, V, D) and K (m, V, V), on ``rows`` (m,); returns the rows (m,) whose J
        changed, or None."""
        ...
