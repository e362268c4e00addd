"""Helpers shared by the generator's stages: random streams, number and date formatting."""

from __future__ import annotations

import numpy as np


def stage_rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stage])


def fmt(values: np.ndarray, decimals: int = 2) -> np.ndarray:
    """Format floats as fixed-decimal text; NaN becomes the empty string."""
    values = np.asarray(values, dtype=float)
    out = np.empty(len(values), dtype=object)
    ok = ~np.isnan(values)
    spec = f"{{:.{decimals}f}}"
    out[ok] = [spec.format(v) for v in values[ok]]
    out[~ok] = ""
    return out


def random_dates(years: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random day within each year, as datetime64[D]."""
    years = np.asarray(years)
    start = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    length = np.where((years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0)), 366, 365)
    return start + (rng.random(len(years)) * length).astype(int)


def date_str(d: np.ndarray) -> np.ndarray:
    out = np.datetime_as_string(d, unit="D").astype(object)
    out[np.isnat(d)] = ""
    return out


def normalised(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return p / p.sum()
