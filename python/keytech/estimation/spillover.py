"""Spatial and industry spillover checks ("Other robustness" of Pi & Luo): column (5) OLS on
``marts.rpt_endogeneity_panel`` with spillover-specific samples or regressors.

* ``spill_split`` — near / far control groups (``options: {side: near | far, threshold_km:
  critical | median | <km>}``): treated-group firms (cities ever a pilot) plus only the control
  firms whose city is nearer than (near) or at least (far) ``threshold_km`` from the nearest
  ever-pilot city (``dist_nearest_pilot_city_km``). ``critical`` (the paper's rule, after Cao
  2020) = the critical distance of the distance-band regression below, run on the same panel with
  the bands ``options.bands`` (default: those of ``spill_distance``) at ``options.alpha`` (0.10);
  when no band is significant the split falls back to ``median`` = the median of that distance
  over the control firm-years, and the diagnostics say so. The distance used is stored
  (``threshold_km``, ``threshold_rule``, the band estimates). A spillover to nearby controls biases the baseline down; the far-control estimate
  is then the larger one.
* ``spill_bands`` — critical distance of the spatial spillover (after Cao 2020): Policy plus
  dummies for untreated firm-years whose nearest treated city is in a distance band
  (``spill_band_<lo>_<hi>``, reference: farther or no treated city). The critical distance is the
  upper edge of the last band in the run of bands, starting at the nearest, whose coefficient is
  positive and significant at ``alpha`` (0.10); null when the nearest band is not.
* ``ols_ext`` — plain column (5) OLS whose main term may be dropped as collinear (e.g. a
  same-industry interaction that never varies on a small sample): the result is then stored as
  not identified instead of failing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core.fitting import RunContext
from keytech.estimation.core.results import SpecResult, TermEstimate
from keytech.estimation.linear import fit_ols
from keytech.estimation.orchestration.registry import Spec


def _ensure_main(res: SpecResult, spec: Spec) -> SpecResult:
    if not any(t.term == res.main_term for t in res.terms):
        res.terms.insert(0, TermEstimate(res.main_term, float("nan"), diagnostics={"not_identified": True}))
        res.diagnostics["not_identified"] = f"{res.main_term} dropped (collinear with the FE/controls or constant on this sample)"
    return res


def fit_ols_ext(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    col = spec.treatment
    if col in df.columns and df[col].nunique(dropna=True) < 2:
        res = SpecResult(spec.id, [TermEstimate(col, float("nan"))], None, None, "", spec.vcov.describe(),
                         "", col, {"not_identified": f"{col} is constant on the panel"})
        return res
    return _ensure_main(fit_ols(spec, df, ctx), spec)


def fit_spill_split(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    o = spec.options
    side = o.get("side", "near")
    dist = df["dist_nearest_pilot_city_km"]
    treated = df["is_ever_treated"] == 1
    thr = o.get("threshold_km", "median")
    band_info: dict[str, Any] = {}
    if thr == "critical":
        alpha = float(o.get("alpha", 0.10))
        bands = tuple(o.get("bands", DEFAULT_BANDS))
        band_spec = dataclasses.replace(spec, extra_regressors=bands, options={"alpha": alpha}, estimator="spill_bands")
        band_res = fit_spill_bands(band_spec, df, ctx)
        crit = band_res.diagnostics["critical_distance_km"]
        band_info = {"bands": band_res.diagnostics["bands"], "critical_distance_km": crit, "alpha": alpha}
        if crit is None:
            km = float(dist[~treated].median())
            rule = f"median (fallback: no distance band significant at {alpha}, so no critical distance)"
        else:
            km, rule = float(crit), f"critical distance of the distance-band regression (alpha {alpha})"
    elif thr == "median":
        km, rule = float(dist[~treated].median()), "median of the control firm-years' distance"
    else:
        km, rule = float(thr), "fixed (options.threshold_km)"
    keep = treated | ((dist < km) if side == "near" else (dist >= km))
    res = _ensure_main(fit_ols(spec, df.loc[keep], ctx), spec)
    res.diagnostics.update({
        "side": side, "threshold_km": km, "threshold_rule": rule, **band_info,
        "control_firm_years": int((keep & ~treated).sum()),
        "control_cities": int(df.loc[keep & ~treated, "city_code"].nunique()),
    })
    res.sample += (f"; {side} controls (distance to nearest pilot city {'<' if side == 'near' else '>='} {km:.0f} km, "
                   f"{rule})")
    return res


DEFAULT_BANDS = ("spill_band_0_100", "spill_band_100_200", "spill_band_200_300", "spill_band_300_500")


def critical_distance(bands: list[tuple[float, float, float | None, float | None]], alpha: float) -> float | None:
    """bands: (lo, hi, coef, p) in increasing distance. Upper edge of the last significant band
    in the run starting at the nearest band."""
    crit = None
    for lo, hi, b, p in bands:
        if b is None or p is None or not np.isfinite(b) or b <= 0 or p >= alpha:
            break
        crit = hi
    return crit


def fit_spill_bands(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    alpha = float(spec.options.get("alpha", 0.10))
    res = _ensure_main(fit_ols(spec, df, ctx), spec)
    bands = []
    for name in spec.extra_regressors:
        if not name.startswith("spill_band_"):
            continue
        lo, hi = (float(x) for x in name.removeprefix("spill_band_").split("_"))
        t = next((t for t in res.terms if t.term == name), None)
        bands.append((lo, hi, t.estimate if t else None, t.p_value if t else None))
    res.diagnostics["bands"] = [{"lo_km": lo, "hi_km": hi, "coef": b, "p": p,
                                 "n_obs": int((df[f"spill_band_{lo:g}_{hi:g}"] == 1).sum())} for lo, hi, b, p in bands]
    res.diagnostics["critical_distance_km"] = critical_distance(bands, alpha)
    res.diagnostics["critical_distance_rule"] = (
        f"upper edge of the last band, from the nearest on, with a positive coefficient significant at {alpha}")
    return res


ESTIMATORS: dict[str, Any] = {
    "ols_ext": fit_ols_ext,
    "spill_split": fit_spill_split,
    "spill_bands": fit_spill_bands,
}
