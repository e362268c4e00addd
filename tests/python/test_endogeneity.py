"""Table 4 estimators on simulated panels with known truth: IFE (Bai 2009), Kleibergen–Paap rk
statistics against independent computations, 2SLS vs OLS under a planted confounder, PSM balance,
and the spillover helpers. All in-memory, seconds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.ife import fit_ife, ife, select_factors
from keytech.estimation.iv import _partial_out, fit_iv, kp_rk_statistics
from keytech.estimation.psm import psm_sample
from keytech.estimation.orchestration.registry import parse_registry
from keytech.estimation.simulate import simulate_panel
from keytech.estimation.spillover import critical_distance

IFE_TOL = 0.05  # |beta_IFE - beta| on the factor model (TWFE bias there is > 0.3)
KP_RTOL = 1e-6  # KP statistics vs independent computations
IV_FIRST_STAGE_F_MIN = 10.0  # "strong" first stage (Staiger-Stock rule of thumb)


def _spec(**entry):
    raw = {
        "control_sets": {"firm": ["roa", "lnage", "ki", "ln_size", "kd"], "city": ["ln_meangdp", "infor"]},
        "fixed_effect_sets": {"col5": ["stkcd", "ind_year", "prov_year"], "firm_year": ["stkcd", "year"]},
        "defaults": {"outcome": "ln_apply_inv_zl", "treatment": "policy", "controls": ["firm", "city"],
                     "fixed_effects": "col5", "vcov": {"cluster": "city_code"}, "estimator": "ols"},
        "specs": [{"id": "t", **entry}],
    }
    return parse_registry(raw).specs[0]


# ------------------------------------------------------------------------------------- IFE


def _factor_panel(seed=3, N=150, T=12, beta=1.0, missing=0.08):
    rng = np.random.default_rng(seed)
    lam = rng.normal(1, 1, N)
    f = rng.normal(0, 1, T) + np.linspace(-1, 1, T)
    alpha = rng.normal(0, 1, N)
    delta = rng.normal(0, 1, T)
    i, t = np.meshgrid(np.arange(N), np.arange(T), indexing="ij")
    i, t = i.ravel(), t.ravel()
    common = lam[i] * f[t]
    x = 0.8 * common + 0.5 * alpha[i] + rng.normal(0, 1, len(i))
    y = beta * x + alpha[i] + delta[t] + 1.5 * common + rng.normal(0, 0.5, len(i))
    keep = rng.random(len(i)) > missing  # unbalanced
    return pd.DataFrame({"unit": i, "time": t, "x": x, "y": y})[keep]


def test_ife_recovers_beta_where_twfe_is_biased():
    df = _factor_panel()
    flist = pnl.factorize_columns(df, ["unit", "time"])
    y, X = df["y"].to_numpy(), df[["x"]].to_numpy()
    twfe = ife(y, X, df["unit"].to_numpy(), df["time"].to_numpy(), flist, 0)
    one = ife(y, X, df["unit"].to_numpy(), df["time"].to_numpy(), flist, 1)
    assert abs(twfe.beta[0] - 1.0) > 0.3  # the factor biases two-way FE
    assert abs(one.beta[0] - 1.0) < IFE_TOL
    assert one.converged
    r, ics, _ = select_factors(y, X, df["unit"].to_numpy(), df["time"].to_numpy(), flist, r_max=3)
    assert r == 1, ics


def test_ife_acceleration_reaches_the_plain_iterations_fixed_point():
    """Anderson mixing changes the path, not the fixed point: on an unbalanced factor panel the
    accelerated IFE equals Bai's plain alternation run to a tight tolerance, in fewer iterations;
    and the fixed point satisfies the normal equations — β is the HDFE regression of y − Γ on x,
    here an explicit least-squares regression on x and every unit and time dummy (exact; before,
    3,000 rounds of alternating means in pandas: ≈ 6 s of the suite for the same check)."""
    df = _factor_panel(seed=11, N=120, T=10, missing=0.1)
    flist = pnl.factorize_columns(df, ["unit", "time"])
    y, X = df["y"].to_numpy(), df[["x"]].to_numpy()
    args = (y, X, df["unit"].to_numpy(), df["time"].to_numpy(), flist, 2)
    plain = ife(*args, tol=1e-11, max_iter=20000, memory=0)
    fast = ife(*args, tol=1e-11, max_iter=20000)
    assert plain.converged and fast.converged
    assert fast.iterations < plain.iterations
    assert abs(fast.beta[0] - plain.beta[0]) < 1e-7
    assert np.allclose(fast.gamma, plain.gamma, atol=1e-6)
    # normal equations at the fixed point, by an independent dummy-variable regression
    dummies = np.column_stack([X[:, 0], pd.get_dummies(df["unit"], dtype=float).to_numpy(),
                               pd.get_dummies(df["time"], dtype=float).to_numpy()])
    beta_dummies = np.linalg.lstsq(dummies, y - fast.gamma, rcond=None)[0][0]
    assert abs(beta_dummies - fast.beta[0]) < 1e-8


def test_ife_estimator_on_a_spec_panel():
    df = _factor_panel(seed=5, N=120, T=10, missing=0.05)
    df = df.assign(stkcd=df["unit"].astype(str), year=2010 + df["time"], city_code=(df["unit"] % 30).astype(str),
                   ln_apply_inv_zl=df["y"], policy=df["x"])
    spec = _spec(estimator="ife", controls=[], fixed_effects="firm_year", options={"n_factors": "auto", "r_max": 2})
    res = fit_ife(spec, df, RunContext())
    assert res.diagnostics["n_factors"] == 1
    assert abs(res.main.estimate - 1.0) < IFE_TOL
    assert abs(res.diagnostics["twfe_policy"] - 1.0) > 0.3
    assert res.main.std_error > 0


# ------------------------------------------------------------------------------------- KP


def _kp_general(X: np.ndarray, Z: np.ndarray, groups: np.ndarray, lm: bool) -> float:
    """Kleibergen–Paap (2006) rk statistic for H0: rank(Π) = 0, written with the normalised
    Θ = G Π F' (G'G = Z'Z/n, F'F = X'X/n) and the vec/Kronecker covariance (independent of the
    score form in keytech.estimation.iv)."""
    n, L = Z.shape
    m = X.shape[1]
    Pi = np.linalg.solve(Z.T @ Z, Z.T @ X)  # L×m
    U = X if lm else X - Z @ Pi
    codes = pd.factorize(groups)[0]
    S = np.zeros((L * m, L * m))
    for g in range(codes.max() + 1):
        sel = codes == g
        v = (Z[sel].T @ U[sel]).reshape(-1, order="F")  # vec(Z_g' U_g)
        S += np.outer(v, v)
    Qzz_inv = np.linalg.inv(Z.T @ Z)
    V = np.kron(np.eye(m), Qzz_inv) @ S @ np.kron(np.eye(m), Qzz_inv)  # cov of vec(Pi)
    Gm = np.linalg.cholesky(Z.T @ Z / n).T
    Fm = np.linalg.cholesky(X.T @ X / n).T
    theta = (Gm @ Pi @ Fm.T).reshape(-1, order="F")
    K = np.kron(Fm, Gm)
    Vt = K @ V @ K.T
    return float(theta @ np.linalg.solve(Vt, theta))


def _iv_panel(seed=7, n_cities=60, beta=0.2, confound=0.25):
    """Firm-year panel: city-level staggered Policy chosen on an instrument z_c and an
    unobserved U_c; U_c also drives an outcome trend (biases OLS up); linear outcome."""
    base = pnl.prepare_panel(simulate_panel(seed=seed, n_cities=n_cities, firms_per_city=6.0))
    rng = np.random.default_rng(seed)
    cities = np.sort(base["city_code"].unique())
    z = rng.normal(0, 1, len(cities))
    u = rng.normal(0, 1, len(cities))
    latent = 1.2 * z + 1.2 * u + rng.normal(0, 0.5, len(cities))
    order = np.argsort(-latent)
    first = np.full(len(cities), np.nan)
    for k, yr in enumerate((2016, 2017, 2018, 2019)):
        first[order[k * len(cities) // 8:(k + 1) * len(cities) // 8]] = yr
    cmap = dict(zip(cities, range(len(cities))))
    ci = base["city_code"].map(cmap).to_numpy()
    yr = base["year"].to_numpy()
    policy = np.where(np.isnan(first[ci]), 0.0, (yr >= first[ci]).astype(float))
    firm_fe = base.groupby("stkcd")["stkcd"].transform(lambda s: hash(s.iloc[0]) % 97 / 50.0).to_numpy()
    y = (beta * policy + confound * u[ci] * (yr - 2010) + firm_fe + 0.05 * (yr - 2010)
         + rng.normal(0, 0.3, len(base)))
    return base.assign(policy=policy, ln_apply_inv_zl=y, iv1=z[ci] * (yr - 2009), first_treated_year=first[ci])


def test_kp_wald_f_equals_squared_cluster_t_with_one_instrument():
    df = _iv_panel()
    spec = _spec(estimator="iv", options={"instruments": ["iv1"], "stage": "first"})
    res = fit_iv(spec, df, RunContext())
    t = res.term("iv1").t_stat
    assert res.diagnostics["kp_rk_wald_f"] == pytest.approx(t ** 2, rel=KP_RTOL)
    assert res.diagnostics["first_stage_F"] == pytest.approx(t ** 2, rel=KP_RTOL)


def test_kp_lm_and_wald_match_general_matrix_formula():
    df = _iv_panel(seed=11).assign(iv_b=lambda d: d["iv1"] ** 2 / 10 + np.random.default_rng(1).normal(0, 1, len(d)))
    spec = _spec(estimator="iv", options={"instruments": ["iv1", "iv_b"]})
    data = pnl.estimation_sample(df, ["ln_apply_inv_zl", "policy", "iv1", "iv_b", *spec.controls], spec.fixed_effects, ["city_code"])
    part = _partial_out(data, ["policy", "iv1", "iv_b"], list(spec.controls), spec)
    groups = data["city_code"].to_numpy()
    kp = kp_rk_statistics(part[:, 0], part[:, 1:], groups, df_k=2)
    lm = _kp_general(part[:, :1], part[:, 1:], groups, lm=True)
    wald = _kp_general(part[:, :1], part[:, 1:], groups, lm=False)
    assert kp["kp_rk_lm"] == pytest.approx(lm, rel=KP_RTOL)
    n, G = len(part), len(np.unique(groups))
    c = G / (G - 1) * (n - 1) / (n - 2)
    assert kp["kp_rk_wald_chi2"] == pytest.approx(wald / c, rel=KP_RTOL)
    assert kp["kp_rk_lm_df"] == 2 and 0 <= kp["kp_rk_lm_p"] <= 1


def test_iv_closer_to_truth_than_ols_and_first_stage_strong():
    beta = 0.2
    df = _iv_panel(beta=beta)
    res = fit_iv(_spec(estimator="iv", options={"instruments": ["iv1"], "stage": "second"}), df, RunContext())
    d = res.diagnostics
    assert d["first_stage_F"] > IV_FIRST_STAGE_F_MIN
    assert d["kp_rk_lm_p"] < 0.01
    assert d["ols_policy"] - beta > 0.1  # the confounder biases OLS up
    assert abs(res.main.estimate - beta) < abs(d["ols_policy"] - beta)


# ------------------------------------------------------------------------------------- PSM


def test_psm_balance_improves():
    rng = np.random.default_rng(4)
    n = 3000
    x1, x2 = rng.normal(0, 1, n), rng.normal(0, 1, n)
    treat = (rng.random(n) < 1 / (1 + np.exp(-(0.9 * x1 - 0.6 * x2 - 0.5)))).astype(int)
    df = pd.DataFrame({"x1": x1, "x2": x2, "treat": treat, "year": rng.integers(2010, 2013, n)})
    out, info = psm_sample(df, "treat", ["x1", "x2"], caliper_sd=0.2)
    for row in info["balance"]:  # covariates and the logit score
        assert abs(row["std_diff_before"]) > 20
        assert abs(row["std_diff_after"]) < abs(row["std_diff_before"]) / 3
    assert info["n_treated_matched"] > 0.8 * info["n_treated"]
    lo, hi = info["control_pscore_range"]
    t = out["treat"].to_numpy(bool)
    on = ~t | ((out["__pscore"] >= lo) & (out["__pscore"] <= hi) & (out["__n_ties"] > 0)).to_numpy()
    assert on.sum() == info["n_support"] == out["__support"].sum()


# ------------------------------------------------------------------------------------- spillover


def test_critical_distance_is_the_last_contiguous_significant_band():
    bands = [(0, 100, 0.2, 0.01), (100, 200, 0.1, 0.05), (200, 300, 0.05, 0.4), (300, 500, 0.1, 0.01)]
    assert critical_distance(bands, 0.10) == 200
    assert critical_distance([(0, 100, -0.1, 0.01)], 0.10) is None


def test_ife_reports_r_max_boundary_beta_path_em_cells_and_factor_df_se():
    """Issue 16 item 5: with r_max = 1 and a real factor, IC_p2 stops at the bound and says so; the β
    path over r equals separate fits; the EM-filled cells are counted; the factor-df SE is the
    reported SE scaled by sqrt((N-K)/(N-K-r(N+T-r)))."""
    df = _factor_panel(seed=5, N=120, T=10, missing=0.05)
    df = df.assign(stkcd=df["unit"].astype(str), year=2010 + df["time"], city_code=(df["unit"] % 30).astype(str),
                   ln_apply_inv_zl=df["y"], policy=df["x"])
    spec = _spec(estimator="ife", controls=[], fixed_effects="firm_year", options={"n_factors": "auto", "r_max": 1})
    res = fit_ife(spec, df, RunContext())
    d = res.diagnostics
    assert d["n_factors"] == 1 and d["ic_at_r_max"] is True and d["r_max"] == 1
    flist = pnl.factorize_columns(df, ["stkcd", "year"])
    for r in (0, 1):
        ref = ife(df["y"].to_numpy(), df[["x"]].to_numpy(), df["stkcd"].to_numpy(), df["year"].to_numpy(), flist, r,
                  tol=1e-11, max_iter=20000)
        assert d["beta_path_over_r"][r] == pytest.approx(ref.beta[0], abs=1e-4)
        if r == 1:  # the reported error estimate bounds the actual distance to the tight fixed point
            assert abs(d["beta_path_over_r"][1] - ref.beta[0]) <= 10 * d["beta_error_estimate"] * (1 + abs(ref.beta[0]))
    assert d["missing_cells"] == 120 * 10 - len(df) > 0
    assert d["tol"] == 1e-6 and d["converged"] and d["beta_error_estimate"] is not None
    N, K = res.nobs, 120 + 10 - 1 + 1  # upper bound of df_k: firm + year FE (one redundant) + policy
    k_f = 1 * (120 + 10 - 1)
    assert d["factor_parameters"] == k_f
    ratio = d["se_factor_df_adjusted"] / res.main.std_error
    assert ratio > 1
    # the ratio is sqrt((N-df_k)/(N-df_k-k_f)) for pyfixest's df_k of this fit: solve for df_k, it must be an integer
    df_k = N - k_f * ratio**2 / (ratio**2 - 1)
    assert df_k == pytest.approx(round(df_k), abs=1e-6) and 0 < round(df_k) <= K
