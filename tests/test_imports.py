"""The package face loads lazily: ``import frmargin``, ``frmargin --help`` and a wrong
``frmargin report`` folder import no torch (nor pandas), while every public name still resolves.

Each check runs in a fresh interpreter (``-X importtime`` lists every module it imported).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import frmargin

PUBLIC = (
    "trace_paths", "TraceOptions", "DataFisher", "PathResult", "margin_lower_bound", "fisher_rao_distance", "predicted_path",
    "load_model", "load_dataset", "RunConfig", "run_experiment", "build_report", "min_l2_distance",
    "min_l2_attack", "FrmarginError", "AssetError", "logits_of",
)  # fmt: skip
HEAVY = ("torch", "pandas")
#: what the run-folder check before the report may not import either
REPORT_CHECK_HEAVY = (*HEAVY, "numpy")


def _imported(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime ARGS``; the process and the top-level modules it imported."""
    res = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
    modules = set()
    for line in res.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            modules.add(name.split(".")[0])
    return res, modules


@pytest.mark.parametrize("module", ["frmargin", "frmargin.errors", "frmargin.cli", "frmargin.runs"])
def test_importing_imports_nothing_heavy(module):
    res, modules = _imported(["-c", f"import {module}"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert not modules & set(HEAVY), f"import {module} imported {sorted(modules & set(HEAVY))}"


def test_help_imports_no_torch():
    res, modules = _imported(["-m", "frmargin", "--help"])
    assert res.returncode == 0 and "report" in res.stdout, res.stdout + res.stderr[-2000:]
    assert not modules & set(HEAVY), f"frmargin --help imported {sorted(modules & set(HEAVY))}"


def test_report_on_a_missing_folder_fails_before_the_report_loads():
    res, modules = _imported(["-m", "frmargin", "report", "/nonexistent/frmargin-run"])
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [
        "frmargin: error: argument 'run_dirs': got '/nonexistent/frmargin-run', "
        "expected an existing run folder (holding paths.parquet)"
    ]
    heavy = modules & set(REPORT_CHECK_HEAVY)
    assert not heavy, f"the error came after importing {sorted(heavy)}"


def test_run_folder_loader_imports_no_torch():
    res, modules = _imported(["-c", "from frmargin.runs import load_run, check_run_folder, RunConfig"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch" not in modules


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_resolve_and_are_listed(name):
    assert name in frmargin.__all__ and name in dir(frmargin)
    assert getattr(frmargin, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        frmargin.no_such_name  # noqa: B018
