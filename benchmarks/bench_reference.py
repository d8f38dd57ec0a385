"""How accurate is the tracer's L2 at the class change? The default and tighter step sizes against the exact flow.

For piecewise-linear networks (ReLU, max-pool, eval-mode batch norm, linear layers, additions)
``frmargin.reference.exact_flow`` walks the natural-gradient flow region by region in float64:
its L2 distance at the class change is exact to rounding (and its FR length is the closed form).
Per model, the first N correctly classified images are traced toward the classes of
probability rank ``ranks`` (1 = the runner-up; ``all``: every other class) by the reference
(at most ``max_regions`` activation regions a path) and by the converged tracer with the default
``eta`` and ``logit_step`` scaled by each of ``scales``. Per setting, on the paths the reference
ends ``ok``: the tracer's relative L2 error ``(l2 - l2_exact) / l2_exact`` (median, p90 and max
of its absolute value, mean signed bias), the relative FR-length error (median and max), the
first-hit agreement, Jacobian evaluations per path and the share of the tracer's paths ``ok``.
The reference rows give its own status counts, regions crossed, boundaries slid along and the
share of paths that leave the image range [0, 1]. Each preset of ``presets`` (``l2``) gets a row
too, with its Jacobians relative to the default's and how its per-path error estimate
(``l2_error``) compares with the true error (the share of paths within it, and within twice it).
``--set cache=DIR`` keeps each model's exact flow in DIR, so that a rerun traces only the tracer.

Models: zoo ReLU networks and ``digits-cnn`` (the test suite's small ReLU CNN on synthetic 8x8
digits, ``tests/digits.py``). A cnn-a path crosses a few hundred regions (about two minutes a
path on two loaded cores); a ``resnet20`` path 2,000 to 11,000 (6 to 52 minutes of one core;
``--set models=resnet20 --set images=8 --set ranks=1 --set max_regions=200000`` traces the first
8 correctly classified images toward their runner-up, about 2.3 core-hours for the exact flows).
"""

from __future__ import annotations

import time

import torch

import _common as cm
from harness import Context, benchmark, main

#: the parameters of the full size (the published figures); ``cache``: a folder keeping each
#: model's exact flow between runs ("" none)
FULL = {"models": "digits-cnn,cnn-a-mix,cnn-a-adv2", "images": "12,1,1", "ranks": "all",
        "max_regions": 3000, "scales": "1,0.25,0.0625", "presets": "l2", "cache": ""}  # fmt: skip


@benchmark(
    name="reference",
    title="How accurate is the tracer's L2 at the class change? Step sizes against the exact flow",
    units={
        "model": "",
        "setting": "",
        "paths": "count",
        "compared": "paths",
        "ok_share": "share",
        "l2_rel_median": "relative",
        "l2_rel_p90": "relative",
        "l2_rel_max": "relative",
        "l2_rel_bias": "relative",
        "fr_rel_median": "relative",
        "fr_rel_max": "relative",
        "first_hit_agree": "share",
        "jacobians_per_path": "Jacobian evaluations",
        "jacobians_vs_default": "ratio",
        "estimate_median": "relative",
        "within_estimate": "share",
        "within_2x_estimate": "share",
        "status": "",
        "regions_median": "regions",
        "slides_median": "boundaries",
        "left_range_share": "share",
        "wall_s": "s",
    },
    key=("model", "setting"),
    sizes={
        "smoke": FULL
        | {"models": "digits-cnn", "images": "1", "ranks": "1+2", "max_regions": 2000, "scales": "1", "presets": "l2"},
        "small": FULL | {"images": "4,1,1", "ranks": "all,1,1"},
        "full": FULL,
    },
)
def reference(ctx: Context) -> list[dict]:
    p = ctx.params
    models, images, ranks = cm.names(p.models), cm.numbers(str(p.images)), cm.names(str(p.ranks))
    if len(images) == 1:
        images = images * len(models)
    if len(ranks) == 1:
        ranks = ranks * len(models)
    if len(images) != len(models) or len(ranks) != len(models):
        raise SystemExit(
            f"--set images / ranks: give one value or one per model ({len(models)}), got {p.images!r}, {p.ranks!r}"
        )
    rows = []
    for name, n, rank in zip(models, images, ranks):
        scales, presets = cm.numbers(str(p.scales), float), [q for q in str(p.presets).split(",") if q]
        rows += run_model(name, n, rank, int(p.max_regions), scales, presets, str(p.cache))
    return rows


def workload(name: str, n: int, rank: str):
    """(model, X (P, *S), source (P,), target (P,)): n correctly classified images, toward the
    classes of probability rank ``rank`` ("all", or a comma list inside the ``ranks`` list)."""
    if name == "digits-cnn":
        digits = cm.tests_helper("digits")
        model = digits.digit_cnn(0)
        x_all, y_all = digits.digits(4 * n + 8, seed=123)
        x, y, _ = cm.correct_subset(model, x_all, y_all, n)
        classes = digits.N_CLASSES
    else:
        model = cm.load_model(name)
        x, y = cm.correct_images(model, "cifar10", n)
        classes = 10
    if rank == "all":
        return (model, *cm.all_target_paths(x, y, classes))
    with torch.no_grad():
        p = torch.softmax(model(x).double(), -1)
    image, source, target = cm.ranked_target_paths(p, [int(r) for r in rank.split("+")])
    return model, x[image], source, target


