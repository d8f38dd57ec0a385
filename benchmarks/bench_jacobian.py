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
"""

from __future__ import annotations

import torch

import _common as cm
from harness import Context, benchmark, main


@benchmark(
    name="jacobian",
    title="What one batched Jacobian evaluation costs, per route (all C rows, C - 1 rows, vmap)",
    units={
        "model": "",
        "batch": "count",
        "forward_s": "s",
        "full_s": "s",
        "reference_s": "s",
        "vmap_s": "s",
        "full_in_forwards": "forward passes",
        "reference_over_full": "ratio",
        "vmap_over_full": "ratio",
    },
    key=("model", "batch"),
    sizes={
        "smoke": {"models": "resnet20", "batch_sizes": "2", "repeats": 1},
        "small": {"models": "resnet20,cnn-a-mix", "batch_sizes": "16", "repeats": 3},
        "full": {"models": "resnet20,cnn-a-mix,shufflenetv2-x0.5", "batch_sizes": "16,64", "repeats": 5},
    },
)
def jacobian(ctx: Context) -> list[dict]:
    rows: list[dict] = []
    for name in cm.names(ctx.params.models):
        rows += run_model(name, cm.numbers(ctx.params.batch_sizes), ctx.params.repeats)
    return rows


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
        print(f"[jacobian] {name} B={b}: full {full:.4f} s, C - 1 rows x{ref / full:.2f}, vmap x{vm / full:.2f}")
    return rows


if __name__ == "__main__":
    raise SystemExit(main(jacobian))
