"""Closed-form margins for a whole dataset vs one inference pass over it.

On ``cifar10-jpeg`` (10,000 images) with ResNet-20:
- inference: logits of every image (batches of ``--batch``, no_grad);
- closed form: from those logits, softmax (float64), ``predicted_path`` for the 9 targets of
  every image (90,000 paths: length and first hit) and ``margin_lower_bound`` per image.
Both timed after a warm-up (one inference batch; one closed-form call), median of ``--repeats``. Reported: both times, the closed form in
units of one inference pass, and (inference + closed form) / inference, which must stay close
to 1: the closed-form predictions cost far less than the forward passes they need.

Usage: .venv/bin/python benchmarks/bench_closed_form.py [--images 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_closed_form"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="cifar10-jpeg")
    ap.add_argument("--images", type=int, default=10000, help="first N images (default all 10,000)")
    ap.add_argument("--batch", type=int, default=500, help="inference batch size")
    ap.add_argument("--repeats", type=int, default=3)
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    cm.setup_env()
    from frmargin.data import load_dataset
    from frmargin.geometry import margin_lower_bound, predicted_path

    info = cm.device_info()
    model = cm.load_model()
    ds = load_dataset(args.data, progress=False)
    x = ds.images[: args.images]
    N = x.shape[0]
    print(f"[{NAME}] {N} images of {args.data}; device: {cm.device_line(info)}", flush=True)

    def infer():
        with torch.no_grad():
            return torch.cat([model(x[i : i + args.batch]) for i in range(0, N, args.batch)])

    def closed(z):
        p = torch.softmax(z.to(torch.float64), -1)
        C = p.shape[-1]
        y = p.argmax(-1)
        k = torch.arange(C).expand(N, C)
        k = k[k != y[:, None]].reshape(N, C - 1)  # the C - 1 other classes of every image
        length, hit = predicted_path(p.repeat_interleave(C - 1, 0), y.repeat_interleave(C - 1), k.reshape(-1))
        lb = margin_lower_bound(p, y)
        return length.view(N, C - 1), hit.view(N, C - 1), lb

    with torch.no_grad():
        model(x[: args.batch])  # warm-up: one batch
    t_inf = cm.timeit(infer, warmup=0, repeats=args.repeats)
    z = infer()
    t_cf = cm.timeit(lambda: closed(z), warmup=1, repeats=args.repeats)
    length, hit, lb = closed(z)
    # sanity: min over targets of the predicted length equals the lower bound (docs/method.md)
    gap = float(((length.min(-1).values - lb).abs() / lb.clamp_min(1e-12)).median())
    shielded = float(
        (hit != torch.stack([torch.tensor([c for c in range(10) if c != int(s)]) for s in z.argmax(-1)]))
        .double()
        .mean()
    )
    ratio = (t_inf["median"] + t_cf["median"]) / t_inf["median"]
    rows = [
        {"quantity": "inference pass (all images)", "value": t_inf["median"], "unit": "s", "min_s": t_inf["min"]},
        {
            "quantity": "closed form (softmax + predicted_path x9 + lower bound)",
            "value": t_cf["median"],
            "unit": "s",
            "min_s": t_cf["min"],
        },
        {"quantity": "closed form / inference", "value": t_cf["median"] / t_inf["median"], "unit": "inference passes"},
        {"quantity": "(inference + closed form) / inference", "value": ratio, "unit": "ratio"},
        {"quantity": "closed form per image", "value": t_cf["median"] / N * 1e6, "unit": "us"},
        {"quantity": "inference per image", "value": t_inf["median"] / N * 1e6, "unit": "us"},
        {"quantity": "predicted paths", "value": N * 9, "unit": "paths"},
        {"quantity": "median of abs(min over targets of predicted length - LB) / LB", "value": gap, "unit": "1"},
        {"quantity": "share of predicted paths shielded", "value": shielded, "unit": "share"},
    ]
    md = "\n".join(
        [
            f"# {NAME}: closed-form margins vs inference ({args.data}, ResNet-20)\n",
            f"Device: {cm.device_line(info)}\n",
            f"{N} images, inference batch {args.batch}; median of {args.repeats} after a warm-up.\n",
            cm.markdown_table(rows),
        ]
    )
    payload = {"device": info, "args": vars(args), "rows": rows, "inference": t_inf, "closed_form": t_cf}
    cm.publish(
        NAME, payload, md, f"inference {t_inf['median']:.2f} s, closed form {t_cf['median']:.4f} s, ratio {ratio:.4f}"
    )
    payload["summary"] = [
        cm.figure(NAME, f"inference pass, {N} images", t_inf["median"], "s"),
        cm.figure(
            NAME,
            f"closed-form margins, {N} images x 9 targets",
            t_cf["median"],
            "s",
            f"{t_cf['median'] / t_inf['median']:.4f} inference passes",
        ),
        cm.figure(NAME, "(inference + closed form) / inference", ratio, "ratio", "must be <= 1 + small"),
    ]
    return payload


if __name__ == "__main__":
    main()
