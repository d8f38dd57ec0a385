"""``frmargin report DIR [DIR2 ...]``: tables, figures and a self-contained HTML page per run.

A run folder holds ``paths.parquet`` (a file or a folder of parquet chunks), ``images.parquet``,
optionally ``baselines.parquet``, and ``run.json``. For one run the report is written into the run
folder (or ``out``): ``class_table.csv``, ``class_table.md``, ``claims.csv``,
``image_margins.csv``, figures ``*.png``, ``report.md`` and ``report.html`` (figures embedded).
For several runs (or one folder holding paths of several methods or metrics) a comparison report
is written to ``out`` (default: ``report-compare`` next to the first folder).

Example:
    >>> build_report([Path("runs/resnet20")])
    PosixPath('runs/resnet20/report.html')
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from frmargin import analysis, plots
from frmargin.errors import FrmarginError

COMPARE_FOLDER = "report-compare"
JPEG_MARKERS = ("jpeg", "jpg")
# run.json keys that may differ between two runs still called "the same run but another metric".
#: run.json entries that do not make two runs different experiments: bookkeeping, and "config",
#: whose entries that matter stand at the top level too (batch size, chunking, baselines, device
#: and world size change no path)
INCIDENTAL_KEYS = frozenset(
    {
        "timing",
        "versions",
        "tracer_options",
        "accuracy",
        "n_correct",
        "fingerprint",
        "sessions",
        "config",
        "status",
        "world_size",
        "device",
        "data_requested",
    }
)
COMPARED_KEYS = ("model", "data", "data_source", "method", "metric", "until", "box", "images", "seed")
HEADER_KEYS = (
    "model",
    "data",
    "data_source",
    "class_names",
    "method",
    "metric",
    "until",
    "box",
    "images",
    "seed",
    "accuracy",
    "n_correct",
    "timing",
    "versions",
    "tracer_options",
)
MISSING = "–"
VERDICT_CSS = {"supported": "ok", "mixed": "mixed", "not supported": "bad", "not tested": "na"}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;color:#0072B2}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f0f4f8}
td.text,th.text{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.warning{background:#fff3cd;border-left:6px solid #E69F00;padding:.7em 1em;margin:1em 0;font-weight:600}
.note{color:#555;font-size:.9em}
.ok{background:#cfe8ff !important}.bad{background:#ffd9b3 !important}
.mixed{background:#f1e6f5 !important}.na{background:#eee !important;color:#666}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#444}
code{background:#f3f3f3;padding:0 .2em}
"""


# ------------------------------------------------------------------------------------ run input


@dataclass(frozen=True)
class Run:
    """One run folder's tables (for one method and metric)."""

    label: str
    directory: Path
    info: dict
    paths: pd.DataFrame
    images: pd.DataFrame | None
    baselines: pd.DataFrame | None
    notes: tuple[str, ...] = ()

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for unreadable files
        raise FrmarginError(
            f"argument 'run_dirs': {what} {str(path)!r} is unreadable ({type(error).__name__}: "
            f"{error}), expected a parquet file or a folder of parquet chunks"
        ) from error


