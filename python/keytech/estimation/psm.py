"""Propensity-score matching + DID for Table 4 columns (6) and (7) (pyfixest has no PSM), following
the conventions of Stata's ``psmatch2`` (Leuven & Sianesi), the tool this literature uses.

* **Estimation sample first**: complete cases of the spec's outcome, regressors, FE, cluster and
  matching covariates, singletons removed — the column (5) sample. Matching runs on these rows, so
  no matched pair is broken afterwards by listwise deletion.
* **Treatment group**: firm-years in cities that are ever pilot cities (``is_ever_treated``).
* **Propensity**: logit of the treatment group on the regional characteristics (``covariates``,
  default the city controls ln_meangdp, infor, ln_finsgov, ln_fdi and the agglomeration index)
  plus year dummies (statsmodels Logit, pooled over years).
* **Matching**: within each year, 1:1 nearest neighbour with replacement, caliper ``caliper_sd`` ×
  SD of the logit score (default 0.2, Austin 2011). ``metric: pscore`` takes the nearest control on
  the logit score; ``metric: mahalanobis`` (Table 4's specs; psmatch2 ``mahalanobis() pscore()
  caliper()``) the nearest by Mahalanobis distance on the covariates among the controls inside the
  caliper. **Ties** (psmatch2 ``ties``): all controls at the minimum distance (within 1e-10
  relative) are matched and share the treated unit's weight equally, so the result does not depend
  on row order. With city-level covariates every firm of the same city-year is a tie.
* **Match weight** ``_weight``: 1 for a matched treated row; for a control the sum over the treated
  rows it is matched to of 1/(number of tied controls); missing (here 0) otherwise.
* **Common support** ``_support`` (psmatch2 ``common`` with a caliper): a treated row is on support
  when its propensity lies inside [min, max] of the controls' propensities of the sample and it has
  a control inside the caliper; controls are always on support.
* **(6) matched sample** (``sample: matched``; ``weights`` is an alias): rows with a match weight
  (matched treated and the controls they use), column (5) regression **unweighted** (``reg … if
  _weight != .``). ``regression_weights: match`` weights it by ``_weight`` instead.
* **(7) common-support sample** (``sample: common_support``): rows with ``_support == 1``,
  unweighted. ``sample: common_support_matched`` keeps only matched rows on support.
* **Balance** (psmatch2 ``pstest``): standardised difference 100·(mean_t − mean_c)/sqrt((var_t +
  var_c)/2) with the variances of the **unmatched** (before) treated and control groups in both the
  before and the after column (Rosenbaum & Rubin 1985), after = matched sample weighted by
  ``_weight``; in the diagnostics (``balance``) and rendered as ``output/tables/table4_psm_balance.*``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core.fitting import RunContext, cluster_columns, demeaner, fit_result, formula, relevant_warnings, terms_from_fit
from keytech.estimation.core.panel import prepare_spec_data
from keytech.estimation.core.results import SpecResult
from keytech.estimation.orchestration.registry import Spec

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


def _match_within_strata(n: int, treated: np.ndarray, strata: np.ndarray | None, distance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1:1 matching with replacement and shared ties inside each stratum. ``distance(t, c)`` gets the
    row indices of the stratum's treated and controls and returns their (len(t) × len(c)) distance
    matrix, ``inf`` outside the caliper. Every control at the row minimum (within 1e-10 relative) is
    a match and gets 1/(number of ties). Returns (weights: 1 per matched treated row, summed
    shares per control; number of tied controls per treated row (0 = unmatched); one matched control
    per treated row (the first tie, for reference) or −1)."""
    w = np.zeros(n)
    n_ties = np.zeros(n, dtype=int)
    match = np.full(n, -1)
    strata = np.zeros(n) if strata is None else np.asarray(strata)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        t = idx[treated[idx]]
        c = idx[~treated[idx]]
        if len(t) == 0 or len(c) == 0:
            continue
        d = distance(t, c)
        dmin = d.min(axis=1)
        ok = np.isfinite(dmin)
        tie = (d <= (dmin + 1e-10 * np.maximum(1.0, np.abs(dmin)))[:, None]) & ok[:, None]
        k = tie.sum(axis=1)
        n_ties[t] = k
        w[t[ok]] = 1.0
        share = np.where(k > 0, 1.0 / np.maximum(k, 1), 0.0)
        np.add.at(w, c, (tie * share[:, None]).sum(axis=0))
        match[t[ok]] = c[tie[ok].argmax(axis=1)]
    return w, n_ties, match


