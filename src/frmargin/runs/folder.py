"""The run folder: the only place that names its files, writes them atomically and loads them.

A run folder holds ``run.json`` (configuration, identities, accuracy, timing), ``images.parquet``
(every selected image with its prediction), ``misclassified.parquet`` (the images whose paths are
not traced), ``paths.parquet/`` (one ``part-NNNNN.parquet`` per chunk of images) and, with
baselines, ``baselines.parquet/`` (one ``part-ATTACK-NNNNN.parquet`` per chunk). Every file is
written to a temporary name and renamed, so an interrupted run leaves no half-written file.

Importing this module imports neither torch nor pandas (``check_run_folder`` answers at once).

Example:
    >>> run = load_run(Path("runs/resnet20"))  # doctest: +SKIP
    >>> run.paths.shape, run.class_names[:2]  # doctest: +SKIP
    ((7164, 30), ['airplane', 'automobile'])
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DiskFullError, FrmarginError
from .schema import CIFAR10_CLASSES, REQUIRED_PATH_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BASELINES_DIR",
    "GALLERY_FILE",
    "IMAGES_FILE",
    "MISCLASSIFIED_FILE",
    "PATHS_DIR",
    "RUN_FILE",
    "Run",
    "baseline_part",
    "check_run_folder",
    "load_run",
    "part_fingerprint",
    "part_is_valid",
    "path_part",
    "read_json",
    "read_run_info",
    "remove_extra_parts",
    "run_is_complete",
    "split_modes",
    "write_json",
    "write_parquet",
]

RUN_FILE = "run.json"
IMAGES_FILE = "images.parquet"
MISCLASSIFIED_FILE = "misclassified.parquet"
PATHS_DIR = "paths.parquet"
BASELINES_DIR = "baselines.parquet"
#: the report's re-traced gallery paths (inputs, end points, probabilities along the path)
GALLERY_FILE = "gallery.npz"
#: the argument a reader names in its errors (``frmargin report DIR...``)
READER_ARGUMENT = "run_dirs"


def path_part(folder: Path, chunk: int) -> Path:
    """File of the paths traced from chunk ``chunk`` of the correctly classified images."""
    return Path(folder) / PATHS_DIR / f"part-{chunk:05d}.parquet"


def baseline_part(folder: Path, attack: str, chunk: int) -> Path:
    """File of baseline ``attack`` on chunk ``chunk`` (of 32 images)."""
    return Path(folder) / BASELINES_DIR / f"part-{attack}-{chunk:05d}.parquet"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


#: key of a part's ``DataFrame.attrs`` (stored in its parquet metadata) naming the run that wrote it
FINGERPRINT_KEY = "frmargin_fingerprint"


def write_parquet(frame: pd.DataFrame, path: Path, fingerprint: str | None = None) -> None:
    """Write ``frame`` (without its index) to ``path`` atomically: all of it or nothing.

    With ``fingerprint`` the file's metadata records the run that wrote it. A full disk is a
    FrmarginError naming the file (the partial file is removed; the run can be resumed).
    """
    tmp = _temporary(path)
    try:
        if fingerprint is not None:
            frame = frame.copy(deep=False)
            frame.attrs = {**frame.attrs, FINGERPRINT_KEY: fingerprint}
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)  # e.g. ENOSPC half way: leave no partial file behind
        if _is_disk_full(error):
            raise DiskFullError(
                errno.ENOSPC,
                f"cannot write {str(path)!r}: No space left on device; free space, then rerun the "
                "same command with --resume (finished parts are kept)",
                str(path),
            ) from error
        raise


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)  # pyarrow wraps the OSError in its own text
    return "No space left" in text or "Disk quota" in text


def part_fingerprint(path: Path) -> str | None:
    """The fingerprint recorded in a part's metadata (None for parts written without one)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    try:
        attrs = json.loads(meta.get(b"PANDAS_ATTRS", b"{}"))
    except ValueError:
        return None
    value = attrs.get(FINGERPRINT_KEY) if isinstance(attrs, dict) else None
    return value if isinstance(value, str) else None


