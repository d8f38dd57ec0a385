"""Tests of frmargin.report (and, through it, frmargin.plots) on synthetic run folders."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pytest

from frmargin import analysis, paper
from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
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
    caveat = DATA_CAVEAT[:1].upper() + DATA_CAVEAT[1:]
    assert f"Warning: {caveat}. Accuracy" in page
    assert page.count(DATA_CAVEAT[6:]) == 2  # once in the banner, once in the folded run.json
    assert "FR margins versus minimal L2 attacks" in page
    assert "an_unknown_key" in page  # unknown run.json keys are shown (folded), not rejected
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
    assert "JPEG copy" not in text and "not directly comparable" not in text
    # issue 13: the paper's table, claims and the literature ranking only for CIFAR-10's classes
    for absent in ("316%", "Ours beside the paper", "rank_literature", "rank_paper", "class='verdicts'"):
        assert absent not in text, absent
    assert html.escape(paper.CLAIM_TEXTS[0]) not in text


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
    assert "JPEG copy of the CIFAR-10" in markdown and "**Warning:** Data" not in markdown
    info.update(data_source="original PNG files", data_caveat="data: re-encoded at quality 50")
    (folder / "run.json").write_text(json.dumps(info))
    markdown = build_report([folder], n_boot=20).with_name("report.md").read_text()
    assert "**Warning:** Data: re-encoded at quality 50. Accuracy" in markdown


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


def _positions(page: str, *needles: str) -> list[int]:
    found = [page.find(n) for n in needles]
    assert all(i >= 0 for i in found), [n for n, i in zip(needles, found) if i < 0]
    return found


def test_findings_come_first_and_metadata_last(single: Path):
    """Issue 17: summary, then key figures, then tables; run metadata at the end, raw run.json folded."""
    page = single.read_text()
    summary, figures, table, metadata, raw = _positions(
        page, "<section id='summary'", "<h2>Key figures</h2>", "<table", "<h2>Run metadata</h2>", "<details>"
    )
    assert summary < figures < table < metadata < raw
    block = page[summary : page.index("</section>", summary)]
    assert block.count("class='headline'") >= 3 and "most robust class" in block and "[" in block
    assert "class='verdicts'" in block and block.count("<li>") >= 4  # the four claims' verdicts
    assert "<table" not in block
    markdown = single.with_name("report.md").read_text()
    md = _positions(markdown, "## Summary", "## Key figures", "| class |", "## Run metadata", "<details>")
    assert md == sorted(md)


def _no_shield_folder(runs: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "noshield"
    folder.mkdir()
    paths = pd.read_parquet(runs["fisher"] / "paths.parquet")
    ok = paths["success"].astype(bool)
    paths["first_hit"] = paths["first_hit"].where(~ok, paths["target"])
    paths["shielded"] = False
    paths.to_parquet(folder / "paths.parquet")
    for name in ("images.parquet", "run.json", "baselines.parquet"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    return folder


def test_no_shielded_path_means_not_tested_and_an_honest_landscape(runs: dict[str, Path], tmp_path: Path):
    folder = _no_shield_folder(runs, tmp_path)
    page = build_report([folder], n_boot=20)
    claims = pd.read_csv(folder / "claims.csv")
    assert list(claims["verdict"].iloc[1:3]) == ["not tested", "not tested"]
    assert "no shielded path" in claims["explanation"].iloc[2]
    text = page.read_text()
    assert "No successful path was shielded" in text and "none (0%)" in text


def test_incomplete_run_has_a_banner_first_and_warns(runs: dict[str, Path], tmp_path: Path, capsys):
    folder = tmp_path / "incomplete"
    folder.mkdir()
    for name in ("paths.parquet", "images.parquet"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    info = json.loads((runs["fisher"] / "run.json").read_text())
    info["status"] = "running"
    (folder / "run.json").write_text(json.dumps(info))
    report_command([folder])
    captured = capsys.readouterr()
    assert "incomplete run" in captured.err and str(folder) in captured.err
    page = (folder / "report.html").read_text()
    banner, summary = _positions(
        page, "Warning: incomplete run: run.json has status &#x27;running&#x27;", "id='summary'"
    )
    assert banner < summary and page.index("<div class='warning'") == banner - len("<div class='warning' role='alert'>")


def test_unboxed_paths_with_boxed_attacks_are_flagged(runs: dict[str, Path], tmp_path: Path):
    folder = tmp_path / "unboxed"
    folder.mkdir()
    for name in ("paths.parquet", "images.parquet", "baselines.parquet"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    info = json.loads((runs["fisher"] / "run.json").read_text())
    info["box"] = None
    (folder / "run.json").write_text(json.dumps(info))
    text = build_report([folder], n_boot=20).read_text()
    assert "none (paths unconstrained)" in text
    assert text.count("FR paths were unconstrained (no box) while the baseline attacks were boxed to [0, 1]") == 2
    info["box"] = [0.0, 1.0]
    (folder / "run.json").write_text(json.dumps(info))
    text = build_report([folder], n_boot=20).read_text()
    assert "[0, 1]" in text and "FR paths were unconstrained" not in text


def test_box_section_comes_from_the_analysis(runs: dict[str, Path], tmp_path: Path):
    """A run with a box and box statistics: analysed once into RunAnalysis.box, rendered on its page."""
    from frmargin.report import analyze

    folder = tmp_path / "boxed"
    folder.mkdir()
    for name in ("images.parquet", "baselines.parquet"):
        (folder / name).write_bytes((runs["fisher"] / name).read_bytes())
    paths = pd.read_parquet(runs["fisher"] / "paths.parquet")
    paths["bound_share"] = 0.25
    paths["box_changes"] = paths.index % 3
    paths.to_parquet(folder / "paths.parquet", index=False)
    info = {**json.loads((runs["fisher"] / "run.json").read_text()), "box": [0.0, 1.0]}
    (folder / "run.json").write_text(json.dumps(info))
    result = analyze(load_run(folder), n_boot=20)
    assert result.box is not None and result.box.bounds == (0.0, 1.0)
    pd.testing.assert_frame_equal(result.box.table, analysis.box_table(result.run.paths, result.run.class_names))
    assert analyze(load_run(runs["fisher"]), n_boot=20).box is None  # box statistics absent
    text = build_report([folder], n_boot=20, rebuild=None).with_name("report.md").read_text()
    assert "## Box constraint" in text and "Paths kept inside the box (0.0, 1.0)" in text
    assert text.index("## Box constraint") < text.index("## Path status")


def test_comparison_starts_with_a_summary(runs: dict[str, Path], tmp_path: Path):
    page = build_report([runs["fisher"], runs["euclid"]], out=tmp_path / "cmp", n_boot=N_BOOT).read_text()
    summary, table = _positions(page, "<section id='summary'", "<table")
    assert summary < table
    assert page.count("class='headline'") >= 2


# ------------------------------------------------------------------ gallery (re-traced paths)

TINY_CLASSES = ["zero", "one", "two", "three"]
TINY_SHAPE = (3, 4, 4)


def _tiny_model(seed: int):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(48, 12), torch.nn.Tanh(), torch.nn.Linear(12, len(TINY_CLASSES))
    )
    return net.double().eval()


def _tiny_run(folder: Path, seed: int = 0, n_images: int = 8) -> tuple[Path, object, object]:
    """A run folder whose paths were really traced (tiny MLP, float64) with the run's configuration."""
    import torch

    from frmargin.paths import trace_paths
    from frmargin.runs.config import RunConfig
    from frmargin.runs.schema import path_table

    model = _tiny_model(seed)
    images = torch.rand((n_images, *TINY_SHAPE), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    config = RunConfig(
        model="tiny-mlp", data="tiny", images=n_images, dtype="float64", trace=TraceOptions(batch_size=16)
    )
    with torch.no_grad():
        probs = torch.softmax(model(images), -1)
    pred = probs.argmax(-1)
    index = torch.arange(n_images).repeat_interleave(len(TINY_CLASSES))
    target = torch.arange(len(TINY_CLASSES)).repeat(n_images)
    keep = target != pred[index]
    index, target = index[keep], target[keep]
    result = trace_paths(model, images[index], pred[index], target, config.trace)
    table = path_table(
        result,
        probs[index],
        pred[index],
        target,
        ids={"image_index": index.numpy()},
        labels={"method": "converged", "metric": "fisher"},
    )
    folder.mkdir(parents=True)
    table.to_parquet(folder / "paths.parquet", index=False)
    info = {
        "model": "tiny-mlp",
        "data": "tiny",
        "class_names": TINY_CLASSES,
        "config": config.run_json_entries(),
        **{
            k: config.flat()[k]
            for k in ("images", "method", "metric", "until", "box", "seed", "damping_mode", "solver")
        },
        "status": "complete",
    }
    (folder / "run.json").write_text(json.dumps(info))
    return folder, model, images


def test_gallery_retraces_reproduces_and_caches(tmp_path: Path):
    import numpy as np

    from frmargin.report.gallery import GALLERY_FILE, gallery_items, select_gallery_paths

    folder, model, images = _tiny_run(tmp_path / "tiny", seed=5)  # predictions in three classes
    calls = []

    def rebuild(info: dict):
        calls.append(info["model"])
        return model, lambda index: images[np.array(index)]

    run = load_run(folder)
    selected = select_gallery_paths(run.paths, range(len(TINY_CLASSES)))
    assert set(selected["role"]) >= {"smallest margin", "median margin"}
    items = gallery_items(run, selected, rebuild)
    assert len(items) == len(selected) and calls == ["tiny-mlp"]
    for item in items:
        assert item.reproduces, (item.key, item.fr_length, item.stored_fr_length)
        np.testing.assert_allclose(item.x0, images[item.key[0]].numpy())
        np.testing.assert_allclose(item.probs.sum(1), 1.0, rtol=1e-12)
        # the end point is past the class change: its argmax is the path's first hit
        assert int(item.probs[-1].argmax()) == item.first_hit and int(item.probs[0].argmax()) == item.source
        assert item.travelled[-1] >= item.fr_length * (1 - 1e-6) and np.all(np.diff(item.travelled) >= 0)
    assert (folder / GALLERY_FILE).is_file()
    again = gallery_items(load_run(folder), selected, rebuild)
    assert calls == ["tiny-mlp"]  # from the cache
    np.testing.assert_array_equal(again[0].x_end, items[0].x_end)
    page = build_report([folder], n_boot=20, rebuild=rebuild).read_text()
    assert "What the paths did to the images" in page and "reproduces the stored FR length" in page
    assert page.count("smallest margin: image") >= 2  # one figure per class with paths
    assert len(list(folder.glob("gallery_*.png"))) >= 2


def test_gallery_of_a_model_that_cannot_be_rebuilt(single: Path):
    text = single.read_text()  # synthetic-resnet20 is in no model registry
    assert "No gallery: the run&#x27;s model and data could not be rebuilt" in text
    assert "Per-class table" in text  # the rest of the report stands


def test_a_1000_class_run_stays_readable(tmp_path: Path):
    """Issue 15: top-N classes in the class table and figures, full table in class_table.csv."""
    from synthetic_run import write_many_class_run

    folder = write_many_class_run(tmp_path / "many")
    page = build_report([folder], n_boot=20, rebuild=None).read_text()
    assert len(pd.read_csv(folder / "class_table.csv")) == 1000
    start = page.index("<h2>Per-class table</h2>")
    table = page[page.index("<table", start) : page.index("</table>", start)]
    assert table.count("<tr>") == 1 + 20  # header + 10 most robust + 10 most fragile
    assert "1000 classes: the 10 most robust and the 10 most fragile" in page
    from PIL import Image

    for name in ("path_matrix.png", "shielding_landscape.png", "attack_effort.png"):
        width, height = Image.open(folder / name).size
        assert width <= 2000 and height <= 1200, (name, width, height)
    assert "class='verdicts'" not in page and "316%" not in page  # not CIFAR-10


def _study_folder(base: Path) -> Path:
    """A study folder written elsewhere (study.json names the folders where they were written):
    model-a finished (both metrics), model-b with its Fisher run still pending."""
    study = base / "moved-study"
    elsewhere = Path("/somewhere/else/study")
    runs = []
    for model, metric, status in (
        ("model-a", "fisher", "complete"),
        ("model-a", "euclidean", "complete"),
        ("model-b", "fisher", "running"),
    ):
        if status == "complete":
            write_synthetic_run(study / model / metric, n_images=30, seed=3, metric=metric)
        runs.append({"model": model, "temperature": 1.0, "metric": metric,
                     "folder": str(elsewhere / model / metric), "fingerprint": "x", "status": status})  # fmt: skip
    (study / "study.json").write_text(
        json.dumps({"fingerprint": "f", "plan": {}, "catalog": {}, "runs": runs, "status": "running"})
    )
    return study


def test_report_of_an_unfinished_moved_study(tmp_path: Path, capsys: pytest.CaptureFixture):
    """`frmargin report STUDY_DIR` reads the run folders inside the study folder, covers the
    finished runs and says which are not finished."""
    from typer.testing import CliRunner

    from frmargin.cli import app

    study = _study_folder(tmp_path)
    res = CliRunner().invoke(app, ["report", str(study)])
    assert res.exit_code == 0, res.output
    assert "unfinished study (1 runs not finished)" in res.output
    table = pd.read_csv(study / "study_table.csv")
    assert list(table["model"]) == ["model-a", "model-b"]
    assert list(table["runs_done"]) == ["2 of 2", "0 of 1"]
    assert table.loc[0, "n_paths"] == len(pd.read_parquet(study / "model-a" / "fisher" / "paths.parquet"))
    assert table.loc[1, ["n_paths", "fr_margin"]].isna().all()  # nothing of the unfinished run is shown
    text = (study / "report.md").read_text()
    assert "1 of 3 runs not finished" in text
    assert "| model-a | model-a/fisher | fisher | 1 | complete |" in text
    bad = CliRunner().invoke(app, ["report", str(study), "--out", str(tmp_path / "elsewhere")])
    assert bad.exit_code != 0 and "--out" in str(bad.exception or bad.output)
