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

Because the FE projection is linear, X and y are demeaned once and only Γ is demeaned per
iteration (pyfixest's demean, same tolerance as the specs).

**Number of factors.** ``n_factors: auto`` (default) picks r ∈ {0..r_max} minimising Bai & Ng
(2002) IC_p2: ``ln σ̂²(r) + r (N+T)/(NT) ln min(N, T)``, σ̂²(r) the mean squared residual of the
r-factor IFE fit (r_max default 3; with T = 10 years more factors are not credible). Set an
integer ``n_factors`` to fix it.

**Standard errors.** Cluster-robust (the spec's vcov) from the final HDFE regression of the
factor-adjusted outcome y − λ̂'F̂ on x, i.e. treating the estimated factor component as known.
This ignores the estimation error of λ̂, F̂ (asymptotically negligible in Bai's large-N, large-T
theory when there is no incidental-parameter bias; with T = 10 it is an approximation, stated in
the diagnostics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation import panel as pnl
from keytech.estimation.base import SpecResult
from keytech.estimation.estimators import (
    fit_result,
    RunContext,
    _cluster_columns,
    _demeaner,
    formula,
    prepare_spec_data,
    terms_from_fit,
)
from keytech.estimation.registry import Spec


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
    em_iterations: int


class _Demeaner:
    """FE residualiser on a fixed sample (keytech.estimation.demeaning: pyfixest's LSMR
    ``within`` solver); the preconditioner is built once and reused every iteration."""

    def __init__(self, flist: np.ndarray, tol: float):
        self.flist, self.tol, self.precond = flist, tol, "additive"

    def __call__(self, M: np.ndarray) -> np.ndarray:
        if self.flist.shape[1] == 0:
            return M - M.mean(axis=0)
        from keytech.estimation.demeaning import demean

        out, pre = demean(M, self.flist, tol=self.tol, preconditioner=self.precond)
        if pre is not None:
            self.precond = pre
        return out


def _pca_em(R: np.ndarray, mask: np.ndarray, r: int, start: np.ndarray | None, tol: float = 1e-7,
            max_iter: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rank-r fit of the N×T matrix R observed where ``mask``; EM fill of missing cells."""
    N, T = R.shape
    fit = np.zeros_like(R) if start is None else start.copy()
    if r == 0:
        return np.zeros((N, 0)), np.zeros((T, 0)), np.zeros_like(R), 0
    full = mask.all()
    it = 0
    for it in range(1, max_iter + 1):
        W = np.where(mask, R, fit)
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        new = (U[:, :r] * s[:r]) @ Vt[:r]
        delta = np.sqrt(np.mean((new - fit)[~mask] ** 2)) if not full else 0.0
        fit = new
        if full or delta < tol:
            break
    F = np.sqrt(T) * Vt[:r].T  # F'F/T = I
    lam = (U[:, :r] * s[:r]) / np.sqrt(T)
    return lam, F, fit, it


def ife(y: np.ndarray, X: np.ndarray, unit: np.ndarray, time: np.ndarray, flist: np.ndarray, r: int,
        tol: float = 1e-6, max_iter: int = 500, fe_tol: float = 1e-8) -> IFEResult:
    """Bai (2009) IFE with additive FE (``flist``: n×k uint64 FE codes) on a possibly unbalanced
    panel (``unit``, ``time`` labels of the observations)."""
    y = np.asarray(y, float)
    X = np.asarray(X, float).reshape(len(y), -1)
    ui, units = pd.factorize(pd.Series(unit))
    ti, times = pd.factorize(pd.Series(time))
    N, T = len(units), len(times)
    mask = np.zeros((N, T), bool)
    mask[ui, ti] = True
    dm = _Demeaner(flist, fe_tol)
    D = dm(np.column_stack([y, X]))
    yd, Xd = D[:, 0], D[:, 1:]
    XtX = Xd.T @ Xd
    beta = np.linalg.solve(XtX, Xd.T @ yd)
    gamma = np.zeros(len(y))
    fit = None
    converged = False
    em_total = 0
    it = 0
    for it in range(1, max_iter + 1):
        gd = dm(gamma[:, None])[:, 0] if r > 0 else np.zeros(len(y))
        resid = yd - Xd @ beta - gd + gamma  # y - Xb - FE(y - Xb - gamma)
        R = np.zeros((N, T))
        R[ui, ti] = resid
        lam, F, fit, em_it = _pca_em(R, mask, r, fit)
        em_total += em_it
        gamma = fit[ui, ti]
        if r == 0:
            converged = True
            break
        gd = dm(gamma[:, None])[:, 0]
        new = np.linalg.solve(XtX, Xd.T @ (yd - gd))
        step = np.max(np.abs(new - beta))
        beta = new
        if step < tol:
            converged = True
            break
    gd = dm(gamma[:, None])[:, 0] if r > 0 else 0.0
    e = yd - gd - Xd @ beta
    if r == 0:
        lam, F = np.zeros((N, 0)), np.zeros((T, 0))
    return IFEResult(beta, r, lam, F, gamma, float(np.mean(e ** 2)), it, converged, em_total)


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

    import pyfixest as pf

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
                         demeaner=_demeaner(spec))
    dropped = [c for c in rhs if c not in probe._coefnames]
    rhs = [c for c in rhs if c in probe._coefnames]
    if spec.treatment not in rhs:
        raise ValueError(f"{spec.treatment} is collinear with the fixed effects")
    y = data[spec.outcome].to_numpy(float)
    X = data[rhs].to_numpy(float)
    kw = {"fe_tol": min(spec.fixef_tol, 1e-8)}
    nf = o.get("n_factors", "auto")
    ics = None
    if nf == "auto":
        r, ics, fits = select_factors(y, X, data[unit].to_numpy(), data[time].to_numpy(), flist, int(o.get("r_max", 3)), **kw)
        res = fits[r]
    else:
        res = ife(y, X, data[unit].to_numpy(), data[time].to_numpy(), flist, int(nf), **kw)
    data["__y_ife"] = y - res.gamma
    data, cl_cols = _cluster_columns(data, spec)
    vcov = {"CRV1": "+".join(cl_cols)} if spec.vcov.kind == "cluster" else spec.vcov.pyfixest()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pf.feols(formula("__y_ife", rhs, spec.fixed_effects), data=data, vcov=vcov, fixef_rm="none",
                       demeaner=_demeaner(spec))
    terms = terms_from_fit(fit)
    diag: dict[str, Any] = {
        "n_factors": res.n_factors,
        "n_factors_rule": "Bai-Ng (2002) IC_p2, r in 0..r_max" if nf == "auto" else "user-set",
        "ic_p2": ics,
        "iterations": res.iterations,
        "converged": res.converged,
        "em_iterations": res.em_iterations,
        "balanced": bool(len(data) == data[unit].nunique() * data[time].nunique()),
        "ife_beta_check": float(res.beta[0]),
        "dropped_collinear": dropped,
        "twfe_policy": float(probe.coef()[spec.treatment]),
        "se_note": "cluster-robust SE of the HDFE regression of y - λ̂'F̂ on x (factor component treated as known)",
        "algorithm": "Bai (2009) iterations: HDFE LS ↔ PCA of the residual panel, EM imputation of missing cells",
    }
    if ctx.truth and "beta_key" in ctx.truth:
        diag["planted_beta_key"] = ctx.truth["beta_key"]
    return fit_result(spec, ctx, fit, terms, n_complete, diag,
                      fixed_effects_suffix=f" + {res.n_factors} interactive factor(s)")