def nearest_neighbour(score: np.ndarray, treated: np.ndarray, caliper: float, strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1:1 NN matching with replacement on ``score`` within ``strata``, ties shared. Returns
    (weights, number of tied controls per treated row, first matched control or −1)."""

    def distance(t: np.ndarray, c: np.ndarray) -> np.ndarray:
        d = np.abs(score[t][:, None] - score[c][None, :])
        d[d > caliper] = np.inf
        return d

    return _match_within_strata(len(score), treated, strata, distance)


def mahalanobis_within_caliper(X: np.ndarray, score: np.ndarray, treated: np.ndarray, caliper: float,
                               strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1:1 matching with replacement: for each treated row the controls of the same stratum with the
    smallest Mahalanobis distance on ``X`` (pooled covariance of the rows) among the controls
    whose ``score`` lies within ``caliper`` (Rubin & Thomas 2000, *JASA* 95(450); the usual
    "Mahalanobis matching within propensity calipers"), ties shared. Returns (weights, number of
    tied controls per treated row, first matched control or −1)."""
    n = len(score)
    X = np.asarray(X, float).reshape(n, -1)
    cov = np.atleast_2d(np.cov(X, rowvar=False))
    # whiten with the pseudo-inverse square root (robust to a constant or collinear covariate)
    vals, vecs = np.linalg.eigh(cov)
    keep = vals > 1e-12 * max(vals.max(), 1e-300)
    Xw = X @ (vecs[:, keep] / np.sqrt(vals[keep]))

    def distance(t: np.ndarray, c: np.ndarray) -> np.ndarray:
        d2 = ((Xw[t][:, None, :] - Xw[c][None, :, :]) ** 2).sum(axis=2)
        d2[np.abs(score[t][:, None] - score[c][None, :]) > caliper] = np.inf
        return d2

    return _match_within_strata(n, treated, strata, distance)


def std_diff(x: np.ndarray, treated: np.ndarray, w: np.ndarray | None = None,
             var_before: tuple[float, float] | None = None) -> float:
    """100·(mean_t − mean_c)/sqrt((var_t + var_c)/2); means weighted by ``w``; the variances are
    ``var_before`` (treated, control) when given — pstest's convention for the after-matching
    column — else the unweighted variances of ``x``'s own groups."""
    w = np.ones(len(x)) if w is None else w
    xt, wt = x[treated], w[treated]
    xc, wc = x[~treated], w[~treated]
    if wt.sum() == 0 or wc.sum() == 0:
        return float("nan")
    mt, mc = np.average(xt, weights=wt), np.average(xc, weights=wc)
    v_t0, v_c0 = var_before if var_before is not None else (np.var(xt, ddof=1), np.var(xc, ddof=1))
    den = np.sqrt((v_t0 + v_c0) / 2)
    return float(100 * (mt - mc) / den) if den > 0 else float("nan")


def balance_table(df: pd.DataFrame, treat: str, covariates: list[str], w: np.ndarray) -> list[dict[str, Any]]:
    """pstest-style balance: before = all rows, after = matched rows weighted by the match weight;
    both standardised by the before-matching variances (sample variances, ddof 1)."""
    t = df[treat].to_numpy(bool)
    rows = []
    matched = w > 0
    for c in covariates:
        x = df[c].to_numpy(float)
        vb = (float(np.var(x[t], ddof=1)), float(np.var(x[~t], ddof=1)))
        rows.append({
            "covariate": c,
            "mean_treated_before": float(x[t].mean()), "mean_control_before": float(x[~t].mean()),
            "std_diff_before": std_diff(x, t, var_before=vb),
            "mean_treated_after": float(np.average(x[t & matched], weights=w[t & matched])) if (t & matched).any() else None,
            "mean_control_after": float(np.average(x[~t & matched], weights=w[~t & matched])) if (~t & matched).any() else None,
            "std_diff_after": std_diff(x[matched], t[matched], w[matched], var_before=vb) if matched.any() else None,
        })
    return rows


METRICS = {
    "pscore": "1:1 nearest neighbour on the logit propensity, with replacement, within year",
    "mahalanobis": ("1:1 nearest neighbour by Mahalanobis distance on the covariates among the controls "
                    "within the logit-propensity caliper, with replacement, within year"),
}


def psm_sample(data: pd.DataFrame, treat: str, covariates: list[str], caliper_sd: float = 0.2, by: str = "year",
               metric: str = "pscore") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Match on ``data`` (the caller passes the fixed estimation sample). Adds ``__pscore``,
    ``__w_match`` (psmatch2 ``_weight``, 0 = missing), ``__n_ties`` and ``__support`` (psmatch2
    ``_support``) and returns the matching information."""
    if metric not in METRICS:
        raise ValueError(f"PSM metric must be one of {sorted(METRICS)}, not {metric!r}")
    data = data.dropna(subset=covariates).copy()
    p = np.clip(propensity(data, treat, covariates, by), 1e-10, 1 - 1e-10)
    lg = np.log(p / (1 - p))
    caliper = caliper_sd * float(np.std(lg))
    t = data[treat].to_numpy(bool)
    strata = data[by].to_numpy() if by else None
    if metric == "mahalanobis":
        w, n_ties, match = mahalanobis_within_caliper(data[covariates].to_numpy(float), lg, t, caliper, strata)
    else:
        w, n_ties, match = nearest_neighbour(lg, t, caliper, strata)
    data["__pscore"] = p
    data["__w_match"] = w
    data["__n_ties"] = n_ties
    lo, hi = float(p[~t].min()), float(p[~t].max())
    in_range = (p >= lo) & (p <= hi)
    data["__support"] = ~t | (in_range & (n_ties > 0))
    data["__common_support"] = data["__support"]  # old name
    tied = t & (n_ties > 1)
    info = {
        "covariates": covariates, "caliper_sd": caliper_sd, "caliper_logit": caliper,
        "matching": METRICS[metric], "metric": metric,
        "ties": "shared: every control at the minimum distance is matched with weight 1/(number of ties) (psmatch2 ties)",
        "n_treated": int(t.sum()), "n_control": int((~t).sum()),
        "n_treated_matched": int((w[t] > 0).sum()), "n_controls_used": int((w[~t] > 0).sum()),
        "n_treated_with_tied_controls": int(tied.sum()),
        "max_control_weight": float(w[~t].max()) if (~t).any() else None,
        "control_pscore_range": [lo, hi],
        "n_treated_outside_control_range": int((t & ~in_range).sum()),
        "n_treated_off_support": int((t & ~data["__support"].to_numpy()).sum()),
        "n_support": int(data["__support"].sum()),
        "n_matched_sample": int((w > 0).sum()),
        "balance": balance_table(data.assign(logit_pscore=lg), treat, [*covariates, "logit_pscore"], w),
        "balance_convention": "pstest: 100*(mean_t - mean_c)/sqrt((var_t + var_c)/2), variances of the unmatched "
        "(before) groups in both columns; after = matched rows weighted by the match weight",
    }
    cov_rows = [r for r in info["balance"] if r["covariate"] in covariates]
    info["mean_abs_std_diff_before"] = float(np.nanmean([abs(r["std_diff_before"]) for r in cov_rows]))
    info["mean_abs_std_diff_after"] = float(np.nanmean([abs(r["std_diff_after"]) for r in cov_rows
                                                        if r["std_diff_after"] is not None] or [np.nan]))
    return data, info


SAMPLES = {
    "matched": "rows with a match weight (matched treated + the controls they use), psmatch2 `if _weight != .`",
    "common_support": "rows on common support, psmatch2 `if _support == 1` (all controls; treated inside the "
                      "controls' propensity range with a control inside the caliper)",
    "common_support_matched": "matched rows on common support (`if _weight != . & _support == 1`)",
}


def fit_psm(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """``options: {sample: matched | common_support | common_support_matched, covariates: [...],
    caliper_sd: 0.2, metric: pscore | mahalanobis, regression_weights: none | match,
    treat: is_ever_treated}``. The matching of a sample is computed once per run and kept in
    ``ctx.shared`` (columns 6 and 7 match the same rows the same way)."""
    import warnings

    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    from keytech.estimation.core import panel as pnl

    o = spec.options
    covariates = list(o.get("covariates", DEFAULT_COVARIATES))
    treat = o.get("treat", "is_ever_treated")
    which = {"weights": "matched"}.get(o.get("sample", "matched"), o.get("sample", "matched"))
    if which not in SAMPLES:
        raise ValueError(f"{spec.id}: options.sample must be one of {sorted(SAMPLES)}, not {which!r}")
    reg_w = o.get("regression_weights", "none")
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    # the estimation sample is fixed before matching: no pair is broken by listwise deletion
    base = pnl.estimation_sample(data, list(dict.fromkeys([spec.outcome, *rhs, *covariates, treat])),
                                 spec.fixed_effects, cl, spec.fixef_rm)
    # the matching does not depend on which sample the spec keeps: specs of one run that match
    # the same rows the same way (Table 4's columns 6 and 7) match once (ctx.shared)
    caliper_sd, metric = float(o.get("caliper_sd", 0.2)), str(o.get("metric", "pscore"))
    key = ("psm_sample", id(df), treat, tuple(covariates), caliper_sd, metric)
    shared = getattr(ctx, "shared", None)
    hit = shared.get(key) if shared is not None else None
    if hit is not None and hit["df"] is df and hit["base"].equals(base):
        data, info = hit["data"], hit["info"]
    else:
        data, info = psm_sample(base, treat, covariates, caliper_sd, metric=metric)
        if shared is not None:
            shared[key] = {"df": df, "base": base, "data": data, "info": info}
    keep = {"matched": data["__w_match"] > 0, "common_support": data["__support"],
            "common_support_matched": (data["__w_match"] > 0) & data["__support"]}[which]
    sub = data.loc[keep].copy()
    weights = "__w_match" if reg_w == "match" else None
    sub, cl_cols = cluster_columns(sub, spec)
    vcov = {"CRV1": "+".join(cl_cols)} if spec.vcov.kind == "cluster" else spec.vcov.pyfixest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = pf.feols(formula(spec.outcome, rhs, spec.fixed_effects), data=sub, vcov=vcov, weights=weights,
                       fixef_rm=spec.fixef_rm, demeaner=demeaner(spec))
    diag = {**info, "sample_kind": which, "sample_rule": SAMPLES[which],
            "weights": "match weights (_weight)" if weights else "none (unweighted regression)",
            "n_estimation_sample": len(base), "n_selected": len(sub),
            "share_of_estimation_sample": float(int(fit._N) / len(base)) if len(base) else None,
            "singletons_after_selection": len(sub) - int(fit._N)}
    msgs = relevant_warnings(caught)
    if msgs:
        diag["warnings"] = msgs
    return fit_result(spec, ctx, fit, terms_from_fit(fit), len(sub), diag, sample_note=f"PSM {which}")