def load_run(directory: Path) -> Run:
    """Read a run folder; raise ``FrmarginError`` naming the folder when it is not a run.

    Example:
        >>> run = load_run(Path("runs/resnet20"))
        >>> run.paths.shape
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FrmarginError(
            f"argument 'run_dirs': got {str(directory)!r}, expected an existing run folder (holding paths.parquet)"
        )
    paths_file = directory / "paths.parquet"
    if not paths_file.exists():
        raise FrmarginError(
            f"argument 'run_dirs': folder {str(directory)!r} has no paths.parquet, "
            "expected a run folder written by the experiment runner"
        )
    notes: list[str] = []
    paths = _read_parquet(paths_file, "paths file")
    if paths.empty:
        raise FrmarginError(f"argument 'run_dirs': {str(paths_file)!r} has no rows, expected at least one traced path")
    missing = [c for c in analysis.PATH_COLUMNS if c not in paths.columns]
    if missing:
        raise FrmarginError(
            f"argument 'run_dirs': {str(paths_file)!r} lacks the columns {missing}, "
            f"expected {list(analysis.PATH_COLUMNS)}"
        )
    images = baselines = None
    if (directory / "images.parquet").exists():
        images = _read_parquet(directory / "images.parquet", "images file")
    else:
        notes.append("images.parquet is missing: image counts and lower bounds come from the paths.")
    if (directory / "baselines.parquet").exists():
        baselines = _read_parquet(directory / "baselines.parquet", "baselines file")
    info: dict = {}
    info_file = directory / "run.json"
    if info_file.exists():
        try:
            info = json.loads(info_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise FrmarginError(
                f"argument 'run_dirs': {str(info_file)!r} is not valid JSON ({error}), "
                "expected the run description written by the runner"
            ) from error
        if not isinstance(info, dict):
            raise FrmarginError(
                f"argument 'run_dirs': {str(info_file)!r} holds a {type(info).__name__}, expected a JSON object"
            )
    else:
        notes.append("run.json is missing: the run header is incomplete.")
    n_classes = int(max(paths["source"].max(), paths["target"].max(), paths["first_hit"].max())) + 1
    names = info.get("class_names")
    if not names:
        names = list(analysis.CIFAR10_CLASSES) if n_classes == 10 else [f"class {c}" for c in range(n_classes)]
        notes.append(
            "run.json has no class_names: using " + ("CIFAR-10 names." if n_classes == 10 else "class numbers.")
        )
    elif len(names) < n_classes:
        raise FrmarginError(
            f"argument 'run_dirs': {str(info_file)!r} lists {len(names)} class_names, "
            f"expected at least {n_classes} (the largest class index in paths + 1)"
        )
    info = {**info, "class_names": [str(n) for n in names]}
    return Run(
        label=directory.name or str(directory),
        directory=directory,
        info=info,
        paths=paths,
        images=images,
        baselines=baselines,
        notes=tuple(notes),
    )


def split_modes(run: Run) -> list[Run]:
    """One ``Run`` per (method, metric) found in ``run.paths`` (the run itself when only one)."""
    keys = [k for k in ("method", "metric") if k in run.paths.columns]
    if not keys:
        return [run]
    groups = list(run.paths.groupby(keys, sort=True, dropna=False))
    if len(groups) <= 1:
        if groups:
            values = groups[0][0] if isinstance(groups[0][0], tuple) else (groups[0][0],)
            return [replace(run, info={**run.info, **dict(zip(keys, values))})]
        return [run]
    out = []
    for values, sub in groups:
        values = values if isinstance(values, tuple) else (values,)
        tag = "/".join(str(v) for v in values)
        out.append(
            replace(
                run,
                label=f"{run.label} [{tag}]",
                paths=sub.reset_index(drop=True),
                info={**run.info, **dict(zip(keys, values))},
            )
        )
    return out


# ---------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class RunAnalysis:
    """Every table of one run's report."""

    run: Run
    table: pd.DataFrame
    margins: pd.DataFrame
    status: pd.DataFrame
    agreement: pd.DataFrame
    claims: pd.DataFrame
    paper: pd.DataFrame
    rankings: pd.DataFrame
    ranking_agreement: pd.DataFrame
    matrix: pd.DataFrame
    landscape: pd.DataFrame
    fr_l2: pd.DataFrame | None = None


def analyze(run: Run, n_boot: int = analysis.DEFAULT_N_BOOT, seed: int = 0) -> RunAnalysis:
    """Compute the tables of one run's report."""
    names = run.class_names
    table = analysis.class_table(run.paths, run.images, names, n_boot=n_boot, seed=seed)
    margins = analysis.image_margins(run.paths, run.images)
    baselines = run.baselines if run.baselines is not None and len(run.baselines) else None
    fr_l2 = analysis.fr_vs_l2(margins, baselines, n_boot=n_boot, seed=seed) if baselines is not None else None
    rankings = analysis.class_rankings(table, margins, baselines)
    return RunAnalysis(
        run=run,
        table=table,
        margins=margins,
        status=analysis.status_counts(run.paths),
        agreement=analysis.closed_form_agreement(run.paths),
        claims=analysis.claims(run.paths, run.images, table, baselines, n_boot=n_boot, seed=seed, correlations=fr_l2),
        paper=analysis.compare_with_paper(table),
        rankings=rankings,
        ranking_agreement=analysis.ranking_agreement(rankings),
        matrix=analysis.path_matrix(run.paths, len(names)),
        landscape=analysis.shielding_landscape(run.paths, len(names)),
        fr_l2=fr_l2,
    )


