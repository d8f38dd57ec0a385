"""What every stepper shares: the proposed ``Step``, the ``Direction`` of a solve, the
function a path descends, the Jacobian-row direction, and the ``Stepper`` base class.

Shapes: m paths (``idx`` (m,) indices into the chunk), C classes, V classes of the view,
*S the input shape, D = prod(S). Everything on the simplex is float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from ..solve import fisher_factor, fisher_lsq, fisher_weights, largest_eigenvalue_factored, resolve_damping
from .linalg import bmv, centred, rows_combination
from .options import TracerOptions
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
    coordinates held at a bound of the box (``box.box_direction``), None without a box.
    """

    v: torch.Tensor
    zdot: torch.Tensor
    weights: torch.Tensor
    factor: torch.Tensor | None = None
    gram: torch.Tensor | None = None
    damping: torch.Tensor | None = None
    jacobian: torch.Tensor | None = None
    active: torch.Tensor | None = None

    def take(self, rows: torch.Tensor) -> Direction:
        """The direction of paths ``rows`` (a mask or indices); tensors are copied."""
        kept = {f.name: getattr(self, f.name) for f in fields(self)}
        return Direction(**{k: None if t is None else t[rows] for k, t in kept.items()})  # type: ignore[arg-type]


def descent_gradient(net: Network, idx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Logit gradient a (m, V) float64 of the function each path descends, p (m, V).

    Until the first change: log p_top - log p_k, a = e_top - e_k. Chasing the target:
    log(1 - p_k) - log p_k, a_j = p_j / (1 - p_k) (j != k), a_k = -1, which raises p_k and
    shrinks the others in proportion, so the classes passed never swap back.
    """
    st = net.state
    top, k = net.view.classes(idx, st.top[idx], st.target[idx])
    a = torch.zeros(top.shape[0], net.view.size, dtype=torch.float64, device=top.device)
    a.scatter_(1, top[:, None], 1.0)
    a.scatter_(1, k[:, None], -1.0)
    chase = st.chasing[idx]
    if chase.any():
        pc = p[chase]
        kc = k[chase]
        rest = 1.0 - pc.gather(1, kc[:, None])
        ac = pc / rest.clamp_min(1e-300)
        ac.scatter_(1, kc[:, None], -1.0)
        a[chase] = ac
    return a


def damping(opts: TracerOptions, factor: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Absolute lam (m,) from the option: relative to the largest eigenvalue of L^T K L."""
    if opts.damping_mode == "relative":
        lam_max = largest_eigenvalue_factored(factor, gram)
    else:
        lam_max = torch.zeros(factor.shape[0], dtype=torch.float64, device=factor.device)
    return resolve_damping(opts.damping, opts.damping_mode, lam_max)


def row_direction(opts: TracerOptions, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor, a: torch.Tensor) -> Direction:
    """Descent direction from Jacobian rows J (m, V, D) at x (m, *S), p (m, V), a (m, V).

    Fisher metric: v = -J^T w with (M K + lam I) w = a (the damped natural gradient);
    Euclidean: w = a. With a box: the projected direction of ``box.box_direction`` (an
    active set of coordinates held at a bound, the solve restricted to the free ones).
    """
    M = fisher_weights(p)
    Lt = fisher_factor(p)
    J64 = J.to(torch.float64)
    if opts.box is not None:
        from .box import box_direction  # box builds on the steppers of this module's users

        return box_direction(opts, x, J64, p, a, M, Lt)[0]
    K = J64 @ J64.transpose(-1, -2)
    lam = damping(opts, Lt, K)
    # (M K + lam I) w = a, with a = M (a / p) since a sums to zero
    w = fisher_lsq(Lt, K, a / p.clamp_min(1e-300), lam) if opts.metric == "fisher" else a
    v = -rows_combination(w, J64)
    zdot = centred(-bmv(K, w), p)
    return Direction(v=v, zdot=zdot, weights=M, factor=Lt, gram=K, damping=lam, jacobian=J64)


class Stepper:
    """Base: ``propose`` yields the steps of paths ``idx``; ``length`` measures one step."""

    #: whether a class change inside a step is located (else the step's end point is taken)
    locates = True

    def __init__(self, net: Network, opts: TracerOptions) -> None:
        self.net = net
        self.opts = opts

    def propose(self, idx: torch.Tensor) -> Iterator[Step]:
        raise NotImplementedError

    def length(self, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
        """FR length (m,) of a step from pa to pb (m, V): the straight p-space segment between
        the accepted points (the flow's exact image where the Jacobian is a submersion, a
        second-order estimate elsewhere)."""
        return segment_length(pa, pb)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.opts.box is None else x.clamp(*self.opts.box)

    def bind(self, x_new: torch.Tensor, J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """Hook of the corrector after each correction (x_new (m, *S), its J (m, V, D) and
        K (m, V, V), live ``rows`` (m,)); returns the rows (m,) whose J it changed, or None.
        Nothing here; the box stepper holds coordinates that reached a bound."""
        return None
