"""The book's one number formatter, ``sig3``, and the text table built on it."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def sig3(value, floor: float = 1e-6) -> str:
    """``value`` to 3 significant figures, as text that is stable for regression tests.

    Missing values (None, NaN, pd.NA) print as "-", text as itself, booleans and integers
    exactly, 0 and -0 as 0; 0 < |value| < ``floor`` (optimisation noise) prints as "<floor",
    by default "<1e-06" (``floor=0`` prints every value)."""
    if value is None or value is pd.NA:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "-"
    if 0 < abs(value) < floor:
        return f"<{floor:.0e}"
    text = f"{value:.3g}"
    return "0" if text in ("-0", "0") else text


def text_table(df: pd.DataFrame, columns=None, rename=None) -> str:
    """A fixed-width text table, every float to 3 significant figures (for printing)."""
    df = df[list(columns)] if columns is not None else df
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(sig3)
        else:
            out[c] = out[c].map(lambda v: "-" if v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v))
    if rename:
        out = out.rename(columns=rename)
    return out.to_string(index=False)
