"""The benchmarks: each runs at its smoke size and writes a result of the schema; the harness
refuses what does not fit it; ``compare.py`` matches rows; ``run_all.py`` goes on past failures;
the README's table is the declarations'.

Every script runs as a subprocess (``python benchmarks/bench_x.py``), as a user runs it, with one
thread. Benchmarks that load zoo models or data skip without the asset mirror.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import frmargin
from mirror import MIRROR

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(BENCH.glob("bench_*.py"))
#: the schema, written out here (not imported) so that a change to the harness shows
SCHEMA_KEYS = ["schema", "name", "title", "command", "size", "date", "frmargin", "commit", "torch", "threads",
               "machine", "units", "notes", "rows"]  # fmt: skip
MACHINE_KEYS = ["cpu", "cores", "device", "gpu", "load_average"]
IMAGENET_FILES = ("imagenet/sample-SHA256SUMS", "imagenet/mobilenet_v2_1.0_224_quant.tflite")
#: seconds one smoke run may take on a loaded 2-core machine (they take 4-30 s)
SMOKE_TIMEOUT_S = 240


def run(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository root, one thread, the mirror when there is one."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if MIRROR is not None:
        env["FRMARGIN_MIRROR"] = str(MIRROR)
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch):
    """benchmarks/harness.py (and the _schema module it imports), loaded from their files for
    the duration of a test (they import only the standard library at the top)."""
    for name in ("_schema", "harness"):
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
    return sys.modules["harness"]


@pytest.fixture(scope="module")
def declarations() -> dict[str, dict]:
    """Every benchmark's declaration, by script file name (``run_all.py --list json``)."""
    out = run(BENCH / "run_all.py", "--list", "json")
    assert out.returncode == 0, out.stderr
    return {d["script"]: d for d in json.loads(out.stdout)}


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path.name}: {constant} in a result (must be null)")

    return json.loads(path.read_text(), parse_constant=refuse)


def check_result(doc: dict, decl: dict, script: str) -> None:
    """Assert that ``doc`` is a smoke result of the benchmark declared by ``decl``."""
    assert list(doc) == SCHEMA_KEYS
    assert doc["schema"] == "frmargin-benchmark/1"
    assert (doc["name"], doc["title"], doc["size"], doc["threads"]) == (decl["name"], decl["title"], "smoke", 1)
    assert doc["command"].startswith(f"python benchmarks/{script} --size smoke --threads 1")
    assert datetime.datetime.fromisoformat(doc["date"]).tzinfo is not None
    assert (doc["frmargin"], doc["torch"]) == (frmargin.__version__, torch.__version__)
    assert doc["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", doc["commit"])
    machine = doc["machine"]
    assert list(machine) == MACHINE_KEYS
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert isinstance(machine["cores"], int) and machine["cores"] >= 1
    assert machine["device"] == "cpu" and (machine["gpu"] is None or isinstance(machine["gpu"], str))
    assert isinstance(doc["notes"], str)
    units, rows = doc["units"], doc["rows"]
    assert units and all(units[c] == decl["units"][c] for c in units), "units differ from the declaration"
    assert isinstance(rows, list) and rows, "no rows"
    for row in rows:
        assert list(row) == list(units), f"row columns {list(row)} != units {list(units)}"
        for column, value in row.items():
            assert value is None or isinstance(value, (bool, int, str)) or math.isfinite(value), (column, value)
        assert all(row[k] is not None for k in decl["key"]), f"key {decl['key']} missing in {row}"


def test_every_script_declares_one_benchmark(declarations) -> None:
    assert sorted(declarations) == [s.name for s in SCRIPTS]
    names = [d["name"] for d in declarations.values()]
    assert len(set(names)) == len(names)
    for d in declarations.values():
        assert {"smoke", "full"} <= set(d["sizes"]) <= {"smoke", "small", "full"}, d["name"]
        assert d["title"] and all(isinstance(u, str) for u in d["units"].values()), d["name"]
        assert set(d["key"]) <= set(d["units"]), d["name"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem.removeprefix("bench_") for s in SCRIPTS])