def exact(name: str, n: int, rank: str, max_regions: int, cache: str, workload_: tuple):
    """The exact flow of the workload (from ``cache`` when it holds it) and its wall time."""
    from pathlib import Path

    from frmargin.reference import exact_flow

    model, X, source, target = workload_
    path = Path(cache) / f"exact-{name}-{n}-{rank}-{max_regions}.pt" if cache else None
    if path is not None and path.exists():
        stored = torch.load(path, weights_only=False)
        if torch.equal(stored["x"], X) and torch.equal(stored["target"], target):
            return stored["ref"], stored["wall_s"]
    t0 = time.perf_counter()
    ref = exact_flow(model, X, source, target, valid=(0.0, 1.0), max_regions=max_regions)
    wall = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x": X, "target": target, "ref": ref, "wall_s": wall}, path)
    return ref, wall


def run_model(
    name: str, n: int, rank: str, max_regions: int, scales: list[float], presets: list[str], cache: str = ""
) -> list[dict]:
    from frmargin import trace_paths

    work = workload(name, n, rank)
    model, X, source, target = work
    ref, wall = exact(name, n, rank, max_regions, cache, work)
    ok_ref = torch.tensor([st == "ok" for st in ref.status])
    rows = [
        {
            "model": name,
            "setting": "exact flow (reference)",
            "paths": len(ref),
            "compared": int(ok_ref.sum()),
            "ok_share": float(ok_ref.float().mean()),
            "status": cm.statuses(ref.status),
            "regions_median": float(ref.regions.double().median()),
            "slides_median": float(ref.slides.double().median()),
            "left_range_share": float(torch.isfinite(ref.left_range).double().mean()),
            "wall_s": wall,
        }
    ]
    print(f"[reference] {name}: exact flow {rows[0]['status']} in {rows[0]['wall_s']:.0f} s", flush=True)
    defaults = cm.accuracy_defaults()
    default_jacobians = None
    for scale in scales:
        eta, logit_step = defaults["eta"] * scale, defaults["logit_step"] * scale
        t0 = time.perf_counter()
        res = trace_paths(model, X, source, target, eta=eta, logit_step=logit_step, max_steps=200 * round(1 / scale))
        wall = time.perf_counter() - t0
        rows.append(
            compare(name, f"x{scale:g}: eta={eta:g}, logit_step={logit_step:g}", ref, res, ok_ref) | {"wall_s": wall}
        )
        if scale == 1:
            default_jacobians = rows[-1]["jacobians_per_path"]
        print(f"[reference] {name} {rows[-1]['setting']}: L2 rel. median {rows[-1]['l2_rel_median']:.3g}", flush=True)
    for preset in presets:
        t0 = time.perf_counter()
        res = trace_paths(model, X, source, target, preset=preset)
        wall = time.perf_counter() - t0
        rows.append(compare(name, f"preset {preset}", ref, res, ok_ref) | estimate(res, ref, ok_ref) | {"wall_s": wall})
        print(f"[reference] {name} preset {preset}: L2 rel. median {rows[-1]['l2_rel_median']:.3g}", flush=True)
    for row in rows[1:]:
        if default_jacobians:
            row["jacobians_vs_default"] = row["jacobians_per_path"] / default_jacobians
    return rows


def estimate(res, ref, ok_ref: torch.Tensor) -> dict:
    """How the preset's per-path L2 error estimate (``l2_error``) compares with the true error."""
    if res.l2_error is None or not bool(ok_ref.any()):
        return {}
    err = ((res.l2.double() - ref.l2) / ref.l2)[ok_ref].abs()
    est = res.l2_error[ok_ref]
    known = torch.isfinite(est)
    return {
        "estimate_median": cm.quantile(est, 0.5),
        "within_estimate": float((err[known] <= est[known]).double().mean()) if known.any() else None,
        "within_2x_estimate": float((err[known] <= 2 * est[known]).double().mean()) if known.any() else None,
    }


def compare(name: str, setting: str, ref, res, ok_ref: torch.Tensor) -> dict:
    """One tracer setting's row: its errors on the paths the reference ends ok."""
    rel = ((res.l2 - ref.l2) / ref.l2)[ok_ref]
    fr = ((res.fr_length - ref.fr_length) / ref.fr_length)[ok_ref].abs()
    none = rel.numel() == 0
    return {
        "model": name,
        "setting": setting,
        "paths": len(res),
        "compared": int(ok_ref.sum()),
        "ok_share": sum(st == "ok" for st in res.status) / len(res),
        "l2_rel_median": None if none else float(rel.abs().median()),
        "l2_rel_p90": None if none else cm.quantile(rel.abs(), 0.9),
        "l2_rel_max": None if none else float(rel.abs().max()),
        "l2_rel_bias": None if none else float(rel.mean()),
        "fr_rel_median": None if none else float(fr.median()),
        "fr_rel_max": None if none else float(fr.max()),
        "first_hit_agree": None if none else float((res.first_hit == ref.first_hit)[ok_ref].double().mean()),
        "jacobians_per_path": float(res.jacobian_evals.double().mean()),
        "status": cm.statuses(res.status),
    }


if __name__ == "__main__":
    raise SystemExit(main(reference))
