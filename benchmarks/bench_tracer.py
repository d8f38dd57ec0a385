"""Accuracy vs cost of the converged tracer on ResNet-20 / CIFAR-10.

For the default accuracy options and a few variations (eta, rtol, logit_step), trace the paths
from N correctly classified ``cifar10-exact`` images to all 9 other classes and report, per
setting:

- accuracy against the closed form ``predicted_path`` (exact for the unconstrained flow):
  relative length error (median, p90, max), first-hit agreement, share of paths >= the lower
  bound ``margin_lower_bound``;
- cost per path in machine-independent units: Jacobian evaluations (``PathResult.jacobian_evals``,
  one = the C logit-gradient rows at one point), forward passes, accepted steps;
- wall seconds per path, and the tracer overhead: the tracer's wall time per accepted path-step
  divided by the time of one Jacobian evaluation of one point in a batched call of the batch
  size the step was taken at (measured separately, warm-up + median). 1.0 would mean the tracer
  costs exactly one Jacobian per accepted step; the excess is forward passes (corrector, root
  finding) and linear algebra; the shared first Jacobian of an image's 9 paths pulls it down;
- the L2 distance at the class change against a tight reference trace (``REFERENCE``:
  eta=0.1, logit_step=0.25, rtol=0.005, atol=1e-4; the size's ``reference``): it depends on the input-space path, which
  larger steps approximate by chords (median relative difference and mean signed bias).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

import _common as cm
from harness import Context, Output, benchmark, main

SETTINGS = {
    "default": {},
    "eta=0.3": {"eta": 0.3},
    "eta=1.0": {"eta": 1.0},
    "rtol=0.005": {"rtol": 0.005},
    "rtol=0.05": {"rtol": 0.05},
    "logit_step=2": {"logit_step": 2.0},
    "logit_step=8": {"logit_step": 8.0},
}
#: an optional tight reference (the method notes' measurement used eta 0.1)
EXTRA = {"eta=0.1": {"eta": 0.1}, "eta=0.1,rtol=0.005": {"eta": 0.1, "rtol": 0.005}}
#: the tight trace the L2 distances are compared with
REFERENCE = {"eta": 0.1, "logit_step": 0.25, "rtol": 0.005, "atol": 1e-4, "max_steps": 5000}


def run_setting(
    model, X, source, target, options: dict, batch_size: int, repeats: int, jac_cost, reference=None
) -> dict:
    from frmargin import margin_lower_bound, predicted_path, trace_paths

    walls = []
    for _ in range(repeats):
        with cm.instrument() as rec:
            t0 = time.perf_counter()
            res = trace_paths(model, X, source, target, batch_size=batch_size, **options)
            walls.append(time.perf_counter() - t0)
    wall = float(np.median(walls))
    with torch.no_grad():
        p0 = torch.softmax(model(X).to(torch.float64), -1)
    pred_len, pred_hit = predicted_path(p0, source, target)
    lb = margin_lower_bound(p0, source)
    ok = torch.tensor([s == "ok" for s in res.status])
    L = res.fr_length
    rel = ((L - pred_len).abs() / pred_len.clamp_min(1e-300))[ok].numpy()
    P = len(res)
    ov = cm.overhead(rec, jac_cost)
    l2 = {}
    if reference is not None:
        both = ok & torch.tensor([s == "ok" for s in reference.status])
        d = ((res.l2 - reference.l2) / reference.l2)[both].numpy()
        l2 = {
            "l2_vs_reference_median": cm.quantile(np.abs(d), 0.5),
            "l2_vs_reference_p90": cm.quantile(np.abs(d), 0.9),
            "l2_vs_reference_bias": float(d.mean()) if d.size else float("nan"),
        }
    return {
        "paths": P,
        "ok": int(ok.sum()),
        "statuses": cm.statuses(res.status),
        "rel_err_median": cm.quantile(rel, 0.5),
        "rel_err_p90": cm.quantile(rel, 0.9),
        "rel_err_max": float(rel.max()) if rel.size else float("nan"),
        "first_hit_agreement": float((res.first_hit == pred_hit)[ok].double().mean()),
        "share_ge_lower_bound": float((lb <= L)[ok].double().mean()),
        "min_excess_over_lb": float((L - lb)[ok].min()),
        "jacobian_evals_per_path": float(res.jacobian_evals.mean()),
        "jacobian_evals_per_path_median": float(res.jacobian_evals.median()),
        "forward_evals_per_path": float(res.forward_evals.double().mean()),
        "steps_per_path": float(res.steps.double().mean()),
        "wall_s": wall,
        "wall_s_per_path": wall / P,
        "wall_per_path_in_jacobian_units": wall / P / jac_cost(1),
        **l2,
        **{f"tracer_{k}": v for k, v in ov.items()},
    }


#: the parameters of the full size (the published figures); the smaller sizes change a few
FULL = {"images": 20, "reference": True, "offset": 0, "data": "cifar10-exact", "settings": ",".join(SETTINGS),
        "batch_size": 128, "repeats": 1, "jac_repeats": 3}  # fmt: skip


@benchmark(
    name="tracer",
    title="Accuracy against cost of the converged tracer (ResNet-20, CIFAR-10)",
    units={
        "setting": "",
        "options": "",
        "paths": "count",
        "ok": "paths",
        "statuses": "",
        "rel_err_median": "relative",
        "rel_err_p90": "relative",
        "rel_err_max": "relative",
        "first_hit_agreement": "share",
        "share_ge_lower_bound": "share",
        "min_excess_over_lb": "FR length",
        "jacobian_evals_per_path": "Jacobian evaluations",
        "jacobian_evals_per_path_median": "Jacobian evaluations",
        "forward_evals_per_path": "forward passes",
        "steps_per_path": "steps",
        "wall_s": "s",
        "wall_s_per_path": "s",
        "wall_per_path_in_jacobian_units": "Jacobian evaluations",
        "l2_vs_reference_median": "relative",
        "l2_vs_reference_p90": "relative",
        "l2_vs_reference_bias": "relative",
        "tracer_iterations": "count",
        "tracer_accepted_steps": "steps",
        "tracer_overhead_per_accepted_step": "Jacobian evaluations",
        "tracer_step_time_s": "s",
        "tracer_time_per_accepted_step_s": "s",
        "tracer_overhead_median": "ratio",
        "tracer_overhead_aggregate": "ratio",
        "tracer_share_jacobian": "share",
        "tracer_share_forward": "share",
        "tracer_share_other": "share",
        "tracer_jacobian_in_tracer_vs_reference": "ratio",
        "tracer_overhead_in_situ": "ratio",
        "tracer_overhead_in_situ_median": "ratio",
        "tracer_mean_jacobian_batch": "points",
    },
    key=("setting",),
    sizes={
        "smoke": FULL | {"images": 1, "reference": False, "settings": "default", "jac_repeats": 1},
        "small": FULL | {"images": 3, "reference": False, "settings": "default,eta=1.0,logit_step=2"},
        "full": FULL,
    },
)
def tracer(ctx: Context) -> Output:
    from frmargin import trace_paths

    p = ctx.params
    table = {**SETTINGS, **EXTRA}
    unknown = [s for s in cm.names(p.settings) if s not in table]
    if unknown:
        raise SystemExit(f"--set settings: unknown {unknown}, expected among {list(table)}")
    torch.manual_seed(0)
    model = cm.load_model()
    x, y = cm.correct_images(model, p.data, p.images, p.offset)
    X, source, target = cm.all_target_paths(x, y, 10)
    P = X.shape[0]
    trace_paths(model, X[:2], source[:2], target[:2], max_steps=2)  # warm-up (allocator, kernel caches)
    jac_cost = cm.JacobianCost(model, X[::9] if P > 9 else X, min(P, p.batch_size), repeats=p.jac_repeats)
    reference = None
    if p.reference:
        reference = trace_paths(model, X, source, target, batch_size=p.batch_size, **REFERENCE)
    rows = []
    for name in cm.names(p.settings):
        r = run_setting(model, X, source, target, table[name], p.batch_size, p.repeats, jac_cost, reference)
        rows.append({"setting": name, "options": json.dumps(table[name]), **r})
        print(
            f"[tracer] {name}: rel err med {r['rel_err_median']:.2e}, jac/path {r['jacobian_evals_per_path']:.2f}, "
            f"{r['wall_s_per_path']:.2f} s/path, overhead per step {r['tracer_overhead_per_accepted_step']:.2f}",
            flush=True,
        )
    plot = plot_curve(rows, ctx.extra(".png"))
    jac = "; ".join(
        f"B={r['batch']}: {r['jacobian_s']:.4f} s ({r['jacobian_in_forward_units']:.0f} forward passes, "
        f"vmap / loop of C backward passes {r['vmap_over_loop']:.2f}, C - 1 rows / C rows {r['reference_row_over_full']:.2f})"
        for r in jac_cost.rows()
    )
    notes = (
        f"{p.images} correctly classified images of {p.data} x 9 targets = {P} paths, batch_size {p.batch_size}, "
        f"{p.repeats} timed trace(s) per setting after a warm-up. rel_err: |FR length - predicted_path| / "
        "predicted_path over ok paths. Tracer overhead per accepted step: wall time per accepted path-step / "
        "time of one point's Jacobian in a batched call at the step's batch size. "
        + (f"l2_vs_reference: against a tight trace {REFERENCE}. " if p.reference else "")
        + f"Reference Jacobian (logits_and_jacobian, median): {jac}."
        + (f" Plot: {plot.name}." if plot else "")
    )
    return Output(rows, notes)


def plot_curve(rows: list[dict], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r in rows:
        xval, med, p90 = r["jacobian_evals_per_path"], r["rel_err_median"], r["rel_err_p90"]
        ax.errorbar([xval], [med], yerr=[[0], [max(p90 - med, 0)]], fmt="o", capsize=3)
        ax.annotate(r["setting"], (xval, med), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("Jacobian evaluations per path (mean)")
    ax.set_ylabel("relative error vs closed form (median, bar to p90)")
    ax.set_yscale("log")
    ax.set_title("Converged tracer: accuracy vs cost (ResNet-20 / CIFAR-10)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    raise SystemExit(main(tracer))