def test_smoke_run_writes_the_schema(script: Path, declarations, tmp_path) -> None:
    decl = declarations[script.name]
    if decl["needs_assets"] and MIRROR is None:
        pytest.skip("needs the asset mirror; set FRMARGIN_MIRROR")
    if decl["name"] == "imagenet" and not all((MIRROR / f).is_file() for f in IMAGENET_FILES):
        pytest.skip("the mirror has no ImageNet sample and MobileNetV2")
    out = tmp_path / "result.json"
    proc = run(script, "--size", "smoke", "--threads", "1", "--out", out, timeout=SMOKE_TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    check_result(strict_json(out), decl, script.name)


def test_bad_size_and_parameter_are_refused_by_name() -> None:
    script = BENCH / "bench_top_classes.py"
    out = run(script, "--size", "huge")
    assert out.returncode == 2 and "--size" in out.stderr and "'huge'" in out.stderr
    out = run(script, "--size", "smoke", "--set", "hidden=wide")
    assert out.returncode == 2 and "--set hidden" in out.stderr and "'wide'" in out.stderr
    out = run(script, "--size", "smoke", "--set", "depth=3")
    assert out.returncode == 2 and "'depth=3'" in out.stderr and "hidden" in out.stderr


def test_harness_refuses_what_does_not_fit_the_schema(harness, tmp_path) -> None:
    h = harness
    bench = h.Benchmark("x", "a question", {"model": "", "s": "s"}, ("model",), {"smoke": {}, "full": {}}, list)
    units, rows = h.tidy_rows(bench, [{"s": float("nan"), "model": "a"}, {"model": "b"}])
    assert units == {"model": "", "s": "s"} and rows == [{"model": "a", "s": None}, {"model": "b", "s": None}]
    with pytest.raises(ValueError, match=r"\['width'\] have no unit"):
        h.tidy_rows(bench, [{"model": "a", "width": 3}])
    with pytest.raises(TypeError, match="not a JSON scalar"):
        h.tidy_rows(bench, [{"model": "a", "s": [1.0, 2.0]}])
    with pytest.raises(ValueError, match="sizes"):
        h.Benchmark("x", "q", {"a": ""}, ("a",), {"smoke": {}}, list)
    doc = result("x", {"model": "", "s": "s"}, [{"model": "a", "s": 1.0}])
    assert h.problems(doc) == []
    assert h.problems(doc | {"rows": []}) == ["rows must be a non-empty list"]
    assert any("no unit" in p for p in h.problems(doc | {"rows": [{"model": "a", "t": 1}]}))
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(doc | {"rows": [{"model": "a", "s": float("nan")}]}))
    with pytest.raises(ValueError, match="NaN"):
        h.load(path)


def result(name: str, units: dict, rows: list[dict], **fields) -> dict:
    """A result document of the schema (for the comparison tests)."""
    machine = {"cpu": "test cpu", "cores": 2, "device": "cpu", "gpu": None, "load_average": 0.5}
    doc = {"schema": "frmargin-benchmark/1", "name": name, "title": f"{name} question",
           "command": f"python benchmarks/bench_{name}.py --size smoke --threads 1", "size": "smoke",
           "date": "2026-12-07T10:00:00+00:00", "frmargin": "0.1.0", "commit": None, "torch": "2.13.0",
           "threads": 1, "machine": machine, "units": units, "notes": "", "rows": rows}  # fmt: skip
    return doc | fields


JAC_UNITS = {"model": "", "batch": "count", "full_s": "s", "vmap_s": "s"}


