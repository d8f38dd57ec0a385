"""The study's analysis: closed-form margins of every test image against the geometry module, the
per-image box ratios, the paired per-model checks, and the study's progress count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from frmargin.analysis.study import paired_ratios
from frmargin.analysis.study_box import box_images, box_summary
from frmargin.analysis.study_checks import box_rows, shielding_differences
from frmargin.analysis.study_closed import closed_form_summary, image_table, two_class_margin
from frmargin.geometry import margin_lower_bound

# --------------------------------------------------------------------------------- closed form


def test_image_table_margin_is_the_geometry_bound():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (500, 10))
    labels = rng.integers(0, 10, 500)
    for t in (1.0, 0.5, 2.5):
        table = image_table(logits, labels, temperature=t)
        p = torch.softmax(torch.as_tensor(logits / t), -1)
        np.testing.assert_allclose(table["margin"], margin_lower_bound(p).numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(table["prediction"], logits.argmax(1))
        sorted_p = np.sort(p.numpy(), 1)
        np.testing.assert_allclose(table["log_odds"], np.log(sorted_p[:, -1] / sorted_p[:, -2]), rtol=1e-10)
        assert (table["beyond"] <= 1e-10).all(), "mass on other classes can only shorten the margin"
        assert (table["beyond"] < -1e-6).mean() > 0.9


def test_two_class_margin_is_the_margin_of_two_classes():
    rng = np.random.default_rng(1)
    logits = np.concatenate([rng.normal(0, 4, (200, 2)), np.full((200, 3), -np.inf)], 1)
    table = image_table(np.where(np.isfinite(logits), logits, -1e300), np.zeros(200, int))
    np.testing.assert_allclose(table["beyond"], 0.0, atol=1e-10)
    assert two_class_margin(np.array([0.0]))[0] == 0.0
    assert two_class_margin(np.array([60.0]))[0] == pytest.approx(np.pi / 2, abs=1e-12)


def test_closed_form_summary():
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 5.0], [2.0, 2.5, 0.0]])
    labels = np.array([0, 0, 2, 1])
    s = closed_form_summary(image_table(logits, labels))
    assert s["test_images"] == 4 and s["test_accuracy"] == 0.75
    assert s["spearman_margin_log_odds"] == pytest.approx(1.0)  # the margin grows with the log-odds here
    assert s["test_margin_median"] == pytest.approx(np.median(image_table(logits, labels)["margin"]))


# ------------------------------------------------------------------------------------- the box


def _box_paths() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_index": [1, 1, 1, 2, 2, 3, 3],
            "source": [0, 0, 0, 4, 4, 7, 7],
            "status": ["ok", "ok", "box_stationary", "ok", "ok", "ok", "budget"],
            "fr_length": [1.010, 1.200, 0.5, 0.303, 0.400, 0.50, 0.1],
            "lower_bound": [1.0, 1.0, 1.0, 0.30, 0.30, 0.40, 0.40],
            "box_margin": [1.004, np.nan, np.nan, np.nan, np.nan, 0.48, np.nan],
            "box_changes": [2, 0, 5, 1, 0, 3, 0],
        }
    )


def test_box_images_take_the_least_estimate_over_ok_paths():
    images = box_images(_box_paths()).set_index("image_index")
    # image 1: the estimate of its shortest path; the stationary path does not count
    assert images.loc[1, "estimate"] == 1.004 and images.loc[1, "traced"] == 1.010
    assert images.loc[1, "ok_paths"] == 2 and images.loc[1, "binds"] == 1 and images.loc[1, "estimated_paths"] == 1
    assert images.loc[2, "estimate"] == 0.303  # no estimate: the traced length stands in
    assert images.loc[3, "estimate_over_lb"] == pytest.approx(1.2)
    summary = box_summary(images.reset_index())
    assert summary["box_images"] == 3 and summary["box_images_above"] == 1
    assert summary["box_ratio_max"] == pytest.approx(1.2) and summary["box_ratio_median"] == pytest.approx(1.01)
    assert summary["box_share_above_lo"] < 1 / 3 < summary["box_share_above_hi"]
    assert summary["box_images_below_lb"] == 0 and summary["box_estimated_images"] == 2
    assert summary["box_ratio_median_lo"] <= summary["box_ratio_median"] <= summary["box_ratio_median_hi"]
    below = box_summary(box_images(_box_paths().assign(box_margin=[0.9, *[np.nan] * 6])))
    assert below["box_images_below_lb"] == 1, "an estimate below LB is counted (it should never happen)"


def test_box_rows_flag_models_beyond_five_percent():
    summaries = {
        "flat": {"box_images": 100, "box_images_above": 2, "box_share_above": 0.02, "box_share_above_lo": 0.005,
                 "box_share_above_hi": 0.07},
        "moved": {"box_images": 100, "box_images_above": 9, "box_share_above": 0.09, "box_share_above_lo": 0.05,
                  "box_share_above_hi": 0.16},
    }  # fmt: skip
    rows = box_rows(summaries).set_index("model")
    assert rows.loc["flat", "verdict"] == "yes: 2 of 100 images" and rows.loc["flat", "caveat"] == ""
    assert "box section" in rows.loc["moved", "caveat"]
    assert rows.loc["all", "verdict"] == "yes, on more than 5% of the images of: moved"
    assert rows.loc["moved", "value"] == pytest.approx(9.0)


# ---------------------------------------------------------------------------- paired checks


def _shielding(model: str, rate: float, n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shielded = rng.random((n, 9)) < rate
    return pd.DataFrame({"run": model, "image_index": np.arange(n), "label": np.arange(n) % 4,
                         "num": 100.0 * shielded.sum(1), "den": 9.0})  # fmt: skip


def test_traced_shielding_equal_to_the_closed_form_agrees():
    a = pd.concat([_shielding("m1", 0.2), _shielding("m2", 0.4, seed=1)])
    rows = shielding_differences(a, a.copy(), "closed", n_boot=200).set_index("model")
    assert set(rows["verdict"]) == {"agrees", "on every model"}
    assert (rows[["value", "ci_low", "ci_high"]].to_numpy() == 0).all()
    other = a.assign(num=np.where(a["run"] == "m2", a["num"] + 100.0, a["num"]))  # one path more per image
    rows = shielding_differences(other, a, "closed", n_boot=200).set_index("model")
    assert rows.loc["m2", "verdict"] == "differs" and rows.loc["all", "verdict"] == "differs"
    assert rows.loc["m2", "value"] == pytest.approx(100 / 9)


def test_euclidean_more_often_with_a_paired_interval():
    ng = pd.concat([_shielding("m1", 0.05), _shielding("m2", 0.1, seed=1)])
    eu = pd.concat([_shielding("m1", 0.6, seed=2), _shielding("m2", 0.1, seed=1)])
    rows = shielding_differences(eu, ng, "euclidean", n_boot=300).set_index("model")
    assert rows.loc["m1", "verdict"] == "more often" and rows.loc["m1", "ci_low"] > 40
    assert rows.loc["m2", "value"] == 0 and rows.loc["m2", "verdict"] == "no detectable difference"
    point, _ = paired_ratios(pd.concat([eu.assign(run=eu["run"] + "e"), ng]), n_boot=10)
    assert rows.loc["all", "value"] == pytest.approx(((point["m1e"] - point["m1"]) + (point["m2e"] - point["m2"])) / 2)


# ------------------------------------------------------------------------------------ progress


def test_progress_counts_the_parts_on_disk(tmp_path):
    from frmargin.runs.folder import IMAGES_FILE, path_part, write_parquet
    from frmargin.runs.study import StudyPlan, study_runs
    from frmargin.runs.study_progress import paths_done, paths_total

    runs = study_runs(StudyPlan(models=("a",), images=6, metrics=("fisher", "euclidean")), tmp_path)
    traced = [r for r in runs if r.traces]
    assert paths_total(runs) == 2 * 9 * 6 and paths_done(runs) == 0  # nothing classified yet: the selection
    fisher = traced[0].folder
    (fisher / "paths.parquet").mkdir(parents=True)
    pd.DataFrame({"correct": [True] * 4 + [False] * 2}).to_parquet(fisher / IMAGES_FILE)
    for chunk, rows in enumerate((9, 9, 18)):
        write_parquet(pd.DataFrame({"image_index": np.arange(rows)}), path_part(fisher, chunk))
    (fisher / "paths.parquet" / ".part-00003.parquet.tmp-1").write_bytes(b"half")  # not a part
    assert paths_done(runs) == 36
    assert paths_total(runs) == 9 * 4 + 9 * 6
    assert Path(traced[1].folder).name == "euclidean"


def test_box_images_say_whether_the_free_flow_reaches_lb():
    from frmargin.analysis.study_box import free_flow_explains

    free = pd.DataFrame({"image_index": [1, 1, 2, 2, 3, 3], "status": ["ok", "ok", "stalled", "ok", "ok", "ok"],
                         "fr_length": [1.001, 1.3, 0.0, 0.31, 0.45, 0.5], "target_rank": [1, 2, 1, 2, 1, 2]})  # fmt: skip
    images = box_images(_box_paths(), free).set_index("image_index")
    assert images.loc[1, "free_over_lb"] == pytest.approx(1.001) and images.loc[1, "free_runner_up"] == "ok"
    assert images.loc[2, "free_runner_up"] == "stalled"
    assert images.loc[3, "free_over_lb"] == pytest.approx(0.45 / 0.4)
    # image 1 reaches LB without the box; image 2's flow toward the runner-up stalled; image 3's free
    # flow is 12.5% above LB
    assert free_flow_explains(images).tolist() == [False, True, True]
    summary = box_summary(images.reset_index())
    assert summary["box_above_free_too"] == 1  # image 3 is above 1.01 in the box, and so is its free flow
    assert not free_flow_explains(box_images(_box_paths())).any(), "without free paths nothing is explained"
