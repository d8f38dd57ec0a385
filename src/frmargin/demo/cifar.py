"""The main job, small: ResNet-20 on the official CIFAR-10 test split, every other class as a
target, a DeepFool baseline, and the report.

Example:
    >>> run_demo(Path("runs/demo"), images=30)  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from pathlib import Path

from ..report import build_report
from ..runs.config import RunConfig
from ..runs.experiment import run_experiment
from ..runs.folder import RUN_FILE

__all__ = ["run_demo"]


def run_demo(out: Path, images: int = 30) -> Path:
    """Trace ``images`` stratified images of the default model into ``out`` and write the report;
    returns the report's path. A finished or interrupted demo in ``out`` is continued, not redone."""
    config = RunConfig(images=images, baselines=("deepfool",))
    folder = run_experiment(config, out, resume=(Path(out) / RUN_FILE).exists(), progress=True)
    return build_report([folder])