def test_compare_matches_rows_on_the_declared_key(tmp_path) -> None:
    a = result("jacobian", JAC_UNITS, [
        {"model": "resnet20", "batch": 16, "full_s": 0.5, "vmap_s": 0.25},
        {"model": "resnet20", "batch": 64, "full_s": 2.0, "vmap_s": 1.0},
        {"model": "cnn-a-mix", "batch": 16, "full_s": 0.1, "vmap_s": None},
    ])  # fmt: skip
    b = result("jacobian", JAC_UNITS, [  # other order, one row fewer, one more
        {"model": "resnet20", "batch": 64, "full_s": 3.0, "vmap_s": 1.0},
        {"model": "resnet20", "batch": 16, "full_s": 1.0, "vmap_s": 0.0},
        {"model": "shufflenetv2-x0.5", "batch": 16, "full_s": 0.3, "vmap_s": 0.2},
    ])  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    out = run(BENCH / "compare.py", tmp_path / "a.json", tmp_path / "b.json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "| model | batch | column | unit | A | B | B/A |" in lines
    assert "| resnet20 | 16 | full_s | s | 0.5 | 1 | 2 |" in lines
    assert "| resnet20 | 64 | full_s | s | 2 | 3 | 1.5 |" in lines
    assert "| resnet20 | 16 | vmap_s | s | 0.25 | 0 | 0 |" in lines
    assert "Rows only in A: cnn-a-mix, 16" in lines
    assert "Rows only in B: shufflenetv2-x0.5, 16" in lines


def test_compare_folders_takes_every_common_benchmark(tmp_path) -> None:
    for side, scale in (("before", 1.0), ("after", 4.0)):
        folder = tmp_path / side
        folder.mkdir()
        rows = [{"model": "resnet20", "batch": 16, "full_s": scale, "vmap_s": 1.0}]
        (folder / "jacobian.json").write_text(json.dumps(result("jacobian", JAC_UNITS, rows)))
        (folder / "summary.md").write_text("not a result")
    (tmp_path / "before" / "l2.json").write_text(json.dumps(result("l2", {"model": ""}, [{"model": "resnet20"}])))
    (tmp_path / "after" / "broken.json").write_text("{}")
    out = run(BENCH / "compare.py", tmp_path / "before", tmp_path / "after")
    assert out.returncode == 0, out.stderr
    assert "Only in A: l2" in out.stdout and "broken" not in out.stdout
    assert "| resnet20 | 16 | full_s | s | 1 | 4 | 4 |" in out.stdout.splitlines()
    bad = run(BENCH / "compare.py", tmp_path / "before", tmp_path / "after" / "jacobian.json")
    assert bad.returncode == 2 and "two result files or two folders" in bad.stderr


def test_run_all_goes_on_past_failures(tmp_path) -> None:
    # a timeout far below start-up fails both: the second still runs, the exit status says so
    out = run(BENCH / "run_all.py", "--size", "smoke", "--only", "top_classes,many_classes",
              "--timeout", "0.05", "--out", tmp_path)  # fmt: skip
    assert out.returncode == 1
    assert "FAILED: top_classes, many_classes" in out.stdout
    text = (tmp_path / "summary.md").read_text()
    assert "| top_classes | failed" in text and "| many_classes | failed" in text


def test_readme_table_is_the_declarations() -> None:
    listed = run(BENCH / "run_all.py", "--list")
    assert listed.returncode == 0, listed.stderr
    readme = (BENCH / "README.md").read_text()
    start = readme.index("<!-- benchmarks table: generated by run_all.py --update-readme -->\n")
    table = readme[start:].split("\n", 1)[1].split("<!-- end of table -->")[0]
    assert table == listed.stdout, "benchmarks/README.md is stale: run python benchmarks/run_all.py --update-readme"


def test_benchmarks_import_the_installed_package() -> None:
    for path in BENCH.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"sys\.path\s*(\.\w+\(|\+?=|\[)", text), f"{path.name} edits sys.path"
        assert not re.search(r"\bissue \d+", text, re.IGNORECASE), f"{path.name} cites an issue number"
    assert not re.search(r"\bissue \d+", (BENCH / "README.md").read_text(), re.IGNORECASE)
