"""Many classes: Jacobian rows (cost and memory grow with C) vs matvec-based CG (per-matvec cost free of C).

Synthetic model on 3x32x32 inputs (D = 3072): Flatten -> Linear(D, H) -> Tanh -> Linear(H, C),
random weights (seed 0), for C in ``classes``. Per batch size B, each operation runs in a fresh
subprocess so that its memory peak can be read cleanly: peak resident memory (ru_maxrss) after
the first call minus the resident memory just before it (so the model, inputs and imports are
excluded). Where the kernel allows it (/proc/self/clear_refs), a warm-up call runs first and the
peak mark is reset before the measured call; glibc's mmap threshold is fixed so that freed
blocks leave the resident set at once. Times: the median of ``repeats`` calls after these.

Operations:
- ``jacobian``: ``logits_and_jacobian`` (C rows at B points; holds B x C x D floats);
- ``matvec``: one data-space Fisher product ``DataFisher.matvec`` (one jvp + one vjp);
- ``cg_step``: one paper-mode step, ``solver="cg"``, absolute damping (CG matvecs only);
- ``exact_step``: one paper-mode step, ``solver="exact"`` (Jacobian rows + float64 C x C algebra);
- ``cg_step_rel`` (B = 1 only, with ``relative``): CG with the default *relative* damping, whose
  largest-eigenvalue estimate spends C Krylov matvecs (so its cost does grow with C).

Memory bound: the Jacobian alone is B * C * D float32 = 4 B C D bytes (12.3 MB per point at
C = 1000, D = 3072); the exact step also keeps a float64 copy (8 B C D bytes) and C x C matrices.
``in_matvec_units`` = time / time of one Fisher matvec at the same B and C.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import _common as cm
from harness import Context, Output, benchmark, main

D = 3 * 32 * 32
OPS = ("jacobian", "matvec", "cg_step", "exact_step", "cg_step_rel")


#: the parameters of the full size (the published figures); the smaller sizes change a few
FULL = {"batch_sizes": "1,4,16", "classes": "10,1000", "hidden": 256, "repeats": 3, "damping": 1e-3,
        "ops": "jacobian,matvec,cg_step,exact_step", "relative": True}  # fmt: skip
SMOKE = {"batch_sizes": "1", "classes": "10", "hidden": 32, "repeats": 1, "ops": "matvec,exact_step", "relative": False}


@benchmark(
    name="many_classes",
    title="With many classes: Jacobian rows (cost and memory grow with C) against matvec-based CG",
    units={
        "C": "classes",
        "B": "count",
        "op": "",
        "H": "count",
        "D": "count",
        "time_s": "s",
        "first_call_s": "s",
        "step_s": "s",
        "time_per_point_s": "s",
        "in_matvec_units": "matvecs",
        "matvecs_per_path": "matvecs",
        "jacobian_evals_per_path": "Jacobian evaluations",
        "peak_extra_MB": "MB",
        "jacobian_MB_bound": "MB",
        "peak_over_jacobian_bound": "ratio",
        "repeats": "count",
        "peak_method": "",
        "status": "",
        "error": "",
    },
    key=("C", "B", "op"),
    sizes={
        "smoke": FULL | SMOKE,
        "small": FULL | {"batch_sizes": "1,8", "repeats": 2},
        "full": FULL,
    },
    needs_assets=False,
)
def many_classes(ctx: Context) -> Output:
    p = ctx.params
    sizes, classes = cm.numbers(p.batch_sizes), cm.numbers(p.classes)
    bad = [op for op in cm.names(p.ops) if op not in OPS[:4]]
    if bad:
        raise SystemExit(f"--set ops: got {bad}, expected among {OPS[:4]}")
    rows = []
    for C in classes:
        for B in sizes:
            for op in cm.names(p.ops):
                rows.append(run_worker(op, B, C, p.hidden, p.repeats, p.damping, ctx.threads))
                print(f"[many_classes] C={C} B={B} {op}: {rows[-1].get('time_s', rows[-1].get('error'))}", flush=True)
        if p.relative:
            rows.append(run_worker("cg_step_rel", 1, C, p.hidden, 1 if C >= 500 else p.repeats, p.damping, ctx.threads))

    def matvec_time(B, C):
        found = [r["time_s"] for r in rows if r["op"] == "matvec" and r["B"] == B and r["C"] == C and "error" not in r]
        return found[0] if found else float("nan")

    for r in rows:
        if "error" in r:
            continue
        r["time_per_point_s"] = r["time_s"] / r["B"]
        r["in_matvec_units"] = r["time_s"] / matvec_time(r["B"], r["C"])
        r["peak_over_jacobian_bound"] = r["peak_extra_MB"] / r["jacobian_MB_bound"]
    notes = (
        f"Model: Flatten -> Linear({D}, {p.hidden}) -> Tanh -> Linear({p.hidden}, C), random weights "
        f"(rank of J <= {p.hidden}); one fresh subprocess per row. cg_step uses absolute damping {p.damping:g}, "
        "cg_step_rel the default relative damping."
    )
    return Output(rows, notes)


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
    from frmargin import DataFisher, trace_paths
    from frmargin.fisher import logits_and_jacobian

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
            extra["status"] = " ".join(sorted(set(res.status)))
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


def run_worker(op: str, B: int, C: int, H: int, repeats: int, damping: float, threads: int) -> dict:
    """One operation in a fresh process (its own memory peak)."""
    spec = {"op": op, "B": B, "C": C, "H": H, "repeats": repeats, "damping": damping, "threads": threads}
    # a fixed mmap threshold: glibc then returns every large freed block to the OS at once, so
    # resident memory follows live tensors (the dynamic threshold would keep freed blocks resident)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"op": op, "B": B, "C": C, "error": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        spec = json.loads(sys.argv[2])
        torch.set_num_threads(spec.pop("threads"))
        print(json.dumps(worker(**spec)))
    else:
        raise SystemExit(main(many_classes))
