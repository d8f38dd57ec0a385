"""Exact low-rank solve vs conjugate gradients for one paper-mode step on ResNet-20.

Speed (float32, as the tool runs): ``trace_paths(method="paper", solver=..., max_steps=S)`` on B
paths from B distinct correctly classified images (one target each, the runner-up class), with
the tracer instrumented so that the time of each paper step is measured on its own (the initial
forward pass of the tracer is excluded). Warm-up trace first, then the median over repeats.
Units: seconds per step, the CG/exact ratio, the step in units of one batched Jacobian
evaluation of the same batch, and Fisher matvecs per path (CG: Krylov estimate of the largest
eigenvalue for relative damping, C matvecs, plus the CG iterations).

Agreement (float64): ``DataFisher(model.double(), x.double()).solve(g, damping, method=...)``
with g the gradient of log p_y - log p_k, for ``exact`` and ``cg``; reported as
||v_cg - v_exact|| / ||v_exact|| per image (max over the batch), and the same for the normalized
paper step delta = v / sqrt(g^T v). The float32 tracer steps are compared the same way.

Usage: .venv/bin/python benchmarks/bench_solve.py [--images 4] [--steps 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_solve"


def paper_step_time(model, x, source, target, solver: str, steps: int, damping: float, repeats: int) -> dict:
    from frmargin.paths import trace_paths

    trace_paths(model, x, source, target, method="paper", solver=solver, max_steps=1, damping=damping)  # warm-up
    per_step, jac_in, res = [], [], None
    for _ in range(repeats):
        with cm.instrument() as rec:
            res = trace_paths(model, x, source, target, method="paper", solver=solver, max_steps=steps, damping=damping)
        per_step.append(statistics.median(s["time"] for s in rec.steps))
        jac_in.append(statistics.median(s["jac_time"] for s in rec.steps))
    return {
        "step_s": statistics.median(per_step),
        "jacobian_in_step_s": statistics.median(jac_in),
        "step_s_all": per_step,
        "matvecs_per_path_step": float(res.matvecs.double().mean() / max(float(res.steps.double().mean()), 1)),
        "jacobian_evals_per_path_step": float(res.jacobian_evals.mean() / max(float(res.steps.double().mean()), 1)),
        "x_end": res.x_end,
        "steps": float(res.steps.double().mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4, help="distinct images = paths (batch)")
    ap.add_argument("--steps", type=int, default=1, help="paper steps per timed trace (max_steps)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--damping", type=float, default=1e-3, help="relative damping (paper-mode default)")
    ap.add_argument("--data", default="cifar10-exact")
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    info = cm.device_info()
    model = cm.load_model()
    x, y = cm.correct_images(model, args.data, args.images)
    with torch.no_grad():
        z = model(x)
    target = z.scatter(1, y[:, None], -float("inf")).argmax(-1)  # runner-up class
    B = x.shape[0]
    print(
        f"[{NAME}] {B} paths (distinct images), {args.steps} paper step(s); device: {cm.device_line(info)}", flush=True
    )

    out = {}
    for solver in ("exact", "cg"):
        out[solver] = paper_step_time(model, x, y, target, solver, args.steps, args.damping, args.repeats)
        print(
            f"[{NAME}] {solver}: {out[solver]['step_s']:.3f} s/step, {out[solver]['matvecs_per_path_step']:.0f} matvecs/path",
            flush=True,
        )
    ratio = out["cg"]["step_s"] / out["exact"]["step_s"]
    d_ex = (out["exact"]["x_end"] - x).flatten(1).double()
    d_cg = (out["cg"]["x_end"] - x).flatten(1).double()
    f32_diff = float(((d_cg - d_ex).norm(dim=-1) / d_ex.norm(dim=-1)).max())

    # float64 agreement of the solve itself
    from frmargin.fisher import DataFisher, logits_and_jacobian

    m64 = copy.deepcopy(model).double()
    x64 = x.double()
    _, J = logits_and_jacobian(m64, x64)
    a = torch.zeros(B, z.shape[-1], dtype=torch.float64)
    a.scatter_(1, y[:, None], 1.0)
    a.scatter_(1, target[:, None], -1.0)
    g = (J.transpose(-1, -2) @ a[:, :, None])[:, :, 0].reshape(x64.shape)  # grad of log p_y - log p_k
    F = DataFisher(m64, x64)
    t0 = time.perf_counter()
    v_ex = F.solve(g, args.damping, "relative", method="exact").flatten(1)
    t_ex64 = time.perf_counter() - t0
    t0 = time.perf_counter()
    v_cg = F.solve(g, args.damping, "relative", method="cg").flatten(1).double()
    t_cg64 = time.perf_counter() - t0
    gf = g.flatten(1)
    rel_v = float(((v_cg - v_ex).norm(dim=-1) / v_ex.norm(dim=-1)).max())
    step_ex = v_ex / (gf * v_ex).sum(-1, keepdim=True).sqrt()
    step_cg = v_cg / (gf * v_cg).sum(-1, keepdim=True).sqrt()
    rel_step = float(((step_cg - step_ex).norm(dim=-1) / step_ex.norm(dim=-1)).max())
    cos = float(torch.nn.functional.cosine_similarity(v_cg, v_ex, dim=-1).min())

    tj = out["exact"]["jacobian_in_step_s"]  # measured inside the exact steps (same moment, robust to load)
    rows = [
        {
            "solver": s,
            "step_s": out[s]["step_s"],
            "step_in_jacobian_units": out[s]["step_s"] / tj,
            "matvecs_per_path_step": out[s]["matvecs_per_path_step"],
            "jacobian_evals_per_path_step": out[s]["jacobian_evals_per_path_step"],
        }
        for s in ("exact", "cg")
    ]
    agree = [
        {"quantity": "max rel. diff of v = (G + lam I)^-1 g, float64", "value": rel_v},
        {"quantity": "max rel. diff of the paper step v / sqrt(g^T v), float64", "value": rel_step},
        {"quantity": "min cosine(v_cg, v_exact), float64", "value": cos},
        {"quantity": "max rel. diff of the float32 tracer steps (x_end - x0)", "value": f32_diff},
        {"quantity": "float64 solve time exact (s, one call, incl. Jacobian)", "value": t_ex64},
        {"quantity": "float64 solve time cg (s, one call)", "value": t_cg64},
    ]
    md = "\n".join(
        [
            f"# {NAME}: exact solve vs CG, one paper-mode step (ResNet-20, {args.data})\n",
            f"Device: {cm.device_line(info)}\n",
            f"{B} paths from distinct images (target = runner-up class), relative damping {args.damping:g}, "
            f"max_steps={args.steps}; median of {args.repeats} timed traces after a warm-up. "
            f"Jacobian-eval unit: the median time of the batched Jacobian evaluation of {B} points measured "
            f"inside the exact steps = {tj:.3f} s.\n",
            cm.markdown_table(rows),
            f"\nCG / exact time ratio: **{ratio:.2f}**\n",
            "\n## Agreement\n",
            cm.markdown_table(agree),
        ]
    )
    payload = {"device": info, "args": vars(args), "timing": rows, "ratio_cg_over_exact": ratio, "agreement": agree}
    cm.publish(
        NAME, payload, md, f"cg/exact = {ratio:.2f}; rel diff v {rel_v:.2e}, step {rel_step:.2e}, f32 {f32_diff:.2e}"
    )
    payload["summary"] = [
        cm.figure(
            NAME,
            "paper step, exact solve",
            out["exact"]["step_s"],
            "s/step",
            f"{B} paths; {rows[0]['step_in_jacobian_units']:.2f} Jacobian-eval units",
        ),
        cm.figure(
            NAME,
            "paper step, CG",
            out["cg"]["step_s"],
            "s/step",
            f"{rows[1]['matvecs_per_path_step']:.0f} matvecs/path; {rows[1]['step_in_jacobian_units']:.2f} Jacobian-eval units",
        ),
        cm.figure(NAME, "CG / exact step time", ratio, "ratio"),
        cm.figure(
            NAME,
            "exact vs CG direction, float64",
            rel_v,
            "max rel. diff",
            f"paper step {rel_step:.2e}; min cosine {cos:.8f}",
        ),
        cm.figure(NAME, "exact vs CG tracer step, float32", f32_diff, "max rel. diff"),
    ]
    for p in payload["timing"]:
        p.pop("x_end", None)
    return payload


if __name__ == "__main__":
    main()
