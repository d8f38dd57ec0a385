"""Can a stiff tail be told from the steps' input speed? The free natural-gradient paths that end
``budget`` or ``stalled`` against those that end ``ok``.

On adversarially trained CNN-A some free paths never reach a class change: the exact flow
(``frmargin.reference.exact_flow``) slides along region boundaries with an input speed of hundreds
to thousands in L2 per unit FR length and ends at a corner. A status saying so would end such
paths early from what the tracer has per step: the L2 of each accepted step's input move and its
FR length. This benchmark measures whether that separates them from the paths that end ``ok``.

For each zoo model, the first N correctly classified images of the official CIFAR-10 test split
are traced to all 9 other classes at the default options (free space, Fisher metric) with the
pure flow (``continuation="none"``: the damped continuation would take these paths on); a name
``mlp.../...`` is a free Fisher case of the tanh MLPs of ``check_equivalence.py`` (4 inputs to
every other class, that case's options). Every booked step is recorded. For a path, the speed of a run of steps is the sum of their L2 moves over the sum
of their FR lengths (the step that changes the class left out); its ratio is the largest, over
windows of W consecutive steps after the first R, of the window's speed over that of the first
R steps. Per model and (R, W) a row gives:

- ``ok_max``: the largest ratio of an ``ok`` path (paths with fewer than R + W steps have none;
  ``ok_measured``, ``not_ok_measured``: the paths with a ratio);
- ``not_ok_max``, ``not_ok_above``: the largest ratio of the other paths and how many of them are
  above ``ok_max`` (the paths a factor between the two would end, sparing every ``ok`` path);
- ``first_ok_max``, ``first_not_ok_min``: the speed of the first step, largest among ``ok`` paths
  and smallest among the others (an absolute speed threshold, the same for every (R, W)).
"""

from __future__ import annotations

import numpy as np

import _common as cm
from harness import Context, Output, benchmark, main

#: (reference steps R, window W) measured
SHAPES = ((1, 3), (2, 3), (2, 5), (3, 10), (5, 20))
MODELS = (
    "cnn-a-adv4",
    "cnn-a-adv2",
    "cnn-a-mix",
    "resnet20",
    "mlp2d5c/fisher",
    "mlp2d5c/top3",
    "mlp6d8c/fisher",
    "mlp6d8c/target-record",
)


@benchmark(
    name="stiff_tail",
    title="Can a stiff tail be told from the steps' input speed? Paths ending budget or stalled against ok",
    units={
        "model": "",
        "ref_steps": "steps",
        "window": "steps",
        "status": "",
        "ok_max": "ratio",
        "not_ok_max": "ratio",
        "not_ok_above": "count",
        "first_ok_max": "L2 per unit FR",
        "first_not_ok_min": "L2 per unit FR",
        "ok_measured": "count",
        "not_ok": "count",
        "not_ok_measured": "count",
    },
    key=("model", "ref_steps", "window"),
    sizes={
        "smoke": {"images": 2, "models": "cnn-a-adv4,mlp6d8c/fisher"},
        "full": {"images": 8, "models": ",".join(MODELS)},
    },
)
def stiff_tail(ctx: Context) -> Output:
    p = ctx.params
    rows = []
    for name in cm.names(p.models):
        rows.extend(run_model(name, p.images))
        print(f"[stiff_tail] {name}: {rows[-1]['status']}", flush=True)
    notes = (
        f"Zoo models: {p.images} images x 9 targets, default options (free space, Fisher metric), the pure "
        "flow (continuation none); MLPs: "
        "check_equivalence.py's case. "
        "A ratio: a window's L2 per unit FR length over that of the path's first R steps."
    )
    return Output(rows, notes)


def ratio(steps: list[tuple[float, float, bool]], ref: int, window: int) -> float:
    """The largest speed ratio of one path's steps (module docstring); NaN with too few steps."""
    body = [(a, b) for a, b, done in steps if not done]
    if len(body) < ref + window:
        return float("nan")
    dx = np.array([a for a, _ in body])
    dl = np.array([b for _, b in body])
    base = dx[:ref].sum() / max(dl[:ref].sum(), 1e-300)
    kernel = np.ones(window)
    moved = np.convolve(dx[ref:], kernel, "valid")
    covered = np.convolve(dl[ref:], kernel, "valid")
    return float((moved / np.maximum(covered, 1e-300)).max() / base)


def first_speed(steps: list[tuple[float, float, bool]]) -> float:
    """L2 per unit FR length of a path's first step (NaN where the first step changed the class)."""
    if not steps or steps[0][2]:
        return float("nan")
    return steps[0][0] / max(steps[0][1], 1e-300)


def _max(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size else float("nan")


def workload(name: str, n: int) -> tuple:
    """(model, x, source, target, options) of a zoo model's first n correct images to every
    other class, or of the MLP case ``name`` of ``check_equivalence.py``."""
    if name.startswith("mlp"):
        import check_equivalence

        return check_equivalence.cases("mlp")[name]
    model = cm.load_model(name)
    x, y = cm.correct_images(model, "cifar10", n)
    return (model, *cm.all_target_paths(x, y, 10), {})


def run_model(name: str, n: int) -> list[dict]:
    from frmargin import trace_paths

    model, X, source, target, options = workload(name, n)
    with cm.step_log() as log:
        res = trace_paths(model, X, source, target, **{"continuation": "none", **options})
    ok = np.array(res.status) == "ok"
    first = np.array([first_speed(log.get(i, [])) for i in range(len(ok))])
    first_not_ok = first[~ok & np.isfinite(first)]
    rows = []
    for ref, window in SHAPES:
        r = np.array([ratio(log.get(i, []), ref, window) for i in range(len(ok))])
        ok_max = _max(r[ok])
        rows.append(
            {
                "model": name,
                "ref_steps": ref,
                "window": window,
                "status": cm.statuses(res.status),
                "ok_measured": int(np.isfinite(r[ok]).sum()),
                "ok_max": ok_max,
                "not_ok": int((~ok).sum()),
                "not_ok_measured": int(np.isfinite(r[~ok]).sum()),
                "not_ok_max": _max(r[~ok]),
                "not_ok_above": int((r[~ok] > ok_max).sum()),
                "first_ok_max": _max(first[ok]),
                "first_not_ok_min": float(first_not_ok.min()) if first_not_ok.size else float("nan"),
            }
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main(stiff_tail))
