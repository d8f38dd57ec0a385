"""Copy the tables of finished runs into a result set of the documentation, with their provenance.

    python docs/results/collect.py SET --command "frmargin ..." [--command ...] \
        [--run LABEL=RUN_DIR ...] [--box LABEL=RUN_DIR ...] [--study STUDY_DIR] [--candidates LABEL=RUN_DIR ...]

writes ``docs/results/data/SET/``:

- for each ``--run``: the tables ``frmargin report RUN_DIR`` wrote (``class_table.csv``,
  ``claims.csv``, ``image_margins.csv``; ``class_tables.csv`` of a comparison's folder) as
  ``LABEL_<table>.csv``;
- for the ``--box`` runs (made with ``--box``): ``box_images.csv``, one row per image and run
  (its bound LB and, over its ``ok`` paths, the least traced length and the least in-box margin
  estimate: the per-image comparison the report's box table averages per class), and
  ``box_models.csv``, per run the images, paths and the spread of estimate / LB over images;
- for the ``--candidates`` runs (``--box`` runs estimated on every path): ``box_candidates.csv``,
  per image the least estimate over all paths and over the study's candidates;
- with ``--study``: the tables of the study's report (``study_table.csv`` per model,
  ``study_runs.csv`` per run, ``study_verdicts.csv``, ``study_box.csv`` per image of the box runs,
  ``study_margins.csv``), and its wall time and processes in the provenance;
- ``provenance.json``: the commands, the date, machine, versions and device from the runs'
  ``run.json``. Titles, column labels and figures are added to it by hand (see
  ``docs/_hooks/data_pages.py``); collecting again keeps them.

Every number of the results pages comes from these files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPORT_TABLES = ("class_table.csv", "class_tables.csv", "claims.csv", "image_margins.csv")
STUDY_TABLES = ("study_table.csv", "study_runs.csv", "study_verdicts.csv", "study_box.csv", "study_margins.csv")
PRESENTATION = ("title", "tables", "figures", "readme", "intro", "order")


def _pair(text: str) -> tuple[str, Path]:
    label, _, folder = text.partition("=")
    if not folder:
        raise argparse.ArgumentTypeError(f"expected LABEL=RUN_DIR, got {text!r}")
    return label, Path(folder)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def box_images(run_dir: Path) -> pd.DataFrame:
    """One row per image of a box run: LB, the least traced and the least estimated in-box margin
    over its ``ok`` paths, and their ratios to LB (``frmargin.analysis.study_box.box_images``),
    with the image's number of paths."""
    from frmargin.analysis.study_box import box_images as per_image
    from frmargin.runs import load_run

    paths = load_run(run_dir).paths
    images = per_image(paths).set_index("image_index")[list(BOX_IMAGE_COLUMNS)]
    images["paths"] = paths.groupby("image_index").size().reindex(images.index)
    return images.reset_index()


#: the columns of ``box_images.csv`` besides ``image_index`` and ``paths``, in their order
BOX_IMAGE_COLUMNS = (
    *("source", "ok_paths", "lower_bound", "traced", "estimate", "binds"),
    *("traced_over_lb", "estimate_over_lb"),
)


def candidates(run_dir: Path, rule: str = "candidates:1.05") -> pd.DataFrame:
    """Per image of a box run estimated on every path: the least estimate over all paths and over
    the candidates of ``rule`` (``frmargin.analysis.study_box.candidate_check``), and how many of
    its paths the estimate shortened."""
    from frmargin.analysis.study_box import candidate_check
    from frmargin.runs import load_run

    paths = load_run(run_dir).paths
    check = candidate_check(paths, rule).set_index("image_index")
    estimated = paths.dropna(subset=["box_margin"])
    shorter = estimated["box_margin"] < estimated["fr_length"] * (1 - 1e-9)
    check["paths_shortened"] = shorter.groupby(estimated["image_index"]).sum().reindex(check.index).fillna(0)
    gain = (1 - estimated["box_margin"] / estimated["fr_length"]).groupby(estimated["image_index"]).max()
    check["largest_shortening"] = gain.reindex(check.index)
    return check.reset_index()


def box_models(images: pd.DataFrame) -> pd.DataFrame:
    """Per model of ``box_images`` rows: images, paths, ``ok`` paths, and the least, median and
    largest in-box margin estimate / LB over its images, with the images within 1% of LB."""
    g = images.groupby("model", sort=False)
    ratio = g["estimate_over_lb"]
    return pd.DataFrame(
        {
            "images": g.size(),
            "paths": g["paths"].sum(),
            "ok_paths": g["ok_paths"].sum(),
            "estimate_over_lb_min": ratio.min(),
            "estimate_over_lb_median": ratio.median(),
            "estimate_over_lb_max": ratio.max(),
            "images_within_1pct": ratio.apply(lambda r: int((r <= 1.01).sum())),
        }
    ).reset_index()


