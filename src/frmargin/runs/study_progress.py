"""One progress display for a whole study: paths done of the total, the rate and the time left.

The display runs on rank 0 only and counts what is on disk: the rows of the finished parts of
every traced run of the study (parts are written whole, by any rank or machine sharing the
folder), so one bar covers all ranks. The total is exact once a run has classified its images
(``images.parquet``) or the model's closed-form pass is done (the correct images of the
selection times the targets per image); before that it is the selection times C - 1.

Example:
    >>> with StudyProgress(runs, show=True) as bar:  # doctest: +SKIP
    ...     bar.stage("resnet20/fisher")
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from . import folder
from .study import CLOSED_FORM, StudyRun

__all__ = ["StudyProgress", "paths_done", "paths_total"]

TARGETS_PER_IMAGE = 9  # CIFAR-10: every other class


def _rows(part: Path, cache: dict[Path, tuple[tuple[int, int], int]]) -> int:
    """Rows of a finished part (its parquet metadata), cached by modification time and size."""
    import pyarrow.parquet as pq

    try:
        stat = part.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        if part not in cache or cache[part][0] != key:
            cache[part] = (key, pq.read_metadata(part).num_rows)
    except Exception:  # vanished, or not parquet (yet): not counted
        return 0
    return cache[part][1]


def paths_done(runs: list[StudyRun], cache: dict | None = None) -> int:
    """Paths in the finished parts of the study's traced runs."""
    cache = {} if cache is None else cache
    return sum(
        _rows(p, cache) for r in runs if r.traces for p in sorted((r.folder / folder.PATHS_DIR).glob("part-*.parquet"))
    )


def _correct_in_selection(run: StudyRun) -> int | None:
    """Correctly classified images of the run's selection: its images table, else the model's
    closed-form pass; None when neither is there yet."""
    import numpy as np
    import pandas as pd

    images = run.folder / folder.IMAGES_FILE
    if images.exists():
        return int(pd.read_parquet(images, columns=["correct"])["correct"].sum())
    closed = run.folder.parent.parent / run.model / CLOSED_FORM
    try:
        from .closed_form import read_closed_form
        from .targets import select_images

        table = read_closed_form(closed)
    except Exception:  # not finished yet
        return None
    logits = table.filter(regex=r"^z\d+$").to_numpy()
    labels = table["label"].to_numpy()
    chosen = select_images(labels, run.config.images, logits.shape[1], run.config.seed)
    return int(np.sum(logits[chosen].argmax(-1) == labels[chosen]))


def paths_total(runs: list[StudyRun]) -> int:
    """The study's paths: exact where known (see the module docstring), else an upper estimate."""
    total = 0
    for run in runs:
        if run.traces:
            correct = _correct_in_selection(run)
            total += TARGETS_PER_IMAGE * (run.config.images if correct is None else correct)
    return total


class StudyProgress:
    """A tqdm bar over the study's paths, refreshed from disk every ``interval`` seconds."""

    def __init__(self, runs: list[StudyRun], show: bool = True, interval: float = 2.0) -> None:
        self.runs, self.show, self.interval = runs, show, interval
        self.cache: dict = {}
        self.bar: Any = None
        self.tty = False
        self._timing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StudyProgress:
        if not self.show:
            return self
        from tqdm.auto import tqdm

        self.tty = tty = sys.stderr.isatty()
        done = paths_done(self.runs, self.cache)
        self.bar = tqdm(total=max(paths_total(self.runs), done), initial=done, unit="path", desc="study",
                        dynamic_ncols=True, mininterval=1.0 if tty else 60.0, smoothing=0)  # fmt: skip
        self._thread = threading.Thread(target=self._poll, name="frmargin-study-progress", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self, recount: bool = False) -> None:
        """Bring the bar up to the parts on disk (``recount``: the total too)."""
        if self.bar is None:
            return
        done = paths_done(self.runs, self.cache)
        if recount:
            self.bar.total = max(paths_total(self.runs), done)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        elif self.tty:  # the clock moves on (a log gets a line per mininterval only)
            self.bar.refresh()

    def stage(self, text: str, tracing: bool = True) -> None:
        """Name what runs now (the closed-form passes, a run's folder) in the bar. The rate and
        the time left count from the first traced run since the command started (the mean rate)."""
        if self.bar is None:
            return
        self.bar.set_description_str(f"study {text}")
        if tracing and not self._timing:
            self._timing = True
            done = paths_done(self.runs, self.cache)
            self.bar.reset(total=max(paths_total(self.runs), done))
            self.bar.initial = self.bar.n = done
            self.bar.refresh()
        self.refresh(recount=True)

    def note(self, text: str) -> None:
        """A line in the log (above the bar when there is one)."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.bar is not None:
            self.refresh(recount=True)
            self.bar.close()
