"""Instrumental variables for Table 4: first stage and 2SLS with high-dimensional FE (pyfixest),
plus the Kleibergen–Paap (2006) rk statistics, which pyfixest does not report.

Kleibergen–Paap with one endogenous regressor x and L excluded instruments Z, after partialling
the fixed effects and the exogenous controls out of x and Z (Frisch–Waugh–Lovell; tilde = residual):

* rk **Wald** statistic (weak identification): ``W = π̂' V̂(π̂)⁻¹ π̂`` with π̂ the first-stage
  coefficients and V̂ the cluster-robust (CRV1) covariance; reported as the **rk Wald F** = W / L.
  The CRV1 small-sample factor is pyfixest's, ``G/(G−1) · (N−1)/(N−k)`` with k the first stage's
  parameter count (``df_k``), so with L = 1 the rk Wald F equals the squared cluster-robust t of the
  instrument in the first stage (tested). With one endogenous regressor the rank-0 null of the KP
  test is π = 0 and the KP normalisation matrices cancel, so this *is* the KP rk Wald statistic.
* rk **LM** statistic (under-identification): the score form under the null π = 0, where the
  first-stage residual is x̃ itself: ``LM = s' S⁻¹ s``, ``s = Σ_i z̃_i x̃_i``,
  ``S = Σ_g (Σ_{i∈g} z̃_i x̃_i)(Σ_{i∈g} z̃_i x̃_i)'``; χ²(L − m + 1) = χ²(L) p-value. No small-sample
  factor (as ranktest/ivreg2). Tested against the general vec/Kronecker KP formula.
* Stock–Yogo (2005) critical values for the rk Wald F (one endogenous regressor): 15% maximal IV
  size 8.96 with one instrument (the paper's {8.96}); 10% size 16.38.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, cluster_columns, demeaner, fit_result, formula, relevant_warnings, terms_from_fit
from keytech.estimation.core.panel import prepare_spec_data
from keytech.estimation.core.results import SpecResult, add_common_diagnostics
from keytech.estimation.orchestration.registry import Spec

STOCK_YOGO_15 = {1: 8.96, 2: 11.59, 3: 12.83}  # one endogenous regressor, L instruments (15% size)
STOCK_YOGO_10 = {1: 16.38, 2: 19.93, 3: 22.30}


def cluster_scores(Z: np.ndarray, u: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Σ_g (Z_g' u_g)(Z_g' u_g)' for an n×L matrix Z and residual vector u."""
    codes = pd.factorize(groups)[0]
    G = codes.max() + 1
    sums = np.zeros((G, Z.shape[1]))
    np.add.at(sums, codes, Z * u[:, None])
    return sums.T @ sums


def kp_rk_statistics(x: np.ndarray, Z: np.ndarray, groups: np.ndarray, df_k: int | None = None) -> dict[str, Any]:
    """KP rk LM and Wald statistics for one endogenous regressor ``x`` (n) and instruments ``Z``
    (n×L), both already partialled of FE and exogenous controls. ``df_k``: parameter count for the
    CRV1 factor (default L)."""
    x = np.asarray(x, float).ravel()
    Z = np.asarray(Z, float).reshape(len(x), -1)
    n, L = Z.shape
    G = int(pd.Series(groups).nunique())
    ZZ = Z.T @ Z
    pi = np.linalg.solve(ZZ, Z.T @ x)
    # LM: score under pi = 0
    s = Z.T @ x
    S0 = cluster_scores(Z, x, groups)
    lm = float(s @ np.linalg.solve(S0, s))
    # Wald: CRV1 with pyfixest's small-sample factor
    u = x - Z @ pi
    k = L if df_k is None else int(df_k)
    c = G / (G - 1) * (n - 1) / (n - k)
    Zi = np.linalg.inv(ZZ)
    V = c * Zi @ cluster_scores(Z, u, groups) @ Zi
    wald = float(pi @ np.linalg.solve(V, pi))
    return {
        "kp_rk_lm": lm,
        "kp_rk_lm_df": L,
        "kp_rk_lm_p": float(stats.chi2.sf(lm, L)),
        "kp_rk_wald_chi2": wald,
        "kp_rk_wald_f": wald / L,
        # the same statistic without the CRV1 small-sample factor (ranktest's default without `small`);
        # ivreg2 then applies its own (N−K)/N·(G−1)/G to the F: not reproduced, see docs/estimator-conventions.md
        "kp_rk_wald_f_no_ssc": wald * c / L,
        "stock_yogo_15pct": STOCK_YOGO_15.get(L),
        "stock_yogo_10pct": STOCK_YOGO_10.get(L),
        "n": n,
        "n_clusters": G,
        "ssc_factor": c,
        "pi": pi.tolist(),
    }


def _partial_out(data: pd.DataFrame, cols: list[str], controls: list[str], spec: Spec) -> np.ndarray:
    """Residuals of each column on the controls and the spec's FE (same sample, same demeaner)."""
    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    out = []
    for col in cols:
        fml = formula(col, controls, spec.fixed_effects)
        fit = pf.feols(fml, data=data, vcov="iid", fixef_rm="none", demeaner=demeaner(spec))
        out.append(np.asarray(fit.resid(), float))
    return np.column_stack(out)


