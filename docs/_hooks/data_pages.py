"""mkdocs hook: the results and benchmark pages, drawn from the result files committed under docs/.

Every number on those pages comes from a file, shown with the command that wrote it, its date,
machine and package version; figures are drawn with matplotlib at build time (never committed).

- ``docs/benchmarks/data/*.json``: benchmark result files (schema ``frmargin-benchmark/1``),
  rendered generically where the benchmarks page has ``<!-- benchmarks -->``.
- ``docs/results/data/<set>/provenance.json`` with the CSV tables it lists: one measurement
  set, rendered where the results page has ``<!-- results:<set> -->``.
- a study across models (``frmargin study``): the set ``docs/results/data/study/`` written by
  ``python docs/results/collect.py study --study STUDY_DIR --command "frmargin study ..."``, or
  a bare ``docs/results/data/study_table.csv`` with ``study_provenance.json`` beside it; rendered
  where the results page has ``<!-- results:study -->``, and only when present (default tables
  and figure unless its provenance lists its own).

``python docs/_hooks/data_pages.py --readme README.md`` rewrites the README's results table
(between ``<!-- results-table:start -->`` and ``<!-- results-table:end -->``) from the same
files; ``--check`` only says whether it is current.
"""

from __future__ import annotations

import io
import json
import math
import os
import posixpath
import re
import sys
from pathlib import Path

import pandas as pd

DOCS = Path(__file__).resolve().parents[1]
#: where the result files are; the environment variables point a build elsewhere (tests)
RESULTS_ENV, BENCHMARKS_ENV = "FRMARGIN_DOCS_RESULTS", "FRMARGIN_DOCS_BENCHMARKS"
BENCHMARK_SCHEMA = "frmargin-benchmark/1"
BENCHMARK_KEYS = ("schema", "name", "title", "command", "date", "frmargin", "machine", "units", "rows")
RESULTS_SCHEMA = "frmargin-results/1"
RESULT_MARKER = re.compile(r"<!-- results:([\w.-]+) -->")
BENCHMARK_MARKER = "<!-- benchmarks -->"
README_START, README_END = "<!-- results-table:start -->", "<!-- results-table:end -->"
FIGURE_DIR = "figures"


class ResultFileError(ValueError):
    """A committed result file that does not follow its schema."""


# ---------------------------------------------------------------- formatting


