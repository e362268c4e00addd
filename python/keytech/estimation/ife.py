"""Interactive fixed effects (Bai 2009, *Econometrica* 77(4)) with high-dimensional additive FE.

Model: ``y_it = x_it'β + (additive FE, e.g. firm + industry×year + province×year) + λ_i'F_t + e_it``
with r unobserved common factors F_t and unit loadings λ_i. pyfixest has no IFE; the algorithm:

1. start from the HDFE OLS β (r = 0);
2. residual panel ``R_it = y_it − x_it'β − FE_it`` (FE-demeaned: ``R = ỹ − X̃β + Γ − Γ̃`` where
   Γ = λ'F is the current factor component and ~ the FE projection residual);
3. principal components of R (N×T): the first r left/right singular vectors give Λ, F (Bai's
   normalisation F'F/T = I). **Unbalanced panels** by EM (Stock & Watson 2002): missing cells of
   R are filled with the current fit Γ, the SVD is redone, until the fill converges;
4. β from the HDFE regression of y − Γ on x; repeat 2–4 until ‖Δβ‖ < tol.

Because the FE projection is linear, X and y are demeaned once and only Γ is demeaned, once per
iteration (pyfixest's demean, same tolerance as the specs).

**Number of factors.** ``n_factors: auto`` (default) picks r ∈ {0..r_max} minimising Bai & Ng
(2002) IC_p2: ``ln σ̂²(r) + r (N+T)/(NT) ln min(N, T)``, σ̂²(r) the mean squared residual of the
r-factor IFE fit (r_max default 3; with T = 10 years more factors are not credible). Set an
integer ``n_factors`` to fix it. The diagnostics say when the criterion stops at the bound
(``ic_at_r_max``: more factors might be preferred, and the treatment may be nearly spanned by
loadings × factors) and give β for every r (``beta_path_over_r``).

**Convergence.** max relative |Δβ| < ``tol`` (option ``tol``, default 1e-6; 1e-9 did not converge
within 1,000 iterations on the paper-scale test world), stored with the final step and
``beta_error_estimate`` (last step × ρ/(1−ρ), ρ the observed contraction rate: how far β may still
be from the fixed point); ``missing_cells`` counts the unit-year cells filled by EM.

**Standard errors.** Cluster-robust (the spec's vcov) from the final HDFE regression of the
factor-adjusted outcome y − λ̂'F̂ on x, i.e. treating the estimated factor component as known.
This ignores the estimation error of λ̂, F̂ (asymptotically negligible in Bai's large-N, large-T
theory when there is no incidental-parameter bias; with T = 10 it is an approximation, stated in
the diagnostics). No Bai (2009) bias correction. ``se_factor_df_adjusted`` in the diagnostics
scales the SE by sqrt((N−K)/(N−K−r(N+T−r))), counting the factor parameters as estimated (a
degrees-of-freedom correction only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, cluster_columns, demeaner, fit_result, formula, terms_from_fit
from keytech.estimation.core.panel import prepare_spec_data
from keytech.estimation.core.results import SpecResult
from keytech.estimation.orchestration.registry import Spec


@dataclass
class IFEResult:
    beta: np.ndarray
    n_factors: int
    loadings: np.ndarray  # N×r
    factors: np.ndarray  # T×r
    gamma: np.ndarray  # factor component per observation
    sigma2: float
    iterations: int
    converged: bool
    restarts: int  # Anderson history restarts
    steps: tuple[float, ...] = ()  # max |Δβ| per iteration


class _Demeaner:
    """FE residualiser on a fixed sample (keytech.estimation.core.demeaning: pyfixest's LSMR
    ``within`` solver); the preconditioner is built once and reused every iteration."""

    def __init__(self, flist: np.ndarray, tol: float):
        self.flist, self.tol, self.precond = flist, tol, "additive"

    def __call__(self, M: np.ndarray) -> np.ndarray:
        if self.flist.shape[1] == 0:
            return M - M.mean(axis=0)
        from keytech.estimation.core.demeaning import demean

        out, pre = demean(M, self.flist, tol=self.tol, preconditioner=self.precond)
        if pre is not None:
            self.precond = pre
        return out


def ife(y: np.ndarray, X: np.ndarray, unit: np.ndarray, time: np.ndarray, flist: np.ndarray, r: int,
        tol: float = 1e-6, max_iter: int = 1000, fe_tol: float = 1e-8, memory: int = 10) -> IFEResult:
    """Bai (2009) IFE with additive FE (``flist``: n×k uint64 FE codes) on a possibly unbalanced
    panel (``unit``, ``time`` labels of the observations).

    One iteration is a map on the N×T factor fit Γ: β(Γ) from the HDFE regression of y − Γ on x,
    the residual panel R = M(y − xβ − Γ) + Γ (M = FE residual maker) with the missing cells
    filled by Γ (one EM step), and the new Γ its rank-r SVD truncation. Its fixed point is the
    IFE estimate. The plain alternation converges linearly and slowly when the factor is
    correlated with x (the case IFE is for: ~0.998 per iteration on the issue-4 stress world), so
    the map is accelerated by Anderson mixing (Walker & Ni 2011; ``memory`` past iterates,
    0 = plain iteration), restarted whenever the mixed step does not reduce the fixed-point
    residual. Converged when max |β(Γ_k) − β(Γ_{k−1})| / (1 + |β|) < ``tol``."""
    y = np.asarray(y, float)
    X = np.asarray(X, float).reshape(len(y), -1)
    ui, units = pd.factorize(pd.Series(unit))
    ti, times = pd.factorize(pd.Series(time))
    N, T = len(units), len(times)
    dm = _Demeaner(flist, fe_tol)
    D = dm(np.column_stack([y, X]))
    yd, Xd = D[:, 0], D[:, 1:]
    XtX = Xd.T @ Xd

    def beta_of(gamma_d: np.ndarray) -> np.ndarray:
        return np.linalg.solve(XtX, Xd.T @ (yd - gamma_d))

    if r == 0:
        beta = beta_of(np.zeros(len(y)))
        e = yd - Xd @ beta
        return IFEResult(beta, 0, np.zeros((N, 0)), np.zeros((T, 0)), np.zeros(len(y)), float(np.mean(e ** 2)),
                         1, True, 0, ())

    def step(G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Γ → (Γ', β(Γ), FE residual of Γ at the observations)."""
        gamma = G[ui, ti]
        gd = dm(gamma[:, None])[:, 0]
        beta = beta_of(gd)
        W = G.copy()
        W[ui, ti] = yd - Xd @ beta - gd + gamma
        U, sv, Vt = np.linalg.svd(W, full_matrices=False)
        return (U[:, :r] * sv[:r]) @ Vt[:r], beta, gd

    x = np.zeros(N * T)
    hist_x: list[np.ndarray] = []
    hist_f: list[np.ndarray] = []
    steps: list[float] = []
    b_prev = None
    converged, it, restarts = False, 0, 0
    last_norm = np.inf
    for it in range(1, max_iter + 1):
        Gx, beta, gd = step(x.reshape(N, T))
        gx = Gx.ravel()
        f = gx - x
        if b_prev is not None:
            steps.append(float(np.max(np.abs(beta - b_prev) / (1.0 + np.abs(b_prev)))))
            if steps[-1] < tol:
                converged = True
                break
        b_prev = beta
        norm = float(np.sqrt(f @ f))
        if memory == 0 or norm > last_norm:  # plain step (and restart the history)
            if hist_x:
                restarts += 1
            hist_x, hist_f = [], []
            x_new = gx
        else:
            hist_x.append(gx)
            hist_f.append(f)
            if len(hist_f) > memory + 1:
                hist_x.pop(0)
                hist_f.pop(0)
            if len(hist_f) >= 2:
                dF = np.column_stack([hist_f[j + 1] - hist_f[j] for j in range(len(hist_f) - 1)])
                dG = np.column_stack([hist_x[j + 1] - hist_x[j] for j in range(len(hist_x) - 1)])
                coef = np.linalg.lstsq(dF, f, rcond=None)[0]
                x_new = gx - dG @ coef
            else:
                x_new = gx
        last_norm = norm
        x = x_new
    G = x.reshape(N, T)
    gamma = G[ui, ti]
    if not converged:
        gd = dm(gamma[:, None])[:, 0]
        beta = beta_of(gd)
    U, sv, Vt = np.linalg.svd(G, full_matrices=False)
    F = np.sqrt(T) * Vt[:r].T  # F'F/T = I
    lam = (U[:, :r] * sv[:r]) / np.sqrt(T)
    e = yd - gd - Xd @ beta
    return IFEResult(beta, r, lam, F, gamma, float(np.mean(e ** 2)), it, converged, restarts, tuple(steps))