def fit_iv(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """``options: {instruments: [iv1], stage: first | second}``. Both stages run on the same
    sample (complete cases of outcome, Policy, instruments, controls; singletons dropped). The
    sample, first stage, OLS comparison and KP statistics (:func:`_first_stage`) are computed once
    per run for the two stages of one instrument set and kept in ``ctx.shared``."""
    import warnings

    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    o = spec.options
    instruments = list(o.get("instruments", ["iv1"]))
    stage = o.get("stage", "second")
    controls = [*spec.extra_regressors, *spec.controls]
    fe = spec.fixed_effects
    # the first stage, the OLS comparison and the KP statistics do not depend on the stage: the
    # first- and second-stage specs of one instrument set compute them once per run (ctx.shared)
    key = ("iv_first_stage", id(df), spec.panel, spec.extra_marts, spec.outcome, spec.treatment, tuple(instruments),
           tuple(controls), tuple(fe), spec.fixef_rm, spec.fixef_tol, spec.demeaner, spec.sample_query, repr(spec.vcov),
           repr({k: v for k, v in o.items() if k != "stage"}))
    shared = getattr(ctx, "shared", None)
    common = shared.get(key) if shared is not None else None
    if common is None or common["df"] is not df:
        common = _first_stage(spec, df, instruments, controls)
        if shared is not None:
            shared[key] = common
    data, cl_cols, vcov, fs, ols, n_complete = (common[k] for k in ("data", "cl_cols", "vcov", "fs", "ols", "n_complete"))
    fs_F, kp = common["fs_F"], common["kp"]
    for message, category in common["partial_out_warnings"]:  # as when the partialling ran here
        warnings.warn(message, category)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rhs = " + ".join(controls) if controls else "1"
        fml_iv = f"{spec.outcome} ~ {rhs}" + (f" | {' + '.join(fe)}" if fe else "") + \
            f" | {spec.treatment} ~ {' + '.join(instruments)}"
        iv = pf.feols(fml_iv, data=data, vcov=vcov, fixef_rm="none", demeaner=demeaner(spec)) if stage == "second" else None
    msgs = sorted(set(common["warnings"]) | set(relevant_warnings(caught)))
    G = kp["n_clusters"]
    diag: dict[str, Any] = {
        "instruments": instruments,
        "stage": stage,
        "first_stage_F": fs_F,
        "first_stage_F_df": [len(instruments), G - 1],
        "first_stage_F_p": float(stats.f.sf(fs_F, len(instruments), G - 1)),
        **{k: v for k, v in kp.items() if k not in ("pi",)},
        "ols_policy": float(ols.coef()[spec.treatment]),
        "ols_policy_se": float(ols.se()[spec.treatment]),
        "fixef_rm": spec.fixef_rm,
        "formula_first_stage": formula(spec.treatment, [*instruments, *controls], fe),
    }
    if iv is not None:
        diag["formula"] = fml_iv
    add_common_diagnostics(diag, warnings=msgs, truth=ctx.truth)
    if stage == "first":
        terms = terms_from_fit(fs)
        main, fit = instruments[0], fs
    else:
        terms = terms_from_fit(iv)
        main, fit = spec.treatment, iv
    return fit_result(spec, ctx, fit, terms, n_complete, diag, main_term=main, with_adj_r2=stage == "first",
                      sample_note=f"IV sample (instruments {', '.join(instruments)})")


def _first_stage(spec: Spec, df: pd.DataFrame, instruments: list[str], controls: list[str]) -> dict[str, Any]:
    """What both stages of :func:`fit_iv` report: the IV estimation sample (complete cases of
    outcome, Policy, instruments, controls; singletons dropped), the first stage and its
    cluster-robust F, the OLS of the outcome on Policy on the same sample, the KP statistics
    on the partialled variables, and the relevant warnings of these fits."""
    import warnings

    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    data = prepare_spec_data(spec, df)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    variables = [spec.outcome, spec.treatment, *instruments, *controls]
    n_complete = int(data[list(dict.fromkeys([*variables, *spec.fixed_effects, *cl]))].notna().all(axis=1).sum())
    data = pnl.estimation_sample(data, variables, spec.fixed_effects, cl, spec.fixef_rm)
    data, cl_cols = cluster_columns(data, spec)
    vcov = {"CRV1": "+".join(cl_cols)} if spec.vcov.kind == "cluster" else spec.vcov.pyfixest()
    fe = spec.fixed_effects
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = pf.feols(formula(spec.treatment, [*instruments, *controls], fe), data=data, vcov=vcov,
                      fixef_rm="none", demeaner=demeaner(spec))
        ols = pf.feols(formula(spec.outcome, [spec.treatment, *controls], fe), data=data, vcov=vcov,
                       fixef_rm="none", demeaner=demeaner(spec))
    # first-stage F: cluster-robust Wald test of the excluded instruments (pyfixest)
    b = fs.coef()[instruments].to_numpy()
    names = list(fs._coefnames)
    idx = [names.index(z) for z in instruments]
    Vfs = np.asarray(fs._vcov)[np.ix_(idx, idx)]
    fs_F = float(b @ np.linalg.solve(Vfs, b)) / len(instruments)
    # KP statistics on the partialled variables
    with warnings.catch_warnings(record=True) as caught_partial:  # re-issued by fit_iv for each spec
        warnings.simplefilter("always")
        part = _partial_out(data, [spec.treatment, *instruments], controls, spec)
    groups = data[cl_cols[0]].to_numpy() if cl_cols else np.arange(len(data))
    kp = kp_rk_statistics(part[:, 0], part[:, 1:], groups, df_k=int(np.asarray(fs._df_k).ravel()[0]))
    return {"df": df, "data": data, "cl_cols": cl_cols, "vcov": vcov, "fs": fs, "ols": ols, "n_complete": n_complete,
            "fs_F": fs_F, "kp": kp, "warnings": relevant_warnings(caught),
            "partial_out_warnings": [(str(w.message), w.category) for w in caught_partial]}