def fmt(value: object, digits: int = 4) -> str:
    """A table cell: integers as they are, floats to ``digits`` significant digits, NaN empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|").replace("<", "&lt;")


def with_intervals(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """``frame`` with each column ``c`` that has ``c_lo`` and ``c_hi`` beside it shown as
    ``value [lo, hi]`` (a 95% interval, ``digits`` significant digits), and the ``_lo`` / ``_hi``
    columns dropped."""
    out = frame.copy()
    for column in frame.columns:
        lo, hi = f"{column}_lo", f"{column}_hi"
        if lo in frame.columns and hi in frame.columns:
            out[column] = [
                f"{fmt(v, digits)} [{fmt(a, digits)}, {fmt(b, digits)}]" if not pd.isna(a) else fmt(v, digits)
                for v, a, b in zip(frame[column], frame[lo], frame[hi])
            ]
            out = out.drop(columns=[lo, hi])
    return out


def markdown_table(
    frame: pd.DataFrame, headers: dict[str, str] | None = None, intervals: bool = False, digits: dict | None = None
) -> str:
    """``frame`` as a Markdown table; ``headers`` renames columns (and picks and orders them);
    ``intervals`` folds ``c_lo`` / ``c_hi`` columns into ``c`` (see ``with_intervals``);
    ``digits`` gives some columns more (or fewer) significant digits than 4."""
    if digits:
        frame = frame.astype(object)
        for column, n in digits.items():
            if column in frame.columns:
                frame[column] = [fmt(v, n) for v in frame[column]]
    if intervals:
        frame = with_intervals(frame)
    if headers:
        frame = frame[[c for c in headers if c in frame.columns]].rename(columns=headers)
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.astype(object).itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def machine_words(machine: dict) -> str:
    """``2-core AMD EPYC CPU (load average 1.2)``, ``NVIDIA H100 GPU``, from a machine record."""
    words = f"{machine.get('cores', '?')}-core {machine.get('cpu', 'CPU')} CPU"
    if machine.get("gpu"):
        words += f", {machine['gpu']} GPU (device {machine.get('device', 'cuda')})"
    if machine.get("load_average") is not None:
        words += f" (load average {fmt(float(machine['load_average']), 2)})"
    return words


def provenance_markdown(record: dict) -> str:
    """Where a table's numbers come from: the command(s), date, machine and versions."""
    commands = record.get("commands") or [record["command"]]
    versions = f"frmargin {record['frmargin']}"
    if record.get("commit"):
        versions += f" (commit `{str(record['commit'])[:12]}`)"
    if record.get("torch"):
        versions += f", torch {record['torch']}"
    threads = record.get("threads")
    threads_words = f", {threads} thread{'s' if threads != 1 else ''}" if threads else ""
    if record.get("processes"):
        ranks = "/".join(str(n) for n in record["processes"])
        threads_words += f" per process, {ranks} process{'es' if record['processes'] != [1] else ''}"
    if record.get("wall_seconds"):
        threads_words += f", {float(record['wall_seconds']) / 3600:.1f} hours of wall time"
    lines = [
        f"Measured on {str(record['date'])[:10]} with {versions}{threads_words}, "
        f"on a {machine_words(record['machine'])}:",
        "",
        "```bash",
        *commands,
        "```",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- figures


def _figure_bytes(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def bar_figure(
    frame: pd.DataFrame, label: str, columns: list[str], title: str, units: dict | None = None, group: str | None = None
) -> bytes:
    """One horizontal bar panel per numeric column of ``frame``, rows labelled by ``label``;
    with ``group``, one bar per group value side by side (e.g. two runs)."""
    units = units or {}
    groups = list(dict.fromkeys(frame[group])) if group else [None]
    labels = list(dict.fromkeys(frame[label].astype(str)))
    height = 0.8 / len(groups)

    def draw(plt):
        fig, axes = plt.subplots(
            1, len(columns), figsize=(3.2 * len(columns) + 1, 0.35 * len(labels) * len(groups) ** 0.5 + 1.6)
        )
        axes = [axes] if len(columns) == 1 else list(axes)
        for ax, column in zip(axes, columns):
            for j, name in enumerate(groups):
                part = frame if name is None else frame[frame[group] == name]
                values = part.set_index(part[label].astype(str))[column].astype(float).reindex(labels)
                offset = (j - (len(groups) - 1) / 2) * height
                ax.barh([i + offset for i in range(len(labels))], values, height=height, label=name)
            ax.set_yticks(range(len(labels)), labels if ax is axes[0] else [""] * len(labels))
            ax.invert_yaxis()
            unit = f" ({units[column]})" if units.get(column) else ""
            ax.set_xlabel(column.replace("_", " ") + unit)
            ax.grid(axis="x", alpha=0.3)
        if group:
            handles, names = axes[0].get_legend_handles_labels()
            fig.legend(handles, names, loc="lower center", ncol=len(groups), fontsize=8, bbox_to_anchor=(0.5, -0.02))
        fig.suptitle(title, fontsize=10)
        return fig

    return _figure_bytes(draw)


def scatter_figure(
    frame: pd.DataFrame, x: str, y: str, group: str | None, title: str, diagonal: bool, labels: tuple = (None, None)
) -> bytes:
    """y against x, one colour per ``group``; ``diagonal`` draws y = x; ``labels`` name the axes
    (default: the column names)."""

    def draw(plt):
        fig, ax = plt.subplots(figsize=(5, 4))
        groups = frame.groupby(group) if group else [("", frame)]
        for name, part in groups:
            ax.scatter(part[x], part[y], s=14, alpha=0.8, label=str(name) if group else None)
        if diagonal:
            lo = min(frame[x].min(), frame[y].min())
            hi = max(frame[x].max(), frame[y].max())
            ax.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--", label="y = x")
        ax.set_xlabel(labels[0] or x.replace("_", " "))
        ax.set_ylabel(labels[1] or y.replace("_", " "))
        ax.set_title(title, fontsize=10)
        if group or diagonal:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return fig

    return _figure_bytes(draw)


def line_figure(frame: pd.DataFrame, x: str, ys: list[str], group: str, title: str, labels: dict) -> bytes:
    """One panel per column of ``ys``: y against x, one line per ``group`` value, with the 95%
    interval ``y_lo`` .. ``y_hi`` as error bars where the frame has them; ``labels`` names the
    x axis (``x``) and the panels (by column)."""

    def draw(plt):
        fig, axes = plt.subplots(1, len(ys), figsize=(3.6 * len(ys) + 0.6, 3.4), squeeze=False)
        for ax, y in zip(axes[0], ys):
            for name, part in frame.sort_values(x).groupby(group, sort=False):
                lo, hi = part.get(f"{y}_lo"), part.get(f"{y}_hi")
                err = None if lo is None or hi is None else [part[y] - lo, hi - part[y]]
                ax.errorbar(part[x], part[y], yerr=err, marker="o", ms=3, lw=1, capsize=2, label=str(name))
            ax.set_xlabel(labels.get(x, x))
            ax.set_title(labels.get(y, y.replace("_", " ")), fontsize=9)
            ax.grid(alpha=0.3)
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), fontsize=8, bbox_to_anchor=(0.5, -0.12))
        fig.suptitle(title, fontsize=10)
        return fig

    return _figure_bytes(draw)


