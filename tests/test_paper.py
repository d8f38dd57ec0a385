"""Tests of frmargin.paper: the paper's table, rankings and claims computed from analysis results."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from frmargin import analysis, paper
from hand_paths import hand_paths
from synthetic_run import CLASS_NAMES, write_synthetic_run

N_BOOT = 200


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, ...]:
    folder = write_synthetic_run(tmp_path_factory.mktemp("run800"), n_images=800, seed=1)
    return tuple(pd.read_parquet(folder / f) for f in ("paths.parquet", "images.parquet", "baselines.parquet"))


@pytest.fixture(scope="module")
def statistics(synthetic) -> analysis.ClassStatistics:
    paths, images, _ = synthetic
    return analysis.class_statistics(paths, images, CLASS_NAMES, n_boot=N_BOOT)


def test_paper_table_against_itself_has_zero_differences():
    compared = paper.compare_with_paper(paper.PAPER_TABLE)
    assert len(compared) == 10
    for column in paper.PAPER_COLUMNS:
        assert (compared[f"{column}_diff"] == 0).all()
    assert paper.PAPER_TABLE["shielding_pct"].sum() == pytest.approx(316.1)


def test_class_rankings_and_literature():
    rankings = paper.with_reference_ranks(analysis.class_rankings(paper.PAPER_TABLE)).set_index("name")
    assert rankings.loc["cat", "rank_literature"] == 10
    assert rankings.loc["automobile", "rank_literature"] == 2
    assert rankings.loc["dog", "rank_literature"] == 8
    assert (rankings["rank_paper"] == rankings["rank_fr"]).all()
    assert paper.LITERATURE_ORDER[-1] == "cat" and len(set(paper.LITERATURE_ORDER)) == 10
    agreement = analysis.ranking_agreement(rankings.reset_index()).set_index("versus")
    assert agreement.loc["paper", "spearman"] == pytest.approx(1.0)


def test_generic_rankings_carry_no_paper_columns():
    rankings = analysis.class_rankings(paper.PAPER_TABLE)
    assert not {"rank_paper", "rank_literature"} & set(rankings.columns)


def test_claims_on_synthetic_run(synthetic, statistics):
    _, _, baselines = synthetic
    correlations = analysis.fr_vs_l2(statistics.margins, baselines, n_boot=N_BOOT)
    with_l2 = paper.claims(statistics, correlations)
    without = paper.claims(statistics)
    assert with_l2["claim"].tolist() == list(paper.CLAIM_TEXTS)
    assert with_l2["verdict"].tolist()[:2] == ["supported", "supported"]
    assert with_l2.loc[3, "verdict"] == "supported" and without.loc[3, "verdict"] == "not tested"
    assert set(with_l2["verdict"]) <= {"supported", "mixed", "not supported", "not tested"}
    assert with_l2.loc[1, "value"] > with_l2.loc[1, "reference"]
    assert with_l2.iloc[:3].equals(without.iloc[:3])  # claims 1-3 do not depend on the baselines


def test_claim_separation_reuses_the_class_table_replicates(statistics):
    """Claim 1's interval comes from the replicates the class table produced: replacing them with
    replicates in which every fragile class beats every robust one moves the interval to 0."""
    names = statistics.class_names
    fake = np.zeros_like(statistics.replicates["mean_fr_margin"])
    fake[:, [names.index(c) for c in paper.PAPER_FRAGILE]] = 1.0
    forced = replace(statistics, replicates={**statistics.replicates, "mean_fr_margin": fake})
    original, changed = paper.claims(statistics).iloc[0], paper.claims(forced).iloc[0]
    assert changed["value"] == original["value"]  # the point estimate comes from the table
    assert (changed["ci_low"], changed["ci_high"]) == (0.0, 0.0)
    assert original["ci_high"] > 0.5


def test_claims_need_cifar_names():
    names = [f"c{i}" for i in range(10)]
    statistics = analysis.class_statistics(hand_paths(), None, names, n_boot=20)
    verdicts = paper.claims(statistics)["verdict"].tolist()
    assert verdicts[0] == verdicts[1] == verdicts[3] == "not tested"
    assert paper.compare_with_paper(statistics.table).empty