# ------------------------------------------------------------------------- document building


@dataclass
class Document:
    """A report as a list of blocks, rendered to Markdown and to HTML."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", text, level))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def warning(self, text: str) -> None:
        self.blocks.append(("warning", text))

    def table(self, frame: pd.DataFrame, css: dict[tuple[int, str], str] | None = None) -> None:
        self.blocks.append(("table", frame, css or {}))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", Path(path), caption))


def _fmt(value: object, decimals: int | None = None) -> str:
    """Compact text for one table cell; ``decimals`` fixes the digits after the point."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        size = abs(x)
        if size >= 10_000:
            return f"{x:,.0f}"
        if decimals is None:
            decimals = _decimals(np.array([x]))
        if decimals is None:
            return str(int(x))
        if x != 0 and size < 10.0 ** (-decimals):
            return f"{x:.2e}"
        return f"{x:.{decimals}f}"
    return str(value)


def _decimals(values: np.ndarray) -> int | None:
    """Digits after the point for a column: None when every finite value is an integer."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0 or np.all(values == np.round(values)):
        return None
    nonzero = np.abs(values[values != 0])
    typical = float(np.median(nonzero)) if nonzero.size else 1.0
    for bound, digits in ((10, 1), (1, 2), (0.1, 3), (0.01, 4)):
        if typical >= bound:
            return digits
    return 5


def _ci(value: float, lo: float, hi: float, decimals: int | None = None) -> str:
    if not np.isfinite(value):
        return MISSING
    if decimals is None:
        decimals = _decimals(np.array([value])) or 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return _fmt(value, decimals)
    return f"{_fmt(value, decimals)} [{_fmt(lo, decimals)}, {_fmt(hi, decimals)}]"


def _rank_ci(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return MISSING
    text = str(int(value))
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.3g}, {hi:.3g}]"
    return text


def _text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text; float columns share their number of decimals."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values):
            digits = _decimals(values.to_numpy(float))
            out[column] = [_fmt(v, digits) for v in values]
        else:
            out[column] = [_fmt(v) for v in values]
    return pd.DataFrame(out, columns=frame.columns, index=frame.index)


def _per_cell(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Format ``columns`` cell by cell (for columns that mix quantities of different scales)."""
    return frame.assign(**{c: [_fmt(v) for v in frame[c]] for c in columns})


def _ci_column(table: pd.DataFrame, column: str) -> list[str]:
    digits = _decimals(table[column].to_numpy(float)) or 0
    return [_ci(v, lo, hi, digits) for v, lo, hi in zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])]


def display_class_table(table: pd.DataFrame) -> pd.DataFrame:
    """The class table as text cells, estimates with their 95% intervals."""
    text = _text_frame(
        table[
            [
                "n_images",
                "n_paths",
                "success_pct",
                "mean_lower_bound",
                "mean_predicted_length",
                "shielded_pct",
                "mean_steps",
                "n_as_shield",
            ]
        ]
    )
    return pd.DataFrame(
        {
            "class": table["name"],
            "images": text["n_images"],
            "paths": text["n_paths"],
            "success %": text["success_pct"],
            "shielding %": _ci_column(table, "shielding_pct"),
            "mean FR margin": _ci_column(table, "mean_fr_margin"),
            "mean L2": _ci_column(table, "mean_l2"),
            "vuln rank": [
                _rank_ci(v, lo, hi)
                for v, lo, hi in zip(table["vuln_rank"], table["vuln_rank_lo"], table["vuln_rank_hi"])
            ],
            "per-image margin": _ci_column(table, "image_margin"),
            "mean LB": text["mean_lower_bound"],
            "mean predicted": text["mean_predicted_length"],
            "shielded %": text["shielded_pct"],
            "mean steps": text["mean_steps"],
            "n as shield": text["n_as_shield"],
        }
    ).reset_index(drop=True)


def _markdown_table(frame: pd.DataFrame) -> str:
    cells = _text_frame(frame)
    header = [str(c) for c in cells.columns]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|").replace("\n", " ") for v in values) + " |"

    rows = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    rows += [line(r) for r in cells.itertuples(index=False)]
    return "\n".join(rows)


