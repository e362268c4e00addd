"""Heterogeneity-robust staggered difference-in-differences.

* :func:`dcdh_weights` — de Chaisemartin & D'Haultfoeuille (2020, AER) weights of a two-way FE
  coefficient: by Frisch–Waugh–Lovell ``beta = sum_it e_it y_it / sum_{D=1} e_it`` where ``e`` is the
  residual of the treatment on the fixed effects (and controls); under parallel trends
  ``beta = sum_{D=1} w_it TE_it`` with ``w_it = e_it / sum_{D=1} e``, and negative ``w`` mean that
  some treated cells enter with negative weight.
* :func:`bacon_decomposition` — Goodman-Bacon (2021, J. Econometrics) decomposition of the firm+year
  TWFE coefficient of ``policy`` on a balanced panel into 2x2 DiDs and their weights (Theorem 1);
  timing from ``policy`` itself, units whose treatment switches off excluded (not defined there).
* :func:`fit_sunab` — Sun & Abraham (2021) interaction-weighted event-study/ATT estimator.
* :func:`fit_did2s` — Gardner (2021) two-stage DID (pyfixest ``did2s``), whose pooled estimate
  equals the Borusyak–Jaravel–Spiess imputation estimator.
* :func:`fit_cs` — Callaway & Sant'Anna (2021) group-time ATTs (not-yet-treated controls, no
  covariates), simple and event-time aggregations, city cluster-bootstrap SE.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation import panel as pnl
from keytech.estimation.base import SpecResult, TermEstimate, term_from_normal
from keytech.estimation.estimators import (
    fit_result,
    RunContext,
    _adj_r2,
    _demeaner,
    _complete_cases,
    _fe_desc,
    _fit,
    formula,
    prepare_spec_data,
    relevant_warnings,
    sample_description,
    terms_from_fit,
)
from keytech.estimation.registry import Spec

# --------------------------------------------------------------------------- dCDH weights


def dcdh_weights(
    df: pd.DataFrame,
    outcome: str,
    treatment: str,
    fixed_effects: list[str] | tuple[str, ...],
    controls: list[str] | tuple[str, ...] = (),
    tol: float = 1e-10,
) -> dict[str, Any]:
    """Weights attached to the treated observations by the TWFE coefficient of ``treatment``.

    ``df`` must already be the estimation sample (complete cases, singletons removed). Returns the
    FWL coefficient, the weights of treated rows (summing to one) and summary statistics.
    """
    from keytech.estimation.demeaning import demean

    y = df[outcome].to_numpy(float)
    d = df[treatment].to_numpy(float)
    C = df[list(controls)].to_numpy(float) if controls else np.zeros((len(df), 0))
    M = np.column_stack([y, d, C])
    M, _ = demean(M, pnl.factorize_columns(df, fixed_effects), None, tol=tol)
    yt, dt, Ct = M[:, 0], M[:, 1], M[:, 2:]
    if Ct.shape[1]:
        dt = dt - Ct @ np.linalg.lstsq(Ct, dt, rcond=None)[0]
    treated = d == 1
    eps = dt
    beta = float(eps @ yt / (eps @ d))
    w = eps[treated] / eps[treated].sum()
    n1 = int(treated.sum())
    W = w * n1  # normalised to mean one
    sigma_w = float(np.sqrt(np.mean((W - 1.0) ** 2)))
    neg = w < 0
    return {
        "beta_fwl": beta,
        "weights": w,
        "treated_index": df.index[treated],
        "n_treated": n1,
        "n_negative": int(neg.sum()),
        "share_negative": float(neg.mean()) if n1 else float("nan"),
        "sum_negative": float(w[neg].sum()),
        "sum_positive": float(w[~neg].sum()),
        "sigma_w": sigma_w,
        "sigma_fe": float(abs(beta) / sigma_w) if sigma_w > 0 else float("inf"),
    }


def fit_dcdh(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    fit, msgs, _ = _fit("ols", spec, data, rhs)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = pnl.estimation_sample(data, [spec.outcome, *rhs], spec.fixed_effects, cl, spec.fixef_rm)
    kept_controls = [c for c in [*spec.extra_regressors, *spec.controls] if c in fit._coefnames]
    res = dcdh_weights(sample, spec.outcome, spec.treatment, spec.fixed_effects, kept_controls, tol=spec.fixef_tol)
    b_fit = float(fit.coef()[spec.treatment])
    # weights by cohort x relative time (sum of weights, number of negative cells)
    tr = sample.loc[res["treated_index"], ["first_treated_year", "rel_time"]].assign(w=res["weights"])
    by_cell = (
        tr.groupby(["first_treated_year", "rel_time"])["w"]
        .agg(["sum", "count", lambda s: int((s < 0).sum())])
        .reset_index()
        .rename(columns={"sum": "weight", "count": "n", "<lambda_0>": "n_negative"})
    )
    diag = {
        k: v for k, v in res.items() if k not in ("weights", "treated_index")
    } | {
        "beta_twfe_pyfixest": b_fit,
        "fwl_check_abs_diff": abs(res["beta_fwl"] - b_fit),
        "weights_by_cohort_period": by_cell.to_dict(orient="records"),
        "note": "weights of the column (5) TWFE coefficient on treated obs; sigma_fe = |beta|/sd(w) "
        "is the smallest SD of treatment effects compatible with a true ATT of zero",
    }
    if msgs:
        diag["warnings"] = msgs
    terms = terms_from_fit(fit, names=[spec.treatment])
    terms += [
        TermEstimate("dcdh:share_negative_weights", res["share_negative"]),
        TermEstimate("dcdh:sum_negative_weights", res["sum_negative"]),
        TermEstimate("dcdh:sigma_fe", res["sigma_fe"]),
    ]
    return fit_result(spec, ctx, fit, terms, _complete_cases(spec, data, rhs), diag)


# --------------------------------------------------------------------------- Goodman-Bacon


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


def bacon_decomposition(
    df: pd.DataFrame,
    outcome: str,
    treatment: str = "policy",
    unit: str = "stkcd",
    time: str = "year",
) -> dict[str, Any]:
    """Goodman-Bacon decomposition of ``y ~ treatment | unit + time`` on a balanced panel.

    The timing groups come from ``treatment`` itself (a unit's first period with treatment 1; never
    1 = never treated), so the decomposed coefficient is the one of the same regression on the same
    rows. The decomposition needs an absorbing treatment (0…0 1…1 within each unit): a unit whose
    treatment switches off raises ``ValueError`` (callers drop them first, see
    :func:`absorbing_units`). Units treated in every period ("always treated") are their own group
    with D̄ = 1 and act like never treated in comparisons (controls whose treatment does not change).
    """
    years = np.sort(df[time].unique())
    T = len(years)
    counts = df.groupby(unit)[time].nunique()
    if (counts != T).any():
        raise ValueError("bacon_decomposition needs a balanced panel")
    ok = absorbing_units(df, treatment, unit, time)
    if not ok.all():
        raise ValueError(f"bacon_decomposition needs an absorbing {treatment}; {int((~ok).sum())} unit(s) switch off "
                         f"(e.g. {list(ok.index[~ok][:3])})")
    on = df.loc[df[treatment].astype(float) == 1]
    group = on.groupby(unit)[time].min().reindex(counts.index).astype(float).fillna(np.inf)
    y = df[outcome].to_numpy(float)
    g_obs = df[unit].map(group).to_numpy(float)
    t_obs = df[time].to_numpy()
    D = (t_obs >= g_obs).astype(float)
    # double demeaning (balanced) -> FWL residual of D on unit and time FE
    dfD = pd.DataFrame({"u": df[unit].to_numpy(), "t": t_obs, "D": D, "y": y})
    Dt = dfD["D"] - dfD.groupby("u")["D"].transform("mean") - dfD.groupby("t")["D"].transform("mean") + D.mean()
    yt = dfD["y"] - dfD.groupby("u")["y"].transform("mean") - dfD.groupby("t")["y"].transform("mean") + y.mean()
    VD = float(np.mean(Dt**2))
    beta_twfe = float((Dt @ yt) / (Dt @ Dt))

    units_by_group = group.groupby(group).size()
    N = units_by_group.sum()
    share = (units_by_group / N).to_dict()
    dbar = {g: float(np.mean(years >= g)) for g in units_by_group.index}  # inf -> 0, <=first -> 1
    ybar = pd.DataFrame({"g": g_obs, "t": t_obs, "y": y}).groupby(["g", "t"])["y"].mean()

    def mean_y(g: float, mask: np.ndarray) -> float:
        return float(ybar.loc[g].loc[years[mask]].mean())

    comps: list[dict[str, Any]] = []
    timing = sorted(g for g in units_by_group.index if 0 < dbar[g] < 1)
    untreated_like = [g for g in units_by_group.index if dbar[g] in (0.0, 1.0)]
    for k in timing:
        pre, post = years < k, years >= k
        for u in untreated_like:
            nk, nu = share[k], share[u]
            nku = nk / (nk + nu)
            s = (nk + nu) ** 2 * nku * (1 - nku) * dbar[k] * (1 - dbar[k]) / VD
            est = (mean_y(k, post) - mean_y(k, pre)) - (mean_y(u, post) - mean_y(u, pre))
            kind = "treated_vs_never" if dbar[u] == 0 else "treated_vs_always"
            comps.append({"type": kind, "treated": k, "control": u, "estimate": est, "weight": s})
    for i, k in enumerate(timing):  # k earlier, l later
        for l in timing[i + 1 :]:
            nk, nl = share[k], share[l]
            nkl = nk / (nk + nl)
            Dk, Dl = dbar[k], dbar[l]
            pre, mid, post = years < k, (years >= k) & (years < l), years >= l
            s_early = ((nk + nl) * (1 - Dl)) ** 2 * nkl * (1 - nkl) * ((Dk - Dl) / (1 - Dl)) * ((1 - Dk) / (1 - Dl)) / VD
            est_early = (mean_y(k, mid) - mean_y(k, pre)) - (mean_y(l, mid) - mean_y(l, pre))
            comps.append({"type": "early_vs_later", "treated": k, "control": l, "estimate": est_early, "weight": s_early})
            s_late = ((nk + nl) * Dk) ** 2 * nkl * (1 - nkl) * (Dl / Dk) * ((Dk - Dl) / Dk) / VD
            est_late = (mean_y(l, post) - mean_y(l, mid)) - (mean_y(k, post) - mean_y(k, mid))
            comps.append({"type": "later_vs_earlier", "treated": l, "control": k, "estimate": est_late, "weight": s_late})
    table = pd.DataFrame(comps)
    summary = {}
    if len(table):
        for kind, g in table.groupby("type"):
            wsum = g["weight"].sum()
            summary[kind] = {"weight": float(wsum), "estimate": float((g["weight"] * g["estimate"]).sum() / wsum) if wsum else float("nan")}
    decomposed = float((table["weight"] * table["estimate"]).sum()) if len(table) else float("nan")
    return {
        "beta_twfe": beta_twfe,
        "beta_decomposed": decomposed,
        "weight_total": float(table["weight"].sum()) if len(table) else 0.0,
        "by_type": summary,
        "comparisons": table,
        "n_units": int(N),
        "n_periods": int(T),
        "VD": VD,
    }


def fit_bacon(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """Goodman-Bacon decomposition of the firm+year TWFE coefficient of ``spec.treatment``.

    Sample (the same for the decomposition and the reported TWFE term): complete cases of the
    outcome and treatment, the balanced sub-panel (firms observed in every year), minus firms whose
    treatment is not absorbing (movers whose ``policy`` switches off when they leave a pilot city;
    the decomposition is not defined for them). Timing groups come from ``policy`` itself, so a
    mover entering a pilot city is treated from its first ``policy = 1`` year, as in TWFE."""
    data = prepare_spec_data(spec, df).dropna(subset=[spec.outcome, spec.treatment])
    bal = balanced_subpanel(data, spec.outcome)
    absorbing = absorbing_units(bal, spec.treatment)
    n_switch = int((~absorbing).sum())
    bal = bal[bal["stkcd"].map(absorbing)]
    res = bacon_decomposition(bal, spec.outcome, spec.treatment)
    # TWFE on the same sample with the spec's variance, for the reported SE
    fit, msgs, _ = _fit("ols", spec, bal, [spec.treatment], fe=("stkcd", "year"))
    terms = terms_from_fit(fit, names=[spec.treatment])
    for kind, v in res["by_type"].items():
        terms.append(TermEstimate(f"bacon:{kind}", v["estimate"], diagnostics={"weight": v["weight"]}))
    comps = res.pop("comparisons")
    b_fit = float(fit.coef()[spec.treatment])
    diag = res | {
        "comparisons": comps.to_dict(orient="records"),
        "beta_twfe_pyfixest": b_fit,
        "sum_check_abs_diff": abs(res["beta_decomposed"] - b_fit),
        "firms_dropped_non_absorbing": n_switch,
        "rows_used_by_pyfixest": int(fit._N),
        "note": f"balanced sub-panel, firm+year FE, no controls (the decomposition is exact only there); timing "
        f"from {spec.treatment} itself; {n_switch} firm(s) whose {spec.treatment} switches off (movers leaving a "
        "pilot city) dropped from both the decomposition and the reported TWFE term",
    }
    if int(fit._N) != len(bal):
        diag["warning_sample"] = "pyfixest dropped rows (singletons) from the balanced sub-panel; the sum check is on different samples"
    if msgs:
        diag["warnings"] = msgs
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=int(fit._N),
        adj_r2=_adj_r2(fit),
        fixed_effects=_fe_desc(spec, ctx, ("stkcd", "year")),
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, len(bal), int(fit._N), f"balanced sub-panel of {res['n_units']} firms x "
                                  f"{res['n_periods']} years, {n_switch} non-absorbing firm(s) dropped"),
        main_term=spec.treatment,
        diagnostics=diag,
    )


# --------------------------------------------------------------------------- Sun & Abraham


def sunab_dummies(data: pd.DataFrame, kmin: int, kmax: int, base: int) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """Cohort x binned relative-time dummies (never treated: all zero)."""
    cohort = data["first_treated_year"]
    rel = np.clip(data["rel_time"], kmin, kmax)
    cols: dict[str, np.ndarray] = {}
    cells: dict[str, tuple[int, int]] = {}
    for c in sorted(cohort.dropna().unique()):
        for k in range(kmin, kmax + 1):
            if k == base:
                continue
            v = ((cohort == c) & (rel == k)).to_numpy(float)
            if v.sum() == 0:
                continue
            name = f"sa_c{int(c)}_{pnl.event_dummy_name(k)}"
            cols[name] = v
            cells[name] = (int(c), k)
    return pd.DataFrame(cols, index=data.index), cells


def fit_sunab(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    o = spec.options
    kmin, kmax, base = int(o.get("k_min", -5)), int(o.get("k_max", 3)), int(o.get("base", -1))
    data = prepare_spec_data(spec, df)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    data = data.dropna(subset=[spec.outcome, *spec.extra_regressors, *spec.controls, *spec.fixed_effects, *cl])
    Dm, cells = sunab_dummies(data, kmin, kmax, base)
    data = pd.concat([data, Dm], axis=1)
    rhs = [*Dm.columns, *spec.extra_regressors, *spec.controls]
    fit, msgs, _ = _fit("ols", spec, data, rhs)
    names = list(fit._coefnames)
    b = pd.Series(np.asarray(fit._beta_hat), index=names)
    V = pd.DataFrame(np.asarray(fit._vcov), index=names, columns=names)
    G = int(np.min(fit._G)) if spec.vcov.kind == "cluster" else None
    dfree = (G - 1) if G else float(fit._N - fit._df_k)
    # cell sizes on the estimation sample (fit._data: rows pyfixest used, singletons removed)
    used = fit._data
    n_cell = {name: float(used[name].sum()) for name in cells}
    present = [n for n in cells if n in b.index]
    dropped = [n for n in cells if n not in b.index]

    def aggregate(sel: list[str]) -> tuple[float, float] | None:
        sel = [n for n in sel if n in present and n_cell[n] > 0]
        if not sel:
            return None
        w = np.array([n_cell[n] for n in sel])
        w = w / w.sum()
        est = float(w @ b[sel].to_numpy())
        se = float(np.sqrt(w @ V.loc[sel, sel].to_numpy() @ w))
        return est, se

    terms: list[TermEstimate] = []
    att = aggregate([n for n, (c, k) in cells.items() if k >= 0])
    if att is None:
        raise ValueError("no post-treatment cohort x period cells in the sample")
    terms.append(term_from_normal("att", att[0], att[1], df=dfree))
    per_k = {}
    for k in range(kmin, kmax + 1):
        if k == base:
            terms.append(TermEstimate(pnl.event_term_label(k), 0.0, diagnostics={"reference_period": True}))
            continue
        agg = aggregate([n for n, (c, kk) in cells.items() if kk == k])
        if agg is not None:
            terms.append(term_from_normal(pnl.event_term_label(k), agg[0], agg[1], df=dfree))
            per_k[k] = agg[0]
    diag: dict[str, Any] = {
        "cells": {n: {"cohort": c, "k": k, "n": n_cell[n], "coef": float(b[n]) if n in b.index else None} for n, (c, k) in cells.items()},
        "weights": "per period: cohort shares of the period's treated observations; ATT: post cells weighted by their number of observations",
        "control_group": "never treated (and not-yet-binned leads via the cohort x period dummies)",
        "dropped_cells_collinear": dropped,
        "formula": formula(spec.outcome, ["<cohort x rel_time dummies>", *spec.extra_regressors, *spec.controls], spec.fixed_effects),
    }
    if msgs:
        diag["warnings"] = msgs
    if o.get("honest_did"):  # Rambachan & Roth (2023) on the per-period aggregates; rows to results.honest_did
        from keytech.estimation.honest_did import sensitivity_for_spec

        wk = {}  # k -> aggregation weights over the cohort x period coefficients
        for k in per_k:
            sel = [n for n, (c, kk) in cells.items() if kk == k and n in present and n_cell[n] > 0]
            w = np.array([n_cell[n] for n in sel])
            wk[k] = pd.Series(w / w.sum(), index=sel)
        cov = {(k, j): float(wk[k].to_numpy() @ V.loc[wk[k].index, wk[j].index].to_numpy() @ wk[j].to_numpy())
               for k in wk for j in wk}
        diag["honest_did"] = sensitivity_for_spec(per_k, cov, base, o["honest_did"])
    return fit_result(spec, ctx, fit, terms, len(data), diag, main_term="att")


# --------------------------------------------------------------------------- did2s / BJS


@contextmanager
def _did2s_demeaner(spec: Spec):
    """Make pyfixest.did2s fit its stages with the spec's demeaner.

    ``pf.did2s`` (0.60) takes no demeaner argument and its first stage uses pyfixest's default
    alternating projections, which did not converge within 10,000 iterations on the column (5) FE
    of the paper-scale synthetic warehouse. For the duration of the call, the ``feols`` that the
    did2s module calls gets the spec's demeaner (LSMR ``within``) as a default; the GMM variance
    (sparse solves, no demeaning) is unchanged.
    """
    import importlib

    # (``import pyfixest.did.did2s as m`` would give the function that pyfixest.did re-exports)
    did2s_module = importlib.import_module("pyfixest.did.did2s")

    original = did2s_module.feols
    did2s_module.feols = functools.partial(original, demeaner=_demeaner(spec))
    try:
        yield
    finally:
        did2s_module.feols = original



def identified_rows(
    untreated: pd.DataFrame,
    treated: pd.DataFrame,
    covariates: list[str] | tuple[str, ...],
    fixed_effects: list[str] | tuple[str, ...],
    tol: float = 1e-8,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which treated rows have an estimable counterfactual ``x'b + sum of FE`` given the untreated rows.

    A linear function ``z'theta`` of the first-stage parameters (covariates and every FE level,
    one dummy per level) is estimable from the untreated design Z exactly when z lies in the row
    space of Z, i.e. is orthogonal to the null space of Z'Z. That null space is computed once
    (symmetric eigendecomposition of the dense Z'Z, covariates standardised; eigenvalues below
    ``tol`` × the largest count as zero), and each treated row is kept when
    max |N'z| <= sqrt(tol) × (1 + ||z||). Checking only that each FE level occurs among untreated
    rows is necessary but not sufficient (e.g. a firm observed untreated only in years that are
    disconnected from the treated year through the other FE dimensions). Deterministic: no
    solver, no random start. Cost: O(p³) for p = covariates + FE levels (a few seconds for
    p ≈ 5,000).
    Returns (mask over ``treated`` rows, info with ``levels_present`` and ``null_dim``).
    """
    import scipy.sparse as sp

    covariates, fixed_effects = list(covariates), list(fixed_effects)
    both = pd.concat([untreated, treated])
    n_u = len(untreated)
    blocks = []
    if covariates:
        X = both[covariates].to_numpy(float)
        mu, sd = X[:n_u].mean(axis=0), X[:n_u].std(axis=0)
        blocks.append(sp.csr_matrix((X - mu) / np.where(sd > 0, sd, 1.0)))
    present = np.ones(len(treated), dtype=bool)
    for f in fixed_effects:
        codes, uniq = pd.factorize(both[f])
        blocks.append(sp.csr_matrix((np.ones(len(both)), (np.arange(len(both)), codes)), shape=(len(both), len(uniq))))
        present &= np.isin(codes[n_u:], codes[:n_u])
    Z = sp.hstack(blocks).tocsr()
    Zu, Zt = Z[:n_u], Z[n_u:]
    A = (Zu.T @ Zu).toarray()
    vals, vecs = np.linalg.eigh(A)
    null = vecs[:, vals <= tol * max(float(vals.max()), 1.0)]
    if null.shape[1] == 0:
        ok = np.ones(len(treated), dtype=bool)
    else:
        proj = np.asarray(Zt @ null)
        znorm = np.sqrt(np.asarray(Zt.multiply(Zt).sum(axis=1)).ravel())
        ok = np.abs(proj).max(axis=1) <= np.sqrt(tol) * (1.0 + znorm)
    return ok, {"levels_present": present, "null_dim": int(null.shape[1]), "tol": tol}


