"""Panel helpers shared by the staggered-DiD estimators: balanced subpanels and absorbing-treatment units."""

from __future__ import annotations


import numpy as np
import pandas as pd


def balanced_subpanel(df: pd.DataFrame, outcome: str, unit: str = "stkcd", time: str = "year") -> pd.DataFrame:
    """Units observed (with the outcome) in every period of the panel's year range."""
    sub = df.dropna(subset=[outcome])
    T = sub[time].nunique()
    counts = sub.groupby(unit)[time].transform("nunique")
    return sub.loc[counts == T]


def absorbing_units(df: pd.DataFrame, treatment: str = "policy", unit: str = "stkcd", time: str = "year") -> pd.Series:
    """True for units whose ``treatment`` path (sorted by time) never switches off: 0…0 1…1, all 0
    or all 1. Firms that move from a pilot city to a non-pilot city (policy 1 → 0) are not."""
    d = df.sort_values([unit, time]).groupby(unit)[treatment]
    return d.apply(lambda s: bool((np.diff(s.to_numpy(float)) >= 0).all()))
