"""Placebo test: randomly reassigned pilot cities and timing, with a fast refit per draw.

Design: the estimation sample's cities are randomly permuted and handed the real cohort sizes
(number of cities first treated in each year), so each draw keeps the real timing distribution
but scrambles which cities are "pilots". Each draw's Policy is ``year >= placebo first year`` of
the firm's city.

Fast path (Frisch–Waugh–Lovell): the fixed effects and controls are identical in every draw, only
Policy changes. So the outcome and controls are demeaned once, the outcome is residualised on the demeaned controls once, and the placebo Policy
columns of a whole chunk of draws are demeaned together as one matrix (pyfixest's LSMR
``within`` solver, reusing its preconditioner) and residualised on the same
control basis. The slope is then ``d'y / d'd`` column by column, and the cluster-robust SE uses the
cluster sums of ``d * e`` with pyfixest's small-sample factor, so the real draw reproduces
pyfixest's coefficient and SE (checked and stored in the diagnostics).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, fit_model, fit_result, terms_from_fit
from keytech.estimation.core.panel import prepare_spec_data
from keytech.estimation.core.results import SpecResult, TermEstimate
from keytech.estimation.core.ssc import cluster_ssc
from keytech.estimation.orchestration.registry import Spec


class FWLFastPath:
    """Refit ``y ~ D + C | FE`` for many columns D at the cost of one demeaning per chunk."""

    def __init__(self, y: np.ndarray, C: np.ndarray, fe_codes: np.ndarray, cluster_codes: np.ndarray | None, tol: float = 1e-10):
        self.fe = fe_codes
        self._precond = None
        self.tol = tol
        self.n = len(y)
        M = self._dm(np.column_stack([y, C]))
        yt, Ct = M[:, 0], M[:, 1:]
        if Ct.shape[1]:
            U, s, _ = np.linalg.svd(Ct, full_matrices=False)
            self.Q = U[:, s > 1e-9 * s.max()]
        else:
            self.Q = np.zeros((self.n, 0))
        self.yr = yt - self.Q @ (self.Q.T @ yt)
        self.k = 1 + self.Q.shape[1]
        if cluster_codes is not None:
            _, inv = np.unique(cluster_codes, return_inverse=True)
            G = inv.max() + 1
            self.Gmat = sp.csr_matrix((np.ones(self.n), (inv, np.arange(self.n))), shape=(G, self.n))
            self.ssc, self.G = cluster_ssc(self.n, self.k, fe_codes, cluster_codes)
        else:
            self.Gmat = None

    def _dm(self, M: np.ndarray) -> np.ndarray:
        from keytech.estimation.core.demeaning import demean

        out, self._precond = demean(M, self.fe, None, tol=self.tol, preconditioner=self._precond)
        return out

    def estimate(self, D: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Coefficients (and t-statistics when clustered) of each column of ``D``."""
        Dt = self._dm(D.astype(float))
        Dr = Dt - self.Q @ (self.Q.T @ Dt)
        dd = np.einsum("ij,ij->j", Dr, Dr)
        beta = (Dr.T @ self.yr) / dd
        if self.Gmat is None:
            return beta, None
        e = self.yr[:, None] - Dr * beta
        S = self.Gmat @ (Dr * e)
        var = self.ssc * np.einsum("ij,ij->j", S, S) / dd**2
        return beta, beta / np.sqrt(var)