def fit_did2s(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    import warnings

    import pyfixest as pf

    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError("did2s needs one cluster variable")
    data = prepare_spec_data(spec, df)
    fe = list(spec.fixed_effects)
    if not fe:
        raise ValueError("did2s needs fixed effects in the first stage")
    cl = spec.vcov.cluster[0]
    covs = [*spec.extra_regressors, *spec.controls]
    data = data.dropna(subset=[spec.outcome, spec.treatment, *covs, *fe, cl])
    n_complete = len(data)
    # first stage is fitted on untreated rows: drop their singletons, then keep only the treated
    # rows whose counterfactual x'b + FE is estimable from the untreated design (rank test)
    untreated = data[data[spec.treatment] == 0]
    untreated = pnl.estimation_sample(untreated, [spec.outcome, *covs], fe, (), spec.fixef_rm)
    treated = data[data[spec.treatment] == 1]
    ok, ident = identified_rows(untreated, treated, covs, fe)
    n_unidentified = int((~ok).sum())
    n_level_check = int((~ident["levels_present"]).sum())
    sample = pd.concat([untreated, treated.loc[ok]]).sort_index(kind="stable")
    sample = sample.assign(**{spec.treatment: sample[spec.treatment].astype(int)})
    first = f"~ {' + '.join(covs) if covs else '0'} | {' + '.join(fe)}"
    with warnings.catch_warnings(record=True) as caught, _did2s_demeaner(spec):
        warnings.simplefilter("always")
        fit = pf.did2s(sample, yname=spec.outcome, first_stage=first, second_stage=f"~ {spec.treatment}", treatment=spec.treatment, cluster=cl)
    msgs = relevant_warnings(caught)
    tidy = fit.tidy()
    row = tidy.loc[[i for i in tidy.index if spec.treatment in str(i)][0]]
    G = int(np.min(np.atleast_1d(fit._G)))
    term = TermEstimate(
        "att",
        float(row["Estimate"]),
        float(row["Std. Error"]),
        float(row["t value"]),
        float(row["Pr(>|t|)"]),
        float(row["2.5%"]),
        float(row["97.5%"]),
    )
    diag: dict[str, Any] = {
        "first_stage": f"{spec.outcome} {first} (untreated observations only)",
        "second_stage": f"residualised {spec.outcome} ~ {spec.treatment}",
        "treated_obs_dropped_unidentified": n_unidentified,
        "treated_obs_dropped_fe_level_absent": n_level_check,
        "identification": "a treated row is kept when its design row (covariates + FE dummies) lies in the row "
        "space of the untreated first-stage design (rank test, null space of Z'Z, "
        f"rel. tol {ident['tol']:g}); others have no estimable Y(0) and are dropped "
        f"({n_unidentified}, of which {n_level_check} have an FE level absent among untreated rows)",
        "untreated_design_rank_deficiency": ident["null_dim"],
        "untreated_obs": len(untreated),
        "treated_obs": int(ok.sum()),
        "n_clusters": G,
        "vcov": "Gardner (2021) GMM-corrected, clustered",
        "demeaner": f"{spec.demeaner} (tol {spec.fixef_tol}) in both stages",
    }
    if msgs:
        diag["warnings"] = msgs
    return SpecResult(
        spec_id=spec.id,
        terms=[term],
        nobs=len(sample),
        adj_r2=None,
        fixed_effects=_fe_desc(spec, ctx) + " (first stage)",
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, n_complete, len(sample)),
        main_term="att",
        diagnostics=diag,
    )