def _html_table(frame: pd.DataFrame, css: dict[tuple[int, str], str]) -> str:
    cells = _text_frame(frame)
    text_columns = {c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(
        f'<th class="{"text" if c in text_columns else ""}">{html.escape(str(c))}</th>' for c in cells.columns
    )
    body = []
    for i, row in enumerate(cells.itertuples(index=False)):
        tds = []
        for column, value in zip(cells.columns, row):
            classes = " ".join(filter(None, ["text" if column in text_columns else "", css.get((i, column), "")]))
            tds.append(f'<td class="{classes}">{html.escape(str(value))}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_markdown(doc: Document, base: Path) -> str:
    """Markdown with figures linked relative to ``base``."""
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        kind = block[0]
        if kind == "heading":
            out += ["#" * block[2] + " " + block[1], ""]
        elif kind == "text":
            out += [block[1], ""]
        elif kind == "warning":
            out += [f"> **Warning:** {block[1]}", ""]
        elif kind == "table":
            out += [_markdown_table(block[1]), ""]
        elif kind == "figure":
            out += [f"![{block[2]}]({_relative(block[1], base)})", "", f"*{block[2]}*", ""]
    return "\n".join(out)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def render_html(doc: Document) -> str:
    """One self-contained HTML page: inline CSS, figures as base64 data URIs."""
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for block in doc.blocks:
        kind = block[0]
        if kind == "heading":
            parts.append(f"<h{block[2]}>{html.escape(block[1])}</h{block[2]}>")
        elif kind == "text":
            parts.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "warning":
            parts.append(f"<div class='warning'>Warning: {_inline(block[1])}</div>")
        elif kind == "table":
            parts.append(_html_table(block[1], block[2]))
        elif kind == "figure":
            data = base64.b64encode(block[1].read_bytes()).decode("ascii")
            caption = html.escape(block[2])
            parts.append(
                f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{caption}</figcaption></figure>"
            )
    parts.append("<p class='note'>Generated by frmargin report.</p></body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape, then render `code` spans and line breaks."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))
    return escaped.replace("\n", "<br>")


def _write(doc: Document, out: Path) -> Path:
    (out / "report.md").write_text(render_markdown(doc, out))
    target = out / "report.html"
    target.write_text(render_html(doc))
    return target


# ----------------------------------------------------------------------------- run header


def _is_jpeg(info: dict) -> bool:
    source = str(info.get("data_source", "")).lower()
    return any(marker in source for marker in JPEG_MARKERS)


def _caveats(run: Run) -> list[str]:
    info = run.info
    out = []
    if _is_jpeg(info):
        out.append(
            f"the data are a JPEG copy, not the original test set ({info.get('data_source')}). "
            "JPEG compression changes pixels, so accuracy, margins and every number below "
            "describe the JPEG copy; they are not directly comparable with results on the "
            "original data."
        )
    if info.get("method") == "paper":
        out.append(
            "method 'paper' follows the paper's algorithm (with the sign erratum fixed): "
            "`fr_length` is the chord-sum FR length of the traced path, while the paper's "
            "own D_FR is the step count (`mean steps`), which depends on the damping and the "
            "step size, not only on the model (METHOD.md section 2, erratum 2)."
        )
    if info.get("metric") == "euclidean":
        out.append(
            "metric 'euclidean': paths follow plain gradients, not natural gradients; their "
            "lengths are still measured in FR length but are not FR geodesic margins."
        )
    return out + list(run.notes)


def _mapping_text(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items()) or MISSING
    return MISSING if value is None else str(value)


def _header_table(run: Run) -> pd.DataFrame:
    info, paths = run.info, run.paths
    n_images = len(run.images) if run.images is not None else MISSING
    accuracy = info.get("accuracy")
    acc_text = MISSING if accuracy is None else f"{100 * float(accuracy):.1f}%"
    if info.get("n_correct") is not None:
        acc_text += f" ({info['n_correct']} correct)"
    timing = info.get("timing")
    timing_text = (
        ", ".join(f"{k} {_fmt(float(v))} s" for k, v in timing.items())
        if isinstance(timing, dict)
        else _mapping_text(timing)
    )
    rows = [
        ("model", info.get("model", MISSING)),
        ("data", info.get("data", MISSING)),
        ("data source", info.get("data_source", MISSING) + ("  [JPEG COPY]" if _is_jpeg(info) else "")),
        ("accuracy (top-1 on the selection)", acc_text),
        (
            "images requested / selected / with paths",
            f"{info.get('images', MISSING)} / {n_images} / {paths['image_index'].nunique()}",
        ),
        ("paths (successful)", f"{len(paths)} ({int(paths['success'].astype(bool).sum())})"),
        (
            "method / metric / until",
            f"{info.get('method', MISSING)} / {info.get('metric', MISSING)} / {info.get('until', MISSING)}",
        ),
        ("box constraint", _fmt(info.get("box"))),
        ("seed", _fmt(info.get("seed"))),
        (
            "baselines",
            ", ".join(sorted(run.baselines["attack"].astype(str).unique()))
            if run.baselines is not None and len(run.baselines)
            else "none",
        ),
        ("tracer options", _mapping_text(info.get("tracer_options"))),
        ("timing", timing_text),
        ("versions", _mapping_text(info.get("versions"))),
        ("run folder", str(run.directory)),
    ]
    extra = {k: v for k, v in info.items() if k not in HEADER_KEYS}
    for key, value in extra.items():
        text = json.dumps(value, default=str)
        rows.append((key, text if len(text) <= 300 else text[:297] + "..."))
    return pd.DataFrame(rows, columns=["field", "value"])


# -------------------------------------------------------------------------- one-run report


def _claims_display(claims: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    frame = pd.DataFrame(
        {
            "claim": claims["claim"],
            "verdict": claims["verdict"],
            "value [95% CI]": [
                _ci(v, lo, hi, 3) for v, lo, hi in zip(claims["value"], claims["ci_low"], claims["ci_high"])
            ],
            "reference": [_fmt(v, 3) for v in claims["reference"]],
            "statistic": claims["statistic"],
            "explanation": claims["explanation"],
        }
    )
    css = {(i, "verdict"): VERDICT_CSS.get(v, "") for i, v in enumerate(claims["verdict"])}
    return frame, css


def _paper_display(paper: pd.DataFrame) -> pd.DataFrame:
    labels = {
        "shielding_pct": "shielding %",
        "mean_fr_margin": "mean FR margin",
        "mean_l2": "mean L2",
        "vuln_rank": "vuln rank",
    }
    out = pd.DataFrame({"class": paper["name"]})
    for column, label in labels.items():
        for side in ("ours", "paper", "diff"):
            out[f"{label} ({side})"] = paper[f"{column}_{side}"]
    return out


def _figures(result: RunAnalysis, out: Path, prefix: str = "") -> list[tuple[Path, str]]:
    run, names = result.run, result.run.class_names
    rank = result.table["vuln_rank"].to_numpy(float)
    figs = [
        (
            plots.plot_path_matrix(result.matrix, names, out / f"{prefix}path_matrix.png"),
            "Path matrix: paths by source class and first class hit after the class change.",
        ),
        (
            plots.plot_attack_effort(run.paths, names, out / f"{prefix}attack_effort.png", rank, result.margins),
            "Attack effort in FR space: traced FR lengths of successful paths per source class.",
        ),
        (
            plots.plot_shielding_landscape(run.paths, names, rank, out / f"{prefix}shielding_landscape.png"),
            "Shielding landscape: which classes intercept paths from robust to fragile classes (left) "
            "and from fragile to robust classes (right).",
        ),
        (
            plots.plot_closed_form(run.paths, result.margins, out / f"{prefix}closed_form.png"),
            "Closed forms: traced versus predicted path length, and per-image margin versus the lower bound.",
        ),
        (
            plots.plot_fr_vs_l2(result.margins, out / f"{prefix}fr_vs_l2.png", run.baselines),
            "Per-image FR margin versus Euclidean distances.",
        ),
    ]
    return figs


def _single_report(result: RunAnalysis, out: Path) -> Path:
    run = result.run
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "class_table.csv")
    (out / "class_table.md").write_text(_markdown_table(display_class_table(result.table)) + "\n")
    result.claims.to_csv(out / "claims.csv", index=False)
    result.margins.to_csv(out / "image_margins.csv", index=False)

    doc = Document(f"frmargin report: {run.info.get('model', run.label)} on {run.info.get('data', '?')}")
    for caveat in _caveats(run):
        doc.warning(caveat)
    doc.heading("Run")
    doc.table(_header_table(run))
    doc.heading("Path status")
    doc.table(result.status)
    _class_table_section(doc, result)
    _paper_section(doc, result)
    doc.heading("Closed forms versus traced paths")
    doc.text(
        "How well the softmax-only closed forms of METHOD.md section 4 predict the traced paths "
        "(successful paths). Large errors point to box constraints, damping, step size or "
        "rank-deficient Jacobians."
    )
    doc.table(_per_cell(result.agreement, ["value"]))
    doc.heading("The paper's claims")
    frame, css = _claims_display(result.claims)
    doc.table(frame, css)
    doc.heading("Figures")
    for path, caption in _figures(result, out):
        doc.figure(path, caption)
    _rankings_section(doc, result)
    return _write(doc, out)


def _class_table_section(doc: Document, result: RunAnalysis) -> None:
    doc.heading("Per-class table")
    doc.text(
        "Estimates with 95% cluster-bootstrap intervals in brackets (images resampled within "
        "their class; the paths of one image are not independent). Also in `class_table.csv`."
    )
    doc.table(display_class_table(result.table))
    definitions = pd.DataFrame(analysis.CLASS_TABLE_COLUMNS, columns=["column", "definition"])
    doc.table(definitions)


def _paper_section(doc: Document, result: RunAnalysis) -> None:
    doc.heading("Ours beside the paper's table")
    doc.text(
        "The paper's table (ResNet, 800 CIFAR-10 test images, 3,659 successful paths) is "
        "internally inconsistent: its shielding % column sums to 316% and its rank does not "
        "follow its mean FR margin (ship 3.45 > airplane 3.21, yet airplane is rank 1). Our "
        "shielding % is a per-class rate (see the column definitions); differences are ours "
        "minus the paper's."
    )
    if len(result.paper):
        doc.table(_paper_display(result.paper))
    else:
        doc.text("The class names of this run are not CIFAR-10's, so no row can be matched. The paper's table:")
    doc.heading("The paper's table", level=3)
    doc.table(
        analysis.PAPER_TABLE.rename(
            columns={
                "name": "class",
                "shielding_pct": "Shielding %",
                "mean_fr_margin": "Mean FR margin",
                "mean_l2": "Mean L2",
                "vuln_rank": "Vuln rank",
            }
        )
    )


def _rankings_section(doc: Document, result: RunAnalysis, suffix: str = "") -> None:
    if result.fr_l2 is not None:
        doc.heading("FR margins versus minimal L2 attacks" + suffix)
        doc.text(
            "Spearman and Kendall rank correlations between per-image FR margins (min over "
            "targets) and the minimal L2 distance of each attack (`best` = min over attacks), "
            "and between their class means; 95% cluster-bootstrap intervals in brackets. "
            "Failed attacks (L2 = inf) are excluded and counted."
        )
        fr = result.fr_l2
        doc.table(
            pd.DataFrame(
                {
                    "attack": fr["attack"],
                    "level": fr["level"],
                    "n": fr["n"],
                    "excluded": fr["n_excluded"],
                    "Spearman [95% CI]": [
                        _ci(v, lo, hi, 3) for v, lo, hi in zip(fr["spearman"], fr["spearman_lo"], fr["spearman_hi"])
                    ],
                    "Kendall [95% CI]": [
                        _ci(v, lo, hi, 3) for v, lo, hi in zip(fr["kendall"], fr["kendall_lo"], fr["kendall_hi"])
                    ],
                }
            )
        )
    doc.heading("Class rankings side by side" + suffix)
    doc.text(
        "1 = most robust. FR: the paper's column, our mean FR length over successful paths "
        "(the per-image margins above rank classes slightly differently); L2: class mean of "
        "the best attack's minimal L2 (with baselines); paper: its Vuln rank; literature: "
        "tiers of class-wise robustness reported for CIFAR-10 (cat most vulnerable, then "
        "bird/deer/dog; automobile, truck, ship most robust), as tier mid-ranks."
    )
    doc.table(result.rankings.rename(columns={"name": "class"}))
    doc.table(result.ranking_agreement.rename(columns={"versus": "FR ranking versus"}))


# ------------------------------------------------------------------------ comparison report


def _unique_labels(runs: list[Run]) -> list[Run]:
    labels = [r.label for r in runs]
    if len(set(labels)) == len(labels):
        return runs
    out = []
    for i, run in enumerate(runs):
        parent = run.directory.resolve().parent.name
        label = f"{parent}/{run.label}" if labels.count(run.label) > 1 else run.label
        if label in [r.label for r in out]:
            label = f"{label} #{i + 1}"
        out.append(replace(run, label=label))
    return out


def _differing_keys(a: dict, b: dict) -> set[str]:
    keys = (set(a) | set(b)) - INCIDENTAL_KEYS
    return {k for k in keys if a.get(k) != b.get(k)}


def _side_by_side(results: list[RunAnalysis], column: str) -> pd.DataFrame:
    names = results[0].table["name"].tolist()
    out = pd.DataFrame({"class": names})
    for result in results:
        table = result.table.set_index("name").reindex(names)
        if column == "vuln_rank":
            cells = [
                _rank_ci(v, lo, hi) for v, lo, hi in zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])
            ]
        elif f"{column}_lo" in table.columns:
            cells = _ci_column(table, column)
        else:
            cells = _text_frame(table[[column]])[column].tolist()
        out[result.run.label] = cells
    return out


