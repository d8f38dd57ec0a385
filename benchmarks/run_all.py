"""Run every benchmark at a small default size and write ``benchmarks/results/summary.md``.

Sizes are chosen so that the whole run takes about 10 minutes on a 2-core CPU; each benchmark
takes larger sizes from its own command line (see benchmarks/README.md). Every figure comes with
its unit; machine-independent units (Jacobian evaluations, forward passes, matvecs, ratios to a
reference operation) sit next to seconds.

Usage: .venv/bin/python benchmarks/run_all.py [--threads 1] [--quick] [--only tracer,solve]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm
import bench_closed_form
import bench_many_classes
import bench_peers
import bench_solve
import bench_throughput
import bench_top_classes
import bench_tracer
import bench_zoo_steps

ORDER = ("tracer", "zoo_steps", "peers", "solve", "throughput", "closed_form", "many_classes", "top_classes")


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=cm.DEFAULT_THREADS, help="torch threads (0 = torch default)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes still (a smoke run, ~3 minutes)")
    ap.add_argument("--only", default=",".join(ORDER), help=f"comma list among {ORDER}")
    args = ap.parse_args(argv)
    th = ["--threads", str(args.threads)]
    cm.apply_threads(args.threads)
    q = args.quick
    plan = {
        "tracer": (
            bench_tracer,
            ["--images", "3" if q else "20"]
            + (["--settings", "default,eta=1.0,logit_step=2", "--no-reference"] if q else []),
        ),
        "zoo_steps": (bench_zoo_steps, ["--images", "2" if q else "8"]),
        "peers": (bench_peers, ["--images", "4" if q else "16"] + (["--no-paper"] if q else [])),
        "solve": (bench_solve, ["--images", "4", "--repeats", "2" if q else "3"]),
        "throughput": (bench_throughput, ["--batch-sizes", "8,32" if q else "8,16,32,64,128", "--steps", "5"]),
        "closed_form": (bench_closed_form, ["--images", "2000" if q else "10000", "--repeats", "2"]),
        "many_classes": (
            bench_many_classes,
            ["--batch-sizes", "1,4" if q else "1,8", "--repeats", "2"] + (["--no-relative"] if q else []),
        ),
        "top_classes": (bench_top_classes, ["--inputs", "1" if q else "3", "--m", "5,20" if q else "5,20,100"]),
    }
    chosen = [n for n in args.only.split(",") if n]
    for n in chosen:
        if n not in plan:
            raise SystemExit(f"--only: unknown benchmark {n!r}, expected among {ORDER}")
    start = time.perf_counter()
    info = cm.device_info()
    figures, timings, commands = [], {}, []
    steps_per_path = None
    for name in ORDER:
        if name not in chosen:
            continue
        module, argv_b = plan[name]
        if name == "throughput" and steps_per_path is not None:
            argv_b = [*argv_b, "--steps-per-path", f"{steps_per_path:.4f}"]
        argv_b = argv_b + th
        commands.append(f".venv/bin/python benchmarks/{module.__name__}.py {' '.join(argv_b)}")
        t0 = time.perf_counter()
        try:
            payload = module.main(argv_b)
            figures += payload.get("summary", [])
            if name == "tracer":
                default = next((r for r in payload["settings"] if r["setting"] == "default"), None)
                if default:
                    steps_per_path = default["steps_per_path"]
        except Exception as err:  # one failure must not lose the others' figures
            traceback.print_exc()
            figures.append(cm.figure(module.__name__, "FAILED", type(err).__name__, "", str(err)[:200]))
        timings[name] = time.perf_counter() - t0
    total = time.perf_counter() - start
    md = [
        "# frmargin benchmarks: summary\n",
        f"Device: {cm.device_line(info)}\n",
        f"Total wall time of this run: {total:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + ").\n",
        "Reproduce: `FRMARGIN_MIRROR=/work/shared/assets .venv/bin/python benchmarks/run_all.py"
        + (f" --threads {args.threads}" if args.threads != cm.DEFAULT_THREADS else "")
        + (" --quick" if q else "")
        + "` (each benchmark alone: see the commands below and benchmarks/README.md).\n",
        "Per-benchmark tables: `benchmarks/results/<benchmark>.md` / `.json`; plot: `bench_tracer.png`.\n",
        cm.markdown_table(figures, ["benchmark", "quantity", "value", "unit", "note"]),
        "\nCommands run:\n",
        *(f"- `{c}`" for c in commands),
        "",
    ]
    text = "\n".join(md)
    cm.RESULTS.mkdir(parents=True, exist_ok=True)
    (cm.RESULTS / "summary.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    cm.setup_env()
    main()