# ---------------------------------------------------------------- benchmarks


def load_benchmark(path: Path) -> dict:
    """A benchmark result file, checked against ``frmargin-benchmark/1``."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ResultFileError(f"{path}: not JSON ({err})") from None
    missing = [k for k in BENCHMARK_KEYS if k not in data]
    if missing or data.get("schema") != BENCHMARK_SCHEMA:
        raise ResultFileError(
            f"{path}: expected schema {BENCHMARK_SCHEMA} with keys {BENCHMARK_KEYS}; missing {missing}"
        )
    if not isinstance(data["rows"], list) or not data["rows"] or not all(isinstance(r, dict) for r in data["rows"]):
        raise ResultFileError(f"{path}: 'rows' must be a non-empty list of objects")
    return data


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV, DOCS / "results" / "data"))


def benchmarks_dir() -> Path:
    return Path(os.environ.get(BENCHMARKS_ENV, DOCS / "benchmarks" / "data"))


def benchmark_files() -> list[Path]:
    folder = benchmarks_dir()
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _benchmark_plot(data: dict) -> tuple[pd.DataFrame, str, list[str]] | None:
    """The rows to draw, their label column and up to four numeric columns, or None (too little
    to draw). Rows whose first text column repeats (a model at several batch sizes) are labelled
    by it and the numeric columns that tell them apart, which are then not drawn."""
    frame = pd.DataFrame(data["rows"])
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].notna().any()]
    labels = [c for c in frame.columns if c not in numeric]
    if len(frame) < 2 or not numeric or not labels:
        return None
    label = frame[labels[0]].astype(str)
    for column in [*labels[1:], *numeric]:
        if label.is_unique:
            break
        label = label + f", {column} " + frame[column].astype(str)
        numeric = [c for c in numeric if c != column]
    if not label.is_unique or not numeric:
        return None
    return frame.assign(_label=label), "_label", numeric[:4]


def benchmark_markdown(data: dict, figure_uri: str | None) -> str:
    """One benchmark file: title, provenance, notes, table (units in the headers), figure."""
    frame = pd.DataFrame(data["rows"])
    units = data.get("units") or {}
    headers = {c: f"{c} ({units[c]})" if units.get(c) else c for c in frame.columns}
    record = {**data, "commands": [data["command"]]}
    parts = [f"## {data['title']}", "", provenance_markdown(record), ""]
    if data.get("size"):
        parts += [f"Size: `{data['size']}`.", ""]
    if data.get("notes"):
        parts += [str(data["notes"]), ""]
    parts += [markdown_table(frame, headers), ""]
    if figure_uri:
        parts += [f"![{data['title']}]({figure_uri})", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- results


def load_result_set(folder: Path) -> dict:
    """A measurement set: its provenance.json with each listed table read."""
    path = folder / "provenance.json"
    record = json.loads(path.read_text())
    if record.get("schema") != RESULTS_SCHEMA:
        raise ResultFileError(f"{path}: expected schema {RESULTS_SCHEMA}")
    for key in ("commands", "date", "frmargin", "machine"):
        if key not in record:
            raise ResultFileError(f"{path}: missing {key!r}")
    if not record.get("tables") and (folder / "study_table.csv").is_file():  # a study collected as it is
        record["tables"], record["figures"] = STUDY_TABLES, record.get("figures") or STUDY_FIGURES
    if not record.get("tables"):
        raise ResultFileError(f"{path}: lists no tables")
    record["frames"] = {}
    for item in [*record["tables"], *record.get("figures", []), *record.get("readme", [])]:
        file = folder / item["file"]
        if not file.is_file():
            raise ResultFileError(f"{path}: names {item['file']}, which is not there")
        record["frames"].setdefault(item["file"], pd.read_csv(file))
    record["name"] = folder.name
    return record


def result_sets() -> dict[str, dict]:
    """Every measurement set under the results folder, by name (``study`` for a study table)."""
    sets, root = {}, results_dir()
    if root.is_dir():
        found = [load_result_set(p) for p in sorted(root.iterdir()) if (p / "provenance.json").is_file()]
        for result in sorted(found, key=lambda r: (r.get("order", 100), r["name"])):
            sets[result["name"]] = result
    if (root / "study_table.csv").is_file():
        sets["study"] = study_set(root)
    return sets


#: how a study table is shown when its provenance says nothing else
STUDY_TABLES = [
    {
        "file": "study_table.csv",
        "title": "Margins and shielding per model",
        "intervals": True,
        "columns": {
            "run": "model",
            "training": "training",
            "accuracy": "accuracy",
            "temperature": "T",
            "fr_margin": "mean per-image FR margin",
            "ng_shielded_pct": "natural-gradient shielded %",
            "ng_predicted_shielded_pct": "closed-form prediction %",
            "euclid_shielded_pct": "Euclidean shielded %",
            "median_l2": "median minimal L2",
            "spearman_fr_l2": "Spearman, FR margin vs minimal L2",
        },
        "caption": "Intervals: 95% bootstrap over one resample of the images shared by all models.",
    },
    {
        "file": "study_table.csv",
        "title": "Accuracy and cost per model",
        "columns": {
            "run": "model",
            "rel_error_median": "median relative error vs closed form",
            "first_hit_agreement": "first hit = closed form",
            "jacobians_per_path": "Jacobian evaluations per path",
            "seconds_per_path": "tracing seconds per path",
        },
    },
]
STUDY_FIGURES = [
    {
        "kind": "bar",
        "file": "study_table.csv",
        "x": "run",
        "y": ["fr_margin", "ng_shielded_pct", "euclid_shielded_pct"],
        "title": "Per model: mean per-image FR margin and shielded paths by metric",
    }
]


def study_set(folder: Path) -> dict:
    """A study table written by ``frmargin study`` placed at the top of the results folder, with
    its provenance in ``study_provenance.json`` beside it (the keys of a result set's
    provenance; ``collect.py study --study STUDY_DIR`` writes a complete set folder instead)."""
    path = folder / "study_provenance.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    missing = [k for k in ("commands", "date", "frmargin", "machine") if k not in info]
    if missing:
        raise ResultFileError(f"{path}: missing {missing} (a study table is shown with its provenance)")
    frame = pd.read_csv(folder / "study_table.csv")
    return {
        **info,
        "title": info.get("title") or "A study across models",
        "tables": info.get("tables") or STUDY_TABLES,
        "figures": info.get("figures") or STUDY_FIGURES,
        "frames": {"study_table.csv": frame},
        "name": "study",
    }


def _figure_specs(result: dict) -> list[tuple[str, dict]]:
    return [(f"{result['name']}-{i}.png", spec) for i, spec in enumerate(result.get("figures", []))]


def result_figure(result: dict, spec: dict) -> bytes:
    frame = result["frames"][spec["file"]]
    if spec.get("query"):
        frame = frame.query(spec["query"])
    if spec["kind"] == "bar":
        return bar_figure(frame, spec["x"], list(spec["y"]), spec["title"], spec.get("units"), spec.get("group"))
    if spec["kind"] == "scatter":
        labels = (spec.get("xlabel"), spec.get("ylabel"))
        return scatter_figure(
            frame, spec["x"], spec["y"], spec.get("group"), spec["title"], spec.get("diagonal", False), labels
        )
    if spec["kind"] == "line":
        return line_figure(frame, spec["x"], list(spec["y"]), spec["group"], spec["title"], spec.get("labels", {}))
    raise ResultFileError(f"{result['name']}: unknown figure kind {spec['kind']!r}")


def result_markdown(result: dict, figure_dir: str) -> str:
    """One measurement set: provenance, then each table (caption, Markdown) and each figure."""
    parts = [provenance_markdown(result), ""]
    if result.get("intro"):  # a set's own words (a study brings no prose of its own to the page)
        parts += [str(result["intro"]), ""]
    for table in result["tables"]:
        frame = result["frames"][table["file"]]
        if table.get("query"):
            frame = frame.query(table["query"])
        parts += [f"**{table['title']}** (`{result['name']}/{table['file']}`)", ""]
        parts += [markdown_table(frame, table.get("columns"), table.get("intervals", False), table.get("digits")), ""]
        if table.get("caption"):
            parts += [table["caption"], ""]
    for name, spec in _figure_specs(result):
        parts += [f"![{spec['title']}]({figure_dir}/{name})", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- README


def readme_value(frame: pd.DataFrame, item: dict) -> str:
    """One README cell: the first value of a column (with its interval when asked:
    ``interval: true`` for the columns ``<column>_lo`` / ``_hi``, or ``interval: [low, high]``
    naming them), the range of the column over the rows (``how: range``), or two columns of the
    first row as a span (``how: span``, ``column``: [low, high])."""
    column, digits = item["column"], item.get("digits", 4)
    if item.get("how") == "span":
        low, high = column
        return f"{fmt(float(frame[low].iloc[0]), digits)} to {fmt(float(frame[high].iloc[0]), digits)}"
    if item.get("how", "first") == "range":
        return f"{fmt(float(frame[column].min()), digits)} to {fmt(float(frame[column].max()), digits)}"
    if item.get("interval"):
        low, high = item["interval"] if isinstance(item["interval"], list) else (f"{column}_lo", f"{column}_hi")
        shown = frame[[column, low, high]].set_axis([column, f"{column}_lo", f"{column}_hi"], axis=1)
        return str(with_intervals(shown, digits)[column].iloc[0])
    return fmt(frame[column].iloc[0], digits)


def readme_table(sets: dict[str, dict] | None = None) -> str:
    """The README's short results table: the rows each set marks with ``readme``."""
    sets = result_sets() if sets is None else sets
    rows = []
    for result in sets.values():
        for item in result.get("readme", []):
            frame = result["frames"][item["file"]]
            if item.get("query"):
                frame = frame.query(item["query"])
            measured = f"{result['date'][:10]}, frmargin {result['frmargin']}"
            rows.append({"measurement": item["label"], "value": readme_value(frame, item), "measured": measured})
    return markdown_table(pd.DataFrame(rows, columns=["measurement", "value", "measured"]))


