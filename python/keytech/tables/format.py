"""Number formatters shared by the publication tables (``output/tables/*``) and the report page
(:mod:`keytech.report.page`): one rule per kind of number (coefficient with stars, standard error,
count, R², general number), and the significance stars."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def is_missing(value: Any) -> bool:
    """None, NaN, NaT and pandas NA (not infinity)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _absent(value: Any) -> bool:
    return is_missing(value) or (isinstance(value, float) and not np.isfinite(value))


def stars(p: float | None) -> str:
    """* p<0.10, ** p<0.05, *** p<0.01."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.01 else "**" if p < 0.05 else "*" if p < 0.10 else ""


def stars_from_p(p: Any) -> str:
    return "" if is_missing(p) else stars(float(p))


def stars_to_p(n: int | None) -> float | None:
    """A p-value that gives ``n`` stars (to print the paper's published stars with :func:`fmt_coef`)."""
    return {3: 0.001, 2: 0.02, 1: 0.07, 0: 0.5}.get(n) if n is not None else None


def fmt_coef(est: float | None, p: float | None, digits: int = 4) -> str:
    if est is None or (isinstance(est, float) and not np.isfinite(est)):
        return ""
    return f"{est:.{digits}f}{stars(p)}"


def fmt_se(se: float | None, digits: int = 4) -> str:
    if se is None or (isinstance(se, float) and not np.isfinite(se)):
        return ""
    return f"({se:.{digits}f})"


def fmt_n(n: Any) -> str:
    """A count with thousands separators ("" when missing)."""
    if _absent(n):
        return ""
    return f"{int(n):,}"


def fmt_r2(r: Any) -> str:
    if _absent(r):
        return ""
    return f"{float(r):.3f}"


def fmt_num(value: Any, digits: int = 4) -> str:
    """A general number: ``digits`` decimals with thousands separators, scientific when very large
    or smaller than the last decimal."""
    if is_missing(value):
        return ""
    v = float(value)
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 10 ** -(digits)):
        return f"{v:.3e}"
    return f"{v:,.{digits}f}"
