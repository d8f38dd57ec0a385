"""The command line: one-line user errors (exit 2, no traceback unless --debug), full disk,
``assets``, ``accuracy``, ``run`` and ``report``.

Real subprocesses of ``python -m frmargin`` with the offline mirror (``$FRMARGIN_MIRROR`` when set,
else ``<repo>/../shared/assets``) and a temporary ``FRMARGIN_HOME``; skipped without the mirror.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from frmargin import cli
from frmargin.runs.config import RunConfig
from mirror import MIRROR, needs_mirror

TIMEOUT = 180


pytestmark = needs_mirror


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("frmargin-home")
    return {
        **os.environ,
        "FRMARGIN_MIRROR": str(MIRROR),
        "FRMARGIN_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }


@pytest.fixture
def api_env(env, monkeypatch):
    """The same mirror and home for code run in this process."""
    monkeypatch.setenv("FRMARGIN_MIRROR", env["FRMARGIN_MIRROR"])
    monkeypatch.setenv("FRMARGIN_HOME", env["FRMARGIN_HOME"])


def frmargin(*args: str, env: dict, cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "frmargin", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(res: subprocess.CompletedProcess, names: tuple[str, ...]) -> str:
    """Exit 2, stderr exactly one line ``frmargin: error: ...`` naming one of ``names``."""
    where = f"rc {res.returncode}\nstdout: {res.stdout[-1500:]!r}\nstderr: {res.stderr[-3000:]!r}"
    assert res.returncode == 2, f"expected exit status 2; {where}"
    assert "Traceback" not in res.stderr + res.stdout, f"traceback shown without --debug; {where}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr should be one line, got {len(lines)}; {where}"
    line = lines[0]
    assert line.startswith("frmargin: error:"), f"bad prefix; {where}"
    assert any(n in line for n in names), f"the message should name one of {names}: {line!r}"
    return line


RUN = ("run", "--data", "cifar10-exact", "--images", "2", "--chunk-images", "1", "--no-progress", "--device", "cpu")


# --------------------------------------------------------------------------- user errors


def _garbage_npz(tmp: Path) -> Path:
    path = tmp / "x.npz"
    path.write_bytes(b"this is not an npz file \x00\x01\x02 garbage" * 10)
    return path


ERROR_CASES = {
    # id: (argument builder (tmp -> args), accepted names in the message)
    "unknown-model": (
        lambda t: ["run", "--model", "nope", "--data", "cifar10-exact", "--images", "2", "--out", str(t / "o")],
        ("--model", "'model'"),
    ),
    "unknown-data": (lambda t: ["run", "--data", "nope", "--images", "2", "--out", str(t / "o")], ("--data", "'data'")),
    "garbage-npz": (
        lambda t: ["run", "--data", str(_garbage_npz(t)), "--images", "2", "--out", str(t / "o")],
        ("--data", "'data'", "x.npz"),
    ),
    "missing-npz": (
        lambda t: ["run", "--data", str(t / "missing.npz"), "--images", "2", "--out", str(t / "o")],
        ("--data", "'data'", "missing.npz"),
    ),
    "images-negative": (
        lambda t: ["run", "--data", "cifar10-exact", "--images", "-5", "--out", str(t / "o")],
        ("--images", "'images'"),
    ),
    "images-zero": (
        lambda t: ["run", "--data", "cifar10-exact", "--images", "0", "--out", str(t / "o")],
        ("--images", "'images'"),
    ),
    "batch-size-zero": (
        lambda t: ["run", "--data", "cifar10-exact", "--batch-size", "0", "--out", str(t / "o")],
        ("batch-size", "batch_size"),
    ),
    "chunk-images-zero": (
        lambda t: ["run", "--data", "cifar10-exact", "--chunk-images", "0", "--out", str(t / "o")],
        ("chunk-images", "chunk_images"),
    ),
    "box-reversed": (lambda t: ["run", "--data", "cifar10-exact", "--box", "1,0", "--out", str(t / "o")], ("--box",)),
    "box-garbage": (lambda t: ["run", "--data", "cifar10-exact", "--box", "a,b", "--out", str(t / "o")], ("--box",)),
    "top-classes-one": (
        lambda t: ["run", "--data", "cifar10-exact", "--top-classes", "1", "--out", str(t / "o")],
        ("top-classes", "top_classes"),
    ),
    "accuracy-limit-zero": (lambda t: ["accuracy", "--limit", "0"], ("--limit", "'limit'")),
    "report-missing-folder": (lambda t: ["report", "/nonexistent/frmargin-run"], ("/nonexistent/frmargin-run",)),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_error_is_one_line(case, env, tmp_path):
    build, names = ERROR_CASES[case]
    assert_one_line_error(frmargin(*build(tmp_path), env=env, cwd=tmp_path), names)


def _fake_run_folder(folder: Path, fingerprint: str) -> Path:
    (folder / "paths.parquet").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"fingerprint": fingerprint, "status": "complete"}))
    return folder


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_out_folder_holding_a_different_run(resume, env, tmp_path):
    out = _fake_run_folder(tmp_path / "other", "0123456789abcdef")
    before = (out / "run.json").read_text()
    args = [*RUN, "--out", str(out)] + (["--resume"] if resume else [])
    line = assert_one_line_error(frmargin(*args, env=env, cwd=tmp_path), ("--out",))
    assert str(out) in line, f"the message should name the folder: {line!r}"
    assert (out / "run.json").read_text() == before


def test_out_folder_holding_this_run_needs_resume(env, tmp_path):
    # the CLI's configuration for RUN (device is not part of a run's identity)
    fingerprint = RunConfig(images=2, data="cifar10-exact", chunk_images=1).fingerprint()
    out = _fake_run_folder(tmp_path / "same", fingerprint)
    line = assert_one_line_error(frmargin(*RUN, "--out", str(out), env=env, cwd=tmp_path), ("--out",))
    assert "--resume" in line, line


def test_debug_shows_the_traceback(env, tmp_path):
    res = frmargin("--debug", "run", "--model", "nope", "--data", "cifar10-exact", "--images", "2",
                   "--out", str(tmp_path / "o"), env=env, cwd=tmp_path)  # fmt: skip
    assert res.returncode != 0
    assert "Traceback (most recent call last)" in res.stderr, res.stderr[-2000:]
    assert "nope" in res.stderr


# --------------------------------------------------------------------------- full disk (in process)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _fill_the_disk(monkeypatch) -> None:
    """Every parquet write of the run fails as on a full disk."""
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _disk_full)


def test_main_turns_a_full_disk_into_one_line(api_env, monkeypatch, capsys, tmp_path):
    _fill_the_disk(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["frmargin", *RUN, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frmargin: error:"), repr(err)
    assert "No space left on device" in lines[0] and "Traceback" not in err


def test_main_with_debug_reraises_the_os_error(api_env, monkeypatch, tmp_path):
    _fill_the_disk(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["frmargin", "--debug", *RUN, "--out", str(tmp_path / "o")])
    try:
        with pytest.raises(OSError) as info:
            cli.main()
    finally:
        cli.DEBUG["on"] = False
    assert info.value.errno == errno.ENOSPC


# --------------------------------------------------------------------------- assets, accuracy


def test_assets_lists_resnet20_with_a_state(env, tmp_path):
    res = frmargin("assets", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [line.split() for line in res.stdout.splitlines() if line.startswith("resnet20 ")]
    assert len(rows) == 1, res.stdout
    assert rows[0][1] == "weights" and rows[0][2] in ("verified", "present"), rows[0]
    # the mirror as given or as resolved (a ../shared that is a symbolic link prints its target)
    assert str(MIRROR) in res.stdout or str(Path(MIRROR).resolve()) in res.stdout, res.stdout


def test_accuracy_prints_a_percentage_and_the_source(env, api_env, tmp_path):
    from frmargin.data import load_dataset

    res = frmargin("accuracy", "--model", "resnet20", "--data", "cifar10-exact", "--limit", "20",
                   env=env, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r"(\d+(?:\.\d+)?)% \((\d+)/(\d+)\)", res.stdout)
    assert m, f"no percentage in {res.stdout!r}"
    pct, correct, n = float(m.group(1)), int(m.group(2)), int(m.group(3))
    assert n == 20 and pct == pytest.approx(100 * correct / n, abs=0.01)
    assert pct >= 70, f"resnet20 on exact CIFAR-10 images should be accurate, got {pct}%"
    assert load_dataset("cifar10-exact").source in res.stdout, "the data source is not printed"


# --------------------------------------------------------------------------- run and report


@pytest.fixture(scope="module")
def cli_run(env, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli-run")
    out = base / "run"
    res = frmargin(*RUN, "--out", str(out), env=env, cwd=base)
    return res, out


def test_run_command_writes_a_complete_run(cli_run):
    res, out = cli_run
    assert res.returncode == 0, res.stderr[-3000:]
    assert "results in" in res.stdout and str(out) in res.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["images"] == 2
    paths = pd.read_parquet(out / "paths.parquet")
    assert len(paths) == 9 * info["n_correct"] and info["n_paths"] == len(paths)


def test_report_writes_html_and_class_table(cli_run, env, tmp_path):
    res, out = cli_run
    assert res.returncode == 0, res.stderr[-3000:]
    rep = frmargin("report", str(out), env=env, cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = out / "report.html"
    table = out / "class_table.csv"
    assert html.is_file() and html.stat().st_size > 1000
    assert "<html" in html.read_text(errors="replace").lower()
    classes = pd.read_csv(table)
    assert len(classes) == 10 and "name" in classes.columns
    assert classes["n_paths"].sum() == len(pd.read_parquet(out / "paths.parquet"))