# --------------------------------------------------------------------------- Callaway & Sant'Anna


def _cs_prepare(
    df: pd.DataFrame, outcome: str, cohort: str, unit: str, time: str, cluster: str, treatment: str | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, list[Any], dict[str, int]]:
    """Wide outcome matrix (units x years), cohort and cluster code per unit, for :func:`cs_group_time`.

    Cohort: with ``treatment`` (the estimators pass ``policy``), a unit's first period with
    treatment 1 — the timing rule of every estimator (a firm-year is treated when its current city
    is a pilot city; unit-level estimators take the first such year); units whose treatment switches
    off (movers leaving a pilot city) are dropped and counted. Without it, the max of ``cohort``
    over the unit's rows (the earlier rule, kept for direct calls)."""
    sub = df.dropna(subset=[outcome, cluster])
    if sub.duplicated([unit, time]).any():
        raise ValueError(f"cs_group_time needs one row per ({unit}, {time})")
    years = np.sort(sub[time].unique())
    n_switch = 0
    if treatment is not None:
        ok = absorbing_units(df.dropna(subset=[treatment]), treatment, unit, time)
        n_switch = int((~ok).sum())
        sub = sub[sub[unit].map(ok).fillna(False).astype(bool)]
        on = df.loc[df[treatment].astype(float) == 1]
        G = on.groupby(unit)[time].min().reindex(sub[unit].unique()).astype(float).fillna(0.0)
    else:
        G = pd.to_numeric(sub.groupby(unit)[cohort].max(), errors="coerce").astype(float).fillna(0.0)
    info = {
        "units_cohort_after_window_as_never": int((G > years[-1]).sum()),
        "units_always_treated_dropped": int(((G > 0) & (G <= years[0])).sum()),
        "units_non_absorbing_dropped": n_switch,
    }
    G = G.where(G <= years[-1], 0.0)  # first treated after the last year: never treated in the window
    G = G[(G == 0) | (G > years[0])]  # treated in the first year: no pre-period, dropped (as did)
    sub = sub[sub[unit].isin(G.index)]
    Y = sub.pivot(index=unit, columns=time, values=outcome).reindex(index=G.index, columns=years)
    cl = sub.groupby(unit)[cluster].first().reindex(G.index)  # a firm's city: its first observed one
    codes, uniques = pd.factorize(cl)
    info["n_units"] = int(len(G))
    info["n_obs"] = int(len(sub))
    info["n_clusters"] = int(len(uniques))
    return Y, G.to_numpy(float), codes, years, list(uniques), info


