"""Many classes: Jacobian rows (cost and memory grow with C) vs matvec-based CG (per-matvec cost free of C).

Synthetic model on 3x32x32 inputs (D = 3072): Flatten -> Linear(D, H) -> Tanh -> Linear(H, C),
random weights (seed 0), for C in {10, 1000}. Per batch size B, each operation runs in a fresh
subprocess so that its memory peak can be read cleanly: peak resident memory (ru_maxrss) after
the first call minus the resident memory just before it (so the model, inputs and imports are
excluded). Where the kernel allows it (/proc/self/clear_refs), a warm-up call runs first and the
peak mark is reset before the measured call; glibc's mmap threshold is fixed so that freed
blocks leave the resident set at once. Times: the median of ``--repeats`` calls after these.

Operations:
- ``jacobian``: ``logits_and_jacobian`` (C rows at B points; holds B x C x D floats);
- ``matvec``: one data-space Fisher product ``DataFisher.matvec`` (one jvp + one vjp);
- ``cg_step``: one paper-mode step, ``solver="cg"``, absolute damping (CG matvecs only);
- ``exact_step``: one paper-mode step, ``solver="exact"`` (Jacobian rows + float64 C x C algebra);
- ``cg_step_rel`` (B = 1 only): CG with the default *relative* damping, whose largest-eigenvalue
  estimate spends C Krylov matvecs (so its cost does grow with C).

Memory bound: the Jacobian alone is B * C * D float32 = 4 B C D bytes (12.3 MB per point at
C = 1000, D = 3072); the exact step also keeps a float64 copy (8 B C D bytes) and C x C matrices.

Usage: .venv/bin/python benchmarks/bench_many_classes.py [--batch-sizes 1,4,16] [--classes 10,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_many_classes"
D = 3 * 32 * 32
OPS = ("jacobian", "matvec", "cg_step", "exact_step", "cg_step_rel")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def build(C: int, H: int) -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(D, H), torch.nn.Tanh(), torch.nn.Linear(H, C)).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def worker(op: str, B: int, C: int, H: int, repeats: int, damping: float) -> dict:
    from frmargin.fisher import DataFisher, logits_and_jacobian
    from frmargin.paths import trace_paths

    model = build(C, H)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, 3, 32, 32, generator=gen)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(-1)
    k = z.scatter(1, y[:, None], -float("inf")).argmax(-1)
    v = torch.randn(x.shape, generator=gen)
    extra = {}

    if op == "jacobian":

        def fn():
            return logits_and_jacobian(model, x)
    elif op == "matvec":
        F = DataFisher(model, x)
        _ = F.probs  # logits computed outside the timed product

        def fn():
            return F.matvec(v)
    elif op in ("cg_step", "exact_step", "cg_step_rel"):
        kw = {"method": "paper", "max_steps": 1}
        if op == "cg_step":
            kw.update(solver="cg", damping_mode="absolute", damping=damping)
        elif op == "cg_step_rel":
            kw.update(solver="cg")
        else:
            kw.update(solver="exact")

        def fn():
            with cm.instrument() as rec:
                res = trace_paths(model, x, y, k, **kw)
            extra["step_s"] = rec.steps[0]["time"] if rec.steps else float("nan")
            extra["matvecs_per_path"] = float(res.matvecs.double().mean())
            extra["jacobian_evals_per_path"] = float(res.jacobian_evals.mean())
            extra["status"] = sorted(set(res.status))
            return res
    else:
        raise SystemExit(f"unknown op {op!r}")

    # with VmHWM resettable: warm-up call, then the peak of a second call over the RSS before it;
    # otherwise (fresh process): the peak of the first call over the RSS before it
    reset = Path("/proc/self/clear_refs").exists()
    first = None
    if reset:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    base = _status_kb("VmRSS")
    reset = reset and _reset_peak()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    first = dt if first is None else first
    peak = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    times, steps = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if "step_s" in extra:
            steps.append(extra["step_s"])
    return {
        "op": op,
        "B": B,
        "C": C,
        "H": H,
        "D": D,
        "first_call_s": first,
        "time_s": statistics.median(times) if times else first,
        "step_s": statistics.median(steps) if steps else extra.get("step_s"),
        "repeats": repeats,
        "peak_extra_MB": max(peak - base, 0) / 1024,
        "peak_method": "VmHWM reset after warm-up" if reset else "ru_maxrss of a fresh process",
        "jacobian_MB_bound": 4 * B * C * D / 2**20,
        **{k: v for k, v in extra.items() if k != "step_s"},
    }


def run_worker(op, B, C, H, repeats, damping, threads) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        op,
        "--B",
        str(B),
        "--C",
        str(C),
        "--hidden",
        str(H),
        "--repeats",
        str(repeats),
        "--damping",
        str(damping),
        "--threads",
        str(threads),
    ]
    # a fixed mmap threshold: glibc then returns every large freed block to the OS at once, so
    # resident memory follows live tensors (the dynamic threshold would keep freed blocks resident)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"op": op, "B": B, "C": C, "error": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-sizes", default="1,4,16")
    ap.add_argument("--classes", default="10,1000")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--damping", type=float, default=1e-3, help="absolute damping of cg_step")
    ap.add_argument("--no-relative", action="store_true", help="skip cg_step_rel (C Krylov matvecs; slow at C=1000)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--B", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--C", type=int, default=1000, help=argparse.SUPPRESS)
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.B, args.C, args.hidden, args.repeats, args.damping)))
        return {}

    info = cm.device_info()
    sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    classes = [int(c) for c in args.classes.split(",") if c]
    print(f"[{NAME}] C {classes}, B {sizes}, H {args.hidden}; device: {cm.device_line(info)}", flush=True)
    rows = []
    for C in classes:
        for B in sizes:
            for op in ("jacobian", "matvec", "cg_step", "exact_step"):
                r = run_worker(op, B, C, args.hidden, args.repeats, args.damping, torch.get_num_threads())
                rows.append(r)
                print(
                    f"[{NAME}] C={C} B={B} {op}: "
                    + (
                        r.get("error", "")[-300:]
                        or f"{r['time_s']:.4f} s, peak +{r['peak_extra_MB']:.1f} MB (J bound {r['jacobian_MB_bound']:.1f} MB)"
                    ),
                    flush=True,
                )
        if not args.no_relative:
            r = run_worker(
                "cg_step_rel", 1, C, args.hidden, 1 if C >= 500 else args.repeats, args.damping, torch.get_num_threads()
            )
            rows.append(r)
            print(
                f"[{NAME}] C={C} B=1 cg_step_rel: {r.get('time_s', float('nan')):.3f} s, "
                f"{r.get('matvecs_per_path', float('nan')):.0f} matvecs",
                flush=True,
            )

    def get(op, B, C, key="time_s"):
        for r in rows:
            if r["op"] == op and r["B"] == B and r["C"] == C and "error" not in r:
                return r.get(key)
        return float("nan")

    for r in rows:
        if "error" in r:
            continue
        r["time_per_point_s"] = r["time_s"] / r["B"]
        mv = get("matvec", r["B"], r["C"])
        r["in_matvec_units"] = r["time_s"] / mv if mv == mv else float("nan")
        r["peak_over_jacobian_bound"] = r["peak_extra_MB"] / r["jacobian_MB_bound"]
    cols = [
        "C",
        "B",
        "op",
        "time_s",
        "time_per_point_s",
        "in_matvec_units",
        "matvecs_per_path",
        "jacobian_evals_per_path",
        "peak_extra_MB",
        "jacobian_MB_bound",
        "peak_over_jacobian_bound",
        "repeats",
    ]
    Cmax, Bmax = max(classes), max(sizes)
    md = "\n".join(
        [
            f"# {NAME}: Jacobian rows vs matvec-based CG with many classes\n",
            f"Device: {cm.device_line(info)}\n",
            f"Model: Flatten -> Linear({D}, {args.hidden}) -> Tanh -> Linear({args.hidden}, C), random weights "
            f"(rank of J <= {args.hidden}). Each row is a fresh subprocess; time = median of the repeats after the first "
            "(warm-up) calls; peak_extra_MB = peak RSS during one call minus RSS just before it (after a warm-up call, "
            "peak mark reset; see the module docstring). "
            "jacobian_MB_bound = B * C * D * 4 bytes (float32 Jacobian). in_matvec_units = time / time of one Fisher "
            "matvec at the same B and C. cg_step uses absolute damping "
            f"{args.damping:g}; cg_step_rel the default relative damping (C Krylov matvecs to estimate the largest "
            "eigenvalue).\n",
            cm.markdown_table([r for r in rows if "error" not in r], cols),
            *(f"\nERROR {r['op']} B={r['B']} C={r['C']}: {r['error']}\n" for r in rows if "error" in r),
        ]
    )
    payload = {"device": info, "args": vars(args), "rows": rows}
    path = cm.save(NAME, payload, md)
    print(f"[{NAME}] wrote {path}", flush=True)
    payload["summary"] = (
        [
            cm.figure(
                NAME,
                f"Jacobian eval, C={C}, B=1",
                get("jacobian", 1, C),
                "s",
                f"{get('jacobian', 1, C, 'in_matvec_units'):.1f} matvec units",
            )
            for C in classes
            if 1 in sizes
        ]
        + [cm.figure(NAME, f"Fisher matvec, C={C}, B=1", get("matvec", 1, C), "s") for C in classes if 1 in sizes]
        + [
            cm.figure(
                NAME,
                f"paper step CG (abs. damping), C={Cmax}, B={Bmax}",
                get("cg_step", Bmax, Cmax),
                "s",
                f"{get('cg_step', Bmax, Cmax, 'matvecs_per_path'):.0f} matvecs/path",
            ),
            cm.figure(
                NAME,
                f"paper step exact, C={Cmax}, B={Bmax}",
                get("exact_step", Bmax, Cmax),
                "s",
                f"{get('exact_step', Bmax, Cmax, 'in_matvec_units'):.0f} matvec units",
            ),
            cm.figure(
                NAME,
                f"Jacobian peak memory, C={Cmax}, B={Bmax}",
                get("jacobian", Bmax, Cmax, "peak_extra_MB"),
                "MB",
                f"bound B*C*D*4 = {get('jacobian', Bmax, Cmax, 'jacobian_MB_bound'):.0f} MB",
            ),
            cm.figure(
                NAME,
                f"exact step peak memory, C={Cmax}, B={Bmax}",
                get("exact_step", Bmax, Cmax, "peak_extra_MB"),
                "MB",
            ),
            cm.figure(
                NAME, f"CG step peak memory, C={Cmax}, B={Bmax}", get("cg_step", Bmax, Cmax, "peak_extra_MB"), "MB"
            ),
        ]
    )
    if not args.no_relative:
        payload["summary"].append(
            cm.figure(
                NAME,
                f"paper step CG (relative damping), C={Cmax}, B=1",
                get("cg_step_rel", 1, Cmax),
                "s",
                f"{get('cg_step_rel', 1, Cmax, 'matvecs_per_path'):.0f} matvecs/path (C Krylov)",
            )
        )
    return payload


if __name__ == "__main__":
    main()