def part_is_valid(path: Path, image_indices: Any, n_targets: int | None, fingerprint: str, labels: dict) -> bool:
    """Whether ``path`` is this run's finished part for images ``image_indices``: readable, with
    exactly ``n_targets`` paths per image (one per target; None: ``image_indices`` lists the image
    of every path), the run's labels and fingerprint."""
    import pandas as pd

    if not Path(path).exists():
        return False
    try:
        recorded = part_fingerprint(path)
        frame = pd.read_parquet(path)
    except Exception:  # truncated, empty or not parquet: pyarrow raises several types
        return False
    if recorded is not None and recorded != fingerprint:
        return False
    if any(c not in frame.columns for c in ("image_index", "target", *labels)):
        return False
    if any((frame[k] != v).any() for k, v in labels.items()):
        return False
    expected = sorted(int(i) for i in image_indices for _ in range(1 if n_targets is None else n_targets))
    if sorted(frame["image_index"].astype(int).tolist()) != expected:
        return False
    return not frame.duplicated(["image_index", "target"]).any()


def remove_extra_parts(folder: Path, n_chunks: int) -> list[Path]:
    """Delete parts numbered ``n_chunks`` or more (no chunk of this run writes them)."""
    extra = []
    for part in sorted((Path(folder) / PATHS_DIR).glob("part-*.parquet")):
        try:
            number = int(part.stem.split("-")[-1])
        except ValueError:
            continue
        if number >= n_chunks:
            part.unlink(missing_ok=True)
            extra.append(part)
    return extra


def run_is_complete(folder: Path) -> bool:
    """Whether run.json says the run finished (False for a running, killed or unknown run)."""
    try:
        info = read_run_info(folder)
    except FrmarginError:
        return False
    return info is not None and info.get("status") == "complete"


def write_json(obj: dict, path: Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (``str`` for what JSON lacks)."""
    tmp = _temporary(path)
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """The JSON value in ``path`` (OSError, json.JSONDecodeError as they come)."""
    return json.loads(Path(path).read_text())


def read_run_info(folder: Path) -> dict | None:
    """``run.json`` of ``folder`` as a dict, None when absent; FrmarginError when it is
    unreadable or not a JSON object."""
    info_file = Path(folder) / RUN_FILE
    if not info_file.exists():
        return None
    try:
        info = read_json(info_file)
    except (OSError, json.JSONDecodeError) as error:
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: {str(info_file)!r} is not valid JSON ({error}), "
            "expected the run description written by the runner"
        ) from error
    if not isinstance(info, dict):
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: {str(info_file)!r} holds a {type(info).__name__}, expected a JSON object"
        )
    return info


def check_run_folder(directory: Path) -> Path:
    """``directory`` as a Path when it is a folder holding paths.parquet; else FrmarginError.

    Cheap (no table is read): the CLI calls it before it imports the report.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: got {str(directory)!r}, "
            f"expected an existing run folder (holding {PATHS_DIR})"
        )
    if not (directory / PATHS_DIR).exists():
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: folder {str(directory)!r} has no {PATHS_DIR}, "
            "expected a run folder written by the experiment runner"
        )
    return directory


@dataclass(frozen=True)
class Run:
    """One run folder's tables (for one method and metric)."""

    label: str
    directory: Path
    info: dict
    paths: pd.DataFrame
    images: pd.DataFrame | None
    baselines: pd.DataFrame | None
    notes: tuple[str, ...] = ()

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def complete(self) -> bool:
        """Whether the run finished (run.json's status); an unfinished run's tables are partial."""
        return self.info.get("status") == "complete"


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A parquet file or folder of parquet parts; FrmarginError naming ``path`` when unreadable."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for unreadable files
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: {what} {str(path)!r} is unreadable ({type(error).__name__}: "
            f"{error}), expected a parquet file or a folder of parquet chunks"
        ) from error


def _read_union(path: Path, what: str) -> pd.DataFrame:
    """``read_table``, but a folder's parts are read one by one and joined on the union of their
    columns (missing values NaN): parts written before a column existed keep the others' columns."""
    import pandas as pd

    parts = sorted(path.glob("*.parquet")) if path.is_dir() else []
    if len(parts) < 2:
        return read_table(path, what)
    return pd.concat([read_table(part, what) for part in parts], ignore_index=True)


