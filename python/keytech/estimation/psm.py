"""Propensity-score matching + DID for Table 4 columns (6) and (7) (pyfixest has no PSM).

Design (the usual PSM-DID of the Chinese policy-evaluation literature, made explicit):

* **Treatment group**: firm-years in cities that are ever pilot cities (``is_ever_treated``).
* **Propensity**: logit of the treatment group on the regional characteristics (``covariates``,
  default the city controls ln_meangdp, infor, ln_finsgov, ln_fdi and the agglomeration index)
  plus year dummies (statsmodels Logit, pooled over years).
* **Matching**: within each year, 1:1 with replacement, caliper ``caliper_sd`` × SD of the logit
  score (default 0.2, Austin 2011, *Pharmaceutical Statistics* 10(2)); treated firm-years without
  a control inside the caliper are unmatched. ``metric: pscore`` (default) takes the nearest
  neighbour on the logit score; ``metric: mahalanobis`` (Table 4's specs) takes, among the controls
  inside the caliper, the nearest by Mahalanobis distance on the covariates themselves (Rubin &
  Thomas 2000). Matching on the score alone balances the score but, with city-level covariates
  and a few dozen cities, leaves covariates the score weighs little (or that offset each other)
  unbalanced or worse; the Mahalanobis step balances each covariate while the caliper keeps the
  score balanced.
* **(6) matching-weights sample**: matched treated (weight 1) and the controls used (weight =
  number of times used), baseline column (5) regression with these weights.
* **(7) common-support sample**: firm-years whose propensity lies inside
  [max(min p_treated, min p_control), min(max p_treated, max p_control)], unweighted.
* **Balance**: standardised differences 100·(mean_t − mean_c)/sqrt((var_t + var_c)/2) for every
  covariate, before (all firm-years) and after (matched sample, matching weights), in the
  diagnostics (``balance``) and rendered as ``output/tables/table4_psm_balance.*``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.base import SpecResult
from keytech.estimation.estimators import (
    fit_result,
    RunContext,
    _cluster_columns,
    _demeaner,
    formula,
    prepare_spec_data,
    relevant_warnings,
    terms_from_fit,
)
from keytech.estimation.registry import Spec

DEFAULT_COVARIATES = ("ln_meangdp", "infor", "ln_finsgov", "ln_fdi", "agglomeration_lq")


def propensity(df: pd.DataFrame, treat: str, covariates: list[str], by: str | None = "year") -> np.ndarray:
    """Logit propensity of ``treat`` on the covariates (+ dummies of ``by``)."""
    import statsmodels.api as sm

    X = df[covariates].astype(float)
    X = (X - X.mean()) / X.std(ddof=0).replace(0, 1)
    if by:
        X = pd.concat([X, pd.get_dummies(df[by], prefix=by, drop_first=True, dtype=float)], axis=1)
    X = sm.add_constant(X, has_constant="add")
    model = sm.Logit(df[treat].astype(float).to_numpy(), X.to_numpy())
    res = model.fit(disp=0, maxiter=200)
    return np.asarray(res.predict(X.to_numpy()), float)


def _match_within_strata(n: int, treated: np.ndarray, strata: np.ndarray | None, pick) -> tuple[np.ndarray, np.ndarray]:
    """1:1 matching with replacement inside each stratum. ``pick(t, c)`` gets the row indices of
    the stratum's treated and controls and returns (chosen control per treated row, matched?).
    Returns (weights: 1 per matched treated row, times used per control; match index or −1)."""
    w = np.zeros(n)
    match = np.full(n, -1)
    strata = np.zeros(n) if strata is None else np.asarray(strata)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        t = idx[treated[idx]]
        c = idx[~treated[idx]]
        if len(t) == 0 or len(c) == 0:
            continue
        chosen, ok = pick(t, c)
        match[t[ok]] = chosen[ok]
        w[t[ok]] = 1.0
        np.add.at(w, chosen[ok], 1.0)
    return w, match


def nearest_neighbour(score: np.ndarray, treated: np.ndarray, caliper: float, strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """1:1 NN matching with replacement on ``score`` within ``strata``. Returns (weights, match
    index for treated rows or −1)."""

    def pick(t: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(score[c])
        cs = score[c][order]
        pos = np.searchsorted(cs, score[t])
        lo = np.clip(pos - 1, 0, len(cs) - 1)
        hi = np.clip(pos, 0, len(cs) - 1)
        nearest = np.where(np.abs(cs[lo] - score[t]) <= np.abs(cs[hi] - score[t]), lo, hi)
        return c[order][nearest], np.abs(cs[nearest] - score[t]) <= caliper

    return _match_within_strata(len(score), treated, strata, pick)


def mahalanobis_within_caliper(X: np.ndarray, score: np.ndarray, treated: np.ndarray, caliper: float,
                               strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """1:1 matching with replacement: for each treated row the control of the same stratum with the
    smallest Mahalanobis distance on ``X`` (pooled covariance of the rows) among the controls
    whose ``score`` lies within ``caliper`` (Rubin & Thomas 2000, *JASA* 95(450); the usual
    "Mahalanobis matching within propensity calipers"). Returns (weights, match index or −1)."""
    n = len(score)
    X = np.asarray(X, float).reshape(n, -1)
    cov = np.atleast_2d(np.cov(X, rowvar=False))
    # whiten with the pseudo-inverse square root (robust to a constant or collinear covariate)
    vals, vecs = np.linalg.eigh(cov)
    keep = vals > 1e-12 * max(vals.max(), 1e-300)
    Xw = X @ (vecs[:, keep] / np.sqrt(vals[keep]))

    def pick(t: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d2 = ((Xw[t][:, None, :] - Xw[c][None, :, :]) ** 2).sum(axis=2)
        d2[np.abs(score[t][:, None] - score[c][None, :]) > caliper] = np.inf
        nearest = d2.argmin(axis=1)
        return c[nearest], np.isfinite(d2[np.arange(len(t)), nearest])

    return _match_within_strata(n, treated, strata, pick)


def std_diff(x: np.ndarray, treated: np.ndarray, w: np.ndarray | None = None) -> float:
    w = np.ones(len(x)) if w is None else w
    xt, wt = x[treated], w[treated]
    xc, wc = x[~treated], w[~treated]
    if wt.sum() == 0 or wc.sum() == 0:
        return float("nan")
    mt, mc = np.average(xt, weights=wt), np.average(xc, weights=wc)
    vt = np.average((xt - mt) ** 2, weights=wt)
    vc = np.average((xc - mc) ** 2, weights=wc)
    # denominator: unweighted variances of the full groups (conventional; keeps before/after comparable)
    v_t0, v_c0 = np.var(x[treated]), np.var(x[~treated])
    den = np.sqrt((v_t0 + v_c0) / 2)
    return float(100 * (mt - mc) / den) if den > 0 else float("nan")


def balance_table(df: pd.DataFrame, treat: str, covariates: list[str], w: np.ndarray) -> list[dict[str, Any]]:
    t = df[treat].to_numpy(bool)
    rows = []
    matched = w > 0
    for c in covariates:
        x = df[c].to_numpy(float)
        rows.append({
            "covariate": c,
            "mean_treated_before": float(x[t].mean()), "mean_control_before": float(x[~t].mean()),
            "std_diff_before": std_diff(x, t),
            "mean_treated_after": float(np.average(x[t & matched], weights=w[t & matched])) if (t & matched).any() else None,
            "mean_control_after": float(np.average(x[~t & matched], weights=w[~t & matched])) if (~t & matched).any() else None,
            "std_diff_after": std_diff(x[matched], t[matched], w[matched]) if matched.any() else None,
        })
    return rows


METRICS = {
    "pscore": "1:1 nearest neighbour on the logit propensity, with replacement, within year",
    "mahalanobis": ("1:1 nearest neighbour by Mahalanobis distance on the covariates among the controls "
                    "within the logit-propensity caliper, with replacement, within year"),
}


def psm_sample(data: pd.DataFrame, treat: str, covariates: list[str], caliper_sd: float = 0.2, by: str = "year",
               metric: str = "pscore") -> tuple[pd.DataFrame, dict[str, Any]]:
    if metric not in METRICS:
        raise ValueError(f"PSM metric must be one of {sorted(METRICS)}, not {metric!r}")
    data = data.dropna(subset=covariates).copy()
    p = np.clip(propensity(data, treat, covariates, by), 1e-10, 1 - 1e-10)
    lg = np.log(p / (1 - p))
    caliper = caliper_sd * float(np.std(lg))
    t = data[treat].to_numpy(bool)
    strata = data[by].to_numpy() if by else None
    if metric == "mahalanobis":
        w, match = mahalanobis_within_caliper(data[covariates].to_numpy(float), lg, t, caliper, strata)
    else:
        w, match = nearest_neighbour(lg, t, caliper, strata)
    data["__pscore"] = p
    data["__w_match"] = w
    lo = max(p[t].min(), p[~t].min())
    hi = min(p[t].max(), p[~t].max())
    data["__common_support"] = (p >= lo) & (p <= hi)
    info = {
        "covariates": covariates, "caliper_sd": caliper_sd, "caliper_logit": caliper,
        "matching": METRICS[metric], "metric": metric,
        "n_treated": int(t.sum()), "n_control": int((~t).sum()),
        "n_treated_matched": int((w[t] > 0).sum()), "n_controls_used": int((w[~t] > 0).sum()),
        "common_support": [float(lo), float(hi)],
        "n_common_support": int(data["__common_support"].sum()),
        "balance": balance_table(data.assign(logit_pscore=lg), treat, [*covariates, "logit_pscore"], w),
    }
    cov_rows = [r for r in info["balance"] if r["covariate"] in covariates]
    info["mean_abs_std_diff_before"] = float(np.nanmean([abs(r["std_diff_before"]) for r in cov_rows]))
    info["mean_abs_std_diff_after"] = float(np.nanmean([abs(r["std_diff_after"]) for r in cov_rows
                                                        if r["std_diff_after"] is not None] or [np.nan]))
    return data, info


def fit_psm(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """``options: {sample: weights | common_support, covariates: [...], caliper_sd: 0.2,
    treat: is_ever_treated}``."""
    import warnings

    import pyfixest as pf

    o = spec.options
    covariates = list(o.get("covariates", DEFAULT_COVARIATES))
    treat = o.get("treat", "is_ever_treated")
    which = o.get("sample", "weights")
    data = prepare_spec_data(spec, df)
    data, info = psm_sample(data, treat, covariates, float(o.get("caliper_sd", 0.2)),
                            metric=str(o.get("metric", "pscore")))
    if which == "weights":
        sub = data.loc[data["__w_match"] > 0].copy()
        weights = "__w_match"
    else:
        sub = data.loc[data["__common_support"]].copy()
        weights = None
    rhs = list(spec.regressors)
    sub, cl = _cluster_columns(sub, spec)
    vcov = {"CRV1": "+".join(cl)} if spec.vcov.kind == "cluster" else spec.vcov.pyfixest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = pf.feols(formula(spec.outcome, rhs, spec.fixed_effects), data=sub, vcov=vcov, weights=weights,
                       fixef_rm=spec.fixef_rm, demeaner=_demeaner(spec))
    diag = {**info, "sample_kind": which, "weights": "matching weights" if weights else "none"}
    msgs = relevant_warnings(caught)
    if msgs:
        diag["warnings"] = msgs
    n_complete = int(sub[[spec.outcome, *rhs]].notna().all(axis=1).sum())
    return fit_result(spec, ctx, fit, terms_from_fit(fit), n_complete, diag, sample_note=f"PSM {which}")