def _error_estimate(steps: tuple[float, ...]) -> float | None:
    """Distance to the fixed point implied by the last steps under linear convergence."""
    s = np.asarray(steps, float)
    s = s[s > 0]
    if len(s) < 3:
        return float(s[-1]) if len(s) else None
    ratios = s[-5:][1:] / s[-5:][:-1]
    rho = float(np.median(ratios))
    if not 0 < rho < 1:
        return None
    return float(s[-1] * rho / (1 - rho))


def bai_ng_ic2(sigma2: float, r: int, N: int, T: int) -> float:
    return float(np.log(sigma2) + r * (N + T) / (N * T) * np.log(min(N, T)))


def select_factors(y, X, unit, time, flist, r_max: int = 3, **kw) -> tuple[int, dict[int, float], dict[int, IFEResult]]:
    N, T = pd.Series(unit).nunique(), pd.Series(time).nunique()
    ics, fits = {}, {}
    for r in range(0, r_max + 1):
        fits[r] = ife(y, X, unit, time, flist, r, **kw)
        ics[r] = bai_ng_ic2(fits[r].sigma2, r, N, T)
    best = min(ics, key=ics.get)
    return best, ics, fits


def fit_ife(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """``options: {n_factors: auto | int, r_max: 3, unit: stkcd, time: year}``."""
    import warnings

    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    o = spec.options
    unit, time = o.get("unit", "stkcd"), o.get("time", "year")
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    n_complete = int(data[list(dict.fromkeys([spec.outcome, *rhs, *spec.fixed_effects, *cl]))].notna().all(axis=1).sum())
    data = pnl.estimation_sample(data, [spec.outcome, *rhs], spec.fixed_effects, cl, spec.fixef_rm).copy()
    flist = pnl.factorize_columns(data, spec.fixed_effects)
    # regressors pyfixest keeps (drops those collinear with the FE, e.g. a time-invariant ifdome)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = pf.feols(formula(spec.outcome, rhs, spec.fixed_effects), data=data, vcov="iid", fixef_rm="none",
                         demeaner=demeaner(spec))
    dropped = [c for c in rhs if c not in probe._coefnames]
    rhs = [c for c in rhs if c in probe._coefnames]
    if spec.treatment not in rhs:
        raise ValueError(f"{spec.treatment} is collinear with the fixed effects")
    y = data[spec.outcome].to_numpy(float)
    X = data[rhs].to_numpy(float)
    tol = float(o.get("tol", 1e-6))
    kw = {"fe_tol": min(spec.fixef_tol, 1e-8), "tol": tol}
    nf = o.get("n_factors", "auto")
    ics, fits = None, None
    r_max = int(o.get("r_max", 3))
    if nf == "auto":
        r, ics, fits = select_factors(y, X, data[unit].to_numpy(), data[time].to_numpy(), flist, r_max, **kw)
        res = fits[r]
    else:
        res = ife(y, X, data[unit].to_numpy(), data[time].to_numpy(), flist, int(nf), **kw)
    N_units, T_periods = data[unit].nunique(), data[time].nunique()
    n_missing = int(N_units * T_periods - len(data))
    data["__y_ife"] = y - res.gamma
    data, cl_cols = cluster_columns(data, spec)
    vcov = {"CRV1": "+".join(cl_cols)} if spec.vcov.kind == "cluster" else spec.vcov.pyfixest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pf.feols(formula("__y_ife", rhs, spec.fixed_effects), data=data, vcov=vcov, fixef_rm="none",
                       demeaner=demeaner(spec))
    terms = terms_from_fit(fit)
    # SE with the factor parameters counted as estimated: r(N + T − r) more degrees of freedom used
    n_obs, df_k = int(fit._N), int(np.asarray(fit._df_k).ravel()[0])
    k_factors = res.n_factors * (N_units + T_periods - res.n_factors)
    se_main = float(fit.se()[spec.treatment])
    se_fdf = (se_main * np.sqrt((n_obs - df_k) / (n_obs - df_k - k_factors))
              if n_obs - df_k - k_factors > 0 else None)
    diag: dict[str, Any] = {
        "n_factors": res.n_factors,
        "n_factors_rule": "Bai-Ng (2002) IC_p2, r in 0..r_max" if nf == "auto" else "user-set",
        "ic_p2": ics,
        "r_max": r_max if nf == "auto" else None,
        "ic_at_r_max": bool(nf == "auto" and res.n_factors == r_max),
        "beta_path_over_r": {int(k): float(f.beta[0]) for k, f in fits.items()} if fits else None,
        "tol": tol,
        "beta_error_estimate": _error_estimate(res.steps),
        "beta_error_note": "estimated distance of β to the fixed point: last relative step × ρ/(1−ρ), ρ the "
        "median ratio of the last five steps (linear convergence); tighten options.tol if it matters",
        "missing_cells": n_missing,
        "missing_cells_note": f"{n_missing} of {N_units}×{T_periods} unit-year cells missing; filled by EM "
        "(Stock & Watson 2002) with the current factor fit at each iteration" if n_missing else "balanced panel",
        "se_factor_df_adjusted": float(se_fdf) if se_fdf is not None else None,
        "factor_parameters": k_factors,
        "iterations": res.iterations,
        "converged": res.converged,
        "anderson_restarts": res.restarts,
        "final_step": res.steps[-1] if res.steps else None,
        "balanced": bool(len(data) == data[unit].nunique() * data[time].nunique()),
        "ife_beta_check": float(res.beta[0]),
        "dropped_collinear": dropped,
        "twfe_policy": float(probe.coef()[spec.treatment]),
        "se_note": "reported SE: cluster-robust SE of the HDFE regression of y - λ̂'F̂ on x, factor component "
        "treated as known (no correction for the r(N+T-r) factor parameters, no Bai 2009 bias correction); "
        "se_factor_df_adjusted scales it by sqrt((N-K)/(N-K-r(N+T-r))) to count the factor parameters as "
        "estimated (a degrees-of-freedom correction only)",
        "algorithm": "Bai (2009) iterations: HDFE LS ↔ PCA of the residual panel, EM imputation of missing cells",
    }
    if ctx.truth and "beta_key" in ctx.truth:
        diag["planted_beta_key"] = ctx.truth["beta_key"]
    return fit_result(spec, ctx, fit, terms, n_complete, diag,
                      fixed_effects_suffix=f" + {res.n_factors} interactive factor(s)")