def _foreign_parts(directory: Path, info: dict | None) -> list[Path]:
    """Parts whose recorded fingerprint is not the run's (e.g. copied from another run)."""
    expected = (info or {}).get("fingerprint")
    foreign: list[Path] = []
    if expected is None or not (directory / PATHS_DIR).is_dir():
        return foreign
    for part in sorted((directory / PATHS_DIR).glob("*.parquet")):
        try:
            recorded = part_fingerprint(part)
        except Exception:
            continue  # unreadable: read_table names it
        if recorded is not None and recorded != expected:
            foreign.append(part)
    return foreign


def _read_paths(directory: Path, foreign: list[Path]) -> pd.DataFrame:
    paths_file = directory / PATHS_DIR
    if foreign:
        import pandas as pd

        kept = [p for p in sorted(paths_file.glob("*.parquet")) if p not in foreign]
        frames = [read_table(p, "paths part") for p in kept]
        paths = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    else:
        paths = read_table(paths_file, "paths file")
    if paths.empty:
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: {str(paths_file)!r} has no rows, expected at least one traced path"
        )
    missing = [c for c in REQUIRED_PATH_COLUMNS if c not in paths.columns]
    if missing:
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: {str(paths_file)!r} lacks the columns {missing}, "
            f"expected {list(REQUIRED_PATH_COLUMNS)}"
        )
    return paths


def _class_names(info: dict, paths: pd.DataFrame, directory: Path, notes: list[str]) -> list[str]:
    n_classes = int(max(paths["source"].max(), paths["target"].max(), paths["first_hit"].max())) + 1
    names = info.get("class_names")
    if not names:
        notes.append(
            "run.json has no class_names: using " + ("CIFAR-10 names." if n_classes == 10 else "class numbers.")
        )
        return list(CIFAR10_CLASSES) if n_classes == 10 else [f"class {c}" for c in range(n_classes)]
    if len(names) < n_classes:
        raise FrmarginError(
            f"argument {READER_ARGUMENT!r}: {str(directory / RUN_FILE)!r} lists {len(names)} class_names, "
            f"expected at least {n_classes} (the largest class index in paths + 1)"
        )
    return [str(n) for n in names]


def load_run(directory: Path) -> Run:
    """Read a run folder; raise ``FrmarginError`` naming the folder when it is not a run.

    Example:
        >>> run = load_run(Path("runs/resnet20"))  # doctest: +SKIP
        >>> run.paths.shape  # doctest: +SKIP
    """
    directory = check_run_folder(directory)
    notes: list[str] = []
    foreign = _foreign_parts(directory, read_run_info(directory))
    if foreign:
        notes.append(
            f"{len(foreign)} part(s) of {PATHS_DIR} were written by another run and are left out: "
            + ", ".join(p.name for p in foreign[:3])
        )
    paths = _read_paths(directory, foreign)
    images = baselines = None
    if (directory / IMAGES_FILE).exists():
        images = read_table(directory / IMAGES_FILE, "images file")
    else:
        notes.append(f"{IMAGES_FILE} is missing: image counts and lower bounds come from the paths.")
    if (directory / BASELINES_DIR).exists():
        baselines = _read_union(directory / BASELINES_DIR, "baselines file")
    info = read_run_info(directory)
    if info is None:
        info = {}
        notes.append(f"{RUN_FILE} is missing: the run header is incomplete.")
    info = {**info, "class_names": _class_names(info, paths, directory, notes)}
    return Run(
        label=directory.name or str(directory),
        directory=directory,
        info=info,
        paths=paths,
        images=images,
        baselines=baselines,
        notes=tuple(notes),
    )


def split_modes(run: Run) -> list[Run]:
    """One ``Run`` per (method, metric) found in ``run.paths`` (the run itself when only one)."""
    keys = [k for k in ("method", "metric") if k in run.paths.columns]
    if not keys:
        return [run]
    groups = list(run.paths.groupby(keys, sort=True, dropna=False))
    if len(groups) <= 1:
        if groups:
            values = groups[0][0] if isinstance(groups[0][0], tuple) else (groups[0][0],)
            return [replace(run, info={**run.info, **dict(zip(keys, values))})]
        return [run]
    out = []
    for values, sub in groups:
        values = values if isinstance(values, tuple) else (values,)
        tag = "/".join(str(v) for v in values)
        out.append(
            replace(
                run,
                label=f"{run.label} [{tag}]",
                paths=sub.reset_index(drop=True),
                info={**run.info, **dict(zip(keys, values))},
            )
        )
    return out
