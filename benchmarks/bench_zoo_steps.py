"""Step control across the model zoo: status counts and Jacobians per path, per model.

For each model, the first N correctly classified images of the official CIFAR-10 test split
(``cifar10``; the lossless copy of the mirror when the split is not installed) are traced to all
9 other classes at the default options (``max_steps``: the size's, None = the tracer's), and
again with ``continuation="none"`` (the pure flow: no damped continuation), and per model the
benchmark reports:

- status counts (``ok``, ``damped``, ``budget``, ``stalled``, ...) and the shares of ``ok``
  paths and of paths that reached a class change (``ok`` or ``damped``), and the pure flow's
  status counts and ``ok`` share;
- Jacobian evaluations per path: median, 95th percentile, p95 / median, mean, max; forward
  passes per path (mean);
- accuracy of the ``ok`` paths against the closed form ``predicted_path``: relative FR-length
  error (median, p90, max), first-hit agreement, share of lengths >= ``margin_lower_bound``
  (``ok`` and ``damped`` paths); how far the ``damped`` paths are from the flow's closed form
  (relative length difference, median and largest absolute; first-hit agreement);
- the pure flow's Jacobian evaluations per path (mean), and the relative FR-length difference of
  the paths ``ok`` in both traces (largest absolute: batch rounding and the damped tail);
- wall seconds, and their shares in Jacobian evaluations, forward passes and the rest (the
  tracer's own work), and the share spent in iterations with fewer than 16 paths still running
  (the tail of long paths).

``--set models=small:vgg,small:bn,small:res`` runs small CNNs of three families the zoo lacks
(max-pooling, batch norm, leaky-ReLU residual), trained by ``_small_cnns`` (images from 9,000 on).

The goals the step control is held to: >= 99.5% of paths reaching a class change on every model
(>= 98% ``ok``), and Jacobians per path at p95 <= 3x the median. A model that cannot be loaded is a row with its error as status.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import _common as cm
from harness import Context, Output, benchmark, main

#: iterations with fewer paths running than this make the tail (``share_tail``)
TAIL = 16
MODELS = (
    "cnn-a-adv2",
    "cnn-a-adv4",
    "cnn-a-mix",
    "resnet2b-adv2",
    "resnet4b-adv2",
    "shufflenetv2-x0.5",
    "resnet20-b",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56-b",
    "resnet56",
)


@benchmark(
    name="zoo_steps",
    title="Does the step control hold on every model family? Statuses and Jacobians per path, per zoo model",
    units={
        "model": "",
        "paths": "count",
        "median_confidence": "probability",
        "status": "",
        "ok_pct": "%",
        "reached_pct": "%",
        "damped_pct": "%",
        "pure_status": "",
        "pure_ok_pct": "%",
        "pure_jac_mean": "Jacobian evaluations",
        "ok_both_diff_max": "relative",
        "damped_diff_median": "relative",
        "damped_diff_max": "relative",
        "damped_first_hit_pct": "%",
        "jac_median": "Jacobian evaluations",
        "jac_p95": "Jacobian evaluations",
        "jac_p95_over_median": "ratio",
        "jac_mean": "Jacobian evaluations",
        "jac_max": "Jacobian evaluations",
        "fwd_mean": "forward passes",
        "err_median": "relative",
        "err_p90": "relative",
        "err_max": "relative",
        "first_hit_pct": "%",
        "ge_lb_pct": "%",
        "wall_s": "s",
        "share_jacobian": "share",
        "share_forward": "share",
        "share_other": "share",
        "share_tail": "share",
    },
    key=("model",),
    sizes={
        "smoke": {"images": 1, "models": "resnet20,cnn-a-mix", "batch_size": 64, "max_steps": 20},
        "small": {"images": 2, "models": ",".join(MODELS), "batch_size": 64, "max_steps": None},
        "full": {"images": 8, "models": ",".join(MODELS), "batch_size": 64, "max_steps": None},
    },
)
def zoo_steps(ctx: Context) -> Output:
    p = ctx.params
    rows = []
    for name in cm.names(p.models):
        try:
            rows.append(run_model(name, p.images, p.batch_size, p.max_steps))
        except Exception as err:  # a model missing from this install must not lose the others
            rows.append({"model": name, "status": f"unavailable: {type(err).__name__}: {str(err)[:120]}"})
        print(f"[zoo_steps] {name}: {rows[-1]['status']}", flush=True)
    budget = "the tracer's default max_steps" if p.max_steps is None else f"max_steps={p.max_steps}"
    notes = (
        f"{p.images} images x 9 targets per model, default options ({budget}), batch_size {p.batch_size}. "
        "Pure flow: the same paths with continuation=none. "
        "Goals: reached (ok or damped) >= 99.5% and ok >= 98%, Jacobians per path p95 <= 3x median."
    )
    return Output(rows, notes)


def run_model(name: str, n: int, batch_size: int, max_steps: int | None = None) -> dict:
    from frmargin import margin_lower_bound, predicted_path, trace_paths

    if name.startswith("small:"):  # a small CNN of another family, trained here (``_small_cnns``)
        import _small_cnns

        model = _small_cnns.trained(name)
        x, y = cm.correct_images(model, "cifar10", n, offset=_small_cnns.HELD_OUT)
    else:
        model = cm.load_model(name)
        x, y = cm.correct_images(model, "cifar10", n)
    X, source, target = cm.all_target_paths(x, y, 10)
    with cm.instrument() as rec:
        t0 = time.perf_counter()
        res = trace_paths(model, X, source, target, batch_size=batch_size, max_steps=max_steps)
        wall = time.perf_counter() - t0
    with torch.no_grad():
        p = torch.softmax(model(X).double(), -1)
    length, hit = predicted_path(p, source, target)
    lb = margin_lower_bound(p)
    pure = trace_paths(model, X, source, target, batch_size=batch_size, max_steps=max_steps, continuation="none")
    status = np.array(res.status)
    ok = status == "ok"
    damped = status == "damped"
    jac = res.jacobian_evals.numpy()
    fr = res.fr_length.numpy()
    err = np.abs(fr - length.numpy()) / length.numpy()
    signed = (fr - length.numpy()) / length.numpy()
    med = float(np.median(jac))
    pure_ok = np.array(pure.status) == "ok"
    both = ok & pure_ok
    diff = np.abs(fr[both] - pure.fr_length.numpy()[both]) / pure.fr_length.numpy()[both]
    hits = res.first_hit.numpy()
    return {
        "model": name,
        "paths": len(status),
        "median_confidence": float(p.max(-1).values.median()),
        "status": cm.statuses(res.status),
        "ok_pct": 100.0 * ok.mean(),
        "reached_pct": 100.0 * (ok | damped).mean(),
        "damped_pct": 100.0 * damped.mean(),
        "pure_status": cm.statuses(pure.status),
        "pure_ok_pct": 100.0 * pure_ok.mean(),
        "pure_jac_mean": float(pure.jacobian_evals.double().mean()),
        "ok_both_diff_max": float(diff.max()) if diff.size else float("nan"),
        "damped_diff_median": float(np.median(signed[damped])) if damped.any() else float("nan"),
        "damped_diff_max": float(np.abs(signed[damped]).max()) if damped.any() else float("nan"),
        "damped_first_hit_pct": 100.0 * float((hits[damped] == hit.numpy()[damped]).mean())
        if damped.any()
        else float("nan"),
        "jac_median": med,
        "jac_p95": cm.quantile(jac, 0.95),
        "jac_p95_over_median": cm.quantile(jac, 0.95) / med,
        "jac_mean": float(jac.mean()),
        "jac_max": float(jac.max()),
        "fwd_mean": float(res.forward_evals.double().mean()),
        "err_median": cm.quantile(err[ok], 0.5),
        "err_p90": cm.quantile(err[ok], 0.9),
        "err_max": float(err[ok].max()) if ok.any() else float("nan"),
        "first_hit_pct": 100.0 * float((res.first_hit.numpy()[ok] == hit.numpy()[ok]).mean()),
        "ge_lb_pct": 100.0 * float((fr[ok | damped] >= lb.numpy()[ok | damped] - 1e-9).mean()),
        "wall_s": wall,
        # where the tracing time went: Jacobian evaluations, forward passes, the rest
        "share_jacobian": rec.jac_time / wall,
        "share_forward": rec.fwd_time / wall,
        "share_other": 1 - (rec.jac_time + rec.fwd_time) / wall,
        # the tail: tracer iterations with fewer than TAIL paths still running
        "share_tail": sum(it["time"] for it in rec.steps if it["active"] < TAIL) / wall,
    }


if __name__ == "__main__":
    raise SystemExit(main(zoo_steps))
