"""Traced paths against the closed form on a window of official test images, and a re-trace of
a run's paths whose first hit disagrees with it.

Window mode: every correctly classified image of ``--images`` starting at ``--start`` of
``--data``, to every other class, traced at the defaults; prints statuses, Jacobian evaluations
per path (mean, median, p95), the relative error of the FR length against the closed form
(median, p90, max), the share of paths whose first hit is the closed form's, and the shielded %
traced and predicted. Run it with ``PYTHONPATH`` pointing at two checkouts to compare code.

Re-trace mode (``--run DIR``): the paths of a finished run whose first hit differs from the
closed form's (paths that did not end ``ok`` have none), traced again with this code at the
run's ``top_classes``, batch size and accuracy options; prints the run's and the re-trace's
statuses, per image the source's confidence.

Usage: .venv/bin/python benchmarks/bench_agreement.py [--model resnet20] [--start 2100] [--images 24]
       .venv/bin/python benchmarks/bench_agreement.py --run runs/fisher
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm


def window(model_name: str, data: str, start: int, n: int) -> str:
    from frmargin.geometry import predicted_path
    from frmargin.paths import trace_paths

    model = cm.load_model(model_name)
    x, y = cm.first_images(data, start + n)
    x, y, p = cm.correct_subset(model, x[start:], y[start:], n)
    C = p.shape[-1]
    img, s, t = cm.other_class_paths(y, C)
    res = trace_paths(model, x[img], s, t)
    length, hit = predicted_path(p[img].double(), s, t)
    ok = res.success
    rel = ((res.fr_length - length) / length).abs()[ok]
    je = res.jacobian_evals.double()
    statuses = {k: res.status.count(k) for k in sorted(set(res.status))}
    return (
        f"{model_name} images {start}..{start + n - 1} ({x.shape[0]} correct), {len(s)} paths {statuses}; "
        f"Jacobians/path mean {je.mean():.2f} median {je.median():.2f} p95 {cm.quantile(je.tolist(), 0.95):.2f}; "
        f"FR error vs closed form median {rel.median():.2e} p90 {cm.quantile(rel.tolist(), 0.9):.2e} max {rel.max():.2e}; "
        f"first hit = closed form {100 * (res.first_hit == hit)[ok].double().mean():.2f}%; "
        f"shielded {100 * (res.first_hit != t)[ok].double().mean():.2f}% (closed form {100 * (hit != t).double().mean():.2f}%)"
    )


def retrace(run: Path) -> str:
    import pandas as pd

    import frmargin
    from frmargin.paths import trace_paths
    from frmargin.runs.folder import load_run

    r = load_run(run)
    paths = r.paths
    off = paths[paths["first_hit"] != paths["predicted_first_hit"]]
    if off.empty:
        return f"{run}: every first hit agrees with the closed form"
    model = cm.load_model(r.info["model"])
    data = frmargin.load_dataset(r.info["data"], progress=False)
    x = data.images[torch.as_tensor(off["image_index"].to_numpy().copy())]
    config = r.info.get("config", {})
    options = dict(config.get("accuracy") or {})
    if config.get("max_steps") is not None:
        options["max_steps"] = config["max_steps"]
    res = trace_paths(model, x, torch.as_tensor(off["source"].to_numpy().copy()),
                      torch.as_tensor(off["target"].to_numpy().copy()), top_classes=r.info.get("top_classes"),
                      batch_size=config.get("batch_size", 128), **options)  # fmt: skip
    images = off.groupby("image_index")["confidence"].first().round(3).to_dict()
    agree = int((res.first_hit.numpy() == off["predicted_first_hit"].to_numpy()).sum())
    rel = (res.fr_length.numpy() - off["predicted_length"].to_numpy()) / off["predicted_length"].to_numpy()
    return (
        f"{run}: {len(off)} paths disagree in the run (statuses {off['status'].value_counts().to_dict()}; "
        f"images and confidence {images}); re-traced: first hit = closed form on {agree}, statuses "
        f"{pd.Series(res.status).value_counts().to_dict()}, |FR error| max {abs(rel).max():.2e}, "
        f"Jacobians/path {res.jacobian_evals.double().mean():.1f} (in the run {off['jacobian_evals'].mean():.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--start", type=int, default=2100)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--run", type=Path, default=None, help="re-trace the disagreeing paths of this run folder")
    cm.add_thread_arg(ap)
    args = ap.parse_args()
    cm.apply_threads(args.threads)
    cm.setup_env()
    print(retrace(args.run) if args.run else window(args.model, args.data, args.start, args.images))


if __name__ == "__main__":
    main()
