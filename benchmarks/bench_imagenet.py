"""MobileNetV2 on ImageNet: time and peak memory per path with m = 5, 10, 20 kept classes, and
one Jacobian evaluation with every class (1000 rows).

The first ``--images`` correctly classified images of ``imagenet-sample`` (224x224, D = 150528),
paths to the ``--targets`` most probable other classes (``top:K`` of a run). Each m runs in a
fresh process (``spawn``), so that its peak resident memory (``ru_maxrss``) is its own; the model
is loaded and one forward pass warms it up before the clock starts. Reported per m: seconds per
path, Jacobian evaluations and forward passes per path, seconds per Jacobian row (one backward
pass), peak RSS, statuses, and the FR length against the simplex lower bound and against the
closed-form prediction. The 1000-class row times a single Jacobian evaluation at one image (a full
path with every class costs about its steps times that; tracing one is not affordable on a CPU).

Usage: .venv/bin/python benchmarks/bench_imagenet.py [--images 1] [--targets 2] [--m 5,10,20] [--no-full]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_imagenet"
MODEL, DATA = "mobilenetv2-imagenet", "imagenet-sample"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(n_images: int, threads: int):
    cm.apply_threads(threads)
    model = cm.load_model(MODEL)
    x, _, p = cm.correct_subset(model, *cm.first_images(DATA, 4 * n_images + 8), n_images)
    return model, x, p


def _trace(args: tuple) -> dict:
    """One configuration in its own process: m kept classes (None: one full Jacobian evaluation)."""
    import torch

    from frmargin.fisher import logits_and_jacobian
    from frmargin.geometry import margin_lower_bound, predicted_path
    from frmargin.paths import trace_paths

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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--targets", type=int, default=2, help="paths per image, to the K most probable other classes")
    ap.add_argument("--m", default="5,10,20", help="comma list of kept classes")
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--no-full", action="store_true", help="skip the 1000-row Jacobian evaluation")
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    info = cm.device_info()
    configs = [int(v) for v in args.m.split(",") if v] + ([] if args.no_full else [None])
    rows = []
    ctx = mp.get_context("spawn")
    for m in configs:
        with ctx.Pool(1) as pool:
            row = pool.apply(_trace, ((m, args.images, args.targets, args.threads, args.max_steps),))
        print(f"[{NAME}] {row}", flush=True)
        rows.append(row)
    md = "\n".join(
        [
            f"# {NAME}: MobileNetV2 (1000 classes, D = 150528), top-m classes kept vs every class\n",
            f"Device: {cm.device_line(info)}\n",
            f"{args.images} image(s) of imagenet-sample x the {args.targets} most probable other classes; "
            "one process per row; peak RSS includes the model and data (rss_before_mb: after loading).\n",
            cm.markdown_table(rows),
        ]
    )
    payload = {"device": info, "args": vars(args), "rows": rows}
    cm.publish(NAME, payload, md)
    payload["summary"] = [
        cm.figure(NAME, f"MobileNetV2 path, top_classes={r['m']}", r["s_per_path"], "s/path",
                  f"peak RSS {r['peak_rss_mb']:.0f} MB, {r['jacobian_evals_per_path']:.1f} Jacobian evals/path")
        for r in rows if "s_per_path" in r
    ]  # fmt: skip
    return payload


if __name__ == "__main__":
    main()
