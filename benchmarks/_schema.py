"""The result schema of the benchmarks (``frmargin-benchmark/1``): the machine record, the
checks a result must pass, reading one back and rendering it as markdown."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "frmargin-benchmark/1"
SCHEMA_KEYS = (
    "schema", "name", "title", "command", "size", "date", "frmargin", "commit", "torch", "threads",
    "machine", "units", "notes", "rows",
)  # fmt: skip
MACHINE_KEYS = ("cpu", "cores", "device", "gpu", "load_average")


def machine() -> dict:
    """CPU model, usable cores, device, GPU name (or None) and the 1-minute load average."""
    import torch

    cpu = platform.processor() or platform.machine() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": cores, "device": "cpu", "gpu": gpu, "load_average": load}


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def scalar(value: Any, where: str) -> Any:
    """A JSON scalar: None, bool, int, finite float or str (NaN and infinities become None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"{where}: {type(value).__name__} {value!r:.80} is not a JSON scalar (flatten it)")


def problems(doc: Any) -> list[str]:
    """What makes ``doc`` not a result of the schema (an empty list: it is one)."""
    if not isinstance(doc, dict):
        return [f"a result is a JSON object, got {type(doc).__name__}"]
    out = []
    if list(doc) != list(SCHEMA_KEYS):
        out.append(f"keys {list(doc)}, expected exactly {list(SCHEMA_KEYS)}")
    if doc.get("schema") != SCHEMA:
        out.append(f"schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    m = doc.get("machine")
    if not isinstance(m, dict) or list(m) != list(MACHINE_KEYS):
        out.append(f"machine {m!r}, expected the keys {list(MACHINE_KEYS)}")
    units, rows = doc.get("units"), doc.get("rows")
    if not isinstance(units, dict) or not all(isinstance(u, str) for u in units.values()):
        out.append("units must map every column to a string")
        units = {}
    if not isinstance(rows, list) or not rows:
        return [*out, "rows must be a non-empty list"]
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            out.append(f"row {i} is not an object")
            continue
        out += [f"row {i}: column {c!r} has no unit" for c in row if c not in units]
        out += [
            f"row {i}: column {c!r} holds {type(v).__name__}, not a scalar"
            for c, v in row.items()
            if not (v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v)))
        ]
    return out


def load(path: str | Path) -> dict:
    """A result file, checked against the schema (ValueError naming the file otherwise)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(), parse_constant=lambda c: _reject(c, path))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable result file ({err})") from err
    bad = problems(doc)
    if bad:
        raise ValueError(f"{path}: not a {SCHEMA} result: " + "; ".join(bad[:5]))
    return doc


def _reject(constant: str, path: Path) -> None:
    raise ValueError(f"{path}: {constant} is not allowed in a result (write null)")


def fmt(v: Any) -> str:
    """Compact text of one cell."""
    if v is None:
        return "–"
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        return f"{v:.3g}" if a >= 1e4 or a < 1e-3 else f"{v:.4g}"
    return str(v).replace("|", "/")


def header(column: str, unit: str) -> str:
    return f"{column} [{unit}]" if unit else column


def markdown(doc: dict) -> str:
    """A result as markdown: title, how and where it was measured, the table of rows."""
    m = doc["machine"]
    where = f"{m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m["gpu"] else "")
    cols = list(doc["units"])
    lines = [
        f"## {doc['name']}: {doc['title']}",
        "",
        f"Measured on {doc['date']}, frmargin {doc['frmargin']} (commit {(doc['commit'] or 'unknown')[:12]}), "
        f"torch {doc['torch']}, {doc['threads']} thread(s), {where}, load average {m['load_average']}; "
        f"`{doc['command']}`.",
        "",
    ]
    if doc["notes"]:
        lines += [doc["notes"], ""]
    lines += [
        "| " + " | ".join(header(c, doc["units"][c]) for c in cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in doc["rows"]),
    ]
    return "\n".join(lines) + "\n"
