"""Exact low-rank solve vs conjugate gradients for one paper-mode step on ResNet-20.

Speed (float32, as the tool runs): ``trace_paths(method="paper", solver=..., max_steps=S)`` on B
paths from B distinct correctly classified images (one target each, the runner-up class), with
the tracer instrumented so that the time of each paper step is measured on its own (the initial
forward pass of the tracer is excluded). Warm-up trace first, then the median over repeats.
Units: seconds per step, the step in units of one batched Jacobian evaluation of the same batch
(measured inside the exact steps), the CG/exact ratio, and Fisher matvecs per path (CG: Krylov
estimate of the largest eigenvalue for relative damping, C matvecs, plus the CG iterations).

Agreement (float64, on the ``cg`` row): ``DataFisher(model.double(), x.double()).solve(g,
damping, method=...)`` with g the gradient of log p_y - log p_k, for ``exact`` and ``cg``;
reported as ||v_cg - v_exact|| / ||v_exact|| (max over the batch), the same for the normalized
paper step delta = v / sqrt(g^T v), the smallest cosine, and the same relative difference of the
float32 tracer steps x_end - x0. ``solve_f64_s`` is one float64 ``solve`` call of each method.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

import _common as cm
from harness import Context, Output, benchmark, main


@benchmark(
    name="solve",
    title="Exact low-rank solve against conjugate gradients in one paper-mode step (ResNet-20)",
    units={
        "solver": "",
        "paths": "count",
        "step_s": "s",
        "step_in_jacobian_units": "Jacobian evaluations",
        "time_over_exact": "ratio",
        "matvecs_per_path_step": "matvecs",
        "jacobian_evals_per_path_step": "Jacobian evaluations",
        "solve_f64_s": "s",
        "direction_rel_diff_f64": "relative",
        "paper_step_rel_diff_f64": "relative",
        "min_cosine_f64": "cosine",
        "tracer_step_rel_diff_f32": "relative",
    },
    key=("solver",),
    sizes={
        "smoke": {"images": 1, "steps": 1, "repeats": 1, "damping": 1e-3, "data": "cifar10-exact"},
        "small": {"images": 4, "steps": 1, "repeats": 2, "damping": 1e-3, "data": "cifar10-exact"},
        "full": {"images": 4, "steps": 1, "repeats": 3, "damping": 1e-3, "data": "cifar10-exact"},
    },
)
def solve(ctx: Context) -> Output:
    p = ctx.params
    model = cm.load_model()
    x, y = cm.correct_images(model, p.data, p.images)
    with torch.no_grad():
        z = model(x)
    target = z.scatter(1, y[:, None], -float("inf")).argmax(-1)  # runner-up class
    out = {s: paper_step_time(model, x, y, target, s, p.steps, p.damping, p.repeats) for s in ("exact", "cg")}
    d_ex = (out["exact"]["x_end"] - x).flatten(1).double()
    d_cg = (out["cg"]["x_end"] - x).flatten(1).double()
    f32_diff = float(((d_cg - d_ex).norm(dim=-1) / d_ex.norm(dim=-1)).max())
    agree = agreement(model, x, y, target, z.shape[-1], p.damping)
    tj = out["exact"]["jacobian_in_step_s"]  # measured inside the exact steps (same moment, robust to load)
    rows = []
    for s in ("exact", "cg"):
        row = {
            "solver": s,
            "paths": x.shape[0],
            "step_s": out[s]["step_s"],
            "step_in_jacobian_units": out[s]["step_s"] / tj,
            "time_over_exact": out[s]["step_s"] / out["exact"]["step_s"],
            "matvecs_per_path_step": out[s]["matvecs_per_path_step"],
            "jacobian_evals_per_path_step": out[s]["jacobian_evals_per_path_step"],
            "solve_f64_s": agree[f"{s}_s"],
        }
        if s == "cg":
            row.update({k: agree[k] for k in ("direction_rel_diff_f64", "paper_step_rel_diff_f64", "min_cosine_f64")})
            row["tracer_step_rel_diff_f32"] = f32_diff
        rows.append(row)
    notes = (
        f"{x.shape[0]} paths from distinct images of {p.data} (target: the runner-up class), relative damping "
        f"{p.damping:g}, max_steps={p.steps}; median of {p.repeats} timed traces after a warm-up. Jacobian unit: "
        f"the batched Jacobian evaluation measured inside the exact steps, {tj:.3f} s."
    )
    return Output(rows, notes)


def paper_step_time(model, x, source, target, solver: str, steps: int, damping: float, repeats: int) -> dict:
    from frmargin import trace_paths

    trace_paths(model, x, source, target, method="paper", solver=solver, max_steps=1, damping=damping)  # warm-up
    per_step, jac_in, res = [], [], None
    for _ in range(repeats):
        with cm.instrument() as rec:
            res = trace_paths(model, x, source, target, method="paper", solver=solver, max_steps=steps, damping=damping)
        per_step.append(statistics.median(s["time"] for s in rec.steps))
        jac_in.append(statistics.median(s["jac_time"] for s in rec.steps))
    assert res is not None
    return {
        "step_s": statistics.median(per_step),
        "jacobian_in_step_s": statistics.median(jac_in),
        "matvecs_per_path_step": float(res.matvecs.double().mean() / max(float(res.steps.double().mean()), 1)),
        "jacobian_evals_per_path_step": float(res.jacobian_evals.mean() / max(float(res.steps.double().mean()), 1)),
        "x_end": res.x_end,
    }


def agreement(model, x, y, target, C: int, damping: float) -> dict:
    """The float64 solves of both methods for the step's gradient: differences and times."""
    from frmargin import DataFisher
    from frmargin.fisher import logits_and_jacobian

    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    _, J = logits_and_jacobian(m64, x64)
    a = torch.zeros(x.shape[0], C, dtype=torch.float64)
    a.scatter_(1, y[:, None], 1.0)
    a.scatter_(1, target[:, None], -1.0)
    g = (J.transpose(-1, -2) @ a[:, :, None])[:, :, 0].reshape(x64.shape)  # grad of log p_y - log p_k
    F = DataFisher(m64, x64)
    t0 = time.perf_counter()
    v_ex = F.solve(g, damping, "relative", method="exact").flatten(1)
    t_ex = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_cg = F.solve(g, damping, "relative", method="cg").flatten(1).double()
    t_cg = time.perf_counter() - t0
    gf = g.flatten(1)
    step_ex = v_ex / (gf * v_ex).sum(-1, keepdim=True).sqrt()
    step_cg = v_cg / (gf * v_cg).sum(-1, keepdim=True).sqrt()
    return {
        "exact_s": t_ex,
        "cg_s": t_cg,
        "direction_rel_diff_f64": float(((v_cg - v_ex).norm(dim=-1) / v_ex.norm(dim=-1)).max()),
        "paper_step_rel_diff_f64": float(((step_cg - step_ex).norm(dim=-1) / step_ex.norm(dim=-1)).max()),
        "min_cosine_f64": float(torch.nn.functional.cosine_similarity(v_cg, v_ex, dim=-1).min()),
    }


if __name__ == "__main__":
    raise SystemExit(main(solve))
