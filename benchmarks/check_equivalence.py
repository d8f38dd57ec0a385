"""Bit-for-bit regression check of ``trace_paths`` over a matrix of configurations.

Traces every configuration below and either saves every ``PathResult`` field (``--save DIR``) or
compares them with a saved reference (``--compare DIR``), exactly: ``torch.equal`` on every
tensor (NaN matched to NaN at the same positions), ``==`` on ``status`` and ``visited``. Use it
before and after a change that must not change results (a restructure, a refactor).

Families: ResNet-20 and ResNet2b-adv2 on ``cifar10-exact`` (the asset mirror is needed), and a
small tanh MLP on 2-D and 6-D inputs with more classes than input dimensions (rank-deficient
Jacobians).

Usage: .venv/bin/python benchmarks/check_equivalence.py --save /tmp/paths-ref [--only mlp]
       .venv/bin/python benchmarks/check_equivalence.py --compare /tmp/paths-ref
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

FIELDS = (
    "fr_length",
    "l2",
    "linf",
    "steps",
    "jacobian_evals",
    "forward_evals",
    "matvecs",
    "first_hit",
    "success",
    "x_end",
    "status",
    "fr_length_target",
    "visited",
    "trajectory",
    "bound_share",
    "box_changes",
)


def _mlp(D: int, C: int, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, C))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 1.5 / math.sqrt(m.in_features))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.3)
    return model.double().eval()


def _all_targets(model: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (image, other class) pair: x repeated, source = argmax, target = each other class."""
    with torch.no_grad():
        y = model(x).argmax(-1)
    C = int(model(x[:1]).shape[-1])
    xs, src, tgt = [], [], []
    for i in range(x.shape[0]):
        for k in range(C):
            if k != int(y[i]):
                xs.append(x[i])
                src.append(int(y[i]))
                tgt.append(k)
    return torch.stack(xs), torch.tensor(src), torch.tensor(tgt)


def _cifar_cases(name: str, images: int) -> dict[str, tuple]:
    import frmargin

    model = frmargin.load_model(name, progress=False)
    ds = frmargin.load_dataset("cifar10-exact", progress=False)
    x, s, t = _all_targets(model, ds.images[:images])
    cases = {
        f"{name}/fisher": (model, x, s, t, {"max_steps": 60}),
        f"{name}/euclidean": (model, x, s, t, {"metric": "euclidean", "max_steps": 60}),
        f"{name}/fisher-box": (model, x, s, t, {"box": (0.0, 1.0), "max_steps": 60}),
    }
    if name == "resnet20":
        cases.update(
            {
                f"{name}/euclidean-box": (model, x, s, t, {"metric": "euclidean", "box": (0.0, 1.0), "max_steps": 60}),
                f"{name}/paper-exact": (model, x, s, t, {"method": "paper", "max_steps": 40}),
                f"{name}/paper-cg": (model, x, s, t, {"method": "paper", "solver": "cg", "max_steps": 40}),
                f"{name}/paper-absolute": (
                    model,
                    x,
                    s,
                    t,
                    {"method": "paper", "damping_mode": "absolute", "damping": 1e-2, "max_steps": 40},
                ),
                f"{name}/top4": (model, x, s, t, {"top_classes": 4, "max_steps": 60}),
                f"{name}/top4-euclidean": (model, x, s, t, {"top_classes": 4, "metric": "euclidean", "max_steps": 60}),
                f"{name}/target": (model, x, s, t, {"until": "target", "max_steps": 80}),
                f"{name}/record-batch5": (model, x, s, t, {"record": True, "batch_size": 5, "max_steps": 60}),
                f"{name}/budget": (model, x, s, t, {"max_steps": 3, "eta": 0.2}),
            }
        )
        m64 = frmargin.load_model(name, progress=False).double()
        x2, s2, t2 = _all_targets(m64, ds.images[:2].double())
        cases[f"{name}/float64"] = (m64, x2, s2, t2, {"max_steps": 60})
    return cases