def rewrite_readme(readme: Path, check: bool = False) -> bool:
    """Put ``readme_table()`` between the README's markers; True when it was already current."""
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    new = text[:start] + "\n" + readme_table() + "\n" + text[end:]
    if not check and new != text:
        readme.write_text(new)
    return new == text


# ---------------------------------------------------------------- mkdocs hooks


def on_files(files, config):
    """Draw every figure the result files ask for, as generated files of the site."""
    from mkdocs.structure.files import File

    for result in result_sets().values():
        for name, spec in _figure_specs(result):
            uri = f"results/{FIGURE_DIR}/{name}"
            files.append(File.generated(config, uri, content=result_figure(result, spec)))
    for path in benchmark_files():
        data = load_benchmark(path)
        plot = _benchmark_plot(data)
        if plot is not None:
            png = bar_figure(*plot, data["title"], data.get("units"))
            files.append(File.generated(config, f"benchmarks/{FIGURE_DIR}/{path.stem}.png", content=png))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if BENCHMARK_MARKER in markdown:
        paths = benchmark_files()
        blocks = []
        for path in paths:
            data = load_benchmark(path)
            uri = f"benchmarks/{FIGURE_DIR}/{path.stem}.png" if _benchmark_plot(data) else None
            blocks.append(benchmark_markdown(data, uri))
        if not blocks:
            blocks = ["No benchmark result files are in `docs/benchmarks/data/` yet."]
        markdown = markdown.replace(BENCHMARK_MARKER, "\n".join(blocks))
    if RESULT_MARKER.search(markdown):
        sets = result_sets()

        def block(match: re.Match) -> str:
            name = match.group(1)
            if name == "study" and name not in sets:
                return ""  # the study table is shown once it is there
            if name not in sets:
                raise ResultFileError(f"{page.file.src_uri}: no result set {name!r} in {results_dir()}")
            # figure links are relative to the page (results.md, or a page under results/)
            here = posixpath.dirname(page.file.src_uri) or "."
            block = result_markdown(sets[name], posixpath.relpath(f"results/{FIGURE_DIR}", here))
            # a study (study, study-N) has no prose of its own on the page: it brings its heading
            return f"## {sets[name]['title']}\n\n{block}" if name.split("-")[0] == "study" else block

        markdown = RESULT_MARKER.sub(block, markdown)
    return markdown


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--readme":
        current = rewrite_readme(Path(args[1]), check="--check" in args)
        print(
            "README results table is current"
            if current
            else "README results table rewritten"
            if "--check" not in args
            else "README results table is out of date"
        )
        sys.exit(0 if current or "--check" not in args else 1)
    print(__doc__)
    sys.exit(2)
