"""Count models: Poisson (PPML, via :func:`keytech.estimation.linear.fit_ols`) and negative binomial (NB2) regression with high-dimensional fixed effects.

pyfixest has no negative binomial; this follows the approach of ``fixest::fenegbin``:

* the mean is ``mu = exp(X b + FE)`` and ``Var(y) = mu + mu^2 / theta`` (NB2; ``alpha = 1/theta``);
* for a given ``theta`` the coefficients solve a GLM by IRLS (Fisher scoring) with working weights
  ``w = mu / (1 + mu/theta)`` and working response ``z = eta + (y - mu)/mu``; the fixed effects are
  never estimated: ``z`` and ``X`` are demeaned with weights ``w`` (fixest uses alternating
  projections; we use pyfixest's LSMR ``within`` solver, see :mod:`keytech.estimation.core.demeaning`),
  ``b`` is the weighted least-squares slope of the demeaned variables and the new linear predictor
  is ``z - residual`` (Frisch–Waugh–Lovell), as in ppmlhdfe;
* ``theta`` is updated by one-dimensional maximum likelihood given ``mu``; the two steps alternate
  until the log-likelihood and the coefficients stop changing (coordinate ascent on the joint
  likelihood, with step halving if the likelihood falls);
* groups whose outcome is always zero carry no information and are dropped (iteratively, with
  singletons), like fixest and pyfixest's fepois.

Variance: inverse expected information of ``b`` with the fixed effects partialled out
(``X~' W X~``; the NB2 information is block-diagonal in (b, FE) and theta), and a cluster-robust
sandwich on the partialled scores ``x~_i (y_i - mu_i)/(1 + mu_i/theta)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, fe_desc, noncollinear_columns
from keytech.estimation.core.panel import drop_uninformative, prepare_spec_data, sample_description
from keytech.estimation.core.results import SpecResult, add_common_diagnostics, term_from_normal
from keytech.estimation.core.ssc import cluster_ssc
from keytech.estimation.linear import fit_ols
from keytech.estimation.orchestration.registry import Spec


THETA_POISSON = 1e6  # theta beyond this is treated as "no overdispersion" (Poisson limit)


@dataclass
class NegBinResult:
    coef: np.ndarray
    names: list[str]
    vcov_iid: np.ndarray
    theta: float
    theta_se: float
    loglik: float
    n_iter: int
    converged: bool
    nobs: int
    keep: np.ndarray  # mask over the input rows that were used
    mu: np.ndarray
    x_tilde: np.ndarray
    score_resid: np.ndarray
    theta_at_bound: bool = False
    n_dropped_zero: int = 0
    n_dropped_singleton: int = 0
    history: list[float] = field(default_factory=list)

    @property
    def alpha(self) -> float:
        return 1.0 / self.theta

    def vcov_cluster(self, clusters: np.ndarray, fe_codes: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """CRV1 sandwich clustered by ``clusters`` (codes for the used rows, 1 or 2 columns).

        Small-sample factor as pyfixest's default ``ssc()`` (see :mod:`keytech.estimation.core.ssc`).
        Returns the matrix and the (minimum) number of clusters.
        """
        clusters = np.asarray(clusters)
        if clusters.ndim == 1:
            clusters = clusters[:, None]
        bread = self.vcov_iid
        scores = self.x_tilde * self.score_resid[:, None]
        k = len(self.coef)

        def meat(codes: np.ndarray) -> np.ndarray:
            _, inv = np.unique(codes, return_inverse=True)
            g = np.zeros((inv.max() + 1, k))
            np.add.at(g, inv, scores)
            return g.T @ g

        if clusters.shape[1] == 1:
            parts = [(clusters[:, 0], 1.0)]
        else:
            a, b = clusters[:, 0], clusters[:, 1]
            _, ab = np.unique(np.column_stack([a, b]), axis=0, return_inverse=True)
            parts = [(a, 1.0), (b, 1.0), (ab.ravel(), -1.0)]
        factor, G = cluster_ssc(
            n=self.nobs, k=k, fe_codes=fe_codes, cluster_codes=clusters
        )
        v = sum(sign * (bread @ meat(codes) @ bread) for codes, sign in parts)
        return factor * v, G


def nb2_loglik(y: np.ndarray, mu: np.ndarray, theta: float) -> float:
    return float(
        np.sum(
            special.gammaln(y + theta)
            - special.gammaln(theta)
            - special.gammaln(y + 1)
            + theta * np.log(theta / (theta + mu))
            + y * np.log(mu / (theta + mu))
        )
    )


def _theta_ml(y: np.ndarray, mu: np.ndarray, start: float) -> float:
    """argmax_theta of the NB2 log-likelihood given mu (bounded 1-D search on log theta)."""

    def neg(lt: float) -> float:
        return -nb2_loglik(y, mu, float(np.exp(lt)))

    lo, hi = np.log(1e-4), np.log(1e7)
    res = optimize.minimize_scalar(neg, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12, "maxiter": 500})
    return float(np.exp(res.x))


def _theta_se(y: np.ndarray, mu: np.ndarray, theta: float) -> float:
    d2 = np.sum(
        special.polygamma(1, y + theta)
        - special.polygamma(1, theta)
        + 1.0 / theta
        - 2.0 / (theta + mu)
        + (y + theta) / (theta + mu) ** 2
    )
    return float(np.sqrt(-1.0 / d2)) if d2 < 0 else float("nan")


def fenegbin(
    y: np.ndarray,
    X: np.ndarray,
    fe: np.ndarray,
    names: list[str] | None = None,
    *,
    tol: float = 1e-10,
    beta_tol: float = 1e-7,
    maxiter: int = 500,
    fixef_tol: float = 1e-10,
    drop_singletons: bool = True,
) -> NegBinResult:
    """Fit NB2 with fixed effects ``fe`` (n x F integer codes, F >= 1).

    Rows with missing values must be removed by the caller. Returns a :class:`NegBinResult` whose
    ``keep`` marks the rows used (all-zero outcome groups and singletons removed). Converged when
    the relative change in the log-likelihood is below ``tol`` and the largest relative change in
    the coefficients below ``beta_tol`` (keep ``beta_tol`` well above ``fixef_tol``: the
    demeaning solution is only that accurate).
    """
    from keytech.estimation.core.demeaning import demean

    y = np.asarray(y, dtype=float)
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    fe = np.asarray(fe)
    if fe.ndim == 1:
        fe = fe[:, None]
    if fe.shape[1] == 0:
        raise ValueError("fenegbin needs at least one fixed effect (add a constant FE for none)")
    names = names or [f"x{i}" for i in range(X.shape[1])]
    keep, n_zero, n_single = drop_uninformative(y, fe, drop_singletons)
    yk, Xk = y[keep], X[keep]
    fek = np.asfortranarray(np.column_stack([np.unique(fe[keep, j], return_inverse=True)[1] for j in range(fe.shape[1])]).astype(np.uint64))
    n, k = Xk.shape

    precond: list = [None]

    def wdemean(M: np.ndarray, w: np.ndarray) -> np.ndarray:
        # the preconditioner of the previous IRLS step is a good (and always valid) one
        out, precond[0] = demean(M, fek, w, tol=fixef_tol, preconditioner=precond[0])
        return out

    # start: Poisson IRLS from mu0 = (y + mean(y)) / 2 for two steps, then theta enters (ML update
    # after every IRLS step)
    mu = (yk + yk.mean()) / 2.0
    eta = np.log(mu)
    theta = np.inf
    beta = np.zeros(k)
    history: list[float] = []
    converged = False
    theta_fixed = False
    big = 0
    ll_old = -np.inf
    it = 0
    for it in range(1, maxiter + 1):
        th = theta if np.isfinite(theta) else 1e8
        w = mu / (1.0 + mu / th)
        z = eta + (yk - mu) / mu
        D = wdemean(np.column_stack([z, Xk]), w)
        zt, Xt = D[:, 0], D[:, 1:]
        sw = np.sqrt(w)
        beta_new = np.linalg.lstsq(Xt * sw[:, None], zt * sw, rcond=None)[0]
        eta_new = z - (zt - Xt @ beta_new)
        # step halving on the linear predictor (eta is linear in b and the FE, so a convex
        # combination is again a valid linear predictor) if the likelihood falls. Not in the first
        # iteration: the starting eta = log((y + mean y)/2) is not of the form X b + FE, and
        # mixing it in would leave an over-fitted, invalid predictor.
        ll_cur = nb2_loglik(yk, mu, th) if it > 1 else -np.inf
        step = 1.0
        while True:
            eta_try = eta + step * (eta_new - eta)
            mu_try = np.exp(eta_try)
            ll_try = nb2_loglik(yk, mu_try, th)
            if ll_try >= ll_cur - 1e-12 * abs(ll_cur) or step < 1e-4:
                break
            step /= 2
        eta, mu = eta_try, mu_try
        beta_prev = beta
        beta = beta_prev + step * (beta_new - beta_prev)
        if it >= 2 and not theta_fixed:
            theta = _theta_ml(yk, mu, th)
            # no overdispersion: theta runs off to infinity (the Poisson limit) and coordinate
            # ascent crawls; once it is beyond THETA_POISSON twice in a row, fix it there
            big = big + 1 if theta > THETA_POISSON else 0
            if big >= 2:
                theta, theta_fixed = THETA_POISSON, True
        ll = nb2_loglik(yk, mu, theta if np.isfinite(theta) else 1e8)
        history.append(ll)
        dbeta = float(np.max(np.abs(beta - beta_prev)) / (1.0 + np.max(np.abs(beta))))
        if it > 3 and abs(ll - ll_old) / (0.1 + abs(ll)) < tol and dbeta < beta_tol:
            converged = True
            break
        ll_old = ll

    # final quantities at the optimum (beta from one more exact WLS at the final mu/theta)
    w = mu / (1.0 + mu / theta)
    z = eta + (yk - mu) / mu
    D = wdemean(np.column_stack([z, Xk]), w)
    zt, Xt = D[:, 0], D[:, 1:]
    sw = np.sqrt(w)
    beta = np.linalg.lstsq(Xt * sw[:, None], zt * sw, rcond=None)[0]
    info = (Xt * w[:, None]).T @ Xt
    vcov = np.linalg.inv(info)
    score_resid = (yk - mu) / (1.0 + mu / theta)
    return NegBinResult(
        coef=beta,
        names=list(names),
        vcov_iid=vcov,
        theta=float(theta),
        theta_se=_theta_se(yk, mu, theta),
        loglik=nb2_loglik(yk, mu, theta),
        n_iter=it,
        converged=converged,
        nobs=n,
        keep=keep,
        mu=mu,
        x_tilde=Xt,
        score_resid=score_resid,
        theta_at_bound=theta_fixed,
        n_dropped_zero=n_zero,
        n_dropped_singleton=n_single,
        history=history,
    )


# --------------------------------------------------------------------------- spec estimators


def fit_poisson(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    return fit_ols(spec, df, ctx, kind="poisson")


def fit_negbin(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = data.dropna(subset=[spec.outcome, *rhs, *spec.fixed_effects, *cl])
    fe = spec.fixed_effects or ("__const",)
    if not spec.fixed_effects:
        sample = sample.assign(__const=0)
    n_complete = len(sample)
    y_all = sample[spec.outcome].to_numpy(dtype=float)
    # drop uninformative groups first, so the collinearity check sees the estimation sample
    keep0, n_zero0, n_single0 = drop_uninformative(
        y_all, pnl.factorize_columns(sample, fe), drop_singletons=spec.fixef_rm == "singleton"
    )
    sample = sample.loc[keep0]
    fe_codes = pnl.factorize_columns(sample, fe)
    X = sample[rhs].to_numpy(dtype=float)
    y = sample[spec.outcome].to_numpy(dtype=float)
    keep_cols = noncollinear_columns(X, fe_codes, spec.fixef_tol)
    dropped = [rhs[j] for j in range(len(rhs)) if j not in keep_cols]
    names = [rhs[j] for j in keep_cols]
    res = fenegbin(y, X[:, keep_cols], fe_codes, names, fixef_tol=min(spec.fixef_tol, 1e-10), drop_singletons=spec.fixef_rm == "singleton")
    res.n_dropped_zero += n_zero0
    res.n_dropped_singleton += n_single0
    used = sample.loc[res.keep]
    if spec.vcov.kind == "cluster":
        cl_codes = pnl.factorize_columns(used, cl)
        V, G = res.vcov_cluster(cl_codes, pnl.factorize_columns(used, fe))
    else:
        V, G = res.vcov_iid, None
    se = np.sqrt(np.diag(V))
    terms = [term_from_normal(n, b, s) for n, b, s in zip(names, res.coef, se)]
    diag: dict[str, Any] = {
        "theta": res.theta,
        "theta_se": res.theta_se,
        "alpha": res.alpha,
        "loglik": res.loglik,
        "iterations": res.n_iter,
        "converged": res.converged,
        "theta_at_poisson_bound": res.theta_at_bound,
        "dropped_all_zero_groups_obs": res.n_dropped_zero,
        "dropped_singleton_obs": res.n_dropped_singleton,
        "exp_coef_minus_1": float(np.exp(res.coef[0]) - 1),
        "inference": "normal (z), as for GLMs in fixest/pyfixest",
        "algorithm": "IRLS with weighted FE demeaning (LSMR within) + ML theta, fenegbin-style",
    }
    add_common_diagnostics(diag, n_clusters=G, dropped_collinear=dropped, truth=ctx.truth)
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=res.nobs,
        adj_r2=None,
        fixed_effects=fe_desc(spec, ctx),
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, n_complete, res.nobs),
        main_term=spec.treatment,
        diagnostics=diag,
    )
