"""Side by side on the same images and threads: frmargin (converged, and paper mode with CG),
foolbox DeepFool (with the overshoot bisection) and FMN (started from it), and torchattacks
DeepFool when it is installed (bench-only: ``pip install --no-deps torchattacks``).

For every method: wall seconds, the same time in units of one batched logit Jacobian of the
images (measured in this process: warm-up, then the median of 3), the median L2 distance at the
class change (frmargin: over the 9 paths of an image, the smallest) and the success rate. The
frmargin rows trace all 9 targets of each image; the attacks look for the nearest change.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import _common as cm
from harness import Context, Output, benchmark, main


@benchmark(
    name="peers",
    title="frmargin against foolbox DeepFool and FMN (and torchattacks DeepFool) on the same images and threads",
    units={
        "method": "",
        "wall_s": "s",
        "jacobian_units": "Jacobian evaluations",
        "ratio_to_deepfool": "ratio",
        "median_l2": "L2",
        "success_pct": "%",
        "paths_ok_pct": "%",
        "jacobians_per_path": "Jacobian evaluations",
        "note": "",
    },
    key=("method",),
    sizes={
        "smoke": {"images": 1, "model": "resnet20", "paper": False},
        "small": {"images": 4, "model": "resnet20", "paper": False},
        "full": {"images": 16, "model": "resnet20", "paper": True},
    },
)
def peers(ctx: Context) -> Output:
    p = ctx.params
    model = cm.load_model(p.model)
    x, y = cm.correct_images(model, "cifar10", p.images)
    unit = jacobian_unit(model, x)
    rows = [frmargin_row(model, x, y, "frmargin converged")]
    if p.paper:
        rows.append(frmargin_row(model, x, y, "frmargin paper (CG)", method="paper", solver="cg"))
    rows += [attack_row(model, x, y, "deepfool"), attack_row(model, x, y, "fmn"), torchattacks_row(model, x, y)]
    deepfool = next(r["wall_s"] for r in rows if r["method"] == "foolbox deepfool")
    for r in rows:
        if "wall_s" in r:
            r["jacobian_units"] = r["wall_s"] / unit
            r["ratio_to_deepfool"] = r["wall_s"] / deepfool
    notes = (
        f"Model {p.model}, {len(y)} correctly classified official test images; Jacobian unit = one batched logit "
        f"Jacobian of the {len(y)} images = {unit:.4f} s. frmargin traces all 9 targets of each image (median_l2: "
        "the smallest per image); the attacks look for the nearest change."
    )
    return Output(rows, notes)


def jacobian_unit(model, x: torch.Tensor) -> float:
    """Seconds of one batched logit Jacobian of x (B, *S): the cost unit."""
    from frmargin.fisher import logits_and_jacobian

    return cm.timeit(lambda: logits_and_jacobian(model, x), warmup=1, repeats=3)["median"]


def frmargin_row(model, x, y, label: str, **kwargs) -> dict:
    from frmargin import trace_paths

    X, source, target = cm.all_target_paths(x, y, 10)
    t0 = time.perf_counter()
    res = trace_paths(model, X, source, target, **kwargs)
    wall = time.perf_counter() - t0
    l2 = torch.where(res.success, res.l2.double(), torch.full_like(res.l2.double(), float("inf")))
    per_image = l2.view(len(y), 9).min(-1).values
    ok = np.array(res.status) == "ok"
    return {
        "method": label,
        "wall_s": wall,
        "median_l2": float(per_image[torch.isfinite(per_image)].median()),
        "success_pct": 100.0 * float(torch.isfinite(per_image).double().mean()),
        "paths_ok_pct": 100.0 * ok.mean(),
        "jacobians_per_path": float(res.jacobian_evals.double().mean()),
    }


def attack_row(model, x, y, attack: str) -> dict:
    from frmargin import min_l2_attack

    t0 = time.perf_counter()
    res = min_l2_attack(model, x, y, attack)
    wall = time.perf_counter() - t0
    d = res.distance.double()
    fin = torch.isfinite(d) & (d > 0)
    return {
        "method": f"foolbox {attack}",
        "wall_s": wall,
        "median_l2": float(d[fin].median()) if fin.any() else float("nan"),
        "success_pct": 100.0 * float(fin.double().mean()),
    }


def torchattacks_row(model, x, y) -> dict:
    try:
        import torchattacks
    except ImportError:
        return {"method": "torchattacks deepfool", "note": "not installed (pip install --no-deps torchattacks)"}
    atk = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
    t0 = time.perf_counter()
    adv = atk(x, y)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        flipped = model(adv).argmax(-1) != y
    d = (adv - x).flatten(1).norm(dim=-1).double()
    return {
        "method": "torchattacks deepfool",
        "wall_s": wall,
        "median_l2": float(d[flipped].median()) if flipped.any() else float("nan"),
        "success_pct": 100.0 * float(flipped.double().mean()),
    }


if __name__ == "__main__":
    raise SystemExit(main(peers))