def _comparison_report(results: list[RunAnalysis], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    doc = Document("frmargin comparison report")
    caveats: dict[str, list[str]] = {}
    for result in results:
        for caveat in _caveats(result.run):
            caveats.setdefault(caveat, []).append(result.run.label)
    for caveat, labels in caveats.items():
        scope = "all runs" if len(labels) == len(results) else ", ".join(labels)
        doc.warning(f"[{scope}] {caveat}")
    doc.heading("Runs")
    rows = []
    for result in results:
        info, paths = result.run.info, result.run.paths
        rows.append(
            {
                "run": result.run.label,
                **{k: _fmt(info.get(k)) for k in COMPARED_KEYS},
                "paths": len(paths),
                "success %": 100 * paths["success"].astype(bool).mean(),
                "accuracy": info.get("accuracy", np.nan),
                "folder": str(result.run.directory),
            }
        )
    doc.table(pd.DataFrame(rows))
    base = results[0].run.info
    differing = sorted(set().union(*(_differing_keys(base, r.run.info) for r in results[1:])))
    doc.text(
        "Settings that differ between the runs: "
        + (", ".join(f"`{k}`" for k in differing) if differing else "none")
        + "."
    )
    tables = pd.concat([r.table.assign(run=r.run.label) for r in results])
    tables.to_csv(out / "class_tables.csv")
    claims = pd.concat([r.claims.assign(run=r.run.label) for r in results])
    claims.to_csv(out / "claims.csv", index=False)

    doc.heading("Per-class tables side by side")
    doc.text("95% cluster-bootstrap intervals in brackets. Full tables in `class_tables.csv`.")
    for column, label in (
        ("mean_fr_margin", "Mean FR margin"),
        ("image_margin", "Per-image margin"),
        ("shielding_pct", "Shielding %"),
        ("vuln_rank", "Vulnerability rank"),
        ("mean_l2", "Mean L2 at flip"),
        ("shielded_pct", "Shielded % of paths"),
    ):
        doc.heading(label, level=3)
        doc.table(_side_by_side(results, column))

    doc.heading("The paper's claims, per run")
    verdicts = pd.DataFrame({"claim": results[0].claims["claim"]})
    css: dict = {}
    for result in results:
        c = result.claims
        verdicts[result.run.label] = [
            f"{v} ({_ci(x, lo, hi, 3)})" for v, x, lo, hi in zip(c["verdict"], c["value"], c["ci_low"], c["ci_high"])
        ]
        css.update({(i, result.run.label): VERDICT_CSS.get(v, "") for i, v in enumerate(c["verdict"])})
    doc.table(verdicts, css)
    doc.text("Statistics: " + " ".join(f"({i + 1}) {s}." for i, s in enumerate(results[0].claims["statistic"])))

    doc.heading("Closed forms versus traced paths, per run")
    agreement = pd.DataFrame({"quantity": results[0].agreement["quantity"]})
    for result in results:
        agreement[result.run.label] = result.agreement["value"].to_numpy()
    doc.table(_per_cell(agreement, [r.run.label for r in results]))

    doc.heading("Figures")
    by_label = {r.run.label: r.table for r in results}
    doc.figure(
        plots.plot_class_comparison(by_label, out / "compare_fr_margin.png"), "Mean FR margin per class and run."
    )
    doc.figure(
        plots.plot_class_comparison(by_label, out / "compare_shielding.png", "shielding_pct", "shielding %"),
        "Shielding % per class and run.",
    )
    _metric_sections(doc, results, out)
    for result in results:
        if result.fr_l2 is not None:
            _rankings_section(doc, result, suffix=f" ({result.run.label})")
    return _write(doc, out)


def _metric_sections(doc: Document, results: list[RunAnalysis], out: Path) -> None:
    """A Fisher-versus-Euclidean section for each pair of runs that differ only in metric."""
    for i, a in enumerate(results):
        for j, b in enumerate(results[i + 1 :], start=i + 1):
            if _differing_keys(a.run.info, b.run.info) != {"metric"}:
                continue
            metrics = {a.run.info.get("metric"): a, b.run.info.get("metric"): b}
            if set(metrics) != {"fisher", "euclidean"}:
                continue
            fisher, euclid = metrics["fisher"], metrics["euclidean"]
            names = fisher.run.class_names
            cmp = analysis.fisher_vs_euclidean(fisher.run.paths, euclid.run.paths, len(names))
            doc.heading(f"Fisher versus Euclidean: {fisher.run.label} vs {euclid.run.label}")
            doc.text(
                "The two runs differ only in the metric of the paths. Paths are matched on "
                "(image, target). Is shielding a property of the classifier's decision regions "
                "(then both metrics meet the same intervening classes) or of the metric?"
            )
            doc.text(f"Verdict: {cmp.verdict}")
            stats = cmp.statistics
            doc.table(
                pd.DataFrame(
                    {
                        "statistic": stats["statistic"],
                        "value [95% CI]": [
                            _ci(v, lo, hi, 1) for v, lo, hi in zip(stats["value"], stats["ci_low"], stats["ci_high"])
                        ],
                        "note": stats["note"],
                    }
                )
            )
            doc.table(cmp.summary)
            doc.table(cmp.per_class.assign(source=[names[s] for s in cmp.per_class["source"]]))
            stem = f"metric_diff_{i + 1}_{j + 1}.png"
            doc.figure(
                plots.plot_matrix_difference(cmp.matrix_diff, names, out / stem),
                "Path matrix of the Euclidean run minus that of the Fisher run (common pairs).",
            )


# ------------------------------------------------------------------------------ entry points


def build_report(
    run_dirs: Sequence[Path],
    out: Path | None = None,
    n_boot: int = analysis.DEFAULT_N_BOOT,
    seed: int = 0,
) -> Path:
    """Write the report of one run, or the comparison of several, and return report.html's path.

    One folder with one method and metric: everything goes into the folder (or ``out``). Several
    folders, or one holding several methods/metrics: a comparison report goes into ``out``
    (default ``report-compare`` next to the first folder; the folder itself for a single folder).

    Example:
        >>> build_report([Path("runs/fisher"), Path("runs/euclid")])
        PosixPath('runs/report-compare/report.html')
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise FrmarginError("argument 'run_dirs': got an empty list, expected at least one run folder")
    runs = _unique_labels([mode for d in dirs for mode in split_modes(load_run(d))])
    results = [analyze(run, n_boot=n_boot, seed=seed) for run in runs]
    if len(results) == 1:
        return _single_report(results[0], Path(out) if out is not None else dirs[0])
    if out is None:
        out = dirs[0] if len(dirs) == 1 else dirs[0].resolve().parent / COMPARE_FOLDER
    return _comparison_report(results, Path(out))


def report_command(dirs: list[Path], out: Path | None = None) -> None:
    """CLI body of ``frmargin report DIR [DIR2 ...] [--out OUT]``: build and print where it is."""
    page = build_report(dirs, out)
    print(f"report: {page}")
    print(f"markdown: {page.with_name('report.md')}")


__all__ = ["Run", "RunAnalysis", "analyze", "build_report", "load_run", "report_command", "split_modes"]