def cs_group_time(
    df: pd.DataFrame,
    outcome: str,
    cohort: str = "first_treated_year",
    unit: str = "stkcd",
    time: str = "year",
    cluster: str = "city_code",
    treatment: str | None = None,
) -> dict[str, Any]:
    """Callaway & Sant'Anna (2021) unconditional group-time ATTs with not-yet-treated controls.

    ``G`` is a unit's first treated period (``cohort``; NaN/0 = never treated; first treated after
    the last period = never treated in the window; treated already in the first period = dropped).
    For each cohort ``g`` and period ``t`` (from the second period on) with base period ``b``
    (``g - 1`` for ``t >= g``, the universal base of post-periods; the previous period for
    ``t < g``, the "varying" base of pre-periods -- the did package's default)::

        ATT(g, t) = mean(Y_t - Y_b | G = g) - mean(Y_t - Y_b | C),
        C = {G = 0} or {G > max(t, b), G != g}      (did's not-yet-treated rule; b < t, so G > t)

    where both means are over units observed (outcome non-missing) in both ``t`` and ``b``. Cells
    with no treated or no control unit are skipped. Returns the cell table and, per cell, the
    cluster-level sums the bootstrap re-weights (``ST``/``NT`` treated sum of ΔY / count, ``SC``/``NC``
    controls, ``NG`` cohort size) as (clusters x cells) arrays.
    """
    Y, G, codes, years, clusters, info = _cs_prepare(df, outcome, cohort, unit, time, cluster, treatment)
    C = len(clusters)
    Yv = Y.to_numpy(float)
    col = {y: j for j, y in enumerate(years)}
    ng_by_cohort = {g: np.bincount(codes[G == g], minlength=C).astype(float) for g in np.unique(G[G > 0])}
    cells: list[dict[str, Any]] = []
    ST, NT, SC, NC, NG = [], [], [], [], []
    for g in sorted(ng_by_cohort):
        for j in range(1, len(years)):
            t = years[j]
            b = g - 1 if t >= g else years[j - 1]
            if b not in col:
                continue
            dy = Yv[:, j] - Yv[:, col[b]]
            obs = np.isfinite(dy)
            tr = obs & (G == g)
            ct = obs & ((G == 0) | ((G > max(t, b)) & (G != g)))
            if not tr.any() or not ct.any():
                continue
            st = np.bincount(codes[tr], weights=dy[tr], minlength=C)
            nt = np.bincount(codes[tr], minlength=C).astype(float)
            sc = np.bincount(codes[ct], weights=dy[ct], minlength=C)
            nc = np.bincount(codes[ct], minlength=C).astype(float)
            att = float(dy[tr].mean() - dy[ct].mean())
            cells.append({
                "g": int(g), "t": int(t), "e": int(t - g), "base": int(b), "post": bool(t >= g), "att": att,
                "n_treated": int(tr.sum()), "n_control": int(ct.sum()), "cohort_size": int((G == g).sum()),
            })
            for acc, v in ((ST, st), (NT, nt), (SC, sc), (NC, nc), (NG, ng_by_cohort[g])):
                acc.append(v)

    def stack(a: list[np.ndarray]) -> np.ndarray:
        return np.column_stack(a) if a else np.zeros((C, 0))

    return {
        "cells": pd.DataFrame(cells, columns=["g", "t", "e", "base", "post", "att", "n_treated", "n_control", "cohort_size"]),
        "ST": stack(ST), "NT": stack(NT), "SC": stack(SC), "NC": stack(NC), "NG": stack(NG),
        "clusters": clusters, "years": [int(y) for y in years], **info,
    }


