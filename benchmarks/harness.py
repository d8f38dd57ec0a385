"""The benchmark harness: a declaration per benchmark, one command line, one result schema.

A benchmark is a function of a ``Context`` that returns its rows, declared with ``benchmark``::

    @benchmark(
        name="jacobian",
        title="What one batched Jacobian evaluation costs, per route",
        units={"model": "", "batch": "count", "full_s": "s"},
        key=("model", "batch"),
        sizes={"smoke": {"models": "resnet20", "repeats": 1}, "full": {"models": "resnet20,cnn-a-mix", "repeats": 5}},
    )
    def jacobian(ctx: Context) -> list[dict]:
        ...  # ctx.params.models, ctx.params.repeats

    if __name__ == "__main__":
        main(jacobian)

``main`` parses ``--size``, ``--threads`` (default 1), ``--out`` and ``--set NAME=VALUE`` (one
parameter of the size, overridden), runs the benchmark and writes one JSON file of the schema
``frmargin-benchmark/1`` (``_schema.SCHEMA_KEYS``) to ``benchmarks/results/<name>.json``: the machine,
torch and frmargin versions, the commit, the threads, the unit of every column and the rows.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import json
import os
import shlex
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _schema import SCHEMA, fmt, git, load, machine, markdown, problems, scalar

__all__ = ["SCHEMA", "Benchmark", "Context", "Output", "benchmark", "discover", "fmt", "load", "main", "markdown",
           "problems"]  # fmt: skip

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
#: the sizes a benchmark may declare, smallest first; ``smoke`` and ``full`` are required
SIZES = ("smoke", "small", "full")
REQUIRED_SIZES = ("smoke", "full")
DEFAULT_THREADS = 1
#: the asset mirror beside the repository (as the Makefile finds it) when FRMARGIN_MIRROR is unset
SHARED_MIRROR = ROOT.parent / "shared" / "assets"


@dataclass(frozen=True)
class Output:
    """What a benchmark returns: its rows (flat dicts, one key per declared column) and notes."""

    rows: list[dict]
    notes: str = ""


@dataclass(frozen=True)
class Context:
    """What a benchmark is run with: the size's parameters, the size, the threads and the result
    path (``extra(".png")``: a file beside it, for optional extras such as plots)."""

    params: types.SimpleNamespace
    size: str
    threads: int
    out: Path

    def extra(self, suffix: str) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        return self.out.with_suffix(suffix)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark's declaration.

    Attributes:
        name: short name, also the result file's stem (``results/<name>.json``).
        title: the question it answers, one line.
        units: the unit of every column of its rows, in column order ("" for labels).
        key: the columns that identify a row (``compare.py`` matches rows on them).
        sizes: size name -> parameters; ``smoke`` (seconds, for the tests) and ``full`` (the
            published figures) are required, ``small`` optional; every size has the same names.
        run: the measurement, ``run(ctx) -> Output | list[dict]``.
        needs_assets: whether it loads zoo models or data sets (the asset mirror or a download).
        script: the file that declares it.
    """

    name: str
    title: str
    units: Mapping[str, str]
    key: tuple[str, ...]
    sizes: Mapping[str, Mapping[str, Any]]
    run: Callable[[Context], Output | list[dict]]
    needs_assets: bool = True
    script: Path = field(default=HERE)

    def __post_init__(self) -> None:
        where = f"benchmark {self.name!r}"
        missing = [s for s in REQUIRED_SIZES if s not in self.sizes]
        unknown = [s for s in self.sizes if s not in SIZES]
        if missing or unknown:
            raise ValueError(f"{where}: sizes {list(self.sizes)}; expected {REQUIRED_SIZES} and optionally 'small'")
        names = {s: sorted(p) for s, p in self.sizes.items()}
        if any(n != names["full"] for n in names.values()):
            raise ValueError(f"{where}: every size must set the same parameters, got {names}")
        bad_key = [k for k in self.key if k not in self.units]
        if bad_key:
            raise ValueError(f"{where}: key columns {bad_key} have no unit in units")


def benchmark(
    *,
    name: str,
    title: str,
    units: Mapping[str, str],
    key: tuple[str, ...],
    sizes: Mapping[str, Mapping[str, Any]],
    needs_assets: bool = True,
) -> Callable[[Callable[[Context], Output | list[dict]]], Benchmark]:
    """Declare a benchmark (a decorator on its run function; see the module docstring)."""

    def wrap(fn: Callable[[Context], Output | list[dict]]) -> Benchmark:
        script = Path(sys.modules[fn.__module__].__file__ or HERE).resolve()
        ordered = {s: dict(sizes[s]) for s in SIZES if s in sizes} | dict(sizes)
        return Benchmark(name, title, dict(units), tuple(key), ordered, fn, needs_assets, script)

    return wrap


# ----------------------------------------------------------------------------- the record
def tidy_rows(bench: Benchmark, rows: list[dict]) -> tuple[dict, list[dict]]:
    """Rows as flat JSON scalars in the declared column order (absent cells None), and the
    units of the columns used. Raises ValueError for a column without a declared unit."""
    used = {c for r in rows for c in r}
    undeclared = sorted(used - set(bench.units))
    if undeclared:
        raise ValueError(f"benchmark {bench.name!r}: columns {undeclared} have no unit in its declaration")
    columns = [c for c in bench.units if c in used]
    out = [{c: scalar(r.get(c), f"{bench.name} row {i} column {c!r}") for c in columns} for i, r in enumerate(rows)]
    return {c: bench.units[c] for c in columns}, out


