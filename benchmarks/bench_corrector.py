"""The corrector's per-correction linear algebra on few live rows: full batch vs compacted.

Each correction of a step updates the corrector's float64 Jacobian copy J (m, V, D) by
Broyden's secant update and forms the move J^T w, for the rows still correcting. Late in an
attempt most of the m rows have converged; ``linalg.COMPACT`` makes both operations work on
copies of the live rows only when they are fewer than m / COMPACT, with every row's arithmetic
unchanged (bit for bit: ``tests/test_steppers.py``). This times one update plus one combination
per call, median of ``--repeats`` loops, at CIFAR-10 shapes (V = 10, D = 3072), for the two
forms in the same process.

Usage: .venv/bin/python benchmarks/bench_corrector.py [--cases 15:2,40:3,144:20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

NAME = "bench_corrector"
NEVER = 10**9
COLUMNS = ["rows", "live", "compact_ms", "full_ms", "compact_over_full"]


def one_case(m: int, live: int, loops: int, repeats: int) -> dict:
    import frmargin.paths.linalg as la

    gen = torch.Generator().manual_seed(0)
    J = torch.randn(m, 10, 3072, generator=gen, dtype=torch.float64)
    K = J @ J.transpose(1, 2)
    dx = torch.randn(m, 3, 32, 32, generator=gen)
    dz = torch.randn(m, 10, generator=gen, dtype=torch.float64)
    w = torch.randn(m, 10, generator=gen, dtype=torch.float64)
    rows = torch.zeros(m, dtype=torch.bool)
    rows[:live] = True
    idx = rows.nonzero()[:, 0]
    times: dict[int, list[float]] = {2: [], NEVER: []}
    saved = la.COMPACT
    try:
        for _ in range(repeats):
            for c in times:  # alternate, so that both forms see the same machine
                la.COMPACT = c
                t0 = time.perf_counter()
                for _ in range(loops):
                    la.broyden_update(J, K, rows, dx, dz)
                    la.live_rows_combination(w, J, idx)
                times[c].append((time.perf_counter() - t0) / loops * 1e3)
    finally:
        la.COMPACT = saved
    compact, full = statistics.median(times[2]), statistics.median(times[NEVER])
    return {"rows": m, "live": live, "compact_ms": compact, "full_ms": full, "compact_over_full": compact / full}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="15:2,40:3,144:20", help="rows:live pairs")
    ap.add_argument("--loops", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    cm.add_thread_arg(ap)
    args = ap.parse_args(argv)
    cm.apply_threads(args.threads)
    cases = [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",") if c]
    rows = [one_case(m, k, args.loops, args.repeats) for m, k in cases]
    info = cm.device_info()
    md = "\n".join(
        [
            "# Corrector: Broyden update + J^T w on few live rows\n",
            f"Device: {cm.device_line(info)}\n",
            cm.markdown_table(rows, COLUMNS),
        ]
    )
    summary = [
        cm.figure(NAME, f"m={r['rows']}, live={r['live']}: compacted / full", f"{r['compact_over_full']:.2f}", "")
        for r in rows
    ]
    payload = {"device": info, "rows": rows, "summary": summary}
    cm.publish(NAME, payload, md)
    return payload


if __name__ == "__main__":
    main()
