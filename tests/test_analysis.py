"""Tests of frmargin.analysis on hand-built tables with known answers and on synthetic runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frmargin import analysis
from frmargin.errors import FrmarginError
from hand_paths import hand_paths, path_row
from synthetic_run import CLASS_NAMES, write_synthetic_run

EXACT = 1e-12


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[pd.DataFrame, ...]]:
    out = {}
    for n in (100, 800):
        folder = write_synthetic_run(tmp_path_factory.mktemp(f"run{n}"), n_images=n, seed=1)
        out[n] = tuple(pd.read_parquet(folder / f) for f in ("paths.parquet", "images.parquet", "baselines.parquet"))
    return out


# -------------------------------------------------------------------------- hand-built answers


def test_class_table_hand_built_values():
    table = analysis.class_table(hand_paths(), None, CLASS_NAMES, n_boot=200, seed=0)
    assert table.loc[8, "shielding_pct"] == pytest.approx(40.0, abs=EXACT)
    assert table.loc[8, "n_as_shield"] == 2
    assert table.loc[2, "shielding_pct"] == 0.0 and table.loc[3, "shielding_pct"] == 0.0
    assert table.loc[[0, 1, 8], "mean_fr_margin"].tolist() == pytest.approx([2.0, 1.0, 0.5])
    assert table.loc[[0, 1, 8], "mean_l2"].tolist() == pytest.approx([1.0, 0.5, 0.25])
    assert table.loc[[0, 1, 8], "image_margin"].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert table.loc[[0, 1, 8], "vuln_rank"].tolist() == [1, 2, 3]
    assert table.loc[[2, 3, 4], "vuln_rank"].isna().all()
    assert table.loc[0, "success_pct"] == pytest.approx(100 / 3)
    assert table.loc[0, "shielded_pct"] == pytest.approx(100 / 3)
    assert table.loc[8, "shielded_pct"] == 0.0
    assert table["n_images"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    assert table.loc[8, "n_paths"] == 9 and table.loc[8, "n_success"] == 9
    assert table.loc[0, "mean_lower_bound"] == pytest.approx(0.1)


def test_class_table_one_image_per_class_has_degenerate_interval():
    table = analysis.class_table(hand_paths(), None, CLASS_NAMES, n_boot=100, seed=0)
    assert table.loc[8, "shielding_pct_lo"] == pytest.approx(40.0)
    assert table.loc[8, "shielding_pct_hi"] == pytest.approx(40.0)


def test_path_matrix_counts_exact():
    matrix = analysis.path_matrix(hand_paths(), 10)
    assert matrix.loc[0, 8] == 2 and matrix.loc[0, 2] == 1 and matrix.loc[0, "none"] == 6
    assert matrix.loc[1, 8] == 1 and matrix.loc[1, 3] == 1 and matrix.loc[1, 9] == 1
    assert matrix.loc[8].drop(["none", 8]).tolist() == [1] * 9 and matrix.loc[8, "none"] == 0
    assert matrix.to_numpy().sum() == 27
    diagonal = analysis.path_matrix(hand_paths(), 10, no_flip="diagonal")
    assert diagonal.loc[0, 0] == 6 and diagonal.shape == (10, 10)
    assert analysis.path_matrix(hand_paths(), 10, no_flip="drop").to_numpy().sum() == 15


def test_shielding_landscape_and_shield_matrix():
    land = analysis.shielding_landscape(hand_paths(), 10).set_index(["source", "target"])
    assert land.loc[(0, 1), "shielded_share"] == 1.0 and land.loc[(0, 1), "top_shield"] == 8
    assert land.loc[(0, 2), "shielded_share"] == 0.0 and land.loc[(0, 2), "top_shield"] == -1
    assert np.isnan(land.loc[(0, 3), "shielded_share"]) and land.loc[(0, 3), "n_paths"] == 1
    assert len(land) == 90
    share = analysis.shield_target_matrix(hand_paths(), 10, sources=[0, 1], targets=[0, 1, 2])
    assert share.loc[8, 1] == 1.0 and share.loc[8, 0] == 1.0 and share.loc[8, 2] == 0.0


def test_image_margins_min_over_targets():
    margins = analysis.image_margins(hand_paths()).set_index("image_index")
    assert margins["fr_margin"].tolist() == [1.0, 0.5, 0.5]
    assert margins.loc[0, "margin_target"] == 8 and margins.loc[1, "margin_target"] == 3
    assert margins.loc[0, "margin_l2"] == 0.5 and margins.loc[0, "min_l2_paths"] == 0.5
    assert margins["fr_rank"].tolist() == [1.0, 2.5, 2.5]
    assert margins["n_success"].tolist() == [3, 3, 9]


def test_status_counts_sum_to_all_paths():
    counts = analysis.status_counts(hand_paths()).set_index("status")
    assert counts.loc["ok", "n_paths"] == 15 and counts.loc["budget", "n_paths"] == 12
    assert counts["pct"].sum() == pytest.approx(100.0)
    assert counts.loc["budget", "n_success"] == 0


def test_closed_form_agreement_hand_built():
    rows = [
        path_row(0, 0, 1, 1, 1.1, predicted_length=1.0, predicted_first_hit=1),
        path_row(0, 0, 2, 3, 2.0, predicted_length=2.0, predicted_first_hit=2),
        path_row(1, 1, 0, 0, 0.05, predicted_length=0.1, predicted_first_hit=0),
    ]
    cf = analysis.closed_form_agreement(pd.DataFrame(rows)).set_index("quantity")["value"]
    assert cf["rel_error_median"] == pytest.approx(0.1)
    assert cf["first_hit_agreement"] == pytest.approx(2 / 3)
    assert cf["share_above_lower_bound"] == pytest.approx(2 / 3)  # 0.05 < LB = 0.1
    assert cf["margin_over_lb_median"] == pytest.approx((11 + 0.5) / 2)


# ---------------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_contains_estimate_and_shrinks(synthetic):
    widths = {}
    for n, (paths, images, _) in synthetic.items():
        table = analysis.class_table(paths, images, CLASS_NAMES, n_boot=400, seed=0)
        for column in analysis.CI_COLUMNS:
            assert (table[f"{column}_lo"] <= table[column] + EXACT).all(), column
            assert (table[column] <= table[f"{column}_hi"] + EXACT).all(), column
        widths[n] = (table["mean_fr_margin_hi"] - table["mean_fr_margin_lo"]).mean()
    assert widths[800] < 0.6 * widths[100]


def test_bootstrap_is_deterministic_per_seed(synthetic):
    paths, images, _ = synthetic[100]
    a = analysis.class_table(paths, images, CLASS_NAMES, n_boot=100, seed=3)
    b = analysis.class_table(paths, images, CLASS_NAMES, n_boot=100, seed=3)
    c = analysis.class_table(paths, images, CLASS_NAMES, n_boot=100, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["mean_fr_margin_lo"], c["mean_fr_margin_lo"])


# ----------------------------------------------------------------------------- FR versus L2


def test_fr_vs_l2_monotone_relation_is_perfect():
    margins = pd.DataFrame(
        {
            "image_index": range(20),
            "source": np.arange(20) % 4,
            "fr_margin": np.linspace(0.1, 2.0, 20) + (np.arange(20) % 4),
        }
    )
    l2 = 3 * margins["fr_margin"].to_numpy()
    l2[7] = np.inf
    baselines = pd.DataFrame({"image_index": range(20), "attack": "fmn", "l2": l2})
    corr = analysis.fr_vs_l2(margins, baselines, n_boot=200, seed=0).set_index("level")
    assert corr.loc["image", "n"] == 19 and corr.loc["image", "n_excluded"] == 1
    for level in ("image", "class"):
        for column in ("spearman", "spearman_lo", "spearman_hi", "kendall", "kendall_lo"):
            assert corr.loc[level, column] == pytest.approx(1.0), (level, column)
    assert corr.loc["class", "n"] == 4


def test_fr_vs_l2_adds_best_attack(synthetic):
    paths, images, baselines = synthetic[100]
    corr = analysis.fr_vs_l2(analysis.image_margins(paths, images), baselines, n_boot=100)
    assert set(corr["attack"]) == {"deepfool", "fmn", "best"}
    assert (corr["spearman"] > 0.5).all()
    assert ((corr["spearman_lo"] <= corr["spearman"]) & (corr["spearman"] <= corr["spearman_hi"])).all()


# ------------------------------------------------------------------- Fisher versus Euclidean


def test_fisher_vs_euclidean_hand_built():
    fisher = pd.DataFrame([path_row(0, 0, 1, 1, 1.0), path_row(0, 0, 2, 2, 1.0), path_row(0, 0, 3, 3, 1.0)])
    euclid = pd.DataFrame([path_row(0, 0, 1, 1, 1.0), path_row(0, 0, 2, 3, 1.0), path_row(0, 0, 3)])
    cmp = analysis.fisher_vs_euclidean(fisher, euclid, 4)
    summary = cmp.summary.set_index("quantity")
    assert summary.loc["first_hit_agreement_pct", "joint"] == pytest.approx(100 / 3)
    assert summary.loc["shielded_pct", "fisher"] == 0.0
    assert summary.loc["shielded_pct", "euclidean"] == pytest.approx(50.0)
    assert cmp.matrix_diff.loc[0, 2] == -1 and cmp.matrix_diff.loc[0, "none"] == 1
    assert cmp.matrix_diff.to_numpy().sum() == 0
    assert cmp.pairs["agree"].tolist() == [True, False, False]
    stats = cmp.statistics.set_index("statistic")
    assert stats.loc["shielded_pct_fisher", "value"] == 0.0
    assert stats.loc["shielded_pct_euclidean", "value"] == pytest.approx(50.0)
    assert stats.loc["shielded_pct_difference", "value"] == pytest.approx(50.0)
    assert stats.loc["first_hit_agreement_pct", "value"] == pytest.approx(100 / 3)
    assert np.isnan(stats.loc["same_shield_pct", "value"])  # no pair is shielded under both
    assert cmp.verdict.startswith("Shielding depends on the metric")


def test_fisher_vs_euclidean_intervals_and_verdict():
    """Two classes of 20 images, two paths each. Fisher: no shielding. Euclidean: half of
    class 0's images shielded on both paths, the rest never: 25%, with a cluster-bootstrap
    interval (images resampled) that contains 25 and excludes 0; identical runs read alike."""
    fisher, euclid = [], []
    for i in range(40):
        src = i // 20
        for tgt in (2, 3):
            fisher.append(path_row(i, src, tgt, tgt, 1.0))
            hit = 4 if (src == 0 and i % 2 == 0) else tgt
            euclid.append(path_row(i, src, tgt, hit, 1.0))
    fisher, euclid = pd.DataFrame(fisher), pd.DataFrame(euclid)
    cmp = analysis.fisher_vs_euclidean(fisher, euclid, 5, n_boot=400)
    diff = cmp.statistics.set_index("statistic").loc["shielded_pct_difference"]
    assert diff["value"] == pytest.approx(25.0)
    assert 5 < diff["ci_low"] < 25 < diff["ci_high"] < 45, (diff["ci_low"], diff["ci_high"])
    assert cmp.verdict.startswith("Shielding depends on the metric")
    same = analysis.fisher_vs_euclidean(fisher, fisher, 5, n_boot=200)
    assert same.statistics.set_index("statistic").loc["shielded_pct_difference", "value"] == 0
    assert same.verdict.startswith("Both metrics shield alike")


# -------------------------------------------------------------------------------- user errors


def test_errors_name_the_argument():
    paths = hand_paths()
    with pytest.raises(FrmarginError, match="class_names"):
        analysis.class_table(paths, None, ["a", "a"])
    with pytest.raises(FrmarginError, match="fr_length"):
        analysis.class_table(paths.drop(columns="fr_length"), None, CLASS_NAMES)
    with pytest.raises(FrmarginError, match=r"paths\.source"):
        analysis.class_table(paths, None, CLASS_NAMES[:5])
    with pytest.raises(FrmarginError, match="n_boot"):
        analysis.class_table(paths, None, CLASS_NAMES, n_boot=-1)
    with pytest.raises(FrmarginError, match="no_flip"):
        analysis.path_matrix(paths, 10, no_flip="sideways")
    with pytest.raises(ValueError, match="DataFrame"):
        analysis.status_counts([1, 2])
