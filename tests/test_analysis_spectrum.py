"""The spectrum analysis by hand: budget curves, the attack summary, AUROC (with bootstrap weights as
repeated images), rank correlations against scipy, distances below FMN's; the report section from
the analysis (present only for runs whose baselines carry lambda_1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from frmargin import analysis
from frmargin.analysis.spectrum import _auroc
from frmargin.report import build_report, load_run
from frmargin.report.result import analyze
from frmargin.report.spectrum import CSV_FILES
from synthetic_run import write_synthetic_run


def baselines_by_hand() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_index": [1, 2, 3, 4, 1, 2, 3, 4, 5],
            "attack": ["fmn"] * 4 + ["ossa"] * 4 + ["ossa"],
            "l2": [0.1, 0.2, np.inf, 0.4, 0.3, 0.19, 0.5, np.inf, 0.0],
            "status": ["ok", "ok", "failed", "ok", "ok", "ok", "ok", "failed", "misclassified"],
            "forward_passes": [10.0, 10.0, 12.0, 8.0, 50.0, 50.0, 50.0, 50.0, 1.0],
            "lambda_1": [4.0, 2.0, 1.0, 0.5, 4.0, 2.0, 1.0, 0.5, 9.0],
            "lambda_1_adv": [40.0, 1.0, np.nan, 5.0, 40.0, 30.0, 3.0, np.nan, np.nan],
        }
    )


def margins_by_hand() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_index": [1, 2, 3, 4],
            "source": [0, 0, 1, 1],
            "fr_margin": [0.2, 0.4, 0.8, 1.0],
            "lower_bound": [0.2, 0.3, 0.7, 0.9],
        }
    )


def test_budget_curves_and_attack_summary_by_hand():
    b = baselines_by_hand()
    curves = analysis.budget_curves(b, np.array([0.15, 0.25, 1.0]))
    fmn = curves[curves["attack"] == "fmn"]
    assert fmn["success_pct"].tolist() == [25.0, 50.0, 75.0] and (fmn["n"] == 4).all()
    ossa = curves[curves["attack"] == "ossa"]
    assert ossa["success_pct"].tolist() == [0.0, 25.0, 75.0], "a misclassified image is not attacked"
    assert list(dict.fromkeys(curves["attack"])) == ["ossa", "fmn"], "the CURVE_ATTACKS order"
    summary = analysis.attack_summary(b).set_index("attack")
    assert summary.loc["fmn", "fooled_pct"] == 75.0 and summary.loc["fmn", "median_l2"] == pytest.approx(0.2)
    assert summary.loc["ossa", "forward_passes"] == 50.0
    assert np.isnan(summary.loc["ossa", "backward_passes"]), "not recorded: NaN"


def test_spectral_images_and_below_fmn_by_hand():
    images = analysis.spectral_images(margins_by_hand(), baselines_by_hand())
    assert images["image_index"].tolist() == [1, 2, 3, 4]
    assert images["lb_over_sqrt_lambda_1"].tolist() == pytest.approx([0.1, 0.3 / np.sqrt(2), 0.7, 0.9 / np.sqrt(0.5)])
    assert images["lambda_1_adv_ossa"].tolist()[:3] == [40.0, 30.0, 3.0]
    below = analysis.below_fmn(images).set_index("attack")
    assert below.loc["ossa", "n"] == 2  # images 1 and 2: both fooled by fmn and ossa
    assert below.loc["ossa", "n_below"] == 1 and below.loc["ossa", "images_below"] == [2]
    assert below.loc["ossa", "min_ratio"] == pytest.approx(0.95)
    within = analysis.below_fmn(images, tolerance=0.06).set_index("attack")
    assert within.loc["ossa", "n_below"] == 0


def test_auroc_by_hand_and_bootstrap_weights_as_repeats():
    clean = np.array([1.0, 2.0, 3.0])
    assert _auroc(np.array([4.0, 5.0, 6.0]), clean, np.ones((1, 3)))[0] == 1.0
    assert _auroc(np.array([0.0, 0.5, 0.9]), clean, np.ones((1, 3)))[0] == 0.0
    assert _auroc(clean.copy(), clean, np.ones((1, 3)))[0] == 0.5, "ties count one half"
    gen = np.random.default_rng(0)
    adv, clean = gen.normal(1, 1, 12), gen.normal(0, 1, 12)
    weights = gen.integers(0, 3, (5, 12)).astype(float)
    got = _auroc(adv, clean, weights)
    for w, value in zip(weights, got):
        idx = np.repeat(np.arange(12), w.astype(int))
        a, c = adv[idx], clean[idx]
        expected = ((a[:, None] > c[None, :]) + 0.5 * (a[:, None] == c[None, :])).mean()
        assert value == pytest.approx(expected, abs=1e-12)


def test_detection_and_score_correlations_against_scipy():
    gen = np.random.default_rng(1)
    n = 40
    lam = np.exp(gen.normal(0, 1, n))
    images = pd.DataFrame(
        {
            "image_index": np.arange(n),
            "source": np.arange(n) % 4,
            "fr_margin": 1 / np.sqrt(lam) + gen.normal(0, 0.1, n),
            "lower_bound": np.full(n, 0.5),
            "lambda_1": lam,
            "lb_over_sqrt_lambda_1": 0.5 / np.sqrt(lam),
            "l2_fmn": gen.exponential(1, n),
            "lambda_1_adv_fmn": lam * 100,
        }
    )
    scores = analysis.score_correlations(images, n_boot=200, seed=0).set_index(["score", "versus"])
    row = scores.loc[("lambda_1", "fr_margin")]
    assert row["spearman"] == pytest.approx(stats.spearmanr(lam, images["fr_margin"]).statistic)
    assert row["spearman_lo"] <= row["spearman"] <= row["spearman_hi"] and row["n"] == n
    assert scores.loc[("lb_over_sqrt_lambda_1", "fmn"), "spearman"] == pytest.approx(
        -scores.loc[("lambda_1", "fmn"), "spearman"]
    ), "LB constant: the same ranks reversed"
    detection = analysis.detection_auroc(images, n_boot=200, seed=0)
    assert detection["auroc"].tolist() == [pytest.approx(stats.mannwhitneyu(lam * 100, lam).statistic / n**2)]
    assert detection["median_ratio"].tolist() == [pytest.approx(100.0)]
    assert detection["auroc_lo"].iloc[0] <= detection["auroc"].iloc[0] <= detection["auroc_hi"].iloc[0]


def test_section_only_for_runs_with_lambda_1(tmp_path: Path):
    plain = write_synthetic_run(tmp_path / "plain", n_images=20, seed=2)
    assert analyze(load_run(plain), n_boot=20).spectrum is None
    md = build_report([plain], n_boot=20, rebuild=None).with_name("report.md").read_text()
    assert "Fisher spectrum" not in md
    run = write_synthetic_run(tmp_path / "spectral", n_images=30, seed=2, spectral=True)
    result = analyze(load_run(run), n_boot=20)
    assert result.spectrum is not None
    md = build_report([run], n_boot=20, rebuild=None).with_name("report.md").read_text()
    section = md[md.index("## Fisher spectrum") : md.index("## Run metadata")]
    for piece in ("spectrum_budget.png", "spectrum_scores.png", "lambda_1 as an attack-free score", "AUROC"):
        assert piece in section
    for file in CSV_FILES.values():
        assert (run / file).is_file(), file
    scores = pd.read_csv(run / CSV_FILES["scores"])
    pd.testing.assert_frame_equal(scores, result.spectrum.scores, check_dtype=False)
    auroc = result.spectrum.detection.set_index("attack").loc["fmn", "auroc"]
    assert f"{auroc:.3f}" in section
