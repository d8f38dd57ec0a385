"""The perturbation-model measurement: run it (resumably, in rounds) and collect its result set.

    python docs/results/perturbation.py run --root RUNS [--images 100] [--quotas 2,4,10,20,50,100]
    python docs/results/perturbation.py collect --root RUNS [--command "..."]

``run`` traces one run folder per (model, perturbation model, metric) under
``RUNS/<model>/<perturbation>/<metric>`` with ``frmargin run`` (``--images`` official test
images, two per chunk, one thread) in rounds: in each round every configuration, in priority
order, is traced until it holds at least the round's quota of chunks' images (a running
``frmargin run`` is terminated once its folder holds the quota, and resumed with ``--resume``
in the next round; rerunning the command resumes every folder where it stopped). ``collect`` summarizes every folder as it stands
(finished or not) into ``docs/results/data/perturbation/`` (``frmargin.analysis.perturbation``)
with the commands, date, machine and package version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("resnet20", "cnn-a-adv2", "resnet2b-adv2", "shufflenetv2-x0.5")
#: the K-sweep figures show these models only (others may be traced at one K, e.g. ``dct:4``)
SWEEP = f"model in {list(MODELS)!r}"
KS = ("1", "2", "4", "8", "16", "full")
#: in priority order (the K the finding turns on first, the control after)
PERTURBATIONS = (
    *("dct:1", "dct:4", "dct:16", "dct:full", "color", "dct:2", "dct:8"),
    *("random:4", "random:1", "random:16", "random:full", "random:2", "random:8"),
)
METRICS = ("fisher", "euclidean")
CHUNK_IMAGES = 2
POLL_SECONDS = 20


_COMMON = {"model": "model", "perturbation": "perturbation", "k": "K", "images": "images", "paths": "paths"}
#: how the results page shows the set (``docs/_hooks/data_pages.py``); collecting keeps edits
PRESENTATION = {
    "title": "In a perturbation model's subspace",
    "order": 3,
    "tables": [
        {
            "file": "summary.csv",
            "title": "Four DCT directions on every model of the zoo",
            "query": "perturbation == 'dct:4'",
            "intervals": True,
            "columns": {
                "model": "model",
                "metric": "metric",
                "images": "images",
                "paths": "paths",
                "reachable": "reached a class change",
                "shielded": "shielded",
                "shielded_closed_form": "closed form's shielded",
                "first_hit_agreement": "first hit = closed form's",
                "margin_ratio": "median subspace margin / LB",
            },
            "caption": "Shares of paths; shielded and first-hit shares among the paths that changed the class; "
            "intervals: 95% cluster bootstrap over images.",
        },
        {
            "file": "summary.csv",
            "title": "Natural gradient in the subspace",
            "query": "metric == 'fisher'",
            "intervals": True,
            "columns": {
                **_COMMON,
                "reachable": "reached a class change",
                "stationary": "stationary",
                "runaway": "runaway",
                "creeping": "creeping",
                "budget": "budget",
                "shielded": "shielded",
                "shielded_closed_form": "closed form's shielded",
                "first_hit_agreement": "first hit = closed form's",
                "margin_ratio": "median subspace margin / LB",
                "above_lb": "images above 1.01 LB",
            },
            "caption": "Shares of paths; shielded and first-hit shares among the paths that changed the class; "
            "intervals: 95% cluster bootstrap over images.",
        },
        {
            "file": "summary.csv",
            "title": "Euclidean gradient in the subspace",
            "query": "metric == 'euclidean'",
            "intervals": True,
            "columns": {
                **_COMMON,
                "reachable": "reached a class change",
                "stationary": "stationary",
                "creeping": "creeping",
                "budget": "budget",
                "shielded": "shielded",
                "shielded_closed_form": "closed form's shielded",
                "first_hit_agreement": "first hit = closed form's",
            },
        },
        {
            "file": "summary.csv",
            "title": "Valid images and cost (natural gradient)",
            "query": "metric == 'fisher'",
            "columns": {
                **_COMMON,
                "u_norm": "median |u| at the change",
                "l2": "median L2 at the change",
                "out_of_range": "median share of pixels out of range",
                "range_violation": "median largest violation",
                "jacobians_per_path": "Jacobian evaluations per path",
            },
        },
        {
            "file": "summary.csv",
            "title": "The paper's claims 1 to 3 in the subspace",
            "intervals": True,
            "columns": {
                "model": "model",
                "perturbation": "perturbation",
                "metric": "metric",
                "images": "images",
                "margin_animals": "median margin, animal images",
                "margin_vehicles": "median margin, vehicle images",
                "vehicle_shields": "shield events with a vehicle shield",
                "animal_shields_vehicle": "animal shields a vehicle target",
                "vehicle_shields_animal": "vehicle shields an animal target",
            },
            "caption": "Margins: the subspace margin per image (natural gradient) or the least traced length "
            "(Euclidean); animals are bird, cat, dog, frog; vehicles airplane, automobile, ship, truck.",
        },
    ],
    "figures": [
        {
            "kind": "line",
            "file": "summary.csv",
            "query": f"metric == 'fisher' and {SWEEP}",
            "x": "log2_k",
            "y": ["reachable", "shielded", "margin_ratio"],
            "group": "series",
            "title": "Natural gradient, against the number of directions K",
            "labels": {
                "log2_k": "log2 K",
                "reachable": "share of paths reaching a change",
                "shielded": "shielded share (of those)",
                "margin_ratio": "median subspace margin / LB",
            },
        },
        {
            "kind": "line",
            "file": "summary.csv",
            "query": f"metric == 'euclidean' and {SWEEP}",
            "x": "log2_k",
            "y": ["reachable", "shielded"],
            "group": "series",
            "title": "Euclidean gradient, against the number of directions K",
            "labels": {
                "log2_k": "log2 K",
                "reachable": "share of paths reaching a change",
                "shielded": "shielded share (of those)",
            },
        },
    ],
}


def folder_name(perturbation: str) -> str:
    return perturbation.replace(":", "-")


def run_dir(root: Path, model: str, perturbation: str, metric: str) -> Path:
    return root / model / folder_name(perturbation) / metric


def images_done(out: Path) -> int:
    """Images whose chunk is written (two per part; a finished run: all of its correct images)."""
    info = out / "run.json"
    if info.exists() and json.loads(info.read_text()).get("status") == "complete":
        return 10**9
    parts = out / "paths.parquet"
    return CHUNK_IMAGES * len(list(parts.glob("part-*.parquet"))) if parts.is_dir() else 0


def command(model: str, perturbation: str, metric: str, images: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "frmargin", "run", "--model", model, "--data", "cifar10", "--images", str(images),
        "--perturbation", perturbation, "--metric", metric, "--chunk-images", str(CHUNK_IMAGES),
        "--threads", "1", "--no-progress", "--out", str(out),
        *(["--resume"] if (out / "run.json").exists() else []),
    ]  # fmt: skip


def trace_until(cmd: list[str], out: Path, quota: int, log: Path) -> None:
    """Run ``cmd`` until it ends or its folder holds ``quota`` images (then interrupt it)."""
    if images_done(out) >= quota:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd[2:])} (quota {quota})\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            if images_done(out) >= quota:
                proc.terminate()  # the chunk being traced is lost; ``--resume`` redoes it
                proc.wait()
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ended ({images_done(out)} images done)\n")


def run(args: argparse.Namespace) -> None:
    root = Path(args.root)
    quotas = [int(q) for q in args.quotas.split(",")]
    for quota in quotas:
        for model in args.models.split(","):
            for perturbation in args.perturbations.split(","):
                for metric in METRICS:
                    out = run_dir(root, model, perturbation, metric)
                    cmd = command(model, perturbation, metric, args.images, out)
                    trace_until(cmd, out, quota, root / "driver.log")


def _k(perturbation: str, info: dict) -> int:
    return int((info.get("perturbation") or {}).get("k") or 0)


def _folders(root: Path) -> list[tuple[str, str, str, Path]]:
    """(model, perturbation, metric, folder) of every run folder under ``root`` with paths: the
    models of ``MODELS`` first, then any other model traced there (``run --models``)."""
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in MODELS) if root.is_dir() else []
    out = []
    for model in (*MODELS, *others):
        for perturbation in PERTURBATIONS:
            for metric in METRICS:
                folder = run_dir(root, model, perturbation, metric)
                if images_done(folder) > 0:  # a folder without a written chunk has no paths yet
                    out.append((model, perturbation, metric, folder))
    return out


#: CIFAR-10's vehicle classes (airplane, automobile, ship, truck) and its animal classes the
#: paper calls fragile (bird, cat, dog, frog)
VEHICLES, ANIMALS = (0, 1, 8, 9), (2, 3, 5, 6)


def claim_statistics(paths, n_boot: int) -> dict:
    """The paper's claims 1 to 3 in the subspace, from the paths of one run: the median margin
    of animal and of vehicle images (the subspace margin, else the least traced length), the
    share of shield events whose shield is a vehicle (with its 95% interval), and the shield
    events of an animal in the way of a vehicle target and the reverse."""
    from frmargin.analysis.bootstrap import ClusterBootstrap, scalar_interval

    images = np.unique(paths["image_index"].to_numpy())
    pos = np.searchsorted(images, paths["image_index"].to_numpy())
    strata = paths.groupby("image_index")["source"].first().reindex(images).to_numpy()
    boot = ClusterBootstrap.draw(strata, n_boot, 0)
    ok = paths["success"].to_numpy(bool)
    hit, target = paths["first_hit"].to_numpy(), paths["target"].to_numpy()
    shielded = ok & (hit != target)
    vehicle = np.isin(hit, VEHICLES)
    point, reps = boot.ratio((shielded & vehicle).astype(float), shielded.astype(float), pos)
    lo, hi = scalar_interval(reps)
    if "subspace_margin" in paths and paths["subspace_margin"].notna().any():
        per = paths.groupby("image_index").agg(source=("source", "first"), margin=("subspace_margin", "first"))
    else:  # Euclidean runs: the least traced FR length of the image's paths that changed the class
        per = paths[ok].groupby("image_index").agg(source=("source", "first"), margin=("fr_length", "min"))
    return {
        "margin_animals": float(per.loc[per["source"].isin(ANIMALS), "margin"].median()),
        "margin_vehicles": float(per.loc[per["source"].isin(VEHICLES), "margin"].median()),
        "vehicle_shields": point,
        "vehicle_shields_lo": lo,
        "vehicle_shields_hi": hi,
        "animal_shields_vehicle": int((shielded & np.isin(hit, ANIMALS) & np.isin(target, VEHICLES)).sum()),
        "vehicle_shields_animal": int((shielded & vehicle & np.isin(target, ANIMALS)).sum()),
    }


def collect(args: argparse.Namespace) -> None:
    """Summarize the folders, each perturbation model of a model on the images both of its
    metrics traced (the first images of the same selection: a folder traced in rounds holds
    the first chunks): ``summary.csv`` (a row per model,
    perturbation model and metric, with 95% cluster-bootstrap intervals over images),
    ``margins.csv`` (per image of the natural-gradient runs, LB and the subspace margin) and
    ``provenance.json``."""
    import pandas as pd

    from frmargin.analysis.perturbation import perturbation_summary
    from frmargin.runs import load_run

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from collect import provenance

    root, dest = Path(args.root), Path(__file__).resolve().parent / "data" / "perturbation"
    runs = [(m, pert, metric, load_run(folder), folder) for m, pert, metric, folder in _folders(root)]
    shared: dict[tuple[str, str], set] = {}
    for model, pert, _, run, _ in runs:
        traced = set(run.paths["image_index"].unique())
        key = (model, pert)
        shared[key] = traced if key not in shared else shared[key] & traced
    rows, margins = [], []
    for model, pert, metric, run, _ in runs:
        paths = run.paths[run.paths["image_index"].isin(shared[(model, pert)])]
        family = pert.split(":")[0]
        k = _k(pert, run.info)
        head = {"model": model, "perturbation": pert, "family": family, "k": k, "metric": metric}
        head["series"] = f"{model} {family}"
        head["log2_k"] = float(np.log2(k)) if k else float("nan")
        summary = perturbation_summary(paths, n_boot=args.n_boot, seed=0)
        rows.append({**head, **summary, **claim_statistics(paths, args.n_boot)})
        if metric == "fisher" and "subspace_margin" in paths:
            per = paths.groupby("image_index")[["source", "lower_bound", "subspace_margin"]].first().reset_index()
            per["margin_over_lb"] = per["subspace_margin"] / per["lower_bound"]
            margins.append(per.assign(**{k2: v for k2, v in head.items() if k2 != "metric"}))
    dest.mkdir(parents=True, exist_ok=True)
    summary = pd.DataFrame(rows)
    summary.to_csv(dest / "summary.csv", index=False, float_format="%.6g")
    pd.concat(margins).to_csv(dest / "margins.csv", index=False, float_format="%.6g")
    old = json.loads((dest / "provenance.json").read_text()) if (dest / "provenance.json").is_file() else {}
    record = provenance([folder for *_, folder in runs], args.command, old)
    record["images"] = {f"{model} {pert}": len(images) for (model, pert), images in shared.items()}
    record["runs"] = {
        f"{model}/{folder_name(pert)}/{metric}": {
            **{key: run.info.get(key) for key in ("status", "n_correct", "n_paths", "timing")},
            "images_traced": int(run.paths["image_index"].nunique()),
            "perturbation": run.info.get("perturbation"),
        }
        for model, pert, metric, run, _ in runs
    }
    keep = {**PRESENTATION, **{k2: old[k2] for k2 in ("title", "tables", "figures", "readme", "order") if k2 in old}}
    (dest / "provenance.json").write_text(json.dumps({**record, **keep}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="trace (resume) every configuration in rounds of image quotas")
    r.add_argument("--root", required=True)
    r.add_argument("--images", type=int, default=100)
    r.add_argument("--quotas", default="2,4,10,20,50,100")
    r.add_argument("--models", default=",".join(MODELS))
    r.add_argument("--perturbations", default=",".join(PERTURBATIONS))
    c = sub.add_parser("collect", help="summarize the folders into docs/results/data/perturbation/")
    c.add_argument("--root", required=True)
    c.add_argument("--command", action="append", default=[])
    c.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()
    {"run": run, "collect": collect}[args.what](args)


if __name__ == "__main__":
    main()
