"""Throughput of the converged tracer vs batch_size on CPU, and an extrapolated 800-image run.

For each batch size b, trace b paths (images x their 9 targets, ResNet-20, ``cifar10-exact``)
for ``--steps`` accepted steps (``max_steps``) with the tracer instrumented. The first iteration
is excluded (the 9 paths of one image share their starting point, so it evaluates only b / 9
Jacobians); the steady-state rate is accepted path-steps per second over the remaining
iterations, and its cost in Jacobian evaluations of one point per path-step.

Paths per second = (path-steps per second) / (accepted steps per path of a complete trace),
the latter measured by a complete default trace of ``--ref-images`` images here (or passed in
with --steps-per-path). This is an EXTRAPOLATION: it assumes every iteration runs a full batch,
while in a real run the batch empties as paths finish (the tail runs smaller, less efficient
batches). The extrapolated wall time of the paper-sized run, 800 images x 9 = 7200 paths, is
7200 / (paths per second at the best batch size).

With ``--cli-images N`` the real command ``frmargin run --images N --data cifar10-jpeg`` is also
timed end to end (subprocess; its run.json timing is read back).

Usage: .venv/bin/python benchmarks/bench_throughput.py [--batch-sizes 8,16,32,64,128] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_throughput"
FULL_PATHS = 7200


def steady_rate(model, X, source, target, batch_size: int, steps: int) -> dict:
    from frmargin.paths import trace_paths

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
        "statuses": {s: res.status.count(s) for s in sorted(set(res.status))},
    }


def reference_trace(model, args) -> dict:
    from frmargin.paths import trace_paths

    x, y = cm.correct_images(model, args.data, args.ref_images, args.ref_offset)
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


def cli_run(images: int, batch_size: int, chunk_images: int) -> dict:
    out = cm.RESULTS / f"cli_run_{images}"
    if out.exists():
        shutil.rmtree(out)
    exe = Path(sys.executable).with_name("frmargin")
    cmd = [
        str(exe),
        "run",
        "--images",
        str(images),
        "--data",
        "cifar10-jpeg",
        "--out",
        str(out),
        "--batch-size",
        str(batch_size),
        "--chunk-images",
        str(chunk_images),
        "--no-progress",
        "--device",
        "cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    cm.setup_env()
    env.setdefault("FRMARGIN_MIRROR", os.environ.get("FRMARGIN_MIRROR", cm.DEFAULT_MIRROR))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"command": " ".join(cmd), "error": proc.stderr[-2000:], "wall_s": wall}
    run = json.loads((out / "run.json").read_text())
    return {
        "command": " ".join(cmd[1:]),
        "wall_s": wall,
        "n_paths": run.get("n_paths"),
        "timing": run.get("timing"),
        "n_correct": run.get("n_correct"),
        "paths_per_s": run.get("n_paths", 0) / wall if wall else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="8,16,32,64,128")
    ap.add_argument("--steps", type=int, default=3, help="accepted steps per path in each timed trace")
    ap.add_argument("--data", default="cifar10-exact")
    ap.add_argument(
        "--steps-per-path",
        type=float,
        default=None,
        help="accepted steps of a complete path (default: measured with a complete trace)",
    )
    ap.add_argument("--ref-images", type=int, default=1, help="images of the complete reference trace")
    ap.add_argument("--ref-offset", type=int, default=0)
    ap.add_argument("--cli-images", type=int, default=0, help="also time `frmargin run --images N` (0: skip)")
    ap.add_argument("--cli-batch-size", type=int, default=64)
    ap.add_argument("--cli-chunk-images", type=int, default=4)
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    info = cm.device_info()
    model = cm.load_model()
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    n_img = math.ceil(max(sizes) / 9)
    x, y = cm.correct_images(model, args.data, n_img)
    X, source, target = cm.all_target_paths(x, y, 10)
    print(f"[{NAME}] batch sizes {sizes}, {args.steps} steps; device: {cm.device_line(info)}", flush=True)

    from frmargin.paths import trace_paths

    trace_paths(model, X[:2], source[:2], target[:2], max_steps=2)  # warm-up
    rows = []
    for b in sizes:
        r = steady_rate(model, X[:b], source[:b], target[:b], b, args.steps)
        rows.append(r)
        print(
            f"[{NAME}] b={b}: {r['path_steps_per_s']:.2f} path-steps/s, {r['s_per_path_step']:.3f} s/path-step, "
            f"Jacobian share {r['share_jacobian']:.2f}",
            flush=True,
        )

    if args.steps_per_path is None:
        ref = reference_trace(model, args)
        spp = ref["steps_per_path"]
    else:
        ref, spp = None, args.steps_per_path
    for r in rows:
        r["paths_per_s_extrapolated"] = r["path_steps_per_s"] / spp
        r["full_run_h_extrapolated"] = FULL_PATHS / r["paths_per_s_extrapolated"] / 3600
    best = max(rows, key=lambda r: r["paths_per_s_extrapolated"])
    cli = cli_run(args.cli_images, args.cli_batch_size, args.cli_chunk_images) if args.cli_images > 0 else None
    if cli:
        print(f"[{NAME}] CLI: {cli}", flush=True)

    cols = [
        "batch_size",
        "paths",
        "iterations_timed",
        "mean_active",
        "path_steps_per_s",
        "s_per_path_step",
        "jacobian_points_per_path_step",
        "jacobian_s_per_point_in_situ",
        "share_jacobian",
        "share_forward",
        "paths_per_s_extrapolated",
        "full_run_h_extrapolated",
    ]
    md = [
        f"# {NAME}: converged-mode throughput vs batch_size (ResNet-20, CPU)\n",
        f"Device: {cm.device_line(info)}\n",
        f"Steady state = iterations 2..{args.steps} of a trace with max_steps={args.steps} (the first, de-duplicated "
        "iteration excluded). Units: path-steps/s (accepted steps of all paths per second), s per path-step, "
        "Jacobian points evaluated per path-step, shares of iteration time in Jacobian and forward calls.\n",
        f"Accepted steps per complete path: {spp:.2f} "
        + (
            f"(measured: complete default trace of {ref['paths']} paths, {ref['wall_s_per_path']:.2f} s/path at batch "
            f"{ref['paths']}, {ref['jacobian_evals_per_path']:.2f} Jacobian evals/path)"
            if ref
            else "(given)"
        )
        + ".\n",
        cm.markdown_table(rows, cols),
        f"\n**Extrapolated** (not measured) full run, {FULL_PATHS} paths (800 images x 9) at batch_size "
        f"{best['batch_size']}: {FULL_PATHS / best['paths_per_s_extrapolated'] / 3600:.2f} h on this CPU "
        f"({best['paths_per_s_extrapolated']:.3f} paths/s). It assumes full batches throughout; the tail of "
        "each batch runs with fewer paths, so a real run is slower.\n",
        "\nNote: `frmargin run` traces one results chunk (`--chunk-images`, default 4 images = 36 paths) per "
        "`trace_paths` call, so a `--batch-size` above 9 x chunk_images has no effect unless --chunk-images "
        "is raised too.\n",
    ]
    if cli:
        md.append(
            f"\n## Real CLI run\n\n`{cli.get('command')}`: {cli.get('wall_s', float('nan')):.1f} s wall, "
            f"{cli.get('n_paths')} paths, run.json timing {cli.get('timing')}\n"
            if "error" not in cli
            else f"\n## Real CLI run failed\n\n```\n{cli['error']}\n```\n"
        )
    payload = {
        "device": info,
        "args": vars(args),
        "rows": rows,
        "reference_trace": ref,
        "steps_per_path": spp,
        "cli": cli,
    }
    path = cm.save(NAME, payload, "\n".join(md))
    print(f"[{NAME}] wrote {path}", flush=True)
    payload["summary"] = [
        cm.figure(
            NAME,
            f"steady throughput, batch {r['batch_size']}",
            r["path_steps_per_s"],
            "path-steps/s",
            f"{r['s_per_path_step']:.3f} s/path-step; ~{r['paths_per_s_extrapolated']:.3f} paths/s (extrapolated)",
        )
        for r in rows
    ] + [
        cm.figure(NAME, "best batch size", best["batch_size"], "paths/batch"),
        cm.figure(
            NAME,
            f"EXTRAPOLATED full run ({FULL_PATHS} paths)",
            FULL_PATHS / best["paths_per_s_extrapolated"] / 3600,
            "h",
            f"at batch {best['batch_size']}, {spp:.2f} steps/path; full batches assumed (optimistic)",
        ),
    ]
    if ref:
        payload["summary"].append(
            cm.figure(
                NAME,
                "measured complete trace",
                ref["wall_s_per_path"],
                "s/path",
                f"{ref['paths']} paths in one batch; {ref['steps_per_path']:.2f} steps/path",
            )
        )
    if cli and "error" not in cli:
        payload["summary"].append(
            cm.figure(
                NAME,
                f"real CLI run, {args.cli_images} cifar10-jpeg images",
                cli["wall_s"],
                "s",
                f"{cli['n_paths']} paths, {cli['paths_per_s']:.3f} paths/s incl. start-up",
            )
        )
    return payload


if __name__ == "__main__":
    main()
