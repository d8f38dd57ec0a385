"""Closed-form margins for a whole dataset vs one inference pass over it.

On ``cifar10-jpeg`` (10,000 images) with ResNet-20:
- inference: logits of every image (batches of ``batch``, no_grad);
- closed form: from those logits, softmax (float64), ``predicted_path`` for the 9 targets of
  every image (90,000 paths: length and first hit) and ``margin_lower_bound`` per image.
Both timed after a warm-up (one inference batch; one closed-form call), median of ``repeats``.
Reported: both times, the closed form in units of one inference pass, and (inference + closed
form) / inference, which must stay close to 1: the closed-form predictions cost far less than
the forward passes they need.
"""

from __future__ import annotations

import torch

import _common as cm
from harness import Context, benchmark, main


@benchmark(
    name="closed_form",
    title="Closed-form margins of a whole dataset against one inference pass over it (ResNet-20)",
    units={
        "data": "",
        "images": "count",
        "predicted_paths": "paths",
        "inference_s": "s",
        "inference_min_s": "s",
        "closed_form_s": "s",
        "closed_form_min_s": "s",
        "closed_form_in_inference_passes": "inference passes",
        "total_over_inference": "ratio",
        "inference_us_per_image": "us",
        "closed_form_us_per_image": "us",
        "lower_bound_gap_median": "relative",
        "shielded_share": "share",
    },
    key=("data", "images"),
    sizes={
        "smoke": {"data": "cifar10-jpeg", "images": 200, "batch": 100, "repeats": 1},
        "small": {"data": "cifar10-jpeg", "images": 2000, "batch": 500, "repeats": 2},
        "full": {"data": "cifar10-jpeg", "images": 10000, "batch": 500, "repeats": 3},
    },
)
def closed_form(ctx: Context) -> list[dict]:
    from frmargin import load_dataset, margin_lower_bound, predicted_path

    p = ctx.params
    model = cm.load_model()
    x = load_dataset(p.data, progress=False).images[: p.images]
    N = x.shape[0]

    def infer():
        with torch.no_grad():
            return torch.cat([model(x[i : i + p.batch]) for i in range(0, N, p.batch)])

    def closed(z):
        probs = torch.softmax(z.to(torch.float64), -1)
        C = probs.shape[-1]
        y = probs.argmax(-1)
        k = torch.arange(C).expand(N, C)
        k = k[k != y[:, None]].reshape(N, C - 1)  # the C - 1 other classes of every image
        length, hit = predicted_path(probs.repeat_interleave(C - 1, 0), y.repeat_interleave(C - 1), k.reshape(-1))
        lb = margin_lower_bound(probs, y)
        return length.view(N, C - 1), hit.view(N, C - 1), lb

    with torch.no_grad():
        model(x[: p.batch])  # warm-up: one batch
    t_inf = cm.timeit(infer, warmup=0, repeats=p.repeats)
    z = infer()
    t_cf = cm.timeit(lambda: closed(z), warmup=1, repeats=p.repeats)
    length, hit, lb = closed(z)
    # sanity: min over targets of the predicted length equals the lower bound (docs/method.md)
    gap = float(((length.min(-1).values - lb).abs() / lb.clamp_min(1e-12)).median())
    others = torch.stack([torch.tensor([c for c in range(10) if c != int(s)]) for s in z.argmax(-1)])
    shielded = float((hit != others).double().mean())
    return [
        {
            "data": p.data,
            "images": N,
            "predicted_paths": N * 9,
            "inference_s": t_inf["median"],
            "inference_min_s": t_inf["min"],
            "closed_form_s": t_cf["median"],
            "closed_form_min_s": t_cf["min"],
            "closed_form_in_inference_passes": t_cf["median"] / t_inf["median"],
            "total_over_inference": (t_inf["median"] + t_cf["median"]) / t_inf["median"],
            "inference_us_per_image": t_inf["median"] / N * 1e6,
            "closed_form_us_per_image": t_cf["median"] / N * 1e6,
            "lower_bound_gap_median": gap,
            "shielded_share": shielded,
        }
    ]


if __name__ == "__main__":
    raise SystemExit(main(closed_form))