def run_seconds(info: dict) -> float:
    """A run's wall time, its sessions one after the other. A session killed by a restart
    recorded no time: its run's recorded time is scaled to all the run's paths by the paths the
    recorded sessions traced (the run's measured pace)."""
    total = float((info.get("timing") or {}).get("total") or 0.0)
    traced = sum(s.get("paths_traced") or 0 for s in info.get("sessions", []))
    paths = info.get("n_paths") or 0
    return total * paths / traced if 0 < traced < paths else total


def study_time(study: Path) -> dict:
    """The wall time of a study's finished runs (``run_seconds``) and of its closed-form passes,
    and the processes (torchrun ranks) that ran them."""
    infos = [json.loads(p.read_text()) for p in study.glob("*/*/run.json")]
    closed = [json.loads(p.read_text()) for p in study.glob("*/closed-form/closed_form.json")]
    seconds = sum(run_seconds(i) for i in infos) + sum(c.get("seconds", 0.0) for c in closed)
    worlds = sorted({s.get("world_size", 1) for i in infos for s in i.get("sessions", [])})
    return {"wall_seconds": round(seconds, 1), "processes": worlds}


def provenance_header(infos: list[dict], commands: list[str], threads: int | None) -> tuple[dict, list[str]]:
    """The fields every result set's provenance opens with (date of the runs' first session,
    versions, machine), from the runs' run.json ``infos``, and the commits their sessions ran."""
    sessions = [s for info in infos for s in info.get("sessions", [])]
    started = min(s["started"] for s in sessions) if sessions else datetime.now(UTC).timestamp()
    code = {str(s.get("frmargin", "")) for s in sessions}
    commits = sorted({m.group(1) for c in code if (m := re.search(r"git ([0-9a-f]{7,40})", c))})
    versions = infos[0].get("versions", {}) if infos else {}
    header = {
        "schema": "frmargin-results/1",
        "commands": commands,
        "date": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "frmargin": versions.get("frmargin"),
        "commit": commits[0] if len(commits) == 1 else None,
        "torch": versions.get("torch"),
        "threads": threads,
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "device": infos[0].get("device") if infos else None,
            "gpu": None,
        },
    }
    return header, commits


def provenance(run_dirs: list[Path], commands: list[str], previous: dict) -> dict:
    """The provenance record of runs: date of the first session, versions, machine."""
    run_dirs = [d for d in run_dirs if (d / "run.json").is_file()]  # a comparison's folder has none
    infos = [json.loads((d / "run.json").read_text()) for d in run_dirs]
    header, _ = provenance_header(infos, commands, 1 if any("--threads 1" in c for c in commands) else None)
    record = {
        **header,
        "runs": {
            "/".join(d.parts[-2:]): {
                k: info.get(k) for k in ("model", "data", "images", "n_correct", "n_paths", "timing", "box")
            }
            for d, info in zip(run_dirs, infos)
        },
    }
    record.update({k: previous[k] for k in PRESENTATION if k in previous})
    record.setdefault("title", "")
    record.setdefault("tables", [])
    return record


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", help="name of the result set (a folder under docs/results/data/)")
    parser.add_argument("--command", action="append", required=True, help="a command that made the runs")
    parser.add_argument("--run", action="append", type=_pair, default=[], help="LABEL=RUN_DIR, after frmargin report")
    parser.add_argument("--box", action="append", type=_pair, default=[], help="LABEL=RUN_DIR of a --box run")
    parser.add_argument("--study", type=Path, help="a study folder, after its report")
    parser.add_argument("--candidates", action="append", type=_pair, default=[],
                        help="LABEL=RUN_DIR of a --box run estimated on every path: the study's candidate rule checked on it")  # fmt: skip
    args = parser.parse_args(argv)
    out = HERE / "data" / args.set
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "provenance.json").read_text()) if (out / "provenance.json").is_file() else {}
    run_dirs = []
    for label, folder in args.run:
        run_dirs.append(folder)
        for table in REPORT_TABLES:
            if (folder / table).is_file():
                shutil.copyfile(folder / table, out / f"{label}_{table}")
    if args.box:
        images = pd.concat([box_images(folder).assign(model=label) for label, folder in args.box])
        images.to_csv(out / "box_images.csv", index=False, float_format="%.6g")
        box_models(images).to_csv(out / "box_models.csv", index=False, float_format="%.6g")
        run_dirs += [folder for _, folder in args.box]
    if args.study is not None:
        for table in STUDY_TABLES:
            if (args.study / table).is_file():
                shutil.copyfile(args.study / table, out / table)
        run_dirs += sorted(p.parent for p in args.study.glob("*/*/run.json"))
    if args.candidates:
        checks = pd.concat([candidates(folder).assign(model=label) for label, folder in args.candidates])
        checks.to_csv(out / "box_candidates.csv", index=False, float_format="%.6g")
        run_dirs += [folder for _, folder in args.candidates]
    record = provenance(run_dirs, args.command, previous)
    if args.study is not None:
        record.update(study_time(args.study))
    (out / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(main())
