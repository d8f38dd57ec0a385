"""Box-constrained natural-gradient paths: share ok, cost per path, box statistics, FMN.

Models where the box (0, 1) binds: a tiny MLP and a tiny CNN trained on synthetic 8x8
digit-like images (the test suite's ``tests/digits.py``: strokes on an exact-zero background,
76% exact zeros) and the three CNN-A models on CIFAR-10 (``cnn-a-adv2``, ``cnn-a-adv4``,
``cnn-a-mix``); and ResNet-20 on ``cifar10-exact``, where the box barely binds. Per model: every
(image, other class) path of the first ``images`` correctly classified images, with and without
``box=(0, 1)``; statuses, Jacobian evaluations, forward passes and seconds per path, the share of
coordinates at a bound at the end, active-set changes per path, the paths at the step budget (and
those that never moved: the zero-length-step failure); the relative FR difference box vs free on
paths ok in both and the share of identical lengths; FMN (``min_l2_attack(..., "fmn",
bounds=(0, 1))``) per image and the share of box paths ok among images FMN fools inside the box;
with ``margin`` the in-box margin estimate (``box_margin``) next to the traced length and the
lower bound, and its cost per path. ``floor`` (not None) sets the base damping floor of the
projected direction.
"""

from __future__ import annotations

import time

import torch

import _common as cm
from harness import Context, benchmark, main

#: the CNN-A models of the mirror
CNN_A = ("cnn-a-adv2", "cnn-a-adv4", "cnn-a-mix")
MODELS = ("digits-mlp", "digits-cnn", *CNN_A, "resnet20")
SIDE = {
    "status": "",
    "ok_share": "share",
    "s_per_path": "s",
    "jacobians_per_path": "Jacobian evaluations",
    "forward_per_path": "forward passes",
    "mean_fr_length": "FR length",
}


@benchmark(
    name="box",
    title="Box-constrained paths: share ok, cost per path, box statistics, against FMN in the box",
    units={
        "model": "",
        "paths": "count",
        "images": "count",
        **{f"free_{k}": u for k, u in SIDE.items()},
        **{f"box_{k}": u for k, u in SIDE.items()},
        "box_bound_share_end": "share",
        "box_changes_per_path": "active-set changes",
        "box_changes_median": "active-set changes",
        "box_budget_paths": "paths",
        "box_budget_unmoved": "paths",
        "box_vs_free_fr_rel_median": "relative",
        "box_vs_free_fr_rel_max": "relative",
        "identical_paths_share": "share",
        "fmn_fooled_images": "images",
        "box_ok_share_where_fmn_fooled": "share",
        "box_not_ok_where_fmn_fooled": "paths",
        "margin_s_per_path": "s",
        "margin_mean_traced": "FR length",
        "margin_mean_estimate": "FR length",
        "margin_mean_lower_bound": "FR length",
        "margin_share_below_traced": "share",
    },
    key=("model",),
    sizes={
        "smoke": {"images": 1, "models": "digits-mlp", "margin": True, "floor": None},
        "small": {"images": 2, "models": "digits-mlp,digits-cnn,cnn-a-adv2,resnet20", "margin": False, "floor": None},
        "full": {"images": 4, "models": ",".join(MODELS), "margin": True, "floor": None},
    },
)
def box(ctx: Context) -> list[dict]:
    p = ctx.params
    chosen = cm.names(p.models)
    unknown = [m for m in chosen if m not in MODELS]
    if unknown:
        raise SystemExit(f"--set models: unknown {unknown}, expected among {MODELS}")
    if p.floor is not None:
        cm.set_box_damping(float(p.floor))
    rows = []
    for name in chosen:
        model, x, y = workload(name, p.images)
        rows.append(bench(name, model, x, y, p.images, p.margin))
        print(f"[box] {name}: box {rows[-1]['box_status']}, free {rows[-1]['free_status']}", flush=True)
    return rows


