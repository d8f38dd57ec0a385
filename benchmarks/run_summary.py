"""The headline figures of run folders from their path tables, also of an unfinished run.

Per run: statuses; the share of ``ok`` paths that are shielded (first hit != target) with its
Wilson 95% interval, against the share the closed form predicts from the start probabilities
(``predicted_first_hit``); first-hit agreement with the closed form; FR length against the closed
form (the natural-gradient flow's length: an accuracy check for ``--metric fisher``, the gap
between the metrics for ``euclidean``) and against the lower bound; the per-image FR margin (the
smallest FR length of an image's ``ok`` paths) and margin / LB; the L2 distance at the change;
Jacobian evaluations, forward passes and matvecs per path; the median confidence; the minimal
L2 of each baseline found in any of the runs (``baselines.parquet``) against the per-image minimum
of each run's traced L2;
and each session's frmargin version and peak RSS.

Usage: .venv/bin/python benchmarks/run_summary.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (c - h) / d, (c + h) / d


def baselines(runs: list[Path]) -> pd.DataFrame | None:
    """Every baseline part of the runs (image_index, attack, l2, status), or None."""
    parts = [f for run in runs for f in sorted((run / "baselines.parquet").glob("*.parquet"))]
    return pd.concat([pd.read_parquet(f) for f in parts]) if parts else None


def summary(run: Path, base: pd.DataFrame | None) -> list[str]:
    d = pd.read_parquet(run / "paths.parquet")
    info = json.loads((run / "run.json").read_text())
    ok = d[d.status == "ok"]
    k, n = int(ok.shielded.sum()), len(ok)
    lo, hi = wilson(k, n)
    pk = int((ok.predicted_first_hit != ok.target).sum())
    rel = (ok.fr_length - ok.predicted_length).abs() / ok.predicted_length
    margin = ok.groupby("image_index").fr_length.min()
    lb = ok.groupby("image_index").lower_bound.first()
    out = [
        f"== {run}: metric {info['metric']}, {info['images']} images, {info['n_correct']} correct, "
        f"{d.image_index.nunique()} traced, {len(d)} paths, status {info['status']}",
        f"status: {d.status.value_counts().to_dict()}",
        f"shielded: {k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (Wilson 95%); "
        f"closed form: {pk}/{n} = {100 * pk / n:.1f}%",
        f"first hit = closed form's: {(ok.first_hit == ok.predicted_first_hit).mean():.4f}",
        f"FR length vs closed form, relative: median {rel.median():.2g}, p90 {rel.quantile(0.9):.2g}",
        f"FR / LB median {(ok.fr_length / ok.lower_bound).median():.4f}; "
        f"share >= LB {(ok.fr_length >= ok.lower_bound * (1 - 1e-9)).mean():.4f}",
        f"per-image FR margin: mean {margin.mean():.3f}, margin / LB median {(margin / lb).median():.4f}",
        f"L2 at the change: median {ok.l2.median():.4g}",
        f"per path: Jacobian evaluations mean {d.jacobian_evals.mean():.2f} (median {d.jacobian_evals.median():.2f}), "
        f"forward passes mean {d.forward_evals.mean():.1f}, matvecs mean {d.matvecs.mean():.1f}",
        f"median confidence {d.groupby('image_index').confidence.first().median():.3f}",
    ]
    if base is not None:
        traced = ok.groupby("image_index").l2.min()
        for attack, g in base[base.status == "ok"].groupby("attack"):
            l2 = g.drop_duplicates("image_index").set_index("image_index").l2
            common = l2.index.intersection(traced.index)
            out.append(
                f"{attack}: {len(l2)} images, median L2 {l2.median():.4g}; this run's per-image min L2 / "
                f"{attack}: median {(traced[common] / l2[common]).median():.3f} ({len(common)} images)"
            )
    for s in info.get("sessions", []):
        out.append(
            f"session: frmargin {s.get('frmargin')}, status {s.get('status')}, peak RSS {s.get('peak_rss_mb')} MB"
        )
    return out


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    runs = [Path(a) for a in argv]
    base = baselines(runs)
    for run in runs:
        print("\n".join(summary(run, base)))


if __name__ == "__main__":
    main(sys.argv[1:])
