"""Throughput of the converged tracer vs batch_size on CPU, and an extrapolated 800-image run.

For each batch size b, trace b paths (images x their 9 targets, ResNet-20, ``cifar10-exact``)
for ``steps`` accepted steps (``max_steps``) with the tracer instrumented. The first iteration
is excluded (the 9 paths of one image share their starting point, so it evaluates only b / 9
Jacobians); the steady-state rate is accepted path-steps per second over the remaining
iterations, and its cost in Jacobian evaluations of one point per path-step.

Paths per second = (path-steps per second) / (accepted steps per path of a complete trace),
the latter measured by a complete default trace of ``ref_images`` images here (or passed in
as ``steps_per_path``). This is an EXTRAPOLATION: it assumes every iteration runs a full batch,
while in a real run the batch empties as paths finish (the tail runs smaller, less efficient
batches). The extrapolated wall time of the paper-sized run, 800 images x 9 = 7200 paths, is
7200 / (paths per second at the best batch size).

With ``cli_images`` N > 0 the real command ``frmargin run --images N --data cifar10-jpeg`` is also
timed end to end (subprocess; its run.json timing is read back).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

import _common as cm
from harness import Context, Output, benchmark, main

FULL_PATHS = 7200


#: the parameters of the full size (the published figures); the smaller sizes change a few
FULL = {"batch_sizes": "8,16,32,64,128", "steps": 5, "data": "cifar10-exact", "steps_per_path": None, "ref_images": 1,
        "ref_offset": 0, "cli_images": 0, "cli_batch_size": 64, "cli_chunk_images": 4}  # fmt: skip


@benchmark(
    name="throughput",
    title="Converged-mode throughput against batch_size on the CPU, and an extrapolated 800-image run",
    units={
        "batch_size": "paths",
        "paths": "count",
        "iterations_timed": "count",
        "mean_active": "paths",
        "path_steps_per_s": "path-steps/s",
        "s_per_path_step": "s",
        "jacobian_points_per_path_step": "Jacobian evaluations",
        "jacobian_s_per_point_in_situ": "s",
        "share_jacobian": "share",
        "share_forward": "share",
        "wall_s": "s",
        "statuses": "",
        "steps_per_path": "steps",
        "paths_per_s_extrapolated": "paths/s",
        "full_run_h_extrapolated": "h",
    },
    key=("batch_size",),
    sizes={"smoke": FULL | {"batch_sizes": "9", "steps": 2}, "small": FULL | {"batch_sizes": "8,32"}, "full": FULL},
)
def throughput(ctx: Context) -> Output:
    from frmargin import trace_paths

    p = ctx.params
    model = cm.load_model()
    sizes = cm.numbers(p.batch_sizes)
    x, y = cm.correct_images(model, p.data, math.ceil(max(sizes) / 9))
    X, source, target = cm.all_target_paths(x, y, 10)
    trace_paths(model, X[:2], source[:2], target[:2], max_steps=2)  # warm-up
    rows = []
    for b in sizes:
        rows.append(steady_rate(model, X[:b], source[:b], target[:b], b, p.steps))
        print(f"[throughput] b={b}: {rows[-1]['path_steps_per_s']:.2f} path-steps/s", flush=True)
    ref = reference_trace(model, p) if p.steps_per_path is None else None
    spp = ref["steps_per_path"] if ref else float(p.steps_per_path)
    for r in rows:
        r["steps_per_path"] = spp
        r["paths_per_s_extrapolated"] = r["path_steps_per_s"] / spp
        r["full_run_h_extrapolated"] = FULL_PATHS / r["paths_per_s_extrapolated"] / 3600
    notes = [
        f"Steady state = iterations 2..{p.steps} of a trace with max_steps={p.steps} (ResNet-20, {p.data}). "
        "Accepted steps per complete path: "
        + (
            f"measured by a complete default trace of {ref['paths']} paths ({ref['wall_s_per_path']:.2f} s/path, "
            f"{ref['jacobian_evals_per_path']:.2f} Jacobian evaluations/path)."
            if ref
            else "given."
        ),
        f"EXTRAPOLATED (not measured): paths/s and the wall time of a full run of {FULL_PATHS} paths (800 images x 9) "
        "assume full batches throughout; the tail of each batch runs with fewer paths, so a real run is slower.",
    ]
    if p.cli_images > 0:
        cli = cli_run(ctx.out.with_name(f"{ctx.out.stem}_cli_run"), p.cli_images, p.cli_batch_size, p.cli_chunk_images)
        notes.append(
            f"Real CLI run `{cli['command']}`: {cli['wall_s']:.1f} s wall, {cli['n_paths']} paths, "
            f"{cli['paths_per_s']:.3f} paths/s including start-up."
            if "error" not in cli
            else f"Real CLI run `{cli['command']}` failed: {cli['error'][-300:]}"
        )
    return Output(rows, " ".join(notes))


def steady_rate(model, X, source, target, batch_size: int, steps: int) -> dict:
    from frmargin import trace_paths

    with cm.instrument() as rec:
        t0 = time.perf_counter()
        res = trace_paths(model, X, source, target, batch_size=batch_size, max_steps=steps)
        wall = time.perf_counter() - t0
    it = rec.steps[1:] if len(rec.steps) > 1 else rec.steps
    t = sum(s["time"] for s in it)
    acc = sum(s["accepted"] for s in it)
    jac_points = sum(s["jac_batch"] for s in it)
    return {
        "batch_size": batch_size,
        "paths": X.shape[0],
        "iterations_timed": len(it),
        "mean_active": sum(s["active"] for s in it) / max(len(it), 1),
        "path_steps_per_s": acc / t if t else float("nan"),
        "s_per_path_step": t / acc if acc else float("nan"),
        "jacobian_points_per_path_step": jac_points / acc if acc else float("nan"),
        "share_jacobian": sum(s["jac_time"] for s in it) / t if t else float("nan"),
        "share_forward": sum(s["fwd_time"] for s in it) / t if t else float("nan"),
        "jacobian_s_per_point_in_situ": sum(s["jac_time"] for s in it) / jac_points if jac_points else float("nan"),
        "wall_s": wall,
        "statuses": cm.statuses(res.status),
    }


def reference_trace(model, p) -> dict:
    from frmargin import trace_paths

    x, y = cm.correct_images(model, p.data, p.ref_images, p.ref_offset)
    X, s, t = cm.all_target_paths(x, y, 10)
    t0 = time.perf_counter()
    res = trace_paths(model, X, s, t, batch_size=128)
    wall = time.perf_counter() - t0
    return {
        "paths": X.shape[0],
        "steps_per_path": float(res.steps.double().mean()),
        "jacobian_evals_per_path": float(res.jacobian_evals.mean()),
        "wall_s": wall,
        "wall_s_per_path": wall / X.shape[0],
    }


def cli_run(out: Path, images: int, batch_size: int, chunk_images: int) -> dict:
    """``frmargin run --images N --data cifar10-jpeg`` end to end, in a subprocess."""
    if out.exists():
        shutil.rmtree(out)
    args = ["run", "--images", str(images), "--data", "cifar10-jpeg", "--out", str(out), "--batch-size",
            str(batch_size), "--chunk-images", str(chunk_images), "--no-progress", "--device", "cpu"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "frmargin", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    command = "frmargin " + " ".join(args)
    if proc.returncode != 0:
        return {"command": command, "error": proc.stderr[-2000:], "wall_s": wall}
    run = json.loads((out / "run.json").read_text())
    n_paths = run.get("n_paths") or 0
    return {"command": command, "wall_s": wall, "n_paths": n_paths, "paths_per_s": n_paths / wall}


if __name__ == "__main__":
    raise SystemExit(main(throughput))
