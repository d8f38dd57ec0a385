"""Step control across the model zoo: status counts and Jacobians per path, per model.

For each model, the first N correctly classified images of the official CIFAR-10 test split
(``cifar10``; the lossless copy of the mirror when the split is not installed) are traced to all
9 other classes at the default options, and per model the benchmark reports:

- status counts (``ok``, ``budget``, ``stalled``, ...) and the share of ``ok`` paths;
- Jacobian evaluations per path: median, 95th percentile, p95 / median, mean, max; forward
  passes per path (mean);
- accuracy of the ``ok`` paths against the closed form ``predicted_path``: relative FR-length
  error (median, p90, max), first-hit agreement, share of lengths >= ``margin_lower_bound``;
- wall seconds, and their shares in Jacobian evaluations, forward passes and the rest (the
  tracer's own work: issue 16 asks for the rest <= 15%), and the share spent in iterations with
  fewer than 16 paths still running (the tail of long paths).

Issue 16's goals: >= 99.5% of paths ``ok`` on every model and Jacobians per path at p95 <= 3x
the median.

Models and images come from the shared set-up of ``_common`` (``load_model``,
``correct_images``, ``all_target_paths``).

Usage: .venv/bin/python benchmarks/bench_zoo_steps.py [--images 8] [--models cnn-a-adv2,resnet20] [--max-steps 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_zoo_steps"
#: iterations with fewer paths running than this make the tail (``share_tail``)
TAIL = 16
MODELS = ("cnn-a-adv2", "cnn-a-adv4", "cnn-a-mix", "shufflenetv2-x0.5", "resnet20-b", "resnet20")


def run_model(name: str, n: int, batch_size: int, max_steps: int | None = None) -> dict:
    from frmargin.geometry import margin_lower_bound, predicted_path
    from frmargin.paths import trace_paths

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
    status = np.array(res.status)
    ok = status == "ok"
    jac = res.jacobian_evals.numpy()
    fr = res.fr_length.numpy()
    err = np.abs(fr - length.numpy()) / length.numpy()
    counts = {s: int((status == s).sum()) for s in sorted(set(status))}
    med = float(np.median(jac))
    return {
        "model": name,
        "paths": len(status),
        "median_confidence": float(p.max(-1).values.median()),
        "status": " ".join(f"{k}={v}" for k, v in counts.items()),
        "ok_pct": 100.0 * ok.mean(),
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
        "ge_lb_pct": 100.0 * float((fr[ok] >= lb.numpy()[ok] - 1e-9).mean()),
        "wall_s": wall,
        # where the tracing time went: Jacobian evaluations, forward passes, the rest (issue 16:
        # the rest <= 15%)
        "share_jacobian": rec.jac_time / wall,
        "share_forward": rec.fwd_time / wall,
        "share_other": 1 - (rec.jac_time + rec.fwd_time) / wall,
        # the tail: tracer iterations with fewer than TAIL paths still running
        "share_tail": sum(it["time"] for it in rec.steps if it["active"] < TAIL) / wall,
    }


COLUMNS = [
    "model",
    "paths",
    "median_confidence",
    "status",
    "ok_pct",
    "jac_median",
    "jac_p95",
    "jac_p95_over_median",
    "jac_mean",
    "jac_max",
    "fwd_mean",
    "err_median",
    "err_p90",
    "err_max",
    "first_hit_pct",
    "ge_lb_pct",
    "wall_s",
    "share_jacobian",
    "share_forward",
    "share_other",
    "share_tail",
]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8, help="correctly classified images per model")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of model names")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-steps", type=int, default=None, help="step budget per path (default: the tracer's, 200)")
    ap.add_argument("--out", default=NAME, help=f"results file stem under benchmarks/results (default {NAME})")
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.setup_env()
    cm.apply_threads(args.threads)
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        try:
            rows.append(run_model(name, args.images, args.batch_size, args.max_steps))
        except Exception as err:  # a model missing from this install must not lose the others
            rows.append({"model": name, "status": f"unavailable: {type(err).__name__}: {str(err)[:120]}"})
        print(cm.markdown_table(rows[-1:], COLUMNS), flush=True)
    info = cm.device_info()
    md = "\n".join(
        [
            "# Step control across the model zoo\n",
            f"Device: {cm.device_line(info)}\n",
            f"{args.images} images x 9 targets per model, default options"
            + ("" if args.max_steps is None else f" but max_steps={args.max_steps}")
            + ". Goals: ok >= 99.5%,"
            " Jacobians per path p95 <= 3x median.\n",
            cm.markdown_table(rows, COLUMNS),
        ]
    )
    summary = [
        cm.figure(
            NAME,
            f"{r['model']}: ok % / Jacobians p95 / median",
            f"{r['ok_pct']:.1f} / {r['jac_p95_over_median']:.2f}",
            "",
        )
        for r in rows
        if "ok_pct" in r
    ]
    payload = {"device": info, "images": args.images, "max_steps": args.max_steps, "models": rows, "summary": summary}
    print(md)
    cm.save(args.out, payload, md)
    return payload


if __name__ == "__main__":
    main()
