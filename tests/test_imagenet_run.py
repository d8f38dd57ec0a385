"""A ``top:9`` run of MobileNetV2 on 5 ImageNet images: many-class defaults, recorded per path.

Real model (``mobilenetv2-imagenet``, dequantized TFLite) and data (``imagenet-sample``) from the
offline mirror; skipped without it. Small batch, and 5 kept classes instead of the default 20
(6 Jacobian rows per step instead of 21; the paths take 3-4 steps), so that the 45 paths take about
two minutes on one CPU thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from frmargin.options import TraceOptions
from frmargin.runs.config import RunConfig
from frmargin.runs.experiment import run_experiment
from frmargin.runs.targets import DEFAULT_TOP_CLASSES
from mirror import REAL_MIRROR


def _mirror() -> Path | None:
    folder = REAL_MIRROR
    need = ("imagenet/sample-SHA256SUMS", "imagenet/mobilenet_v2_1.0_224_quant.tflite")
    return folder if all((folder / n).is_file() for n in need) else None


MIRROR = _mirror()
IMAGES = 5
OK_SHARE = 0.95
TOP_CLASSES = 5
LB_RTOL = 1e-6  # lengths are float64 sums of chords; the bound is a closed form of the same p0


@pytest.fixture(scope="module")
def run5(tmp_path_factory) -> Path:
    if MIRROR is None:
        pytest.skip("asset mirror with the ImageNet sample and MobileNetV2 not found; set FRMARGIN_MIRROR")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRMARGIN_MIRROR", str(MIRROR))
        mp.setenv("FRMARGIN_HOME", str(home))
        config = RunConfig(
            model="mobilenetv2-imagenet",
            data="imagenet-sample",
            images=IMAGES,
            chunk_images=5,
            trace=TraceOptions(batch_size=3, top_classes=TOP_CLASSES),
        )
        return run_experiment(config, tmp_path_factory.mktemp("run") / "run", progress=False)


@pytest.mark.slow
def test_top9_run_of_five_images(run5: Path):
    info = json.loads((run5 / "run.json").read_text())
    paths = pd.read_parquet(run5 / "paths.parquet")
    images = pd.read_parquet(run5 / "images.parquet")
    assert info["targets"] == "top:9", "the many-class default"
    assert info["top_classes"] == TOP_CLASSES != DEFAULT_TOP_CLASSES, "a given top_classes is kept"
    assert "drawn with the seed" in info["image_selection"]
    assert len(info["class_names"]) == 1000
    assert images["label"].nunique() == IMAGES and images["label"].max() >= IMAGES, "classes drawn by the seed"
    n_correct = int(images["correct"].sum())
    assert n_correct >= 1 and len(paths) == 9 * n_correct
    for _, group in paths.groupby("image_index"):
        assert sorted(group["target_rank"]) == list(range(1, 10))
    ok = paths["status"] == "ok"
    assert ok.mean() >= OK_SHARE, paths["status"].value_counts().to_dict()
    below = paths[ok & (paths["fr_length"] < paths["lower_bound"] * (1 - LB_RTOL))]
    assert below.empty, below[["image_index", "target", "fr_length", "lower_bound"]]
    assert info["sessions"][-1]["peak_rss_mb"] > 0
