"""Compatibility alias: the sweep and its configuration now live in ``frmargin.runs``."""

from __future__ import annotations

from .runs.config import IDENTITY_FIELDS, RunConfig
from .runs.experiment import resolve_data, run_experiment, select_images
from .runs.folder import BASELINES_DIR, IMAGES_FILE, PATHS_DIR, RUN_FILE

__all__ = ["RunConfig", "resolve_data", "run_experiment", "select_images"]
__all__ += ["BASELINES_DIR", "IDENTITY_FIELDS", "IMAGES_FILE", "PATHS_DIR", "RUN_FILE"]
