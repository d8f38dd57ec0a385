"""Box-constrained natural-gradient paths: share ok, cost per path, box statistics, FMN.

Models where the box (0, 1) binds: a tiny MLP and a tiny CNN trained on synthetic 8x8
digit-like images (``tests/digits.py``: strokes on an exact-zero background) and the three
CNN-A models on CIFAR-10 (``cnn-a-adv2``, ``cnn-a-adv4``, ``cnn-a-mix``); and ResNet-20 on ``cifar10-exact``, where
the box does not bind. Per model: every (image, other class) path with and without
``box=(0, 1)``; statuses, Jacobian evaluations and seconds per path, share of coordinates at a
bound at the end, active-set changes, the share ok among paths whose image FMN fools inside
the box, and (``--margin``) the in-box margin estimate of ``box_margin`` next to the traced
length and the lower bound.

Usage: .venv/bin/python benchmarks/bench_box.py [--images 4] [--only digits-mlp,cnn-a-adv2] [--margin]
       [--out bench_box.json] [--floor 1e-6]
       .venv/bin/python benchmarks/bench_box.py --compare BEFORE.json AFTER.json
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import (
    RESULTS,
    add_thread_arg,
    apply_threads,
    correct_subset,
    first_images,
    load_model,
    other_class_paths,
    setup_env,
)

#: the CNN-A models of the mirror (``--only cnn-a`` is the first)
CNN_A = ("cnn-a-adv2", "cnn-a-adv4", "cnn-a-mix")


def workloads(only: set[str] | None, images: int) -> dict:
    """name -> (model, images (B, *S), labels (B,))."""
    from digits import digit_cnn, digit_mlp, digits

    out = {}
    x, y = digits(max(images, 8) * 2, seed=123)
    if only is None or "digits-mlp" in only:
        out["digits-mlp"] = (digit_mlp(0), x, y)
    if only is None or "digits-cnn" in only:
        out["digits-cnn"] = (digit_cnn(0), x, y)
    for name in CNN_A:
        if only is None or name in only or (name == CNN_A[0] and "cnn-a" in only):
            out[name] = (load_model(name), *first_images("cifar10-exact", images * 2))
    if only is None or "resnet20" in only:
        out["resnet20"] = (load_model("resnet20"), *first_images("cifar10-exact", images * 2))
    return out


def all_pairs(model, x: torch.Tensor, y: torch.Tensor, images: int):
    """Correctly classified images (first ``images``), each paired with every other class."""
    xi, yi, p = correct_subset(model, x, y, images)
    img, src, tgt = other_class_paths(yi, p.shape[-1])
    return xi, yi, img, xi[img], src, tgt


def bench(name, model, x, y, images: int, margin: bool) -> dict:
    import frmargin
    from frmargin.paths import trace_paths

    xi, yi, img, xs, s, t = all_pairs(model, x, y, images)
    row: dict = {"model": name, "paths": int(s.numel()), "images": int(xi.shape[0])}
    for tag, box in (("free", None), ("box", (0.0, 1.0))):
        t0 = time.perf_counter()
        res = trace_paths(model, xs, s, t, box=box, batch_size=64)
        dt = time.perf_counter() - t0
        row[tag] = {
            "status": dict(collections.Counter(res.status)),
            "ok_share": sum(st == "ok" for st in res.status) / len(res),
            "s_per_path": dt / len(res),
            "jacobians_per_path": float(res.jacobian_evals.mean()),
            "forward_per_path": float(res.forward_evals.float().mean()),
            "mean_fr_length": float(res.fr_length.mean()),
        }
        if box is not None:
            row[tag]["bound_share_end"] = float(res.bound_share.mean())
            row[tag]["box_changes_per_path"] = float(res.box_changes.float().mean())
            row[tag]["box_changes_median"] = float(res.box_changes.float().median())
            budget = torch.tensor([st == "budget" for st in res.status])
            # a path at the step budget that has not moved is the zero-length-step failure
            row[tag]["budget_fr_lengths"] = [round(float(v), 4) for v in res.fr_length[budget]]
            row[tag]["budget_steps"] = [int(v) for v in res.steps[budget]]
            # per path, for ``--compare``
            row[tag]["per_path"] = {
                "status": list(res.status),
                "fr_length": res.fr_length.tolist(),
                "first_hit": res.first_hit.tolist(),
            }
            boxed = res
        else:
            free = res
    ok_b = torch.tensor([st == "ok" for st in boxed.status])
    ok_f = torch.tensor([st == "ok" for st in free.status])
    both = ok_b & ok_f
    rel = (boxed.fr_length[both] - free.fr_length[both]) / free.fr_length[both]
    row["box_vs_free_fr_rel_median"] = float(rel.median()) if both.any() else float("nan")
    row["box_vs_free_fr_rel_max"] = float(rel.abs().max()) if both.any() else float("nan")
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
        from frmargin.paths.box_margin import box_margin

        t0 = time.perf_counter()
        est = box_margin(model, xs[ok_b], s[ok_b], boxed.x_end[ok_b], boxed.fr_length[ok_b], (0.0, 1.0))
        row["margin"] = {
            "s_per_path": (time.perf_counter() - t0) / max(int(ok_b.sum()), 1),
            "mean_traced": float(boxed.fr_length[ok_b].mean()),
            "mean_estimate": float(est.length.mean()),
            "mean_lower_bound": float(est.lower_bound.mean()),
            "share_below_traced": float((est.length < boxed.fr_length[ok_b] - 1e-9).float().mean()),
        }
    return row


def compare(before: Path, after: Path) -> None:
    """Per model, the box paths of two runs of this benchmark: ok counts, paths gained and lost,
    and on the paths ok in both the relative change of the FR length and the first hits."""
    rows_a = {r["model"]: r for r in json.loads(before.read_text())}
    for rb in json.loads(after.read_text()):
        ra = rows_a.get(rb["model"])
        if ra is None or "per_path" not in ra["box"] or "per_path" not in rb["box"]:
            continue
        a, b = ra["box"]["per_path"], rb["box"]["per_path"]
        ok_a = torch.tensor([st == "ok" for st in a["status"]])
        ok_b = torch.tensor([st == "ok" for st in b["status"]])
        both = ok_a & ok_b
        rel = (
            torch.tensor(b["fr_length"], dtype=torch.float64)[both]
            / torch.tensor(a["fr_length"], dtype=torch.float64)[both]
            - 1
        )
        same_hit = torch.tensor(a["first_hit"])[both] == torch.tensor(b["first_hit"])[both]
        q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
        lo, med, hi = rel.quantile(q).tolist() if both.any() else [float("nan")] * 3
        print(
            json.dumps(
                {
                    "model": rb["model"],
                    "ok": [int(ok_a.sum()), int(ok_b.sum())],
                    "gained": int((ok_b & ~ok_a).sum()),
                    "lost": int((ok_a & ~ok_b).sum()),
                    "fr_rel_change": {
                        "p10": lo,
                        "median": med,
                        "p90": hi,
                        "min": float(rel.min()),
                        "max": float(rel.max()),
                    },
                    "first_hit_changed": int((~same_hit).sum()),
                }
            )
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument(
        "--only", default=None, help="comma-separated: digits-mlp,digits-cnn,cnn-a-adv2,cnn-a-adv4,cnn-a-mix,resnet20"
    )
    ap.add_argument("--out", default="bench_box.json", help="file name in benchmarks/results/")
    ap.add_argument("--margin", action="store_true", help="also the in-box margin estimate")
    ap.add_argument(
        "--floor",
        type=float,
        default=None,
        help="the base free-set damping floor (paths/box.py BOX_DAMPING; it still grows on long paths)",
    )
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two result files")
    add_thread_arg(ap)
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    if args.floor is not None:
        from frmargin.paths import box

        box.BOX_DAMPING = args.floor
    apply_threads(args.threads)
    setup_env()
    only = None if args.only is None else set(args.only.split(","))
    rows = []
    for name, (model, x, y) in workloads(only, args.images).items():
        row = bench(name, model, x, y, args.images, args.margin)
        print(json.dumps(row), flush=True)
        rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
