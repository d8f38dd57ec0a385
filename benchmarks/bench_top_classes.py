"""Many classes: tracing with the top-m classes kept and the rest lumped, against every class.

A synthetic 1000-class model on 3x32x32 inputs (D = 3072): Flatten -> Linear(D, H) -> Tanh ->
Linear(H, C), random weights (seed 0), the last layer scaled so that predictions are confident
(median top probability about 0.6, as for an ImageNet classifier), H >= C so that the Jacobian has
full row rank. From B inputs, paths go to the classes ranked 2nd, 5th and 50th at the start.

Each path is traced with every class (C = 1000 Jacobian rows per step) and with
``top_classes=m`` (m + 1 rows: the m most probable classes at the start, source and target among
them, and one class lumping the rest). Reported per m:

- cost: wall seconds per path, Jacobian rows per step, and the ratio of wall times to the full
  trace (same paths, same process, after a warm-up);
- accuracy cost: relative difference of ``fr_length`` to the full trace (median, max), the ratio
  of the L2 distances at the change (median of lumped / full: the lumped classes are free to
  trade probability, so the input-space path differs), first-hit agreement with the full trace,
  and the relative error of each trace against the closed form ``predicted_path`` (exact for the
  unconstrained natural-gradient flow with a full-rank Jacobian; the full trace's own error
  shows how well 1000 nearly dependent Jacobian rows are handled).
"""

from __future__ import annotations

import time

import numpy as np
import torch

import _common as cm
from harness import Context, Output, benchmark, main

D = 3 * 32 * 32
RANKS = (1, 4, 49)  # targets: the 2nd, 5th and 50th most probable classes


def build(C: int, H: int, scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, H), torch.nn.Tanh(), torch.nn.Linear(H, C))
    with torch.no_grad():
        m[3].weight.mul_(scale)
        m[3].bias.zero_()
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()


@benchmark(
    name="top_classes",
    title="Many classes: tracing with the top-m classes kept (m + 1 Jacobian rows) against every class",
    units={
        "top_classes": "classes",
        "jacobian_rows": "count",
        "paths_ok": "paths",
        "wall_s_per_path": "s",
        "time_vs_full": "ratio",
        "jacobian_evals_per_path": "Jacobian evaluations",
        "fr_length_vs_full_median": "relative",
        "fr_length_vs_full_max": "relative",
        "l2_ratio_to_full_median": "ratio",
        "first_hit_agrees_with_full": "share",
        "rel_err_vs_closed_form_median": "relative",
        "rel_err_vs_closed_form_max": "relative",
    },
    key=("top_classes",),
    sizes={
        "smoke": {"inputs": 1, "classes": 50, "hidden": 64, "scale": 40.0, "m": "5"},
        "small": {"inputs": 3, "classes": 1000, "hidden": 1024, "scale": 40.0, "m": "5,20,100"},
        "full": {"inputs": 4, "classes": 1000, "hidden": 1024, "scale": 40.0, "m": "5,20,100"},
    },
    needs_assets=False,
)
def top_classes(ctx: Context) -> Output:
    from frmargin import predicted_path, trace_paths

    p = ctx.params
    C = p.classes
    model = build(C, p.hidden, p.scale)
    x = torch.rand(p.inputs, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p0 = torch.softmax(model(x).double(), -1)
    image, source, target = cm.ranked_target_paths(p0, RANKS)
    X, p_rep = x[image], p0[image]
    P = X.shape[0]
    pred_len, _ = predicted_path(p_rep, source, target)
    top_p = p0.max(-1).values

    trace_paths(model, X[:1], source[:1], target[:1], max_steps=1)  # warm-up
    runs = {}
    for m in [None, *cm.numbers(p.m)]:
        t0 = time.perf_counter()
        res = trace_paths(model, X, source, target, top_classes=m)
        runs[m] = (res, time.perf_counter() - t0)
        print(f"[top_classes] top_classes={m}: {runs[m][1]:.1f} s, statuses {cm.statuses(res.status)}", flush=True)

    full, t_full = runs[None]
    ok_full = torch.tensor([s == "ok" for s in full.status])
    rows = []
    for m, (res, wall) in runs.items():
        ok = ok_full & torch.tensor([s == "ok" for s in res.status])
        d_len = ((res.fr_length - full.fr_length).abs() / full.fr_length)[ok].numpy()
        r_l2 = (res.l2 / full.l2)[ok].numpy()
        err = ((res.fr_length - pred_len).abs() / pred_len)[ok].numpy()
        rows.append(
            {
                "top_classes": "all" if m is None else m,
                "jacobian_rows": C if m is None else m + 1,
                "paths_ok": int(ok.sum()),
                "wall_s_per_path": wall / P,
                "time_vs_full": wall / t_full,
                "jacobian_evals_per_path": float(res.jacobian_evals.mean()),
                "fr_length_vs_full_median": float(np.median(d_len)) if d_len.size else float("nan"),
                "fr_length_vs_full_max": float(d_len.max()) if d_len.size else float("nan"),
                "l2_ratio_to_full_median": float(np.median(r_l2)) if r_l2.size else float("nan"),
                "first_hit_agrees_with_full": float((res.first_hit == full.first_hit)[ok].double().mean()),
                "rel_err_vs_closed_form_median": float(np.median(err)) if err.size else float("nan"),
                "rel_err_vs_closed_form_max": float(err.max()) if err.size else float("nan"),
            }
        )
    notes = (
        f"Model: Flatten -> Linear({D}, {p.hidden}) -> Tanh -> Linear({p.hidden}, {C}) x {p.scale:g}, random weights; "
        f"median top probability {top_p.median():.2f}. {P} paths from {p.inputs} inputs to the classes ranked "
        f"{[r + 1 for r in RANKS]}. Differences are relative to the trace with every class; the closed form is "
        "predicted_path."
    )
    return Output(rows, notes)


if __name__ == "__main__":
    raise SystemExit(main(top_classes))
