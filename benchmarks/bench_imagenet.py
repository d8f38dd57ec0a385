"""MobileNetV2 on ImageNet: time and peak memory per path with m = 5, 10, 20 kept classes, and
one Jacobian evaluation with every class (1000 rows).

The first ``images`` correctly classified images of ``imagenet-sample`` (224x224, D = 150528),
paths to the ``targets`` most probable other classes (``top:K`` of a run), ``targets`` per image. Each m runs in a
fresh process (``spawn``), so that its peak resident memory (``ru_maxrss``) is its own; the model
is loaded and one forward pass warms it up before the clock starts. Reported per m: seconds per
path, Jacobian evaluations and forward passes per path, seconds per Jacobian row (one backward
pass), peak RSS, statuses, and the FR length against the simplex lower bound and against the
closed-form prediction. The 1000-class row times a single Jacobian evaluation at one image (a full
path with every class costs about its steps times that; tracing one is not affordable on a CPU).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import torch

import _common as cm
from harness import Context, Output, benchmark, main

MODEL, DATA = "mobilenetv2-imagenet", "imagenet-sample"


@benchmark(
    name="imagenet",
    title="MobileNetV2 on ImageNet: time and peak memory per path with the top-m classes kept, and one 1000-row Jacobian",
    units={
        "m": "classes",
        "rows": "Jacobian rows",
        "paths": "count",
        "ok": "paths",
        "s_per_path": "s",
        "jacobian_evals_per_path": "Jacobian evaluations",
        "forward_evals_per_path": "forward passes",
        "s_per_jacobian": "s",
        "s_per_row": "s",
        "peak_rss_mb": "MB",
        "rss_before_mb": "MB",
        "fr_ge_lower_bound": "",
        "fr_over_predicted_median": "ratio",
        "shielded": "paths",
    },
    key=("m",),
    sizes={
        "smoke": {"images": 1, "targets": 1, "m": "5", "max_steps": 3, "full": False},
        "small": {"images": 1, "targets": 1, "m": "5,20", "max_steps": 200, "full": True},
        "full": {"images": 1, "targets": 2, "m": "5,10,20", "max_steps": 200, "full": True},
    },
)
def imagenet(ctx: Context) -> Output:
    p = ctx.params
    configs = [*cm.numbers(p.m), *([None] if p.full else [])]
    rows = []
    spawn = mp.get_context("spawn")
    for m in configs:
        with spawn.Pool(1) as pool:
            rows.append(pool.apply(_trace, ((m, p.images, p.targets, ctx.threads, p.max_steps),)))
        print(f"[imagenet] {rows[-1]}", flush=True)
    notes = (
        f"{p.images} image(s) of {DATA} x the {p.targets} most probable other classes, max_steps {p.max_steps}; one "
        "process per row; peak RSS includes the model and data (rss_before_mb: after loading)."
    )
    return Output(rows, notes)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(n_images: int, threads: int):
    if threads > 0:
        torch.set_num_threads(threads)
    model = cm.load_model(MODEL)
    x, _, p = cm.correct_subset(model, *cm.first_images(DATA, 4 * n_images + 8), n_images)
    return model, x, p


def _trace(args: tuple) -> dict:
    """One configuration in its own process: m kept classes (None: one full Jacobian evaluation)."""
    from frmargin import margin_lower_bound, predicted_path, trace_paths
    from frmargin.fisher import logits_and_jacobian

    m, n_images, n_targets, threads, max_steps = args
    model, x, p0 = _load(n_images, threads)
    base_mb = _peak_mb()
    if m is None:
        t0 = time.perf_counter()
        _, J = logits_and_jacobian(model, x[:1])
        J64 = J.to(torch.float64)  # the float64 copy the solve makes
        wall = time.perf_counter() - t0
        rows = J64.shape[1]
        return {"m": "all (1000)", "rows": rows, "s_per_jacobian": wall, "s_per_row": wall / rows,
                "peak_rss_mb": _peak_mb(), "rss_before_mb": base_mb}  # fmt: skip
    rep, source, target = cm.ranked_target_paths(p0, range(1, n_targets + 1))
    t0 = time.perf_counter()
    res = trace_paths(model, x[rep], source, target, top_classes=m, batch_size=4, max_steps=max_steps)
    wall = time.perf_counter() - t0
    lb = margin_lower_bound(p0[rep], source)
    pred, _ = predicted_path(p0[rep], source, target)
    ok = torch.tensor([s == "ok" for s in res.status])
    P = len(rep)
    return {
        "m": m,
        "rows": m + 1,
        "paths": P,
        "ok": int(ok.sum()),
        "s_per_path": wall / P,
        "jacobian_evals_per_path": float(res.jacobian_evals.mean()),
        "forward_evals_per_path": float(res.forward_evals.float().mean()),
        "s_per_row": wall / float(res.jacobian_evals.sum() * (m + 1)),
        "peak_rss_mb": _peak_mb(),
        "rss_before_mb": base_mb,
        "fr_ge_lower_bound": bool((res.fr_length[ok] >= lb[ok] * (1 - 1e-6)).all()),
        "fr_over_predicted_median": float((res.fr_length[ok] / pred[ok]).median()) if ok.any() else float("nan"),
        "shielded": int(((res.first_hit != target) & res.success).sum()),
    }


if __name__ == "__main__":
    raise SystemExit(main(imagenet))
