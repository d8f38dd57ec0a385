"""Tests of frmargin.report (and, through it, frmargin.plots) on synthetic run folders."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pytest

from frmargin import analysis, paper
from frmargin.errors import FrmarginError
from frmargin.report import build_report, load_run, report_command
from synthetic_run import DATA_CAVEAT, write_synthetic_run

N_IMAGES = 40
N_BOOT = 100
MIN_FIGURES = 4


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "fisher": write_synthetic_run(root / "fisher", n_images=N_IMAGES, seed=0),
        "euclid": write_synthetic_run(
            root / "euclid", n_images=N_IMAGES, seed=0, metric="euclidean", with_baselines=False, chunked=True
        ),
    }


@pytest.fixture(scope="module")
def single(runs: dict[str, Path]) -> Path:
    return build_report([runs["fisher"]], n_boot=N_BOOT)


def test_single_report_writes_every_file(single: Path, runs: dict[str, Path]):
    folder = runs["fisher"]
    assert single == folder / "report.html"
    for name in ("class_table.csv", "class_table.md", "report.md", "report.html", "claims.csv"):
        assert (folder / name).is_file(), name
    assert len(list(folder.glob("*.png"))) >= MIN_FIGURES
    table = pd.read_csv(folder / "class_table.csv", index_col="class")
    assert len(table) == 10
    for column, _ in analysis.CLASS_TABLE_COLUMNS:
        assert column in table.columns
    assert "| class |" in (folder / "class_table.md").read_text()


def test_html_is_self_contained_with_paper_table_and_claims(single: Path):
    page = single.read_text()
    assert page.count("data:image/png;base64,") >= MIN_FIGURES
    assert ".png'" not in page and "<style>" in page
    for number in ("58.2", "62.7", "3.45", "316%"):
        assert number in page
    for claim in paper.CLAIM_TEXTS:
        assert html.escape(claim) in page
    assert "Warning: the data are not the original test set" in page and DATA_CAVEAT in page
    assert "FR margins versus minimal L2 attacks" in page
    assert "an_unknown_key" in page  # unknown run.json keys are shown, not rejected
    markdown = single.with_name("report.md").read_text()
    assert "![" in markdown and "**Warning:**" in markdown


def test_report_command_without_baselines_and_with_chunked_paths(runs: dict[str, Path], tmp_path: Path, capsys):
    report_command([runs["euclid"]], tmp_path / "out")
    page = tmp_path / "out" / "report.html"
    assert str(page) in capsys.readouterr().out
    text = page.read_text()
    assert "not tested" in text
    assert "FR margins versus minimal L2 attacks" not in text
    assert "metric &#x27;euclidean&#x27;" in text


def test_two_run_comparison(runs: dict[str, Path]):
    page = build_report([runs["fisher"], runs["euclid"]], n_boot=N_BOOT)
    assert page == runs["fisher"].parent / "report-compare" / "report.html"
    text = page.read_text()
    assert "Fisher versus Euclidean" in text and "first_hit_agreement_pct" in text
    assert "Verdict: " in text and "shielded_pct_difference" in text
    # the run with baselines brings its FR-versus-L2 correlations and rankings along
    assert "FR margins versus minimal L2 attacks (fisher" in text and "Class rankings side by side (fisher" in text
    assert "fisher" in text and "euclid" in text
    assert (page.parent / "class_tables.csv").is_file()
    assert len(list(page.parent.glob("*.png"))) >= 3


def test_one_folder_with_two_metrics_gives_a_comparison(runs: dict[str, Path], tmp_path: Path):
    folder = tmp_path / "both"
    folder.mkdir()
    paths = pd.concat([pd.read_parquet(runs[k] / "paths.parquet") for k in ("fisher", "euclid")])
    paths.to_parquet(folder / "paths.parquet")
    for name in ("images.parquet", "run.json"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    page = build_report([folder], n_boot=50)
    assert page == folder / "report.html"
    assert "both [converged/euclidean]" in page.read_text()
    assert "Fisher versus Euclidean" in page.read_text()


def test_non_cifar_class_names(runs: dict[str, Path], tmp_path: Path):
    folder = tmp_path / "toy"
    folder.mkdir()
    for name in ("paths.parquet", "images.parquet"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    info = json.loads((runs["fisher"] / "run.json").read_text())
    info["class_names"] = [f"toy{i}" for i in range(10)]
    info["data_source"] = "original PNG files"
    info["data_caveat"] = None
    (folder / "run.json").write_text(json.dumps(info))
    text = build_report([folder], n_boot=50).read_text()
    assert "not CIFAR-10" in text and "toy3" in text
    assert "JPEG copy" not in text and "not the original test set" not in text


def test_data_caveat_comes_from_run_json_not_from_the_source_text(runs: dict[str, Path], tmp_path: Path):
    """A data source that mentions JPEG without a caveat gets no warning; a caveat always shows."""
    folder = tmp_path / "caveat"
    folder.mkdir()
    for name in ("paths.parquet", "images.parquet"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    info = json.loads((runs["fisher"] / "run.json").read_text())
    info["data_caveat"] = None
    (folder / "run.json").write_text(json.dumps(info))
    markdown = build_report([folder], n_boot=20).with_name("report.md").read_text()
    assert "JPEG copy of the CIFAR-10" in markdown and "**Warning:** the data" not in markdown
    info.update(data_source="original PNG files", data_caveat="data: re-encoded at quality 50")
    (folder / "run.json").write_text(json.dumps(info))
    markdown = build_report([folder], n_boot=20).with_name("report.md").read_text()
    assert "**Warning:** the data are not the original test set (original PNG files); data: re-encoded" in markdown


def test_missing_or_broken_run_folders_raise(tmp_path: Path):
    with pytest.raises(FrmarginError, match="nowhere"):
        build_report([tmp_path / "nowhere"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrmarginError, match=r"empty.*paths\.parquet"):
        build_report([empty])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "paths.parquet").write_text("not parquet")
    with pytest.raises(FrmarginError, match="broken"):
        load_run(broken)
    with pytest.raises(FrmarginError, match="run_dirs"):
        build_report([])
