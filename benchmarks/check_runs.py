"""Column-by-column regression check of whole runs (``frmargin run``) before and after a change.

Runs ``frmargin run`` for ResNet-20 and cnn-a-adv4 on 8 official test images (every other class
as target) with the Fisher metric, the Euclidean metric, paper mode and the box [0, 1], then either
keeps the path tables (``--save DIR``) or compares them with kept ones (``--compare DIR``): every
column of ``paths.parquet`` and ``baselines.parquet``, exactly (NaN matched to NaN).

Usage: FRMARGIN_MIRROR=../shared/assets .venv/bin/python benchmarks/check_runs.py --save /tmp/runs-ref
       FRMARGIN_MIRROR=../shared/assets .venv/bin/python benchmarks/check_runs.py --compare /tmp/runs-ref
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

MODELS = ("resnet20", "cnn-a-adv4")
CONFIGS = {
    "fisher": [],
    "euclidean": ["--metric", "euclidean"],
    "paper": ["--method", "paper"],
    "box": ["--box", "0,1"],
}


def _run(model: str, name: str, out: Path, threads: int) -> None:
    cmd = [sys.executable, "-m", "frmargin", "run", "--model", model, "--data", "cifar10", "--images", "8"]
    cmd += [*CONFIGS[name], "--threads", str(threads), "--no-progress", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _table(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    return frame.sort_values([c for c in ("image_index", "target") if c in frame]).reset_index(drop=True)


def _differences(a: pd.DataFrame | None, b: pd.DataFrame | None) -> list[str]:
    if a is None or b is None:
        return [] if a is None and b is None else ["<table missing>"]
    if len(a) != len(b):
        return [f"<rows {len(a)} vs {len(b)}>"]
    out = [f"<column {c} only on one side>" for c in sorted(set(a.columns) ^ set(b.columns))]
    for col in a.columns.intersection(b.columns):
        x, y = a[col], b[col]
        if x.dtype.kind == "f":
            same = ((x == y) | (x.isna() & y.isna())).all()
        else:
            same = x.astype(str).equals(y.astype(str))
        if not same:
            out.append(col)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--save", type=Path)
    mode.add_argument("--compare", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/frmargin-check-runs"), help="where new runs go")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    failed = []
    for model in MODELS:
        for name in CONFIGS:
            tag = f"{model}-{name}"
            out = (args.save if args.save is not None else args.work) / tag
            if args.compare is not None and out.exists():
                subprocess.run(["rm", "-rf", str(out)], check=True)
            _run(model, name, out, args.threads)
            if args.save is not None:
                print(f"saved {tag}", flush=True)
                continue
            diff = []
            for table in ("paths.parquet", "baselines.parquet"):
                diff += [f"{table}:{c}" for c in _differences(_table(args.compare / tag, table), _table(out, table))]
            print(f"{'SAME' if not diff else 'DIFF'} {tag:28s} {' '.join(diff)}", flush=True)
            if diff:
                failed.append(tag)
    if failed:
        print(f"{len(failed)} run(s) differ: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
