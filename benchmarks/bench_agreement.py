"""Traced paths against the closed form on a window of official test images, or a re-trace of
a run's paths whose first hit disagrees with it.

Window (``run`` None): every correctly classified image among ``images`` images from ``start``
of ``data``, to every other class, traced at the defaults; statuses, Jacobian evaluations per
path (mean, median, p95), the relative error of the FR length against the closed form (median,
p90, max), the share of paths whose first hit is the closed form's, and the shielded share
traced and predicted. Comparing two checkouts: run it in each, then ``compare.py``.

Re-trace (``--set run=DIR``): the paths of a finished run whose first hit differs from the closed
form's (paths that did not end ``ok`` have none), traced again with this code at the run's
``top_classes``, batch size and accuracy options: the run's and the re-trace's statuses, how many
first hits now agree, the largest FR error and the Jacobian evaluations per path of both.
"""

from __future__ import annotations

from pathlib import Path

import torch

import _common as cm
from harness import Context, benchmark, main


@benchmark(
    name="agreement",
    title="Traced paths against the closed form on a window of official test images",
    units={
        "model": "",
        "data": "",
        "start": "index",
        "images": "count",
        "run": "",
        "paths": "count",
        "statuses": "",
        "run_statuses": "",
        "jacobians_mean": "Jacobian evaluations",
        "jacobians_median": "Jacobian evaluations",
        "jacobians_p95": "Jacobian evaluations",
        "run_jacobians_mean": "Jacobian evaluations",
        "fr_err_median": "relative",
        "fr_err_p90": "relative",
        "fr_err_max": "relative",
        "first_hit_pct": "%",
        "first_hit_agree": "paths",
        "shielded_pct": "%",
        "shielded_predicted_pct": "%",
    },
    key=("model",),
    sizes={
        "smoke": {"model": "resnet20", "data": "cifar10", "start": 2100, "images": 1, "run": None},
        "small": {"model": "resnet20", "data": "cifar10", "start": 2100, "images": 8, "run": None},
        "full": {"model": "resnet20", "data": "cifar10", "start": 2100, "images": 24, "run": None},
    },
)
def agreement(ctx: Context) -> list[dict]:
    p = ctx.params
    return [retrace(Path(p.run)) if p.run else window(p.model, p.data, p.start, p.images)]


def window(model_name: str, data: str, start: int, n: int) -> dict:
    from frmargin import predicted_path, trace_paths

    model = cm.load_model(model_name)
    x, y = cm.first_images(data, start + n)
    x, y, p = cm.correct_subset(model, x[start:], y[start:], n)
    img, s, t = cm.other_class_paths(y, p.shape[-1])
    res = trace_paths(model, x[img], s, t)
    length, hit = predicted_path(p[img].double(), s, t)
    ok = res.success
    rel = ((res.fr_length - length) / length).abs()[ok]
    je = res.jacobian_evals.double()
    return {
        "model": model_name,
        "data": data,
        "start": start,
        "images": x.shape[0],
        "paths": len(s),
        "statuses": cm.statuses(res.status),
        "jacobians_mean": float(je.mean()),
        "jacobians_median": float(je.median()),
        "jacobians_p95": cm.quantile(je.tolist(), 0.95),
        "fr_err_median": float(rel.median()),
        "fr_err_p90": cm.quantile(rel.tolist(), 0.9),
        "fr_err_max": float(rel.max()),
        "first_hit_pct": 100 * float((res.first_hit == hit)[ok].double().mean()),
        "shielded_pct": 100 * float((res.first_hit != t)[ok].double().mean()),
        "shielded_predicted_pct": 100 * float((hit != t).double().mean()),
    }


def retrace(run: Path) -> dict:
    import frmargin
    from frmargin.runs.folder import load_run

    r = load_run(run)
    paths = r.paths
    off = paths[paths["first_hit"] != paths["predicted_first_hit"]]
    row = {"model": r.info["model"], "data": r.info["data"], "run": str(run), "paths": len(off)}
    row["images"] = int(off["image_index"].nunique())
    row["run_statuses"] = cm.statuses(off["status"])
    if off.empty:
        return row
    model = cm.load_model(r.info["model"])
    data = frmargin.load_dataset(r.info["data"], progress=False)
    x = data.images[torch.as_tensor(off["image_index"].to_numpy().copy())]
    config = r.info.get("config", {})
    options = dict(config.get("accuracy") or {})
    if config.get("max_steps") is not None:
        options["max_steps"] = config["max_steps"]
    res = frmargin.trace_paths(model, x, torch.as_tensor(off["source"].to_numpy().copy()),
                               torch.as_tensor(off["target"].to_numpy().copy()), top_classes=r.info.get("top_classes"),
                               batch_size=config.get("batch_size", 128), **options)  # fmt: skip
    rel = (res.fr_length.numpy() - off["predicted_length"].to_numpy()) / off["predicted_length"].to_numpy()
    return row | {
        "statuses": cm.statuses(res.status),
        "first_hit_agree": int((res.first_hit.numpy() == off["predicted_first_hit"].to_numpy()).sum()),
        "fr_err_max": float(abs(rel).max()),
        "jacobians_mean": float(res.jacobian_evals.double().mean()),
        "run_jacobians_mean": float(off["jacobian_evals"].mean()),
    }


if __name__ == "__main__":
    raise SystemExit(main(agreement))
