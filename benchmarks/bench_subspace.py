"""Paths in a perturbation model's subspace: which route computes J B, and what a path costs.

``routes``: for each model and K, on a batch of 9 official test images, the median wall time
of the rows of J B (the C - 1 rows the tracer evaluates) by K forward-mode products (``jvp``)
and by the reverse rows through u -> x0 + B u (``reverse``), in forward passes of the batch and
in units of one pixel Jacobian (the C - 1 rows in x). The tracer takes the jvp route below
``paths.subspace.FORWARD_BELOW`` x (C - 1) directions.

``paths``: for each model and perturbation model (dct:K for K in ``ks``, and pixels), every
(image, other class) natural-gradient path from the first ``images`` correctly classified
images: Jacobian evaluations and forward passes per path, seconds per path, and the seconds in
units of one pixel Jacobian of one image (measured in the same process), with the statuses.
"""

from __future__ import annotations

import time

import torch

import _common as cm
from harness import Context, benchmark, main


@benchmark(
    name="subspace",
    title="Paths in a perturbation model's subspace: the route of J B, and the cost per path for K in {4, 16, full}",
    units={
        "part": "",
        "model": "",
        "perturbation": "",
        "k": "count",
        "jvp_in_forwards": "forward passes",
        "reverse_in_forwards": "forward passes",
        "jvp_in_jacobians": "pixel Jacobians",
        "reverse_in_jacobians": "pixel Jacobians",
        "paths": "count",
        "jacobians_per_path": "Jacobian evaluations",
        "forward_per_path": "forward passes",
        "s_per_path": "s",
        "path_in_jacobians": "pixel Jacobians",
        "status": "",
    },
    key=("part", "model", "perturbation"),
    sizes={
        "smoke": {"models": "resnet20", "route_ks": "1,4", "ks": "4", "images": 1, "max_steps": 5, "repeats": 1},
        "full": {
            "models": "resnet20,cnn-a-adv2",
            "route_ks": "1,2,4,8,16",
            "ks": "4,16,full",
            "images": 4,
            "max_steps": 200,
            "repeats": 5,
        },
    },
)
def subspace(ctx: Context) -> list[dict]:
    rows: list[dict] = []
    for name in cm.names(ctx.params.models):
        model = cm.load_model(name)
        rows += routes(name, model, cm.numbers(ctx.params.route_ks), ctx.params.repeats)
        rows += paths(name, model, cm.names(ctx.params.ks), ctx.params.images, ctx.params.max_steps)
    return rows


def _pixel_jacobian(model, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of the C - 1 reference rows at x (the tracer's Jacobian evaluation)."""
    from frmargin.fisher import logits_and_jacobian

    with torch.no_grad():
        C = int(model(x[:1]).shape[-1])
    return cm.timeit(lambda: logits_and_jacobian(model, x, reference=C - 1), repeats=repeats)["median"]


def routes(name: str, model, ks: list[int], repeats: int) -> list[dict]:
    from frmargin.fisher import logits_and_jacobian
    from frmargin.paths.subspace import subspace_rows
    from frmargin.perturbation.bases import build_subspace

    x, _ = cm.correct_images(model, "cifar10", 9)
    with torch.no_grad():
        C = int(model(x[:1]).shape[-1])
        fwd = cm.timeit(lambda: model(x), repeats=max(repeats, 5))["median"]
    jac = _pixel_jacobian(model, x, repeats)
    rows = []
    idx = torch.arange(x.shape[0])
    for k in ks:
        sub = build_subspace(f"dct:{k}", x)
        u = torch.zeros(x.shape[0], k)
        jvp_s = cm.timeit(lambda sub=sub, u=u: subspace_rows(model, sub.embed(idx, u), sub.directions(idx), reference=C - 1), repeats=repeats)["median"]  # fmt: skip
        rev_s = cm.timeit(lambda sub=sub, u=u: logits_and_jacobian(lambda v: model(sub.embed(idx, v)), u, reference=C - 1), repeats=repeats)["median"]  # fmt: skip
        rows.append(
            {
                "part": "routes",
                "model": name,
                "perturbation": f"dct:{k}",
                "k": k,
                "jvp_in_forwards": jvp_s / fwd,
                "reverse_in_forwards": rev_s / fwd,
                "jvp_in_jacobians": jvp_s / jac,
                "reverse_in_jacobians": rev_s / jac,
            }
        )
        print(f"[subspace] {name} K={k}: jvp {jvp_s / fwd:.1f}, reverse {rev_s / fwd:.1f} forward passes")
    return rows


def paths(name: str, model, ks: list[str], images: int, max_steps: int) -> list[dict]:
    from frmargin.paths import trace_paths
    from frmargin.perturbation.bases import describe

    x, y = cm.correct_images(model, "cifar10", images)
    with torch.no_grad():
        C = int(model(x[:1]).shape[-1])
    X, s, t = cm.all_target_paths(x, y, C)
    jac = _pixel_jacobian(model, x[:1], 5)
    rows = []
    for spec in [*(f"dct:{k}" for k in ks), "pixels"]:
        t0 = time.perf_counter()
        res = trace_paths(model, X, s, t, perturbation=spec, max_steps=max_steps)
        seconds = (time.perf_counter() - t0) / len(res)
        k = describe(spec, tuple(x.shape[1:]))["k"] if spec != "pixels" else x[0].numel()
        rows.append(
            {
                "part": "paths",
                "model": name,
                "perturbation": spec,
                "k": k,
                "paths": len(res),
                "jacobians_per_path": float(res.jacobian_evals.mean()),
                "forward_per_path": float(res.forward_evals.double().mean()),
                "s_per_path": seconds,
                "path_in_jacobians": seconds / jac,
                "status": cm.statuses(res.status),
            }
        )
        print(
            f"[subspace] {name} {spec}: {seconds:.2f} s = {seconds / jac:.0f} pixel Jacobians per path, {cm.statuses(res.status)}"
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main(subspace))