def workload(name: str, images: int):
    """(model, images (B, *S), labels (B,)) of one model name."""
    if name.startswith("digits-"):
        digits = cm.tests_helper("digits")
        x, y = digits.digits(max(images, 8) * 2, seed=123)
        return (digits.digit_mlp(0) if name == "digits-mlp" else digits.digit_cnn(0)), x, y
    return (cm.load_model(name), *cm.first_images("cifar10-exact", images * 2))


def trace(model, xs, s, t, box) -> tuple[dict, object]:
    """One side's row entries (free or box) and its PathResult."""
    from frmargin import trace_paths

    t0 = time.perf_counter()
    res = trace_paths(model, xs, s, t, box=box, batch_size=64)
    dt = time.perf_counter() - t0
    row = {
        "status": cm.statuses(res.status),
        "ok_share": sum(st == "ok" for st in res.status) / len(res),
        "s_per_path": dt / len(res),
        "jacobians_per_path": float(res.jacobian_evals.mean()),
        "forward_per_path": float(res.forward_evals.float().mean()),
        "mean_fr_length": float(res.fr_length.mean()),
    }
    if box is not None:
        budget = torch.tensor([st == "budget" for st in res.status])
        row["bound_share_end"] = float(res.bound_share.mean())
        row["changes_per_path"] = float(res.box_changes.float().mean())
        row["changes_median"] = float(res.box_changes.float().median())
        row["budget_paths"] = int(budget.sum())
        # a path at the step budget that has not moved is the zero-length-step failure
        row["budget_unmoved"] = int((res.fr_length[budget] == 0).sum())
    return row, res


def bench(name, model, x, y, images: int, margin: bool) -> dict:
    import frmargin

    xi, yi, probs = cm.correct_subset(model, x, y, images)
    img, s, t = cm.other_class_paths(yi, probs.shape[-1])
    xs = xi[img]
    row: dict = {"model": name, "paths": int(s.numel()), "images": int(xi.shape[0])}
    free_row, free = trace(model, xs, s, t, None)
    box_row, boxed = trace(model, xs, s, t, (0.0, 1.0))
    row |= {f"free_{k}": v for k, v in free_row.items()} | {f"box_{k}": v for k, v in box_row.items()}
    ok_b = torch.tensor([st == "ok" for st in boxed.status])
    both = ok_b & torch.tensor([st == "ok" for st in free.status])
    rel = (boxed.fr_length[both] - free.fr_length[both]) / free.fr_length[both]
    row["box_vs_free_fr_rel_median"] = float(rel.median()) if both.any() else None
    row["box_vs_free_fr_rel_max"] = float(rel.abs().max()) if both.any() else None
    row["identical_paths_share"] = float(((boxed.fr_length == free.fr_length) & both).float().mean())
    try:
        fmn = frmargin.min_l2_attack(model, xi, yi, "fmn", bounds=(0, 1))
        fooled = torch.tensor([st == "ok" for st in fmn.status])
        with_adv = fooled[torch.searchsorted(torch.unique(img), img)]  # per path: its image fooled
        row["fmn_fooled_images"] = int(fooled.sum())
        row["box_ok_share_where_fmn_fooled"] = float(ok_b[with_adv].float().mean()) if with_adv.any() else None
        row["box_not_ok_where_fmn_fooled"] = int((~ok_b & with_adv).sum())
    except ImportError:
        row["fmn_fooled_images"] = None
    if margin:
        t0 = time.perf_counter()
        est = cm.box_margin()(model, xs[ok_b], s[ok_b], boxed.x_end[ok_b], boxed.fr_length[ok_b], (0.0, 1.0))
        row["margin_s_per_path"] = (time.perf_counter() - t0) / max(int(ok_b.sum()), 1)
        row["margin_mean_traced"] = float(boxed.fr_length[ok_b].mean())
        row["margin_mean_estimate"] = float(est.length.mean())
        row["margin_mean_lower_bound"] = float(est.lower_bound.mean())
        row["margin_share_below_traced"] = float((est.length < boxed.fr_length[ok_b] - 1e-9).float().mean())
    return row


if __name__ == "__main__":
    raise SystemExit(main(box))
