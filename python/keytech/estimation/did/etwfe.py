"""Extended two-way fixed effects Poisson (Wooldridge 2023, Econometrics Journal 26(3)) on the count
of key-technology invention applications: the effect in percent, the answer to Chen & Roth (2024)
on ln(1+y) outcomes (issue 14 item 5; estimator ``etwfe_poisson``, spec ``robust_etwfe_poisson``).

Model (pyfixest ``fepois``): E[y_it | ...] = exp(sum_{g,s} tau_gs 1{G_i = g, t = s, s >= g}
+ X_it b + a_i + l_t): one treatment dummy per treated cohort g (first treated year of the firm's
city) and post-treatment year s >= g, so every cohort-period effect is its own parameter
(heterogeneous, dynamic effects; never-treated and not-yet-treated firm-years are the controls),
with the spec's fixed effects and controls. Cohorts first treated after the last year count as
never treated; cells with no observation are skipped.

Aggregation (ETWFE "simple"): theta = sum_gs w_gs tau_gs with w_gs = share of treated
observations in cell (g, s); SE from the clustered covariance of the tau's (delta method, exact
for a linear combination). Effect in percent: 100 (exp(theta) - 1) with delta-method SE
100 exp(theta) se(theta) and the CI 100 (exp(CI(theta)) - 1). Diagnostics also hold every tau_gs
and the level-weighted percent effect sum_it mu0_it (exp(tau) - 1) / sum_it mu0_it over treated
observations (mu0 = fitted mean without the treatment effect; point estimate only).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


def cohort_cells(df: pd.DataFrame, cohort: str = "first_treated_year", time: str = "year") -> tuple[pd.DataFrame, list[str], dict[str, tuple[int, int]]]:
    """Add one dummy per (cohort g, year s >= g) cell with observations; return (data, names, cells)."""
    G = pd.to_numeric(df[cohort], errors="coerce").fillna(0.0)
    last = df[time].max()
    G = G.where(G <= last, 0.0)
    out = df.assign(_cohort=G)
    names, cells, cols = [], {}, {}
    for g in sorted(G[G > 0].unique()):
        for s in sorted(df.loc[(G == g) & (df[time] >= g), time].unique()):
            name = f"tau_{int(g)}_{int(s)}"
            cols[name] = ((G == g) & (df[time] == s)).astype(float)
            names.append(name)
            cells[name] = (int(g), int(s))
    return out.assign(**cols), names, cells


def aggregate(tau: np.ndarray, V: np.ndarray, weights: np.ndarray, df_t: float | None = None, level: float = 0.95) -> dict[str, float]:
    """theta = w'tau (w normalised), its SE, and the percent effect with delta-method SE and CI."""
    w = np.asarray(weights, float) / np.sum(weights)
    theta = float(w @ tau)
    se = float(np.sqrt(w @ V @ w))
    q = stats.norm.ppf(0.5 + level / 2) if df_t is None else stats.t.ppf(0.5 + level / 2, df_t)
    lo, hi = theta - q * se, theta + q * se
    return {"theta": theta, "se": se, "ci": [lo, hi], "pct": 100 * (np.exp(theta) - 1), "pct_se": 100 * np.exp(theta) * se,
            "pct_ci": [100 * (np.exp(lo) - 1), 100 * (np.exp(hi) - 1)]}


def fit_etwfe_poisson(spec, df: pd.DataFrame, ctx):
    from keytech.estimation.core.results import SpecResult, TermEstimate, add_common_diagnostics, term_from_normal
    from keytech.estimation.core.panel import complete_cases, prepare_spec_data, sample_description
    from keytech.estimation.core.fitting import fe_desc, fit_model

    data = prepare_spec_data(spec, df)
    data, names, cells = cohort_cells(data)
    if not names:
        raise ValueError(f"{spec.id}: no treated cohort-period cells")
    rhs = [*names, *spec.extra_regressors, *spec.controls]
    fit, msgs, _ = fit_model("poisson", spec, data, rhs)
    coefnames = list(fit._coefnames)
    kept = [n for n in names if n in coefnames]
    idx = [coefnames.index(n) for n in kept]
    tau = np.asarray(fit._beta_hat)[idx]
    V = np.asarray(fit._vcov)[np.ix_(idx, idx)]
    used = fit._data if hasattr(fit, "_data") else data
    counts = np.array([float(used[n].sum()) for n in kept])
    G = int(np.min(fit._G)) if spec.vcov.kind == "cluster" else None
    agg = aggregate(tau, V, counts)
    # level-weighted percent effect over treated observations (mu0 = fitted mean without tau)
    X = used[kept].to_numpy(float)
    mu = np.asarray(fit.predict(type="response"), float) if len(used) == fit._N else None
    pct_level = None
    if mu is not None:
        lin_tau = X @ tau
        treated = X.sum(axis=1) > 0
        mu0 = mu[treated] * np.exp(-lin_tau[treated])
        pct_level = float(100 * np.sum(mu0 * (np.exp(lin_tau[treated]) - 1)) / np.sum(mu0))
    z = agg["theta"] / agg["se"]
    p = float(2 * stats.norm.sf(abs(z)))
    main = TermEstimate(spec.treatment, agg["theta"], agg["se"], float(z), p, agg["ci"][0], agg["ci"][1],
                        {"aggregation": "treated-observation weighted mean of tau_gs (log points)"})
    pct = TermEstimate("att_pct", agg["pct"], agg["pct_se"], float(z), p, agg["pct_ci"][0], agg["pct_ci"][1],
                       {"scale": "percent: 100 (exp(theta) - 1), delta-method SE, CI = 100 (exp(CI(theta)) - 1)"})
    cell_terms = [term_from_normal(n, float(t), float(np.sqrt(V[k, k])), cohort=cells[n][0], year=cells[n][1],
                                   n_obs=int(counts[k])) for k, (n, t) in enumerate(zip(kept, tau))]
    diag: dict[str, Any] = {
        "n_cells": len(kept), "cells_dropped": [n for n in names if n not in kept],
        "pct_effect": agg["pct"], "pct_se": agg["pct_se"], "pct_ci": agg["pct_ci"],
        "pct_effect_level_weighted": pct_level,
        "inference": "normal (z), as for GLMs in fixest/pyfixest",
        "model": "fepois with one dummy per treated cohort x post year (Wooldridge 2023 ETWFE)",
    }
    add_common_diagnostics(diag, n_clusters=G, warnings=msgs, truth=ctx.truth)
    if ctx.truth and "beta_key" in ctx.truth:
        diag["planted_pct"] = 100 * (np.exp(ctx.truth["beta_key"]) - 1)
    n_complete = complete_cases(spec, data, rhs)
    return SpecResult(
        spec_id=spec.id, terms=[main, pct, *cell_terms], nobs=int(fit._N), adj_r2=None,
        fixed_effects=fe_desc(spec, ctx), vcov=spec.vcov.describe(),
        sample=sample_description(spec, n_complete, int(fit._N), f"{len(kept)} cohort x year cells"),
        main_term=spec.treatment, diagnostics=diag,
    )
