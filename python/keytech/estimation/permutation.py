"""Permutation (Fisher) test of a between-group coefficient difference.

The "empirical p-value" of a subsample difference as used in the Chinese empirical literature
(Stata ``bdiff``, after Cleary 1999 and Lian & Liao 2017): with groups 1 (e.g. above the median)
and 0 (below), the statistic is ``d = b_1 − b_0``, the coefficient of interest estimated on each
group separately. Group membership is reshuffled ``draws`` times keeping the group sizes (the
labels are permuted across observations, or across the units of ``permute_by`` when the label is
constant within them), both regressions are re-estimated and ``d*`` recorded.

* ``p_one_sided`` = (1 + #{d* ≥ d}) / (1 + B) when d ≥ 0 (#{d* ≤ d} when d < 0): the share of
  reshuffles at least as favourable to the observed direction (bdiff reports this share);
* ``p_two_sided`` = (1 + #{|d*| ≥ |d|}) / (1 + B).

The +1 counts the observed labelling (Phipson & Smyth 2010), so p is never 0. When the number of
distinct labellings is at most ``draws``, every labelling is enumerated instead and the p-values
are exact (the observed labelling is among them, no +1). Draws come from
``numpy.random.default_rng(seed)``: reproducible.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Callable

import numpy as np
import pandas as pd


def _exact_labellings(n: int, k: int) -> np.ndarray:
    out = np.zeros((math.comb(n, k), n), dtype=bool)
    for i, idx in enumerate(combinations(range(n), k)):
        out[i, list(idx)] = True
    return out


def permutation_test(
    data: pd.DataFrame,
    labels: np.ndarray,
    coef_fn: Callable[[pd.DataFrame], float],
    draws: int = 500,
    seed: int = 20240601,
    permute_by: str | None = None,
) -> dict:
    """Permutation test of ``coef_fn(group 1) − coef_fn(group 0)``.

    ``labels``: boolean array aligned with ``data`` (True = group 1). ``permute_by``: a column of
    ``data`` whose units carry one label each and are reshuffled as wholes (None = observations).
    """
    labels = np.asarray(labels, dtype=bool)
    if len(labels) != len(data):
        raise ValueError("labels must align with data")
    if permute_by is None:
        unit = np.arange(len(data))
        unit_label = labels
    else:
        codes, uniques = pd.factorize(data[permute_by])
        first = pd.Series(labels).groupby(codes).agg(["min", "max"])
        if (first["min"] != first["max"]).any():
            raise ValueError(f"group label is not constant within {permute_by}; permute observations instead")
        unit = codes
        unit_label = first["max"].to_numpy().astype(bool)
    n_units, k = len(unit_label), int(unit_label.sum())
    if k == 0 or k == n_units:
        raise ValueError("both groups need at least one unit")
    d_obs = coef_fn(data[labels]) - coef_fn(data[~labels])
    n_labellings = math.comb(n_units, k)
    exact = n_labellings <= draws
    if exact:
        unit_draws = _exact_labellings(n_units, k)
    else:
        rng = np.random.default_rng(seed)
        unit_draws = np.stack([rng.permutation(unit_label) for _ in range(draws)])
    d_star = np.empty(len(unit_draws))
    for i, ul in enumerate(unit_draws):
        lab = ul[unit]
        d_star[i] = coef_fn(data[lab]) - coef_fn(data[~lab])
    ok = np.isfinite(d_star)
    d_star = d_star[ok]
    B = len(d_star)
    tol = 1e-12 * max(1.0, abs(d_obs))
    as_extreme_dir = int((d_star >= d_obs - tol).sum()) if d_obs >= 0 else int((d_star <= d_obs + tol).sum())
    as_extreme_abs = int((np.abs(d_star) >= abs(d_obs) - tol).sum())
    if exact:
        p_one, p_two = as_extreme_dir / B, as_extreme_abs / B
    else:
        p_one, p_two = (1 + as_extreme_dir) / (1 + B), (1 + as_extreme_abs) / (1 + B)
    return {
        "difference": float(d_obs),
        "p_one_sided": float(p_one),
        "p_two_sided": float(p_two),
        "n_draws": int(B),
        "n_draws_failed": int((~ok).sum()),
        "exact_enumeration": bool(exact),
        "seed": int(seed),
        "permute_by": permute_by or "observation",
        "draws_quantiles": {q: float(np.quantile(d_star, q)) for q in (0.025, 0.5, 0.975)} if B else {},
    }


def fe_ols_coefficient(
    y: str,
    regressors: list[str],
    fixed_effects: list[str] | tuple[str, ...],
    drop_singletons: bool = True,
    ridge: float = 1e-10,
) -> Callable[[pd.DataFrame], float]:
    """A fast ``coef_fn``: OLS coefficient of ``regressors[0]`` with the fixed effects absorbed,
    singletons dropped first (as ``fixef_rm='singleton'``). No standard errors: only the point
    estimate is needed for each reshuffle.

    Frisch–Waugh–Lovell with the dummies' normal equations solved directly. With D = [D1, D2]
    the sparse dummy matrices (D1 = the fixed effect with most levels, e.g. firm, whose D1'D1 = A
    is diagonal) and W = D2'D1, the projection on the dummies is
    u'D(D'D)⁻¹D'v = (D1'u)'A⁻¹(D1'v) + r(u)'S⁻¹r(v) with r(v) = D2'v − W A⁻¹ D1'v and the Schur
    complement S = D2'D2 − W A⁻¹ W' + λI. The tiny ridge λ = ``ridge`` × mean(diag S) only
    resolves the collinearity among the dummies (X's coefficient stays identified); the tests
    compare the result with pyfixest."""
    import scipy.linalg as sla
    import scipy.sparse as sp
    from pyfixest.estimation import detect_singletons

    from keytech.estimation.panel import factorize_columns

    def onehot(codes: np.ndarray, n: int):
        codes = pd.factorize(codes)[0]
        return sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, int(codes.max()) + 1))

    def coef(df: pd.DataFrame) -> float:
        if len(df) < len(regressors) + 2:
            return float("nan")
        X = df[regressors].to_numpy(dtype=float)
        yv = df[y].to_numpy(dtype=float)
        if fixed_effects:
            fl = factorize_columns(df, fixed_effects)
            if drop_singletons:
                keep = ~np.asarray(detect_singletons(fl), dtype=bool)
                X, yv, fl = X[keep], yv[keep], fl[keep]
            n = len(yv)
            if n <= X.shape[1]:
                return float("nan")
            V = np.column_stack([yv, X])
            mats = [onehot(fl[:, j], n) for j in range(fl.shape[1])]
            big = int(np.argmax([m.shape[1] for m in mats]))
            D1 = mats[big]
            a = np.asarray(D1.sum(axis=0)).ravel()
            D1V = np.asarray(D1.T @ V)
            proj = D1V.T @ (D1V / a[:, None])
            others = [m for j, m in enumerate(mats) if j != big]
            if others:
                D2 = sp.hstack(others).tocsr()
                W = (D2.T @ D1).tocsr()
                S = (D2.T @ D2).toarray() - (W @ sp.diags(1.0 / a) @ W.T).toarray()
                S[np.diag_indices_from(S)] += ridge * max(float(np.mean(np.diag(S))), 1.0)
                R = np.asarray(D2.T @ V) - W @ (D1V / a[:, None])
                try:
                    SR = sla.cho_solve(sla.cho_factor(S, check_finite=False), R, check_finite=False)
                except np.linalg.LinAlgError:
                    SR = np.linalg.lstsq(S, R, rcond=None)[0]
                proj = proj + R.T @ SR
            M = V.T @ V - proj
            XtX, Xty = M[1:, 1:], M[1:, 0]
        else:
            Xc, yc = X - X.mean(axis=0), yv - yv.mean()
            XtX, Xty = Xc.T @ Xc, Xc.T @ yc
        beta = np.linalg.lstsq(XtX, Xty, rcond=None)[0]
        return float(beta[0])

    return coef
