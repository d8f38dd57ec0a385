"""How converged is the L2 distance at the class change? Step-size convergence against a tight trace.

The FR length of a natural-gradient path is fixed by the p-space flow (the closed form, where it
holds); the L2 distance ||x_end - x0|| at the class change depends on the input-space path,
which the predictor-corrector follows only within the row space of J at each step's start.
For each model, the first N correctly classified official test images are traced to all 9
other classes with a tight reference (``reference`` = "eta,logit_step", "0.02,0.05" at the full
size, up to 5,000 steps) and with the default step sizes scaled by each of ``scales`` (1, 1/2,
1/4, 1/8: ``eta`` and ``logit_step`` together). Per setting, on the paths ``ok`` in both:
relative L2 difference to the reference (median and p90 of its absolute value, mean signed
bias), FR-length difference (median), first-hit agreement, and Jacobian evaluations per path.
"""

from __future__ import annotations

import time

import torch

import _common as cm
from harness import Context, benchmark, main

#: the parameters of the full size (the published figures); the smaller sizes change a few
FULL = {"images": 4, "models": "resnet20,cnn-a-mix", "reference": "0.02,0.05", "scales": "1,0.5,0.25,0.125",
        "batch_size": 64}  # fmt: skip


@benchmark(
    name="l2",
    title="How converged is the L2 distance at the class change? Step sizes against a tight reference trace",
    units={
        "model": "",
        "setting": "",
        "paths": "count",
        "ok": "paths",
        "compared": "paths",
        "l2_rel_median": "relative",
        "l2_rel_p90": "relative",
        "l2_rel_bias": "relative",
        "fr_abs_median": "FR length",
        "first_hit_agree": "share",
        "jacobians_per_path": "Jacobian evaluations",
        "wall_s": "s",
    },
    key=("model", "setting"),
    sizes={
        "smoke": FULL | {"images": 1, "models": "resnet20", "reference": "0.2,0.5", "scales": "1"},
        "small": FULL | {"images": 2},
        "full": FULL,
    },
)
def l2(ctx: Context) -> list[dict]:
    p = ctx.params
    reference = tuple(cm.numbers(p.reference, float))
    if len(reference) != 2:
        raise SystemExit(f"--set reference: got {p.reference!r}, expected eta,logit_step")
    rows = []
    for name in cm.names(p.models):
        rows += run_model(name, p.images, reference, cm.numbers(p.scales, float), p.batch_size)
    return rows


def run_model(name: str, n: int, reference: tuple, scales: list[float], batch_size: int) -> list[dict]:
    from frmargin import trace_paths

    defaults = cm.accuracy_defaults()
    model = cm.load_model(name)
    x, y = cm.correct_images(model, "cifar10", n)
    X, source, target = cm.all_target_paths(x, y, 10)
    t0 = time.perf_counter()
    ref = trace_paths(
        model, X, source, target, eta=reference[0], logit_step=reference[1], max_steps=5000, batch_size=batch_size
    )
    rows = [
        {
            "model": name,
            "setting": f"reference eta={reference[0]}, logit_step={reference[1]}",
            "paths": len(ref),
            "ok": sum(st == "ok" for st in ref.status),
            "jacobians_per_path": float(ref.jacobian_evals.float().mean()),
            "wall_s": time.perf_counter() - t0,
        }
    ]
    ok_ref = torch.tensor([st == "ok" for st in ref.status])
    for scale in scales:
        eta, logit_step = defaults["eta"] * scale, defaults["logit_step"] * scale
        t0 = time.perf_counter()
        res = trace_paths(model, X, source, target, eta=eta, logit_step=logit_step, batch_size=batch_size)
        wall = time.perf_counter() - t0
        both = ok_ref & torch.tensor([st == "ok" for st in res.status])
        rel = ((res.l2 - ref.l2) / ref.l2)[both]
        rows.append(
            {
                "model": name,
                "setting": f"x{scale}: eta={eta:g}, logit_step={logit_step:g}",
                "paths": len(res),
                "ok": sum(st == "ok" for st in res.status),
                "compared": int(both.sum()),
                "l2_rel_median": float(rel.abs().median()),
                "l2_rel_p90": float(rel.abs().quantile(0.9)),
                "l2_rel_bias": float(rel.mean()),
                "fr_abs_median": float((res.fr_length - ref.fr_length)[both].abs().median()),
                "first_hit_agree": float((res.first_hit == ref.first_hit)[both].float().mean()),
                "jacobians_per_path": float(res.jacobian_evals.float().mean()),
                "wall_s": wall,
            }
        )
        print(f"[l2] {name} {rows[-1]['setting']}: L2 rel. median {rows[-1]['l2_rel_median']:.2e}", flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main(l2))
