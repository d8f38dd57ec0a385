"""The run folder (``frmargin.runs.folder``): file names, atomic writes, loading and its errors.

Folders are synthetic (``synthetic_run``) or written here; no model runs.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from frmargin import report
from frmargin.errors import FrmarginError
from frmargin.runs import folder
from synthetic_run import write_synthetic_run


@pytest.fixture()
def synthetic(tmp_path) -> Path:
    return write_synthetic_run(tmp_path / "synthetic", n_images=12, chunked=True)


# --------------------------------------------------------------------------- names and writes


def test_part_names():
    assert folder.path_part(Path("r"), 3) == Path("r/paths.parquet/part-00003.parquet")
    assert folder.baseline_part(Path("r"), "deepfool", 12) == Path("r/baselines.parquet/part-deepfool-00012.parquet")
    names = (folder.RUN_FILE, folder.IMAGES_FILE, folder.MISCLASSIFIED_FILE, folder.PATHS_DIR, folder.BASELINES_DIR)
    assert names == ("run.json", "images.parquet", "misclassified.parquet", "paths.parquet", "baselines.parquet")


def test_write_parquet_and_json_round_trip(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=[5, 6])
    folder.write_parquet(frame, tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), frame.reset_index(drop=True))
    folder.write_json({"box": (0, 1), "path": Path("p")}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"box": [0, 1], "path": "p"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t.parquet"], "temporary files left"


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    def half_then_full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
    with pytest.raises(OSError, match="No space"):
        folder.write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_a_rewrite_replaces_the_whole_file(tmp_path):
    folder.write_json({"status": "running", "n": 1}, tmp_path / "run.json")
    folder.write_json({"status": "complete"}, tmp_path / "run.json")
    assert folder.read_run_info(tmp_path) == {"status": "complete"}


# --------------------------------------------------------------------------- loading


def test_load_run_reads_every_table(synthetic):
    run = folder.load_run(synthetic)
    assert run.label == "synthetic" and run.directory == synthetic
    assert len(run.paths) == len(pd.read_parquet(synthetic / "paths.parquet")) > 0
    assert run.images is not None and run.baselines is not None and run.notes == ()
    assert run.class_names[0] == "airplane" and len(run.class_names) == 10


def test_load_run_equals_the_report_loader(synthetic):
    """The report keeps a copy of this loader until the merge; both must give the same Run."""
    mine, theirs = folder.load_run(synthetic), report.load_run(synthetic)
    for field in dataclasses.fields(folder.Run):
        a, b = getattr(mine, field.name), getattr(theirs, field.name)
        if isinstance(a, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)
        else:
            assert a == b, field.name


def test_missing_optional_files_become_notes(synthetic):
    (synthetic / "images.parquet").unlink()
    (synthetic / "run.json").unlink()
    run = folder.load_run(synthetic)
    assert run.images is None
    assert any("images.parquet is missing" in n for n in run.notes)
    assert any("run.json is missing" in n for n in run.notes)
    assert run.class_names[:2] == ["airplane", "automobile"], "ten classes and no names: CIFAR-10's"


def _break_paths_empty(d: Path) -> None:
    shutil.rmtree(d / "paths.parquet")
    pd.DataFrame({c: pd.Series([], dtype="int64") for c in ("image_index", "source", "target")}).to_parquet(
        d / "paths.parquet"
    )


def _break_paths_columns(d: Path) -> None:
    paths = pd.read_parquet(d / "paths.parquet").drop(columns=["fr_length"])
    shutil.rmtree(d / "paths.parquet")
    paths.to_parquet(d / "paths.parquet")


BROKEN = {
    "no-folder": (lambda d: shutil.rmtree(d), "expected an existing run folder"),
    "no-paths": (lambda d: shutil.rmtree(d / "paths.parquet"), "has no paths.parquet"),
    "empty-paths": (_break_paths_empty, "has no rows"),
    "missing-columns": (_break_paths_columns, "lacks the columns"),
    "bad-json": (lambda d: (d / "run.json").write_text("{nope"), "is not valid JSON"),
    "json-list": (lambda d: (d / "run.json").write_text("[1]"), "holds a list"),
    "few-names": (
        lambda d: (d / "run.json").write_text(json.dumps({"class_names": ["a", "b"]})),
        "lists 2 class_names",
    ),
    "bad-images": (lambda d: (d / "images.parquet").write_text("not parquet"), "images file"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_folder_is_one_user_error(case, synthetic):
    breaks, message = BROKEN[case]
    breaks(synthetic)
    with pytest.raises(FrmarginError, match=message) as info:
        folder.load_run(synthetic)
    assert "argument 'run_dirs'" in str(info.value)
    with pytest.raises(FrmarginError, match=message):  # the report says the same
        report.load_run(synthetic)


def test_check_run_folder_reads_no_table(synthetic, monkeypatch):
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: pytest.fail("check_run_folder read a table"))
    assert folder.check_run_folder(synthetic) == synthetic
    with pytest.raises(FrmarginError, match="expected an existing run folder"):
        folder.check_run_folder(synthetic / "nope")


def test_old_run_json_with_the_full_config_still_loads(synthetic):
    info = json.loads((synthetic / "run.json").read_text())
    info["config"] = {"model": "resnet20", "images": 12, "metric": "fisher", "batch_size": 64, "accuracy": {}}
    (synthetic / "run.json").write_text(json.dumps(info))
    run = folder.load_run(synthetic)
    assert run.info["config"]["batch_size"] == 64 and run.info["model"] == info["model"]


# --------------------------------------------------------------------------- split by mode


def test_split_modes_gives_one_run_per_method_and_metric(tmp_path):
    fisher = write_synthetic_run(tmp_path / "f", n_images=10, metric="fisher")
    euclid = write_synthetic_run(tmp_path / "e", n_images=10, metric="euclidean")
    both = pd.concat([pd.read_parquet(fisher / "paths.parquet"), pd.read_parquet(euclid / "paths.parquet")])
    shutil.rmtree(fisher / "paths.parquet", ignore_errors=True)
    (fisher / "paths.parquet").unlink(missing_ok=True)
    both.to_parquet(fisher / "paths.parquet")
    modes = folder.split_modes(folder.load_run(fisher))
    assert [m.info["metric"] for m in modes] == ["euclidean", "fisher"]
    assert [m.label for m in modes] == ["f [converged/euclidean]", "f [converged/fisher]"]
    assert sum(len(m.paths) for m in modes) == len(both)


def test_split_modes_of_a_single_mode_keeps_the_run(synthetic):
    run = folder.load_run(synthetic)
    (single,) = folder.split_modes(run)
    assert single.label == run.label and single.info["metric"] == "fisher"


def test_each_session_records_its_code_and_a_resume_with_other_code_is_said(tmp_path, capsys):
    """A resume after the code changed continues (the fingerprint cannot see code), but run.json
    keeps each session's frmargin version and commit, and stderr says that the parts are mixed."""
    from frmargin.runs import ownership
    from frmargin.runs.config import RunConfig
    from frmargin.runs.provenance import code_change, package_version, source_version

    code = source_version()
    assert code.startswith(package_version())
    info = {"sessions": [{"status": "running", "frmargin": "0.0.1 (git abc1234)"}]}
    ownership.start_session(tmp_path, info, RunConfig(), 1)
    written = json.loads((tmp_path / "run.json").read_text())
    assert [s["status"] for s in written["sessions"]] == ["killed", "running"]
    assert written["sessions"][-1]["frmargin"] == code
    err = capsys.readouterr().err
    assert "0.0.1 (git abc1234)" in err and code in err and "warning" in err, err
    same = tmp_path / "same"
    same.mkdir()
    ownership.start_session(same, {"sessions": [{"status": "complete", "frmargin": code}]}, RunConfig(), 1)
    assert capsys.readouterr().err == "", "a resume with the same code says nothing"
    assert code_change([{"frmargin": code}, {}], code) is None
    assert code_change([{"frmargin": "a"}, {"frmargin": "b"}, {"frmargin": code}], code) == "a, b"
