"""Cost of one batched Jacobian evaluation per model and route, in the same process.

For each model and batch size, on the first correctly classified official test images (repeated
with a small perturbation where the batch is larger), the median wall time of:

- ``full``: ``logits_and_jacobian`` with every logit row (one forward pass, C backward passes
  through one retained graph: the CPU route);
- ``reference``: the rows of z_c - z_last (``reference=C - 1``), one backward pass fewer: what
  the tracer evaluates;
- ``vmap``: the C one-hot cotangents vmapped through one vjp (the CUDA route);
- ``forward``: one forward pass of the batch.

Ratios are taken within a model and batch, so they hold on a shared CPU better than the seconds.

Usage: .venv/bin/python benchmarks/bench_jacobian.py [--models resnet20,cnn-a-mix] [--batch-sizes 16,64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_jacobian"

COLUMNS = [
    "model",
    "batch",
    "forward_s",
    "full_s",
    "reference_s",
    "vmap_s",
    "full_in_forwards",
    "reference_over_full",
    "vmap_over_full",
]


def run_model(name: str, sizes: list[int], repeats: int) -> list[dict]:
    from frmargin.fisher import logits_and_jacobian

    model = cm.load_model(name)
    x0, _ = cm.correct_images(model, "cifar10", min(16, max(sizes)))
    with torch.no_grad():
        C = int(model(x0[:1]).shape[-1])
    rows = []
    for b in sizes:
        x = x0[torch.arange(b) % x0.shape[0]].clone()
        if b > x0.shape[0]:
            x = (x + 1e-3 * torch.rand_like(x)).clamp(0, 1)
        with torch.no_grad():
            fwd = cm.timeit(lambda x=x: model(x), repeats=max(repeats, 5))["median"]
        full = cm.timeit(lambda x=x: logits_and_jacobian(model, x, route="loop"), repeats=repeats)["median"]
        ref = cm.timeit(lambda x=x: logits_and_jacobian(model, x, route="loop", reference=C - 1), repeats=repeats)[
            "median"
        ]
        vm = cm.timeit(lambda x=x: logits_and_jacobian(model, x, route="vmap"), repeats=repeats)["median"]
        rows.append(
            {
                "model": name,
                "batch": b,
                "forward_s": fwd,
                "full_s": full,
                "reference_s": ref,
                "vmap_s": vm,
                "full_in_forwards": full / fwd,
                "reference_over_full": ref / full,
                "vmap_over_full": vm / full,
            }
        )
        print(cm.markdown_table(rows[-1:], COLUMNS), flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,cnn-a-mix,shufflenetv2-x0.5")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--repeats", type=int, default=5)
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.setup_env()
    cm.apply_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    rows: list[dict] = []
    for name in [m for m in args.models.split(",") if m]:
        rows += run_model(name, sizes, args.repeats)
    info = cm.device_info()
    md = "\n".join(
        [
            "# One batched Jacobian evaluation, per route\n",
            f"Device: {cm.device_line(info)}\n",
            cm.markdown_table(rows, COLUMNS),
        ]
    )
    summary = [
        cm.figure(NAME, f"{r['model']} B={r['batch']}: C - 1 rows / C rows", f"{r['reference_over_full']:.3f}", "")
        for r in rows
    ]
    payload = {"device": info, "rows": rows, "summary": summary}
    cm.publish(NAME, payload, md)
    return payload


if __name__ == "__main__":
    main()