def placebo_first_years(n_cities: int, cohort_counts: dict[int, int], n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(n_cities x n_draws) placebo first-treated years; NaN = never treated in the draw."""
    out = np.full((n_cities, n_draws), np.nan)
    cohorts = sorted(cohort_counts)
    sizes = [cohort_counts[c] for c in cohorts]
    if sum(sizes) > n_cities:
        raise ValueError("more treated cities than cities")
    for j in range(n_draws):
        perm = rng.permutation(n_cities)
        pos = 0
        for c, m in zip(cohorts, sizes):
            out[perm[pos : pos + m], j] = c
            pos += m
    return out


def fit_placebo(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    t0 = time.perf_counter()
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = pnl.estimation_sample(data, [spec.outcome, *rhs], spec.fixed_effects, cl, spec.fixef_rm)
    fit, msgs, _ = fit_model("ols", spec, sample, rhs)
    covs = [c for c in rhs[1:] if c in fit._coefnames]
    fe_codes = pnl.factorize_columns(sample, spec.fixed_effects)
    cl_codes = pnl.factorize_columns(sample, cl)[:, 0] if len(cl) == 1 else None
    fast = FWLFastPath(
        sample[spec.outcome].to_numpy(float), sample[covs].to_numpy(float), fe_codes, cl_codes, tol=spec.fixef_tol
    )
    D_real = sample[spec.treatment].to_numpy(float)[:, None]
    b_real_fast, t_real_fast = fast.estimate(D_real)
    b_real = float(fit.coef()[spec.treatment])
    se_real = float(fit.se()[spec.treatment])

    # real timing distribution among the sample's cities
    last_year = int(sample["year"].max())
    city_first = sample.groupby("city_code")["first_treated_year"].first()
    city_first = city_first.where(city_first <= last_year)
    cities = city_first.index.to_numpy()
    cohort_counts = {int(c): int(n) for c, n in city_first.dropna().value_counts().sort_index().items()}
    city_idx = pd.Index(cities).get_indexer(sample["city_code"])
    year = sample["year"].to_numpy()

    n_draws = int(ctx.placebo_draws)
    chunk = int(spec.options.get("chunk", 100))
    rng = np.random.default_rng(ctx.seed)
    betas: list[np.ndarray] = []
    tstats: list[np.ndarray] = []
    from tqdm.auto import tqdm

    with tqdm(total=n_draws, desc="placebo draws", disable=not ctx.progress, leave=False) as bar:
        done = 0
        while done < n_draws:
            m = min(chunk, n_draws - done)
            FT = placebo_first_years(len(cities), cohort_counts, m, rng)
            with np.errstate(invalid="ignore"):
                D = year[:, None] >= FT[city_idx]  # NaN (never) compares False
            b, t = fast.estimate(D)
            betas.append(b)
            if t is not None:
                tstats.append(t)
            done += m
            bar.update(m)
    B = np.concatenate(betas) if betas else np.zeros(0)
    Tt = np.concatenate(tstats) if tstats else None
    ge = int(np.sum(np.abs(B) >= abs(b_real)))
    diag: dict[str, Any] = {
        "n_draws": n_draws,
        "seed": ctx.seed,
        "cohort_counts": {str(k): v for k, v in cohort_counts.items()},
        "n_cities": len(cities),
        "real_beta": b_real,
        "real_se": se_real,
        "placebo_mean": float(B.mean()) if n_draws else None,
        "placebo_sd": float(B.std(ddof=1)) if n_draws > 1 else None,
        "placebo_q025": float(np.quantile(B, 0.025)) if n_draws else None,
        "placebo_q975": float(np.quantile(B, 0.975)) if n_draws else None,
        "p_empirical": (ge + 1) / (n_draws + 1),
        "n_draws_as_extreme": ge,
        "share_draws_as_extreme": ge / n_draws if n_draws else None,
        "draws": [float(f"{x:.6g}") for x in B],
        "fast_path_check": {
            "beta_abs_diff": float(abs(b_real_fast[0] - b_real)),
            "se_rel_diff": float(abs(abs(b_real_fast[0] / t_real_fast[0]) - se_real) / se_real) if t_real_fast is not None else None,
        },
        "p_definition": "(1 + #draws with |beta_placebo| >= |beta_real|) / (1 + draws): the real assignment counts "
        "as one draw (Phipson & Smyth 2010), so p is never 0; share_draws_as_extreme = count/draws",
        "seconds": None,
    }
    if Tt is not None and t_real_fast is not None:
        diag["real_t"] = float(t_real_fast[0])
        diag["t_draws"] = [float(f"{x:.6g}") for x in Tt]
        diag["p_empirical_t"] = float((np.sum(np.abs(Tt) >= abs(t_real_fast[0])) + 1) / (n_draws + 1))
    if msgs:
        diag["warnings"] = msgs
    diag["seconds"] = round(time.perf_counter() - t0, 3)
    terms = terms_from_fit(fit, names=[spec.treatment])
    terms += [
        TermEstimate("placebo:mean", diag["placebo_mean"], diag["placebo_sd"]),
        TermEstimate("placebo:p_empirical", diag["p_empirical"]),
    ]
    if "p_empirical_t" in diag:
        terms.append(TermEstimate("placebo:p_empirical_t", diag["p_empirical_t"]))
    return fit_result(spec, ctx, fit, terms, len(sample), diag,
                      sample_note=f"{n_draws} placebo draws, seed {ctx.seed}")
