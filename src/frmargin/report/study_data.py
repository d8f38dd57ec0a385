"""The study's tables, from its folder: read every finished run once and analyse them.

Reads ``DIR/study.json``, the finished traced runs (``runs.folder.load_run``) and the finished
closed-form passes (``runs.closed_form``), and returns ``StudyAnalysis``: one row per model,
one row per run, the verdicts, the per-image box ratios and the distribution of closed-form
margins over all test images. An unfinished study gives the rows of what is finished.

Example:
    >>> analysis = analyze_study(Path("runs/study"), n_boot=1000)  # doctest: +SKIP
    >>> analysis.table[["model", "fr_margin", "ng_shielded_pct"]]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from frmargin.analysis import DEFAULT_N_BOOT
from frmargin.analysis.study import paired_ratios, ratio_interval, study_verdicts
from frmargin.analysis.study_box import box_images, box_summary
from frmargin.analysis.study_checks import box_rows, shielding_differences
from frmargin.analysis.study_closed import closed_form_summary, image_table, logits_of
from frmargin.analysis.study_rows import beyond_values, margin_values, model_summary, shielding_values
from frmargin.errors import FrmarginError
from frmargin.runs.closed_form import INFO_FILE, read_closed_form
from frmargin.runs.folder import Run, load_run, read_json
from frmargin.runs.study import CLOSED_FORM, temperature_label
from frmargin.runs.study_runner import read_study

__all__ = ["StudyAnalysis", "analyze_study", "run_folder"]

DECILES = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True)
class StudyAnalysis:
    """Every table of the study page.

    Attributes:
        table: one row per model (``analysis.study_rows.STUDY_ROW_COLUMNS``, intervals ``_lo``/``_hi``).
        runs: one row per run of the study (finished or not): model, kind, T, status, paths, timing.
        verdicts: the questions, pooled and per model (``analysis.study.STUDY_VERDICT_COLUMNS``).
        box: one row per image of every finished box run (``analysis.study_box.box_images``, ``model``).
        deciles: per model and temperature the deciles of the closed-form margin of all test images.
        margins: run key -> per-image traced FR margins (for the figure).
        min_per_class: the fewest images of one class behind a run's mean margin.
    """

    table: pd.DataFrame
    runs: pd.DataFrame
    verdicts: pd.DataFrame
    box: pd.DataFrame
    deciles: pd.DataFrame
    margins: dict[str, np.ndarray]
    min_per_class: int


def run_folder(study_dir: Path, entry: dict) -> Path:
    """The folder of a study.json run entry, inside ``study_dir`` (``KEY/KIND``): the study
    folder may have been moved, or written from another working directory."""
    recorded = Path(entry["folder"])
    return Path(study_dir) / recorded.parent.name / recorded.name


def _kind(entry: dict) -> str:
    return entry.get("kind", entry["metric"])


def _load(study: dict, study_dir: Path) -> tuple[dict[tuple[str, str], Run], dict[str, pd.DataFrame]]:
    """(run key, kind) -> finished traced run; model -> finished closed-form table."""
    runs, closed = {}, {}
    for entry in study["runs"]:
        if entry.get("status") != "complete":
            continue
        folder = run_folder(study_dir, entry)
        if _kind(entry) == CLOSED_FORM:
            closed[entry["model"]] = read_closed_form(folder)
        else:
            runs[(folder.parent.name, _kind(entry))] = load_run(folder)
    return runs, closed


def _labelled(values: pd.DataFrame, run: Run, key: str) -> pd.DataFrame:
    labels = run.images.set_index("image_index")["label"] if run.images is not None else None
    label = labels.reindex(values["image_index"]).to_numpy() if labels is not None else -1
    return values.assign(run=key, label=label)[["run", "image_index", "label", "num", "den"]]


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    cols = ["run", "image_index", "label", "num", "den"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def _log_odds(closed: pd.DataFrame | None, temperature: float) -> pd.Series:
    if closed is None:
        return pd.Series(dtype=float)
    table = image_table(logits_of(closed), closed["label"].to_numpy(), temperature)
    return pd.Series(table["log_odds"].to_numpy(), index=closed["image_index"].to_numpy())


def _values(
    models: dict[str, dict], runs: dict[tuple[str, str], Run], closed: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """The per-image num/den frames of every paired statistic, by statistic."""
    out: dict[str, list[pd.DataFrame]] = {k: [] for k in ("margin", "beyond", "shielded", "predicted", "euclid")}
    for model, keys in models.items():
        for key in (keys["one"], keys["fitted"]):
            run = runs.get((key, "fisher")) if key else None
            if run is None:
                continue
            t = float(run.info.get("temperature", 1.0))
            out["margin"].append(_labelled(margin_values(run.paths, run.images), run, key))
            odds = _log_odds(closed.get(model), t)
            if len(odds):
                out["beyond"].append(_labelled(beyond_values(run.paths, run.images, odds), run, key))
            out["shielded"].append(_labelled(shielding_values(run.paths), run, key))
            out["predicted"].append(_labelled(shielding_values(run.paths, predicted=True), run, key))
        euclid = runs.get((keys["one"], "euclidean"))
        if euclid is not None:
            out["euclid"].append(_labelled(shielding_values(euclid.paths), euclid, keys["one"]))
    return {k: _concat(v) for k, v in out.items()}


def _models(study: dict) -> dict[str, dict]:
    """Model -> the run keys of its first temperature (``one``) and of ``auto`` (``fitted``)."""
    out: dict[str, dict] = {}
    for entry in study["runs"]:
        key = Path(entry["folder"]).parent.name
        keys = out.setdefault(entry["model"], {"one": None, "fitted": None, "runs": 0, "done": 0})
        keys["runs"] += 1
        keys["done"] += entry.get("status") == "complete"
        if _kind(entry) == "fisher" and keys["one"] is None:
            keys["one"] = key
        if _kind(entry) == "fisher" and entry.get("temperature") == "auto":
            keys["fitted"] = key
    return out


def _intervals(values: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.Series, pd.DataFrame, pd.DataFrame]:
    if values.empty:
        return pd.Series(dtype=float), pd.DataFrame(), pd.DataFrame(columns=["value", "ci_low", "ci_high"])
    point, reps = paired_ratios(values, n_boot=n_boot, seed=seed)
    return point, reps, ratio_interval(point, reps)


def _put(row: dict, column: str, ci: pd.DataFrame, key: str | None) -> None:
    have = key is not None and key in ci.index
    for suffix, field in (("", "value"), ("_lo", "ci_low"), ("_hi", "ci_high")):
        row[column + suffix] = float(ci.loc[key, field]) if have else np.nan


def _model_rows(study: dict, models: dict, runs: dict, closed: dict, n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    catalog = study.get("catalog", {})
    for model, keys in models.items():
        fisher = runs.get((keys["one"], "fisher"))
        fitted = runs.get((keys["fitted"], "fisher")) if keys["fitted"] else None
        base = fisher or fitted or next((r for (k, _), r in runs.items() if k == keys["one"]), None)
        row = {"model": model, "family": catalog.get(model, {}).get("family", "?"),
               "training": catalog.get(model, {}).get("training", "?"), "runs_done": f"{keys['done']} of {keys['runs']}",
               "temperature": float(fitted.info["temperature"]) if fitted else np.nan}  # fmt: skip
        if model in closed:
            row.update(closed_form_summary(image_table(logits_of(closed[model]), closed[model]["label"].to_numpy())))
        if base is not None and base.images is not None:
            baselines = fisher.baselines if fisher is not None else None
            row.update(model_summary(fisher.paths if fisher else None, base.images, baselines, base.info, n_boot, seed))
        box = runs.get((keys["one"], "box"))
        if box is not None:
            images = box_images(box.paths, fisher.paths if fisher is not None else None)
            row.update(box_summary(images, n_boot, seed))
            row["box_seconds_per_path"] = float((box.info.get("timing") or {}).get("per_path", np.nan))
        rows.append(row)
    return pd.DataFrame(rows)


def _run_rows(study: dict, study_dir: Path, runs: dict) -> pd.DataFrame:
    rows = []
    for entry in study["runs"]:
        folder = run_folder(study_dir, entry)
        run = runs.get((folder.parent.name, _kind(entry)))
        info = run.info if run is not None else {}
        timing = info.get("timing") or {}
        if _kind(entry) == CLOSED_FORM and (folder / INFO_FILE).is_file():
            info = read_json(folder / INFO_FILE)
            timing = {"total": info.get("seconds")}
            info = {"images": info.get("n_images")}
        rows.append({"model": entry["model"], "run": f"{folder.parent.name}/{folder.name}", "kind": _kind(entry),
                     "temperature": info.get("temperature", temperature_label(entry.get("temperature", 1.0))),
                     "status": entry.get("status"), "images": info.get("images"), "correct": info.get("n_correct"),
                     "paths": info.get("n_paths"), "seconds": timing.get("total"),
                     "seconds_per_path": timing.get("per_path"),
                     "estimated_paths": int(run.paths["box_margin"].notna().sum())
                     if run is not None and "box_margin" in run.paths else None})  # fmt: skip
    return pd.DataFrame(rows)


def _deciles(closed: dict[str, pd.DataFrame], runs: dict, models: dict) -> pd.DataFrame:
    rows = []
    for model, table in closed.items():
        fitted = runs.get((models[model]["fitted"], "fisher")) if models[model]["fitted"] else None
        for t in (1.0, float(fitted.info["temperature"])) if fitted else (1.0,):
            margin = image_table(logits_of(table), table["label"].to_numpy(), t)["margin"].to_numpy()
            q = np.quantile(margin, DECILES)
            rows.append({"model": model, "temperature": t, **{f"q{round(100 * d):02d}": v for d, v in zip(DECILES, q)}})
    return pd.DataFrame(rows)


def _groups(study: dict, models: dict) -> pd.DataFrame:
    """Run key -> model, temperature label, training, family (what the verdicts group by)."""
    catalog, rows = study.get("catalog", {}), {}
    # a study.json without its plan's temperatures (an older or hand-moved folder): its runs' first
    temperatures = study.get("plan", {}).get("temperatures") or [
        r.get("temperature", 1.0) for r in study.get("runs", [])
    ]
    first = temperature_label((temperatures or [1.0])[0])
    for model, keys in models.items():
        facts = {"model": model, **{k: catalog.get(model, {}).get(k, "?") for k in ("training", "family")}}
        if keys["one"]:
            rows[keys["one"]] = {**facts, "temperature": first}
        if keys["fitted"]:
            rows[keys["fitted"]] = {**facts, "temperature": "auto"}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["model", "temperature", "training", "family"])


def analyze_study(out: Path, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> StudyAnalysis:
    """Analyse every finished run of the study in ``out``."""
    study = read_study(out)
    runs, closed = _load(study, Path(out))
    if not runs and not closed:
        raise FrmarginError(f"argument 'study_dir': {str(out)!r} holds no finished run yet, expected at least one")
    models = _models(study)
    table = _model_rows(study, models, runs, closed, n_boot, seed)
    values = _values(models, runs, closed)
    names = {"margin": "mean per-image FR margin", "beyond": "FR margin beyond the top-two log-odds",
             "shielded": "NG shielded %"}  # fmt: skip
    stats, cis = {}, {}
    for what, frame in values.items():
        point, reps, cis[what] = _intervals(frame, n_boot, seed)
        if what in names and len(point):
            stats[names[what]] = (point, reps)
    for i, keys in enumerate(models.values()):
        row: dict = {}
        for column, what, key in (("fr_margin", "margin", keys["one"]), ("fr_margin_fitted", "margin", keys["fitted"]),
                                  ("fr_margin_beyond", "beyond", keys["one"]), ("ng_shielded_pct", "shielded", keys["one"]),
                                  ("ng_predicted_shielded_pct", "predicted", keys["one"]),
                                  ("euclid_shielded_pct", "euclid", keys["one"])):  # fmt: skip
            _put(row, column, cis[what], key)
        for column, value in row.items():
            table.loc[i, column] = value
    first = {k["one"] for k in models.values()}  # the checks compare at the first temperature

    def at_first(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["run"].isin(first)]

    verdicts = pd.concat(
        [study_verdicts(_groups(study, models), stats) if stats else None,
         shielding_differences(at_first(values["shielded"]), at_first(values["predicted"]), "closed", n_boot, seed),
         shielding_differences(values["euclid"], at_first(values["shielded"]), "euclidean", n_boot, seed),
         box_rows({m: r for m, r in zip(table["model"], table.to_dict("records")) if r.get("box_images", 0) > 0})],
        ignore_index=True,
    )  # fmt: skip
    box = [
        box_images(r.paths, runs[(k, "fisher")].paths if (k, "fisher") in runs else None).assign(model=k)
        for (k, kind), r in runs.items()
        if kind == "box"
    ]
    margin = values["margin"]
    counts = margin.groupby(["run", "label"]).size()
    return StudyAnalysis(
        table=table,
        runs=_run_rows(study, Path(out), runs),
        verdicts=verdicts,
        box=pd.concat(box, ignore_index=True) if box else pd.DataFrame(),
        deciles=_deciles(closed, runs, models),
        margins={k: m["num"].to_numpy() for k, m in margin.groupby("run", sort=False)},
        min_per_class=int(counts.min()) if len(counts) else 0,
    )
