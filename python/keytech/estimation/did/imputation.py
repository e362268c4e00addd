"""Borusyak, Jaravel & Spiess (2024, REStud) imputation estimator with its conservative variance and
pre-trend test (issue 14 item 5; estimator ``staggered_imputation``, spec
``robust_staggered_imputation``).

With Z the design of the untreated-outcome model (one dummy per level of every fixed effect, plus
the controls), Omega0 the untreated observations (never treated, not yet treated) and Omega1 the
treated ones (Policy = 1):

1. b = argmin ||Y0 - Z0 b|| (fit on Omega0 only);
2. tau_it = Y_it - z_it'b for it in Omega1 (treated observations whose imputed value is not
   identified — a fixed-effect level that never occurs untreated, or levels that sit in different
   connected components of the untreated design, detected exactly by the null space of Z0
   (``did.common.identified_rows``) — are dropped and counted in the diagnostics);
3. tau_w = sum w_it tau_it; main term ``policy``: w = 1/N1 (all treated); ``rel_time=h`` terms:
   w = 1{K_it = h}/N_h (event time h = year - first treated year, h = 0..options.horizons).

The estimator is linear in Y: tau_w = sum_it v_it Y_it with v = w on Omega1 and
v0 = -Z0 (Z0'Z0)^+ Z1'w on Omega0, the minimum-norm solution u of Z0'u = Z1'w. Both b and v0 come
from one sparse LU of Z0'Z0 with as many columns left out as its null space has dimensions
(``did.common.generalized_gram_solver``; controls standardised): every treated row lies in the row
space of Z0, so Z1 b and Z0 (Z0'Z0)^- Z1'w do not depend on the generalized inverse. (Until
2026-12-04 both were LSMR solves on the raw design; with a control on the scale of 10^4 LSMR
stopped early, up to 2e-7 relative off the exact values on the demo and paper-scale panels, and
took 4x as long.) Conservative variance (BJS Theorem 3, clustered):
sum_c (sum_{it in c} v_it e_it)^2 with e = the step-1 residuals on Omega0 and, on Omega1,
e_it = tau_it - tau_bar, tau_bar the v^2-weighted mean of tau within the observation's cohort x
year cell (the default averaging of ``did_imputation``; no leave-out correction). Inference: normal.

Pre-trend test (BJS Test 1): on Omega0 only, the spec's regression (fixed effects, controls) plus
lead dummies 1{K_it = -k}, k = 1..options.pretrend_leads, fitted by pyfixest with the spec's
clusters; joint cluster-robust Wald test of the leads (F with G - 1 denominator df).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.did.common import identified_rows, untreated_first_solver

IDENTIFICATION_TOL = 1e-8  # relative eigenvalue threshold of the untreated design's null space


def identified(df: pd.DataFrame, untreated: np.ndarray, fixed_effects) -> np.ndarray:
    """Treated rows whose every FE level also occurs among the untreated rows."""
    ok = np.ones(len(df), bool)
    for f in fixed_effects:
        seen = set(df.loc[untreated, f])
        ok &= df[f].isin(seen).to_numpy()
    return ok


def imputation(
    df: pd.DataFrame, outcome: str, treated_col: str, fixed_effects, controls, cluster: str,
    event_time: str | None = "rel_time", horizons: int | None = None, cohort: str = "first_treated_year",
    time: str = "year",
) -> dict[str, Any]:
    """Estimates and conservative clustered SEs for the ATT (all treated) and event-time horizons."""
    d = df.dropna(subset=list(dict.fromkeys([outcome, treated_col, *fixed_effects, *controls, cluster]))).reset_index(drop=True)
    D = d[treated_col].to_numpy(float) > 0
    ok = identified(d, ~D, fixed_effects)
    n_unidentified = int((D & ~ok).sum())
    d = d.loc[~D | ok].reset_index(drop=True)
    D = d[treated_col].to_numpy(float) > 0
    # a treated row is identified only if its design row lies in the row space of Z0 (every FE
    # level occurring untreated is necessary, not sufficient: levels can sit in different connected
    # components): the exact rank test of did2s (null space of the untreated design from the Schur
    # complement of its largest fixed effect; no random probe, no iterative solver)
    ok_rank, ident = identified_rows(d.loc[~D], d.loc[D], list(controls), list(fixed_effects), tol=IDENTIFICATION_TOL)
    # every treated row identified: the solver's design below is identified_rows' (the same rows,
    # untreated first, in d's order), so its null space is the one just computed
    null = ident["null_space"] if ok_rank.all() else None
    if not ok_rank.all():
        n_unidentified += int((~ok_rank).sum())
        keep = np.ones(len(d), bool)
        keep[np.flatnonzero(D)[~ok_rank]] = False
        d = d.loc[keep].reset_index(drop=True)
        D = d[treated_col].to_numpy(float) > 0
    Y = d[outcome].to_numpy(float)
    # the design as identified_rows builds it (standardised controls, every FE level; the same
    # column space as [dummies | controls]), untreated rows first, each group in d's order
    _, Z, n0, solve = untreated_first_solver(d, D, list(controls), list(fixed_effects), IDENTIFICATION_TOL, null)
    Z0, Z1 = Z[:n0], Z[n0:]
    b = solve(Z0.T @ Y[~D])  # a least-squares solution; Z0 b and Z1 b are unique
    resid0 = Y[~D] - Z0 @ b
    tau = Y[D] - Z1 @ b
    cl = pd.factorize(d[cluster])[0]
    cells = pd.factorize(pd.Series(list(zip(d.loc[D, cohort], d.loc[D, time]))))[0]

    def estimate(w1: np.ndarray) -> dict[str, Any]:
        u = np.asarray(Z0 @ solve(Z1.T @ w1))  # Z0 (Z0'Z0)^- Z1'w, the minimum-norm u of Z0'u = Z1'w
        v = np.zeros(len(d))
        v[D] = w1
        v[~D] = -u
        v2 = w1**2
        num = np.bincount(cells, weights=v2 * tau)
        den = np.bincount(cells, weights=v2)
        tau_bar = np.divide(num, den, out=np.zeros_like(num), where=den > 0)[cells]
        e = np.zeros(len(d))
        e[~D] = resid0
        e[D] = tau - tau_bar
        s = np.bincount(cl, weights=v * e)
        return {"estimate": float(w1 @ tau), "estimate_linear": float(v @ Y), "se": float(np.sqrt(np.sum(s**2))),
                "n_treated": int((w1 > 0).sum())}

    out = {"att": estimate(np.full(int(D.sum()), 1.0 / D.sum())), "horizons": {}, "n_obs": len(d),
           "n_treated": int(D.sum()), "n_untreated": int((~D).sum()), "n_treated_unidentified_dropped": n_unidentified,
           "n_clusters": int(cl.max() + 1)}
    if event_time is not None:
        K = d.loc[D, event_time].to_numpy(float)
        hs = sorted(int(h) for h in np.unique(K[np.isfinite(K)]) if h >= 0 and (horizons is None or h <= horizons))
        for h in hs:
            sel = (K == h).astype(float)
            out["horizons"][h] = estimate(sel / sel.sum())
    return out


def pretrend_test(spec, data: pd.DataFrame, leads: int) -> dict[str, Any]:
    """BJS Test 1: leads 1{K = -k}, k = 1..leads, on the untreated observations only."""
    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    from keytech.estimation.core.fitting import cluster_columns, demeaner, formula, joint_wald, vcov_arg

    d = data.loc[data[spec.treatment] == 0].copy()
    names = []
    for k in range(1, leads + 1):
        name = f"lead_{k}"
        d[name] = (d["rel_time"] == -k).astype(float)
        names.append(name)
    d, cl = cluster_columns(d, spec)
    rhs = [*names, *spec.controls]
    fit = pf.feols(formula(spec.outcome, rhs, spec.fixed_effects), data=d, vcov=vcov_arg(spec, cl),
                   fixef_rm=spec.fixef_rm, demeaner=demeaner(spec))
    coefs = list(fit._coefnames)
    idx = [coefs.index(n) for n in names if n in coefs]
    b = np.asarray(fit._beta_hat)[idx]
    V = np.asarray(fit._vcov)[np.ix_(idx, idx)]
    G = int(np.min(fit._G)) if spec.vcov.kind == "cluster" else None
    res = joint_wald(b, V, (G - 1) if G else float(fit._N - fit._df_k))
    res["leads"] = {n: float(x) for n, x in zip([names[i] for i in range(len(idx))], b)}
    res["nobs"] = int(fit._N)
    return res


def fit_imputation(spec, df: pd.DataFrame, ctx):
    from keytech.estimation.core import panel as pnl
    from keytech.estimation.core.results import SpecResult, term_from_normal
    from keytech.estimation.core.fitting import fe_desc
    from keytech.estimation.core.panel import prepare_spec_data, sample_description

    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError(f"{spec.id}: needs one cluster variable (vcov: {{cluster: var}})")
    o = spec.options
    data = prepare_spec_data(spec, df)
    res = imputation(data, spec.outcome, spec.treatment, list(spec.fixed_effects), list(spec.controls),
                     spec.vcov.cluster[0], horizons=o.get("horizons"))
    a = res["att"]
    terms = [term_from_normal(spec.treatment, a["estimate"], a["se"], n_treated=a["n_treated"])]
    for h, r in res["horizons"].items():
        terms.append(term_from_normal(pnl.event_term_label(h), r["estimate"], r["se"], n_treated=r["n_treated"]))
    pre = pretrend_test(spec, data, int(o.get("pretrend_leads", 3)))
    diag = {
        "pretrend_test": pre,
        "n_treated": res["n_treated"], "n_untreated": res["n_untreated"],
        "treated_obs_dropped_unidentified_fe": res["n_treated_unidentified_dropped"],
        "n_clusters": res["n_clusters"],
        "variance": "BJS (2024) Theorem 3 conservative, clustered; treated residuals tau - v^2-weighted mean within cohort x year",
        "inference": "normal (z)",
    }
    return SpecResult(
        spec_id=spec.id, terms=terms, nobs=res["n_obs"], adj_r2=None, fixed_effects=fe_desc(spec, ctx),
        vcov=f"BJS conservative, cluster {spec.vcov.cluster[0]}",
        sample=sample_description(spec, res["n_obs"] + res["n_treated_unidentified_dropped"], res["n_obs"],
                                  f"{res['n_treated']} treated / {res['n_untreated']} untreated obs"),
        main_term=spec.treatment, diagnostics=diag,
    )