def _cs_aggregate(att: np.ndarray, w: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Weighted mean of the selected cells along the last axis; NaN cells (empty in a bootstrap
    draw) are left out and the remaining weights renormalised."""
    a = np.where(sel, att, np.nan)
    ok = np.isfinite(a)
    ww = np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, a, 0.0) * ww).sum(axis=-1) / ww.sum(axis=-1)


def cs_estimate(gt: dict[str, Any], draws: int, seed: int) -> dict[str, Any]:
    """Aggregations of :func:`cs_group_time` and their cluster-bootstrap standard errors.

    * simple: post-treatment cells (t >= g) averaged with weights equal to the cohort size
      (CS's "simple" aggregation: each treated cohort-period counts as often as the cohort is large);
    * dynamic: for each event time e = t - g, the cells with that e averaged with cohort-size weights.

    Bootstrap: ``draws`` nonparametric resamples of clusters (cities) with replacement
    (``numpy.random.default_rng(seed)``); each draw recomputes every ATT(g, t) and aggregate on the
    resampled clusters (a resampled city enters as many times as it is drawn).
    """
    cells = gt["cells"]
    K = len(cells)
    if K == 0 or not cells["post"].any():
        raise ValueError("no post-treatment cohort x period cells with treated and control firms")
    C = gt["ST"].shape[0]
    rng = np.random.default_rng(seed)
    M = rng.multinomial(C, np.full(C, 1.0 / C), size=draws).astype(float)  # (B, C) city multiplicities
    with np.errstate(invalid="ignore", divide="ignore"):
        att_b = M @ gt["ST"] / (M @ gt["NT"]) - M @ gt["SC"] / (M @ gt["NC"])
    w_b = M @ gt["NG"]
    att = cells["att"].to_numpy(float)
    w = gt["NG"].sum(axis=0)
    e = cells["e"].to_numpy()
    post = cells["post"].to_numpy(bool)

    def agg(sel: np.ndarray) -> dict[str, Any]:
        est = float(_cs_aggregate(att, w, sel))
        boot = _cs_aggregate(att_b, w_b, sel[None, :])
        ok = np.isfinite(boot)
        se = float(np.std(boot[ok], ddof=1)) if ok.sum() > 1 else float("nan")
        return {"estimate": est, "se": se, "n_cells": int(sel.sum()), "n_draws_used": int(ok.sum())}

    with np.errstate(invalid="ignore"):
        cell_se = np.nanstd(att_b, axis=0, ddof=1)
    return {
        "simple": agg(post),
        "dynamic": {int(k): agg(e == k) for k in np.unique(e)},
        "cell_se": cell_se,
    }


def fit_cs(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """Callaway & Sant'Anna (2021, J. Econometrics 225(2)) staggered DiD, unconditional.

    Design (spec ``robust_staggered_cs``):

    * group-time ATT(g, t) of :func:`cs_group_time` on the firm panel (unit ``stkcd``, time
      ``year``, cohort = the firm's first year with ``policy`` = 1 — the same timing as TWFE, Sun &
      Abraham and the event study, whose rows carry ``policy`` and ``rel_time`` of the firm's current
      city; firms whose policy switches off (movers leaving a pilot city) are dropped and counted;
      a firm's cluster is the city of its first observed row), outcome ``spec.outcome``, no covariates, not-yet-treated and
      never-treated firms as controls (did's rule: G = 0 or G > max(t, base), G != g); "varying"
      base period (t - 1) for pre-periods and the universal g - 1 for post-periods;
    * unbalanced panel: each 2x2 comparison uses the firms observed in both of its periods
      (the did package instead balances the whole panel or falls back to repeated cross-sections);
    * main term ``policy``: CS's "simple" aggregation, post cells weighted by cohort size
      (number of firms of the cohort in the sample);
    * ``rel_time=e`` terms: the dynamic (event-time) aggregation, cohort-size weights within e;
      number of cells per aggregate in each term's diagnostics;
    * standard errors: cluster bootstrap over the spec's cluster variable (city): ``options.bootstrap``
      resamples of cities with replacement (default 199), seeded with the run's ``RunContext.seed``,
      so a run is reproducible; SE = SD of the bootstrap draws, p-values and 95% CIs from the normal
      approximation with that SE.
    """
    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError("the Callaway-Sant'Anna bootstrap needs one cluster variable")
    cl = spec.vcov.cluster[0]
    draws = int(spec.options.get("bootstrap", 199))
    data = prepare_spec_data(spec, df)
    gt = cs_group_time(data, spec.outcome, cluster=cl, treatment=spec.treatment)
    res = cs_estimate(gt, draws, ctx.seed)
    s = res["simple"]
    terms = [term_from_normal(spec.treatment, s["estimate"], s["se"], n_cells=s["n_cells"], n_draws_used=s["n_draws_used"])]
    for e, a in res["dynamic"].items():
        terms.append(term_from_normal(pnl.event_term_label(e), a["estimate"], a["se"], n_cells=a["n_cells"], n_draws_used=a["n_draws_used"]))
    cells = gt["cells"].assign(se_boot=res["cell_se"])
    diag: dict[str, Any] = {
        "cells": cells.to_dict(orient="records"),
        "n_cells": int(len(cells)),
        "n_cells_post": int(cells["post"].sum()),
        "n_cells_by_event_time": {str(e): a["n_cells"] for e, a in res["dynamic"].items()},
        "cohorts": {str(int(g)): int(n) for g, n in cells.groupby("g")["cohort_size"].first().items()},
        "control_group": "not yet treated + never treated: G = 0 or G > max(t, base), G != g",
        "base_period": "varying (t-1) for pre-periods, universal (g-1) for post-periods",
        "aggregation": "simple: post cells weighted by cohort size; dynamic: cells with e = t - g weighted by cohort size",
        "panel": "unbalanced: each 2x2 uses firms observed in both periods",
        "bootstrap": {"kind": f"nonparametric cluster bootstrap over {cl}", "draws": draws, "seed": ctx.seed,
                      "se": "SD of draws; p-value and CI from the normal approximation"},
        "n_clusters": gt["n_clusters"],
        "n_units": gt["n_units"],
        "units_always_treated_dropped": gt["units_always_treated_dropped"],
        "units_cohort_after_window_as_never": gt["units_cohort_after_window_as_never"],
        "units_non_absorbing_dropped": gt["units_non_absorbing_dropped"],
        "timing_rule": f"cohort = the firm's first year with {spec.treatment} = 1 (as TWFE/SA/event study, which use the "
        f"firm-year's own {spec.treatment}/rel_time); firms whose {spec.treatment} switches off dropped; cluster = the "
        "city of the firm's first observed row",
    }
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=gt["n_obs"],
        adj_r2=None,
        fixed_effects="Firm + Year (implicit in the 2x2 DiDs)",
        vcov=f"cluster bootstrap({cl}), B={draws}",
        sample=sample_description(
            spec, gt["n_obs"], gt["n_obs"],
            f"{gt['n_units']} firms ({gt['units_always_treated_dropped']} always-treated dropped), {len(cells)} ATT(g,t) cells",
        ),
        main_term=spec.treatment,
        diagnostics=diag,
    )