def _mlp_cases() -> dict[str, tuple]:
    cases = {}
    for D, C in ((2, 5), (6, 8)):
        model = _mlp(D, C, seed=D)
        gen = torch.Generator().manual_seed(10 + D)
        x, s, t = _all_targets(model, torch.rand(4, D, generator=gen, dtype=torch.float64) * 1.6 - 0.8)
        tag = f"mlp{D}d{C}c"
        cases[f"{tag}/fisher"] = (model, x, s, t, {})
        cases[f"{tag}/euclidean"] = (model, x, s, t, {"metric": "euclidean"})
        cases[f"{tag}/fisher-box"] = (model, x, s, t, {"box": (-1.0, 1.0)})
        cases[f"{tag}/target-record"] = (model, x, s, t, {"until": "target", "record": True})
        cases[f"{tag}/paper"] = (model, x, s, t, {"method": "paper", "max_steps": 300})
        cases[f"{tag}/paper-cg"] = (model, x, s, t, {"method": "paper", "solver": "cg", "max_steps": 300})
        cases[f"{tag}/top3"] = (model, x, s, t, {"top_classes": 3})
        cases[f"{tag}/tight"] = (model, x, s, t, {"eta": 0.05, "rtol": 1e-3, "logit_step": 0.5})
        cases[f"{tag}/float32"] = (copy.deepcopy(model).float(), x.float(), s, t, {}) if D == 2 else None
    return {k: v for k, v in cases.items() if v is not None}


def _acceptance_cases(name: str, images: int = 8) -> dict[str, tuple]:
    """The refactoring acceptance set: the first ``images`` official test images (lossless split)
    x every other class, at the default options: Fisher, Euclidean, paper mode and the box."""
    import frmargin

    model = frmargin.load_model(name, progress=False)
    ds = frmargin.load_dataset("cifar10", progress=False)
    x, s, t = _all_targets(model, ds.images[:images])
    return {
        f"accept-{name}/fisher": (model, x, s, t, {}),
        f"accept-{name}/euclidean": (model, x, s, t, {"metric": "euclidean"}),
        f"accept-{name}/paper": (model, x, s, t, {"method": "paper"}),
        f"accept-{name}/fisher-box": (model, x, s, t, {"box": (0.0, 1.0)}),
    }


def cases(only: str | None) -> dict[str, tuple]:
    """name -> (model, x, source, target, options) for the families asked for (``accept-NAME``:
    the acceptance set of ``_acceptance_cases`` for zoo model NAME)."""
    families = ("mlp", "resnet20", "resnet2b-adv2") if only is None else tuple(only.split(","))
    out: dict[str, tuple] = {}
    for fam in families:
        if fam == "mlp":
            out.update(_mlp_cases())
        elif fam.startswith("accept-"):
            out.update(_acceptance_cases(fam.removeprefix("accept-")))
        else:
            out.update(_cifar_cases(fam, 3 if fam == "resnet20" else 2))
    return out


def _fields(res) -> dict:
    return {f: getattr(res, f) for f in FIELDS}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        if a.is_floating_point():
            na, nb = a.isnan(), b.isnan()
            return torch.equal(na, nb) and torch.equal(a[~na], b[~nb])
        return torch.equal(a, b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", type=Path)
    mode.add_argument("--compare", type=Path)
    ap.add_argument("--only", default=None, help="comma-separated families: mlp,resnet20,resnet2b-adv2")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from frmargin.paths import trace_paths

    failed = []
    for name, (model, x, s, t, opts) in cases(args.only).items():
        file = (args.save or args.compare) / (name.replace("/", "__") + ".pt")
        t0 = time.perf_counter()
        # the reference was made when trace_paths batched 128 paths by default (runs: 64)
        got = _fields(trace_paths(model, x, s, t, **{"batch_size": 128, **opts}))
        dt = time.perf_counter() - t0
        if args.save is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(got, file)
            print(f"saved {name:32s} {dt:6.1f}s  statuses {sorted(set(got['status']))}", flush=True)
            continue
        ref = torch.load(file, weights_only=False)
        diff = [f for f in FIELDS if not _same(got[f], ref[f])]
        print(f"{'SAME' if not diff else 'DIFF'} {name:32s} {dt:6.1f}s  {' '.join(diff)}", flush=True)
        if diff:
            failed.append(name)
    if failed:
        print(f"{len(failed)} configuration(s) differ: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