def command_line(bench: Benchmark, size: str, threads: int, sets: list[str]) -> str:
    try:
        script = bench.script.relative_to(ROOT).as_posix()
    except ValueError:
        script = str(bench.script)
    extra = "".join(f" --set {shlex.quote(s)}" for s in sets)
    return f"python {script} --size {size} --threads {threads}{extra}"


def record(bench: Benchmark, ctx: Context, output: Output, command: str) -> dict:
    """The result document of one run (schema ``frmargin-benchmark/1``)."""
    import torch

    import frmargin

    units, rows = tidy_rows(bench, output.rows)
    notes = output.notes
    if git("status", "--porcelain", "--untracked-files=no"):
        notes = (notes + " " if notes else "") + "Measured on a working tree with uncommitted changes."
    return {
        "schema": SCHEMA,
        "name": bench.name,
        "title": bench.title,
        "command": command,
        "size": ctx.size,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "frmargin": frmargin.__version__,
        "commit": git("rev-parse", "HEAD"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "units": units,
        "notes": notes,
        "rows": rows,
    }


# ----------------------------------------------------------------------------- running
def default_out(name: str) -> Path:
    return RESULTS / f"{name}.json"


def use_mirror() -> None:
    """Point the asset store at the mirror beside the repository unless FRMARGIN_MIRROR is set."""
    if "FRMARGIN_MIRROR" not in os.environ and (SHARED_MIRROR / "README.md").is_file():
        os.environ["FRMARGIN_MIRROR"] = str(SHARED_MIRROR)


def parse_sets(bench: Benchmark, sets: list[str], ap: argparse.ArgumentParser) -> dict:
    """``--set NAME=VALUE`` pairs, typed after the full size's value (a Python literal)."""
    out: dict[str, Any] = {}
    full = bench.sizes["full"]
    for item in sets:
        name, sep, text = item.partition("=")
        if not sep or name not in full:
            ap.error(f"--set: got {item!r}, expected NAME=VALUE with NAME among {sorted(full)}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        ref = full[name]
        if ref is not None and value is not None and not isinstance(value, type(ref)):
            if isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            elif isinstance(ref, str):
                value = text
            else:
                ap.error(f"--set {name}: got {text!r}, expected {type(ref).__name__} like {ref!r}")
        out[name] = value
    return out


def parser(bench: Benchmark) -> argparse.ArgumentParser:
    module = sys.modules.get(bench.run.__module__)
    doc = (module.__doc__ or "") if module else ""
    ap = argparse.ArgumentParser(
        description=f"{bench.name}: {bench.title}\n\n{doc.strip()}",
        epilog="sizes (--set NAME=VALUE overrides one):\n"
        + "\n".join(f"  {s}: {dict(p)}" for s, p in bench.sizes.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--size", choices=list(bench.sizes), default="full", help="workload size (default full)")
    ap.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help="torch intra-op threads (default 1; 0: torch's default)"
    )
    ap.add_argument("--out", type=Path, default=None, help=f"result file (default {default_out(bench.name)})")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override one size parameter")
    return ap


def main(bench: Benchmark, argv: list[str] | None = None) -> int:
    """Parse the command line, run ``bench`` and write its result; returns the exit status."""
    ap = parser(bench)
    args = ap.parse_args(argv)
    if args.threads < 0:
        ap.error(f"--threads: got {args.threads}, expected a count >= 0 (0: torch's default)")
    if args.out is not None and args.out.is_dir():
        ap.error(f"--out: {args.out} is a folder; expected the path of the result file (e.g. {args.out}/x.json)")
    params = {**bench.sizes[args.size], **parse_sets(bench, args.set, ap)}
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    use_mirror()
    out = args.out or default_out(bench.name)
    ctx = Context(types.SimpleNamespace(**params), args.size, torch.get_num_threads(), out)
    result = bench.run(ctx)
    output = result if isinstance(result, Output) else Output(list(result))
    if not output.rows:
        raise SystemExit(f"{bench.name}: no rows measured")
    doc = record(bench, ctx, output, command_line(bench, args.size, args.threads, args.set))
    bad = problems(doc)
    if bad:
        raise ValueError(f"{bench.name}: result does not fit the schema: {bad}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    print(markdown(doc), flush=True)
    print(f"[{bench.name}] wrote {out}", flush=True)
    return 0


def discover() -> dict[str, Benchmark]:
    """Every benchmark declared in ``benchmarks/bench_*.py``, by name (importing the scripts:
    run from a script in ``benchmarks/``, which puts the folder on ``sys.path``)."""
    found: dict[str, Benchmark] = {}
    for script in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(script.stem)
        benches = [v for v in vars(module).values() if isinstance(v, Benchmark)]
        if len(benches) != 1:
            raise ValueError(f"{script.name}: declares {len(benches)} benchmarks, expected one")
        if benches[0].name in found:
            raise ValueError(f"{script.name}: benchmark name {benches[0].name!r} is taken")
        found[benches[0].name] = benches[0]
    return found
