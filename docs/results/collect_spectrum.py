"""Collect the Fisher spectrum measurement into ``docs/results/data/spectrum/``, with its provenance.

    python docs/results/collect_spectrum.py --run MODEL=RUN_DIR [--run ...] \
        [--bench benchmarks/results/spectrum.json] --command "frmargin run ..." [--command ...]

Each ``RUN_DIR`` is a run made with a spectral attack among its baselines, after
``frmargin report RUN_DIR`` (whose Fisher spectrum section writes the ``spectrum_*.csv`` tables).
Writes, each with a ``model`` column: ``spectrum_attacks.csv`` (per attack: fooled %, median L2,
model evaluations, images below FMN), ``spectrum_scores.csv`` (lambda_1 and LB / sqrt(lambda_1)
against the FR margin and minimal L2), ``spectrum_detection.csv`` (AUROC of lambda_1),
``spectrum_curves.csv`` (success rate against the L2 budget), ``spectrum_images.csv`` (per image),
``spectrum_models.csv`` (one row per model) and, from ``--bench``, ``spectrum_cost.csv``; and
``provenance.json`` (schema ``frmargin-results/1``: the commands, date, versions, machine and how
the documentation shows each table). Every number of ``docs/results/spectrum.md`` comes from them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from collect import provenance_header  # docs/results/collect.py, beside this script

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "spectrum"
TABLES = ("attacks", "scores", "detection", "curves", "images")
FLOAT = "%.6g"


def _pair(text: str) -> tuple[str, Path]:
    label, _, folder = text.partition("=")
    if not folder:
        raise argparse.ArgumentTypeError(f"expected MODEL=RUN_DIR, got {text!r}")
    return label, Path(folder)


def model_row(model: str, run_dir: Path, tables: dict[str, pd.DataFrame]) -> dict:
    """One model's headline numbers from its section's tables and its run.json."""
    info = json.loads((run_dir / "run.json").read_text())
    scores = tables["scores"].set_index(["score", "versus"])
    attacks = tables["attacks"].set_index("attack")
    detection = tables["detection"].set_index("attack")
    below = attacks["n_below_fmn"] if "n_below_fmn" in attacks else pd.Series(dtype=float)
    row = {
        "model": model,
        "images": info.get("images"),
        "attacked": int(attacks["n"].max()),
        "accuracy": info.get("accuracy"),
        "median_l2_fmn": attacks["median_l2"].get("fmn"),
        "median_l2_ossa": attacks["median_l2"].get("ossa"),
        "median_l2_tssa": attacks["median_l2"].get("tssa"),
        "ossa_below_fmn": below.get("ossa"),
        "tssa_below_fmn": below.get("tssa"),
    }
    for (score, versus), name in (
        (("lambda_1", "fr_margin"), "rho_lambda_fr"),
        (("lambda_1", "fmn"), "rho_lambda_l2"),
        (("lb_over_sqrt_lambda_1", "fmn"), "rho_lb_lambda_l2"),
    ):
        if (score, versus) in scores.index:
            r = scores.loc[(score, versus)]
            row.update({name: r["spearman"], f"{name}_lo": r["spearman_lo"], f"{name}_hi": r["spearman_hi"]})
    if "fmn" in detection.index:
        d = detection.loc["fmn"]
        row.update(auroc_fmn=d["auroc"], auroc_fmn_lo=d["auroc_lo"], auroc_fmn_hi=d["auroc_hi"])
    return row


def collect(runs: list[tuple[str, Path]]) -> dict[str, pd.DataFrame]:
    """The tables of every run, with a ``model`` column, and one row per model."""
    out: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    models = []
    for model, run_dir in runs:
        tables = {t: pd.read_csv(run_dir / f"spectrum_{t}.csv") for t in TABLES}
        below = pd.read_csv(run_dir / "spectrum_below_fmn.csv")
        if len(below):
            below = below.set_index("attack")
            tables["attacks"]["n_below_fmn"] = tables["attacks"]["attack"].map(below["n_below"])
            tables["attacks"]["min_ratio_to_fmn"] = tables["attacks"]["attack"].map(below["min_ratio"])
        for name, frame in tables.items():
            out[name].append(frame.assign(model=model)[["model", *frame.columns]])
        models.append(model_row(model, run_dir, tables))
    joined = {name: pd.concat(frames, ignore_index=True) for name, frames in out.items()}
    joined["models"] = pd.DataFrame(models)
    # log10 columns for the figures (lambda_1 spans 20 decades): the documentation draws linear axes
    images, curves = joined["images"], joined["curves"]
    for column in ("lambda_1", "lb_over_sqrt_lambda_1", "l2_fmn"):
        images[f"log10_{column}"] = np.log10(images[column].where(images[column] > 0))
    curves["log10_budget"] = np.log10(curves["budget"])
    # LB / sqrt(lambda_1) as an estimate of FMN's minimal L2: its ratio per image, quantiles per model
    ratio = (images["lb_over_sqrt_lambda_1"] / images["l2_fmn"]).groupby(images["model"])
    for q, name in ((0.1, "p10"), (0.5, "median"), (0.9, "p90")):
        joined["models"][f"lb_lambda_over_l2_{name}"] = joined["models"]["model"].map(ratio.quantile(q))
    return joined


def bench_table(path: Path) -> tuple[pd.DataFrame, dict]:
    doc = json.loads(path.read_text())
    return pd.DataFrame(doc["rows"]), doc


def provenance(runs: list[tuple[str, Path]], commands: list[str], bench: dict | None) -> dict:
    infos = {model: json.loads((d / "run.json").read_text()) for model, d in runs}
    traced = [c for c in commands if c.startswith("frmargin run")]
    header, commits = provenance_header(
        list(infos.values()), commands, 1 if all("--threads 1" in c for c in traced) else None
    )
    record = {
        **header,
        "run_commits": commits,
        "runs": {
            model: {k: info.get(k) for k in ("model", "data", "images", "n_correct", "n_paths", "timing", "baselines")}
            for model, info in infos.items()
        },
        "title": "The Fisher spectrum: spectral attacks and the top eigenvalue as a score",
        "tables": PRESENTATION_TABLES,
        "figures": PRESENTATION_FIGURES,
        "order": 4,
    }
    if bench is not None:
        record["benchmark"] = {
            k: bench[k] for k in ("command", "date", "frmargin", "commit", "torch", "machine", "notes")
        }
        record["tables"] = [*PRESENTATION_TABLES, COST_TABLE]
    return record


PRESENTATION_TABLES = [
    {
        "file": "spectrum_models.csv",
        "title": "Per model: minimal L2, lambda_1 as a score and as a detector",
        "intervals": True,
        "columns": {
            "model": "model",
            "attacked": "images attacked",
            "median_l2_fmn": "median L2 (FMN)",
            "median_l2_ossa": "median L2 (OSSA)",
            "median_l2_tssa": "median L2 (TSSA)",
            "ossa_below_fmn": "OSSA below FMN",
            "rho_lambda_fr": "Spearman lambda_1 vs FR margin",
            "rho_lambda_l2": "Spearman lambda_1 vs FMN L2",
            "rho_lb_lambda_l2": "Spearman LB/sqrt(lambda_1) vs FMN L2",
            "auroc_fmn": "AUROC lambda_1, FMN points vs clean",
            "lb_lambda_over_l2_median": "LB/sqrt(lambda_1) over FMN L2, median",
            "lb_lambda_over_l2_p10": "its 10% quantile",
            "lb_lambda_over_l2_p90": "its 90% quantile",
        },
    },
    {
        "file": "spectrum_attacks.csv",
        "title": "Per model and attack: images fooled, median minimal L2 and model evaluations per image",
        "columns": {
            "model": "model",
            "attack": "attack",
            "n": "images attacked",
            "fooled_pct": "fooled %",
            "median_l2": "median L2",
            "forward_passes": "forward passes",
            "backward_passes": "backward passes",
            "n_below_fmn": "below FMN",
        },
    },
    {
        "file": "spectrum_detection.csv",
        "title": "AUROC of lambda_1: each attack's points against the clean images",
        "intervals": True,
        "columns": {
            "model": "model",
            "attack": "attack",
            "n": "images",
            "auroc": "AUROC",
            "median_ratio": "median lambda_1 ratio",
        },
    },
]
PRESENTATION_FIGURES = [
    {"kind": "scatter", "file": "spectrum_images.csv", "x": "fr_margin", "y": "log10_lambda_1", "group": "model",
     "xlabel": "FR margin", "ylabel": "log10 lambda_1", "title": "Per image: lambda_1 against the FR margin"},
    {"kind": "scatter", "file": "spectrum_images.csv", "x": "log10_l2_fmn", "y": "log10_lb_over_sqrt_lambda_1",
     "group": "model", "xlabel": "log10 minimal L2 (FMN)", "ylabel": "log10 LB / sqrt(lambda_1)", "diagonal": True,
     "title": "Per image: LB / sqrt(lambda_1) against FMN's minimal L2"},
    {"kind": "scatter", "file": "spectrum_curves.csv", "query": "model == 'resnet2b-adv2'", "x": "log10_budget",
     "y": "success_pct", "group": "attack", "xlabel": "log10 L2 budget", "ylabel": "% of attacked images fooled",
     "title": "ResNet-2B (adversarially trained): success rate against the L2 budget"},
]  # fmt: skip
COST_TABLE = {
    "file": "spectrum_cost.csv",
    "title": "Cost of fisher_spectrum against a dense eigh, power iteration, and per image",
    "digits": {"vat_min_cos": 8},
    "columns": {"part": "part", "model": "model", "setting": "setting", "D": "D", "C": "C",
                "spectrum_s": "fisher_spectrum s", "other_s": "other s", "other_over_spectrum": "other / fisher_spectrum",
                "iterations_median": "iterations (median)", "iterations_max": "iterations (max)",
                "eig_rel_error": "eigenvalue error", "s_per_image": "s per image", "in_forwards": "forward passes",
                "vat_min_cos": "VAT: least cos with v_1"},
}  # fmt: skip


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", type=_pair, required=True, help="MODEL=RUN_DIR, after its report")
    parser.add_argument("--bench", type=Path, help="the result file of benchmarks/bench_spectrum.py")
    parser.add_argument("--command", action="append", required=True, help="a command that made the files")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, frame in collect(args.run).items():
        frame.to_csv(OUT / f"spectrum_{name}.csv", index=False, float_format=FLOAT)
    bench = None
    if args.bench is not None:
        table, bench = bench_table(args.bench)
        table.to_csv(OUT / "spectrum_cost.csv", index=False, float_format=FLOAT)
    record = provenance(args.run, args.command, bench)
    (OUT / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    return OUT


if __name__ == "__main__":
    print(main())
