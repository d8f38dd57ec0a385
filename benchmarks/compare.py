"""Compare two benchmark results side by side (markdown on stdout).

Rows are matched on the benchmark's key columns (its declaration; ``--key`` overrides); every
other column is shown as A, B and, for numbers, B/A. With two folders (e.g. two ``run_all.py
--out`` folders, before and after a change), every benchmark present in both is compared.

Usage: python benchmarks/compare.py A.json B.json [--key model,batch] [--columns full_s,vmap_s]
       python benchmarks/compare.py RESULTS_A/ RESULTS_B/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import harness


def keys_of(doc: dict, override: list[str] | None) -> list[str]:
    """The key columns: ``override``, else the declaration's, else the text columns."""
    if override:
        return override
    declared = harness.discover().get(doc["name"])
    if declared is not None and all(k in doc["units"] for k in declared.key):
        return list(declared.key)
    return [c for c in doc["units"] if all(isinstance(r.get(c), str) for r in doc["rows"])]


def index(rows: list[dict], keys: list[str]) -> dict[tuple, dict]:
    """Rows by their key values (a repeated key gets its occurrence number appended)."""
    out: dict[tuple, dict] = {}
    for row in rows:
        k = tuple(str(row.get(c)) for c in keys)
        n = 1
        while (k if n == 1 else (*k, f"#{n}")) in out:
            n += 1
        out[k if n == 1 else (*k, f"#{n}")] = row
    return out


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ratio(a, b) -> str:
    if number(a) and number(b) and a != 0:
        return f"{b / a:.3g}"
    return "–"


def provenance(label: str, path: Path, doc: dict) -> str:
    m = doc["machine"]
    return (
        f"- {label}: `{path}`: {doc['date']}, frmargin {doc['frmargin']}, commit {(doc['commit'] or 'unknown')[:12]}, "
        f"size {doc['size']}, {doc['threads']} thread(s), {m['cpu']} ({m['cores']} cores), load {m['load_average']}"
    )


def compare(a_path: Path, b_path: Path, key: list[str] | None = None, columns: list[str] | None = None) -> str:
    """The markdown comparison of two result files of the same benchmark."""
    a, b = harness.load(a_path), harness.load(b_path)
    lines = [f"## {b['name']}: {b['title']}", "", provenance("A", a_path, a), provenance("B", b_path, b), ""]
    if a["name"] != b["name"]:
        lines += [f"A is benchmark {a['name']!r}, B is {b['name']!r}: rows matched anyway.", ""]
    if a["size"] != b["size"] or a["machine"]["cpu"] != b["machine"]["cpu"]:
        lines += ["A and B differ in size or machine: compare the machine-independent columns.", ""]
    keys = keys_of(b, key)
    units = a["units"] | b["units"]
    shown = [c for c in units if c not in keys and (columns is None or c in columns)]
    rows_a, rows_b = index(a["rows"], keys), index(b["rows"], keys)
    lines += [
        "| " + " | ".join([*keys, "column", "unit", "A", "B", "B/A"]) + " |",
        "|" + "---|" * (len(keys) + 5),
    ]
    for k, rb in rows_b.items():
        ra = rows_a.get(k)
        if ra is None:
            continue
        for c in shown:
            va, vb = ra.get(c), rb.get(c)
            if va is None and vb is None:
                continue
            cells = [*k[: len(keys)], c, units[c], harness.fmt(va), harness.fmt(vb), ratio(va, vb)]
            lines.append("| " + " | ".join(str(v) for v in cells) + " |")
    for label, side, other in (("A", rows_a, rows_b), ("B", rows_b, rows_a)):
        only = [k for k in side if k not in other]
        if only:
            lines += ["", f"Rows only in {label}: " + "; ".join(", ".join(k) for k in only)]
    return "\n".join(lines) + "\n"


def compare_folders(a_dir: Path, b_dir: Path, columns: list[str] | None = None) -> str:
    """Every result present in both folders, compared; the others listed."""

    def results(folder: Path) -> dict[str, Path]:
        out = {}
        for f in sorted(folder.glob("*.json")):
            try:
                out[harness.load(f)["name"]] = f
            except ValueError:
                continue  # not a result file (e.g. a summary)
        return out

    ra, rb = results(a_dir), results(b_dir)
    common = [n for n in rb if n in ra]
    lines = [f"# Benchmarks: A = `{a_dir}`, B = `{b_dir}`", ""]
    for label, side, other in (("A", ra, rb), ("B", rb, ra)):
        only = [n for n in side if n not in other]
        if only:
            lines += [f"Only in {label}: {', '.join(only)}", ""]
    if not common:
        lines.append("No benchmark result is in both folders.")
    return "\n".join(lines) + "\n" + "\n".join(compare(ra[n], rb[n], columns=columns) for n in common)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="result file (or folder of result files) A, e.g. before a change")
    ap.add_argument("b", type=Path, help="result file (or folder) B, e.g. after it")
    ap.add_argument("--key", default=None, help="comma list of the columns that identify a row")
    ap.add_argument("--columns", default=None, help="comma list of the columns to show (default: all)")
    args = ap.parse_args(argv)
    columns = args.columns.split(",") if args.columns else None
    for label, path in (("A", args.a), ("B", args.b)):
        if not path.exists():
            ap.error(f"{label}: {path} does not exist; expected a result file or a folder of them")
    if args.a.is_dir() != args.b.is_dir():
        ap.error(f"A ({args.a}) and B ({args.b}): expected two result files or two folders")
    try:
        if args.a.is_dir():
            text = compare_folders(args.a, args.b, columns)
        else:
            text = compare(args.a, args.b, args.key.split(",") if args.key else None, columns)
    except ValueError as err:
        ap.error(str(err))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
