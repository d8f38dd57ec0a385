"""How converged is the L2 distance at the class change? Step-size convergence against a tight trace.

The FR length of a natural-gradient path is fixed by the p-space flow (the closed form, where it
holds); the L2 distance ||x_end - x0|| at the class change depends on the input-space path,
which the predictor-corrector follows only within the row space of J at each step's start.
For each model, the first N correctly classified official test images are traced to all 9
other classes with a tight reference (``eta=0.02, logit_step=0.05`` by default, up to 5,000
steps) and with the default step sizes scaled by 1, 1/2, 1/4, 1/8 (``eta`` and ``logit_step``
together). Per setting, on the paths ``ok`` in both: relative L2 difference to the reference
(median and p90 of its absolute value, mean signed bias), FR-length difference (median),
first-hit agreement, and Jacobian evaluations per path (mean).

Usage: .venv/bin/python benchmarks/bench_l2.py [--images 4] [--models resnet20,cnn-a-mix]
       [--reference 0.02,0.05] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_l2"
SCALES = (1.0, 0.5, 0.25, 0.125)


def run_model(name: str, n: int, reference: tuple[float, float], batch_size: int) -> list[dict]:
    from frmargin.paths import trace_paths
    from frmargin.paths.options import ACCURACY_DEFAULTS as DEFAULTS

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
    for scale in SCALES:
        eta, logit_step = DEFAULTS["eta"] * scale, DEFAULTS["logit_step"] * scale
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
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4, help="correctly classified images (9 paths each)")
    ap.add_argument("--models", default="resnet20,cnn-a-mix")
    ap.add_argument("--reference", default="0.02,0.05", help="eta,logit_step of the tight trace")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="bench_l2.json", help="file name in benchmarks/results/")
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    cm.setup_env()
    eta_ref, step_ref = (float(v) for v in args.reference.split(","))
    rows = []
    for name in args.models.split(","):
        for row in run_model(name, args.images, (eta_ref, step_ref), args.batch_size):
            print(json.dumps(row), flush=True)
            rows.append(row)
    cm.RESULTS.mkdir(exist_ok=True)
    (cm.RESULTS / args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
