"""Cell formatting of report tables: numbers, intervals and ranks as compact text.

Example:
    >>> format_interval(1.234, 1.1, 1.4)
    '1.23 [1.10, 1.40]'
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

MISSING = "–"


def format_cell(value: object, decimals: int | None = None) -> str:
    """Compact text for one table cell; ``decimals`` fixes the digits after the point."""
    if value is None:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        size = abs(x)
        if size >= 10_000:
            return f"{x:,.0f}"
        if decimals is None:
            decimals = column_decimals(np.array([x]))
        if decimals is None:
            return str(int(x))
        if x != 0 and size < 10.0 ** (-decimals):
            return f"{x:.2e}"
        return f"{x:.{decimals}f}"
    return str(value)


def column_decimals(values: np.ndarray) -> int | None:
    """Digits after the point for a column: None when every finite value is an integer."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0 or np.all(values == np.round(values)):
        return None
    nonzero = np.abs(values[values != 0])
    typical = float(np.median(nonzero)) if nonzero.size else 1.0
    for bound, digits in ((10, 1), (1, 2), (0.1, 3), (0.01, 4)):
        if typical >= bound:
            return digits
    return 5


def format_interval(value: float, lo: float, hi: float, decimals: int | None = None) -> str:
    """``value [lo, hi]``; the value alone when the interval is not finite."""
    if not np.isfinite(value):
        return MISSING
    if decimals is None:
        decimals = column_decimals(np.array([value])) or 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return format_cell(value, decimals)
    return f"{format_cell(value, decimals)} [{format_cell(lo, decimals)}, {format_cell(hi, decimals)}]"


def format_rank(value: float, lo: float, hi: float) -> str:
    """A rank as an integer with its interval in 3 significant digits."""
    if not np.isfinite(value):
        return MISSING
    text = str(int(value))
    if np.isfinite(lo) and np.isfinite(hi):
        text += f" [{lo:.3g}, {hi:.3g}]"
    return text


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text; float columns share their number of decimals."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_float_dtype(values):
            digits = column_decimals(values.to_numpy(float))
            out[column] = [format_cell(v, digits) for v in values]
        else:
            out[column] = [format_cell(v) for v in values]
    return pd.DataFrame(out, columns=frame.columns, index=frame.index)


def per_cell(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Format ``columns`` cell by cell (for columns that mix quantities of different scales)."""
    return frame.assign(**{c: [format_cell(v) for v in frame[c]] for c in columns})


def interval_column(table: pd.DataFrame, column: str, decimals: int | None = None) -> list[str]:
    """Cells ``X [X_lo, X_hi]`` of ``column`` with ``decimals`` decimals (default: the column's
    shared number of decimals)."""
    digits = (column_decimals(table[column].to_numpy(float)) or 0) if decimals is None else decimals
    return [
        format_interval(v, lo, hi, digits)
        for v, lo, hi in zip(table[column], table[f"{column}_lo"], table[f"{column}_hi"])
    ]


def display_class_table(table: pd.DataFrame) -> pd.DataFrame:
    """The class table as text cells, estimates with their 95% intervals."""
    text = text_frame(
        table[
            [
                "n_images",
                "n_paths",
                "success_pct",
                "mean_lower_bound",
                "mean_predicted_length",
                "shielded_pct",
                "mean_steps",
                "n_as_shield",
            ]
        ]
    )
    return pd.DataFrame(
        {
            "class": table["name"],
            "images": text["n_images"],
            "paths": text["n_paths"],
            "success %": text["success_pct"],
            "shielding %": interval_column(table, "shielding_pct"),
            "mean FR margin": interval_column(table, "mean_fr_margin"),
            "mean L2": interval_column(table, "mean_l2"),
            "vuln rank": [
                format_rank(v, lo, hi)
                for v, lo, hi in zip(table["vuln_rank"], table["vuln_rank_lo"], table["vuln_rank_hi"])
            ],
            "per-image margin": interval_column(table, "image_margin"),
            "mean LB": text["mean_lower_bound"],
            "mean predicted": text["mean_predicted_length"],
            "shielded %": text["shielded_pct"],
            "mean steps": text["mean_steps"],
            "n as shield": text["n_as_shield"],
        }
    ).reset_index(drop=True)
