"""Correctness tests for the estimation layer (keytech.estimation) on simulated panels.

No warehouse data is used: panels are simulated here (fixed seeds) with a known planted effect.
The store/gate/end-to-end tests are in test_estimation_store.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import RegistryError, load_registry, parse_registry
from keytech.estimation.simulate import CITY_CONTROLS, FIRM_CONTROLS, simulate_panel

# ----------------------------------------------------------------------------- tolerances
COEF_RTOL = 1e-8  # table3_col5 coefficient vs explicit-dummy OLS
SE_RTOL = 1e-6  # clustered / iid SE vs hand-written sandwich
EXACT_ATOL = 1e-8  # identities that hold exactly up to demeaning tolerance (Bacon, SA, FWL)
NB_COEF_RTOL = 1e-4  # our FE negative binomial vs statsmodels with explicit dummies
NB_ALPHA_RTOL = 1e-3
NB_SE_RTOL = 1e-4  # iid SE vs statsmodels GLM at the same alpha
DID2S_RTOL = 1e-4  # pyfixest.did2s demeans with its default tolerance (1e-6), not settable there
POISSON_SE_MULT = 2.0  # planted beta within this many SE of the Poisson FE estimate
PRETREND_ALPHA = 0.05  # pre-period joint test must not reject at this level without pre-trends
PLACEBO_CENTRE = 0.25  # |mean of placebo draws| < this * their SD
SAME_RTOL = 1e-12  # the same number computed twice / by an equivalent formula
IDENTITY_ATOL = 1e-10  # algebraic identities without iterative demeaning (Bacon, weights sum to 1)
STORED_DRAW_RTOL = 1e-5  # placebo draws are stored to 6 significant digits
TWFE_BIAS_MIN = 1e-3  # TWFE must visibly differ from the true ATT under heterogeneous effects
NB_LOGLIK_RTOL = 1e-8
NB_POISSON_LIMIT_RTOL = 1e-3  # NB with theta -> infinity vs pyfixest fepois
NB_OBSERVED_SE_RTOL = 0.05  # expected- vs observed-information SE (statsmodels discrete NB)

REQUIRED_IDS = [
    "table3_col1", "table3_col2", "table3_col3", "table3_col4", "table3_col5", "event_study",
    "robust_cluster_firm", "robust_cluster_province", "robust_cluster_city_year", "robust_poisson",
    "robust_negbin", "robust_grants", "robust_citations", "robust_anticipation", "robust_pretrend",
    "robust_staggered_dcdh", "robust_staggered_bacon", "robust_staggered_sunab",
    "robust_staggered_did2s", "robust_staggered_cs", "placebo", "robust_window2022",
]

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def reg():
    return load_registry()


@pytest.fixture(scope="module")
def ctx(reg):
    return RunContext(placebo_draws=200, seed=7, fe_labels=reg.fe_labels)


@pytest.fixture(scope="module")
def sim():
    """~4k firm-years, 60 cities, staggered 2016-2019 cohorts, planted Poisson effect 0.25."""
    return pnl.prepare_panel(simulate_panel(seed=11, n_cities=60, firms_per_city=7.5, beta_key=0.25))


def _fit(reg, ctx, df, spec_id):
    (res,) = run_spec(reg.get(spec_id), df, ctx)
    return res


# ----------------------------------------------------------------------------- registry


def test_registry_has_every_required_spec_and_table3_exactly_as_paper(reg):
    assert set(REQUIRED_IDS) <= set(reg.ids)
    assert reg.control_sets["firm"] == ("roa", "lnage", "ki", "ifdome", "ln_size", "kd")
    assert reg.control_sets["city"] == ("ln_meangdp", "infor", "ln_finsgov", "ln_fdi")
    expect = {
        "table3_col1": ((), (), "iid"),
        "table3_col2": ((), ("stkcd", "year"), "iid"),
        "table3_col3": (("firm",), ("stkcd", "year"), "iid"),
        "table3_col4": (("firm", "city"), ("stkcd", "year"), "iid"),
        "table3_col5": (("firm", "city"), ("stkcd", "ind_year", "prov_year"), "cluster(city_code)"),
    }
    for sid, (sets, fe, vcov) in expect.items():
        s = reg.get(sid)
        assert (s.control_sets, s.fixed_effects, s.vcov.describe()) == (sets, fe, vcov), sid
        assert s.outcome == "ln_apply_inv_zl" and s.treatment == "policy" and s.estimator == "ols"
        assert s.paper is not None and s.paper.coef is not None
    assert reg.get("table3_col5").paper.coef == pytest.approx(0.1287)
    assert reg.get("robust_cluster_city_year").vcov.cluster == ("city_code", "year")


def test_registry_selection_by_id_group_prefix_and_unknown(reg):
    assert [s.id for s in reg.select(["table3"])] == [f"table3_col{i}" for i in range(1, 6)]
    assert {s.id for s in reg.select(["staggered"])} == {
        "robust_staggered_dcdh", "robust_staggered_bacon", "robust_staggered_sunab", "robust_staggered_did2s",
        "robust_staggered_cs", "robust_staggered_drcs", "robust_staggered_drcs_event", "robust_staggered_imputation"}
    assert {s.id for s in reg.select(["robust_cluster"])} == {
        "robust_cluster_firm", "robust_cluster_province", "robust_cluster_city_year"}
    assert [s.id for s in reg.select(["placebo", "event_study"])] == ["event_study", "placebo"]
    assert len(reg.select(None)) == len(reg.specs)
    with pytest.raises(RegistryError, match="matches no specification"):
        reg.select(["table9"])


def test_adding_a_yaml_entry_adds_a_regression_and_splits_work(sim, ctx):
    from keytech.estimation.orchestration.registry import SPECS_FILE

    raw = yaml.safe_load(SPECS_FILE.read_text(encoding="utf-8"))
    raw["specs"].append({"id": "extra_nonkey", "label": "Non-key", "outcome": "ln_apply_inv_nozl"})
    raw["specs"].append({"id": "extra_split", "split": {"by": "lnage", "at": "median"}})
    reg2 = parse_registry(raw)
    (res,) = run_spec(reg2.get("extra_nonkey"), sim, ctx)
    assert res.fixed_effects == "Firm + Industry×year + Province×year" and res.vcov == "cluster(city_code)"
    assert np.isfinite(res.main.estimate) and res.nobs > 1000
    parts = run_spec(reg2.get("extra_split"), sim, ctx)
    assert [p.spec_id for p in parts] == ["extra_split@lnage<=median", "extra_split@lnage>median"]
    assert sum(p.nobs for p in parts) <= res.nobs + 50  # two halves of the same sample (minus singletons)
    with pytest.raises(RegistryError):
        parse_registry({**raw, "specs": raw["specs"] + [{"id": "bad", "vcov": "robustest"}]})


# ----------------------------------------------------------------------------- event-time coding


def test_event_time_dummies_hand_panel():
    # firm A: first treated 2016 (announced 2015); firm B: first treated 2019; firm C: never
    years = list(range(2010, 2020))
    df = pd.DataFrame(
        {
            "stkcd": ["000001"] * 10 + ["000002"] * 10 + ["000003"] * 10,
            "year": years * 3,
            "first_treated_year": [2016] * 10 + [2019] * 10 + [None] * 10,
        }
    )
    df["rel_time"] = df["year"] - df["first_treated_year"]
    D = pnl.event_time_dummies(df["rel_time"], -5, 3, -1)
    assert list(D.columns) == ["ev_m5", "ev_m4", "ev_m3", "ev_m2", "ev_p0", "ev_p1", "ev_p2", "ev_p3"]
    # expected event time per row after binning (None = base or never treated -> all zero)
    exp_k = (
        [-5, -5, -4, -3, -2, None, 0, 1, 2, 3]  # A: 2010 is k=-6 -> binned into -5; 2015 is the base
        + [-5, -5, -5, -5, -5, -4, -3, -2, None, 0]  # B: 2010..2014 are k=-9..-5 -> -5
        + [None] * 10  # C: never treated
    )
    expected = np.zeros((30, 8))
    for i, k in enumerate(exp_k):
        if k is not None:
            expected[i, list(D.columns).index(pnl.event_dummy_name(k))] = 1.0
    np.testing.assert_array_equal(D.to_numpy(), expected)
    # upper binning (2010-2022 window): k > 3 goes into k = 3
    D2 = pnl.event_time_dummies(pd.Series([4.0, 6.0, 3.0, np.nan]), -5, 3, -1)
    np.testing.assert_array_equal(D2["ev_p3"].to_numpy(), [1, 1, 1, 0])
    assert D2.iloc[3].sum() == 0


def test_prepare_panel_types_and_derived_regressors():
    df = pd.DataFrame(
        {
            "stkcd": [1, 1, 2], "year": [2015, 2016, 2016], "city_code": ["110100"] * 3,
            "province_code": ["11"] * 3, "industry_code": ["C39"] * 3, "policy": [0, 1, 0],
            "first_treated_year": pd.array([2016, 2016, None], dtype="Int64"),
            "rel_time": pd.array([-1, 0, None], dtype="Int64"),
        }
    )
    p = pnl.prepare_panel(df)
    assert list(p["stkcd"]) == ["1", "1", "2"] and list(p["year"]) == [2015, 2016, 2016]
    assert p["rel_time"].dtype == np.float64 and np.isnan(p["rel_time"].iloc[2])
    assert list(p["ind_year"]) == ["C39_2015", "C39_2016", "C39_2016"]
    q = pnl.add_derived(p, ["lead1"])
    assert list(q["lead1"]) == [1.0, 0.0, 0.0]
    with pytest.raises(KeyError):
        pnl.add_derived(p, ["no_such_variable"])


def test_prepare_panel_of_a_wide_panel_is_quiet_and_idempotent():
    """A panel with a mart's columns joined on (the endogeneity panel with the mechanisms: 116
    columns at paper scale) is prepared without pandas' "highly fragmented" warning, and preparing
    it again changes nothing, the FE cells included."""
    base = {"stkcd": [2, 1], "year": [2016, 2015], "city_code": ["110100"] * 2, "province_code": ["11", None],
            "industry_code": ["C39"] * 2, "policy": [0, 1]}
    df = pd.DataFrame({**base, **{f"x{i}": pd.array([i, None], dtype="Int64") for i in range(150)}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = pnl.prepare_panel(df)
        again = pnl.prepare_panel(p)
    assert list(p.columns) == [*df.columns, "ind_year", "prov_year"]
    assert list(p["ind_year"]) == ["C39_2015", "C39_2016"] and p["prov_year"].isna().tolist() == [True, False]
    pd.testing.assert_frame_equal(again, p)


def test_pretrend_slope_is_firm_ols_slope_on_pre_window():
    df = pd.DataFrame({"stkcd": ["a"] * 6 + ["b"] * 2, "year": [2010, 2011, 2012, 2013, 2014, 2015, 2013, 2014],
                       "y": [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, 1.0, 2.0]})
    s = pnl.pretrend_slope(df, "y", (2010, 2014), min_obs=3)
    assert s.iloc[0] == pytest.approx(1.0)  # 2015 outlier is outside the window
    assert np.isnan(s.iloc[-1])  # firm b has only 2 pre-window years


# ----------------------------------------------------------------------------- Table 3 col 5 vs explicit dummies


def _drop_singletons(df: pd.DataFrame, fes: list[str]) -> pd.DataFrame:
    """Independent iterative singleton removal."""
    while True:
        bad = np.zeros(len(df), dtype=bool)
        for f in fes:
            bad |= df.groupby(f)[f].transform("size").to_numpy() == 1
        if not bad.any():
            return df
        df = df.loc[~bad]


def _dummies(df: pd.DataFrame, col: str, drop_first: bool) -> np.ndarray:
    return pd.get_dummies(df[col], drop_first=drop_first).to_numpy(dtype=float)


def test_table3_col5_equals_explicit_dummy_ols_with_cluster_sandwich(sim, reg, ctx):
    res = _fit(reg, ctx, sim, "table3_col5")
    controls = list(FIRM_CONTROLS + CITY_CONTROLS)
    d = sim.dropna(subset=["ln_apply_inv_zl", "policy", *controls, "city_code"])
    d = _drop_singletons(d, ["stkcd", "ind_year", "prov_year"])
    assert res.nobs == len(d)
    F, IY, PY = _dummies(d, "stkcd", False), _dummies(d, "ind_year", True), _dummies(d, "prov_year", True)
    X = np.column_stack([d[["policy", *controls]].to_numpy(float), F, IY, PY])
    y = d["ln_apply_inv_zl"].to_numpy(float)
    # firms are nested in industries and provinces, so the dummy set is rank deficient beyond the
    # dropped reference levels: use the minimum-norm solution and the pseudo-inverse (the Policy
    # coefficient and its variance are estimable functions, hence unique)
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    XtX_inv = np.linalg.pinv(X.T @ X)
    e = y - X @ b
    assert res.main.estimate == pytest.approx(b[0], rel=COEF_RTOL)
    # CRV1 sandwich by city
    scores = X * e[:, None]
    g = pd.factorize(d["city_code"])[0]
    meat_g = np.zeros((g.max() + 1, X.shape[1]))
    np.add.at(meat_g, g, scores)
    V = XtX_inv @ (meat_g.T @ meat_g) @ XtX_inv
    # pyfixest's default ssc (fixest's convention): G/(G-1) * (N-1)/(N-K). K counts the slopes
    # plus the FE levels not nested in the cluster variable: firm FE are nested in city (firms do
    # not move) and count as one parameter; industry×year and province×year count fully; one level
    # per FE dimension beyond the first is subtracted. (Exact rank would be smaller still: fixest
    # and pyfixest do not detect redundancies among three FE dimensions; we follow the convention.)
    N, G = len(d), g.max() + 1
    n_iy, n_py = IY.shape[1] + 1, PY.shape[1] + 1
    assert d.groupby("stkcd")["city_code"].nunique().max() == 1  # nesting holds
    K = (1 + len(controls)) + (n_iy + n_py - 2 + 1)
    se = np.sqrt(V[0, 0] * G / (G - 1) * (N - 1) / (N - K))
    assert res.main.std_error == pytest.approx(se, rel=SE_RTOL)
    assert res.diagnostics["n_clusters"] == [G]


def test_table3_col2_iid_se_equals_explicit_dummy_ols(sim, reg, ctx):
    res = _fit(reg, ctx, sim, "table3_col2")
    d = _drop_singletons(sim.dropna(subset=["ln_apply_inv_zl", "policy"]), ["stkcd", "year"])
    X = np.column_stack([d["policy"].to_numpy(float), _dummies(d, "stkcd", False), _dummies(d, "year", True)])
    y = d["ln_apply_inv_zl"].to_numpy(float)
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    e = y - X @ b
    sigma2 = e @ e / (len(y) - X.shape[1])
    se = np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[0, 0])
    assert res.main.estimate == pytest.approx(b[0], rel=COEF_RTOL)
    assert res.main.std_error == pytest.approx(se, rel=SE_RTOL)
    r2 = 1 - (e @ e) / np.sum((y - y.mean()) ** 2)
    adj = 1 - (1 - r2) * (len(y) - 1) / (len(y) - X.shape[1])
    assert res.adj_r2 == pytest.approx(adj, rel=COEF_RTOL)


def test_cluster_by_firm_uses_data_based_nesting(sim, reg, ctx):
    """Clustering by a variable that is also a FE: K must not depend on pyfixest's FE order."""
    from keytech.estimation.core.ssc import cluster_ssc

    res = _fit(reg, ctx, sim, "robust_cluster_firm")
    base = _fit(reg, ctx, sim, "table3_col5")
    assert res.main.estimate == pytest.approx(base.main.estimate, rel=SAME_RTOL)
    controls = list(FIRM_CONTROLS + CITY_CONTROLS)
    d = pnl.estimation_sample(sim, ["ln_apply_inv_zl", "policy", *controls], ["stkcd", "ind_year", "prov_year"], ["stkcd"])
    factor, G = cluster_ssc(len(d), 1 + len(controls), pnl.factorize_columns(d, ["stkcd", "ind_year", "prov_year"]), pnl.factorize_columns(d, ["stkcd"]))
    n_iy, n_py = d["ind_year"].nunique(), d["prov_year"].nunique()
    assert factor == pytest.approx(G / (G - 1) * (len(d) - 1) / (len(d) - (11 + n_iy + n_py - 1)), rel=SAME_RTOL)
    assert res.diagnostics["df_k"] == 11 + n_iy + n_py - 1


# ----------------------------------------------------------------------------- planted effect


def test_poisson_recovers_planted_beta_and_ols_is_positive(sim, reg, ctx):
    pois = _fit(reg, ctx, sim, "robust_poisson")
    assert abs(pois.main.estimate - 0.25) < POISSON_SE_MULT * pois.main.std_error
    assert pois.main.std_error < 0.1  # the test has power: a zero effect would be > 2 SE away
    assert abs(0.0 - pois.main.estimate) > POISSON_SE_MULT * pois.main.std_error
    ols = _fit(reg, ctx, sim, "table3_col5")
    assert ols.main.estimate > 0


def test_event_study_no_pretrend_not_rejected_but_planted_pretrend_rejected(sim, reg, ctx):
    es = _fit(reg, ctx, sim, "event_study")
    pre = es.diagnostics["pretrend_test"]
    assert pre["periods"] == [-5, -4, -3, -2] and pre["df"] == 4
    assert pre["p_value"] > PRETREND_ALPHA
    assert es.term("rel_time=-1").estimate == 0.0 and es.term("rel_time=-1").std_error is None
    assert sum(es.term(f"rel_time={k}").estimate for k in range(0, 4)) > 0
    # negative control: same design with an anticipation bump in k = -3, -2 must be detected
    bumped = pnl.prepare_panel(simulate_panel(seed=11, n_cities=60, firms_per_city=7.5, beta_key=0.25, pretrend=((-3, 0.5), (-2, 0.5))))
    es2 = _fit(reg, ctx, bumped, "event_study")
    assert es2.diagnostics["pretrend_test"]["p_value"] < 0.01


def test_event_study_wald_matches_manual_computation(sim, reg, ctx):
    from keytech.estimation.core.fitting import joint_wald

    b = np.array([0.1, -0.2])
    V = np.array([[0.01, 0.002], [0.002, 0.02]])
    out = joint_wald(b, V, 40)
    W = b @ np.linalg.inv(V) @ b
    assert out["wald_chi2"] == pytest.approx(W)
    from scipy import stats

    assert out["p_F"] == pytest.approx(stats.f.sf(W / 2, 2, 40))


# ----------------------------------------------------------------------------- placebo


def test_placebo_is_centred_reproducible_and_fast_path_exact(sim, reg):
    spec = reg.get("placebo")
    c1 = RunContext(placebo_draws=200, seed=123, fe_labels=reg.fe_labels)
    (r1,) = run_spec(spec, sim, c1)
    (r2,) = run_spec(spec, sim, c1)
    (r3,) = run_spec(spec, sim, RunContext(placebo_draws=200, seed=124, fe_labels=reg.fe_labels))
    d1, d2, d3 = r1.diagnostics, r2.diagnostics, r3.diagnostics
    assert d1["draws"] == d2["draws"]  # same seed -> identical draws
    assert d1["draws"] != d3["draws"]
    draws = np.array(d1["draws"])
    assert len(draws) == 200
    assert abs(draws.mean()) < PLACEBO_CENTRE * draws.std()
    # the FWL fast path reproduces pyfixest's coefficient and clustered SE on the real treatment
    assert d1["fast_path_check"]["beta_abs_diff"] < EXACT_ATOL
    assert d1["fast_path_check"]["se_rel_diff"] < SE_RTOL
    # the real (planted) effect lies in the tail of the placebo distribution
    assert d1["p_empirical"] < 0.10


def test_placebo_draws_keep_real_cohort_sizes_and_match_direct_refit(sim, reg):
    from keytech.estimation.inference.placebo import placebo_first_years

    rng = np.random.default_rng(0)
    FT = placebo_first_years(40, {2016: 5, 2017: 4, 2019: 3}, 25, rng)
    for j in range(FT.shape[1]):
        vals, counts = np.unique(FT[~np.isnan(FT[:, j]), j], return_counts=True)
        assert dict(zip(vals.astype(int), counts)) == {2016: 5, 2017: 4, 2019: 3}
    # one draw refitted directly with pyfixest gives the fast path's coefficient
    import pyfixest as pf

    spec = reg.get("placebo")
    (r,) = run_spec(spec, sim, RunContext(placebo_draws=3, seed=5, fe_labels=reg.fe_labels))
    controls = list(FIRM_CONTROLS + CITY_CONTROLS)
    d = pnl.estimation_sample(sim, ["ln_apply_inv_zl", "policy", *controls], ["stkcd", "ind_year", "prov_year"], ["city_code"])
    city_first = d.groupby("city_code")["first_treated_year"].first()
    cities = city_first.index.to_numpy()
    counts = {int(c): int(n) for c, n in city_first.dropna().value_counts().sort_index().items()}
    FT = placebo_first_years(len(cities), counts, 3, np.random.default_rng(5))
    ft_row = FT[pd.Index(cities).get_indexer(d["city_code"]), 0]
    with np.errstate(invalid="ignore"):
        d = d.assign(fake=(d["year"].to_numpy() >= ft_row).astype(float))
    fit = pf.feols(f"ln_apply_inv_zl ~ fake + {' + '.join(controls)} | stkcd + ind_year + prov_year", data=d,
                   vcov={"CRV1": "city_code"}, demeaner=pf.MapDemeaner(fixef_tol=1e-10))
    assert r.diagnostics["draws"][0] == pytest.approx(float(fit.coef()["fake"]), rel=STORED_DRAW_RTOL)
    assert r.diagnostics["t_draws"][0] == pytest.approx(float(fit.tstat()["fake"]), rel=STORED_DRAW_RTOL)


# ----------------------------------------------------------------------------- staggered DID


def _linear_panel(hetero: bool = True, never_share: float = 0.3, seed: int = 3) -> pd.DataFrame:
    """Noise-free balanced panel y = a_i + g_t + tau(cohort, k) for treated cells."""
    rng = np.random.default_rng(seed)
    rows = []
    cohorts = [2016, 2017, 2018, 2019]
    for i in range(200):
        c = np.nan if rng.random() < never_share else cohorts[i % 4]
        city = f"{i % 40:04d}00"
        a = rng.normal()
        for t in range(2010, 2020):
            k = t - c
            tau = 0.0
            if not np.isnan(c) and k >= 0:
                tau = (0.1 + 0.05 * (c - 2016) + 0.04 * k) if hetero else 0.2
            rows.append((f"{i:06d}", t, city, "11", "C39", c, k, float(k >= 0) if not np.isnan(c) else 0.0,
                         a + 0.03 * (t - 2010) + tau, tau))
    df = pd.DataFrame(rows, columns=["stkcd", "year", "city_code", "province_code", "industry_code",
                                     "first_treated_year", "rel_time", "policy", "ln_apply_inv_zl", "tau"])
    return pnl.prepare_panel(df)


def _spec(reg, base_id, **changes):
    import dataclasses

    return dataclasses.replace(reg.get(base_id), **changes)


def test_sunab_and_did2s_are_exact_on_noise_free_heterogeneous_effects(reg, ctx):
    df = _linear_panel()
    fe = ("stkcd", "year")
    sa_spec = _spec(reg, "robust_staggered_sunab", controls=(), control_sets=(), fixed_effects=fe)
    (sa,) = run_spec(sa_spec, df, ctx)
    treated = df[df["policy"] == 1]
    # SA per-period estimate = cohort-share-weighted true effect; ATT = mean true effect on treated
    for k in range(0, 4):
        assert sa.term(f"rel_time={k}").estimate == pytest.approx(treated.loc[treated["rel_time"] == k, "tau"].mean(), abs=EXACT_ATOL)
    for k in (-5, -4, -3, -2):
        assert abs(sa.term(f"rel_time={k}").estimate) < EXACT_ATOL
    assert sa.main.estimate == pytest.approx(treated["tau"].mean(), abs=EXACT_ATOL)
    d2_spec = _spec(reg, "robust_staggered_did2s", controls=(), control_sets=(), fixed_effects=fe)
    (d2,) = run_spec(d2_spec, df, ctx)
    assert d2.main.estimate == pytest.approx(treated["tau"].mean(), rel=DID2S_RTOL)
    # TWFE is biased here (heterogeneous dynamic effects): it differs from the true ATT
    tw_spec = _spec(reg, "table3_col5", controls=(), control_sets=(), fixed_effects=fe)
    (tw,) = run_spec(tw_spec, df, ctx)
    assert abs(tw.main.estimate - treated["tau"].mean()) > TWFE_BIAS_MIN


def test_robust_estimators_agree_in_sign_with_twfe(sim, reg, ctx):
    twfe = _fit(reg, ctx, sim, "table3_col5").main.estimate
    sa = _fit(reg, ctx, sim, "robust_staggered_sunab")
    d2 = _fit(reg, ctx, sim, "robust_staggered_did2s")
    assert twfe > 0
    assert np.sign(sa.main.estimate) == np.sign(twfe)
    assert np.sign(d2.main.estimate) == np.sign(twfe)
    assert d2.diagnostics["treated_obs"] > 100


def test_bacon_decomposition_reproduces_twfe(sim, reg, ctx):
    from keytech.estimation.did.bacon import bacon_decomposition

    for df in (_linear_panel(), _linear_panel(never_share=0.0, seed=4)):
        res = bacon_decomposition(df, "ln_apply_inv_zl", "policy")
        assert res["weight_total"] == pytest.approx(1.0, abs=IDENTITY_ATOL)
        assert res["beta_decomposed"] == pytest.approx(res["beta_twfe"], abs=IDENTITY_ATOL)
    bac = _fit(reg, ctx, sim, "robust_staggered_bacon")
    assert bac.diagnostics["beta_decomposed"] == pytest.approx(bac.main.estimate, abs=EXACT_ATOL)
    assert {"treated_vs_never", "early_vs_later", "later_vs_earlier"} <= set(bac.diagnostics["by_type"])


def test_dcdh_weights_sum_to_one_reproduce_twfe_and_flag_negative_weights(sim, reg, ctx):
    from keytech.estimation.did.dcdh import dcdh_weights

    r = _fit(reg, ctx, sim, "robust_staggered_dcdh")
    assert r.diagnostics["fwl_check_abs_diff"] < EXACT_ATOL
    assert r.diagnostics["sum_negative"] + r.diagnostics["sum_positive"] == pytest.approx(1.0, abs=IDENTITY_ATOL)
    # classic negative-weight design: two cohorts, no never-treated, firm + year FE -> the early
    # cohort's late periods get negative weight (de Chaisemartin & D'Haultfoeuille 2020)
    df = _linear_panel(never_share=0.0, seed=4)
    df = df.assign(first_treated_year=np.where(df["stkcd"].str[-1].astype(int) % 2 == 0, 2011.0, 2018.0))
    df = df.assign(rel_time=df["year"] - df["first_treated_year"], policy=(df["year"] >= df["first_treated_year"]).astype(float))
    w = dcdh_weights(df, "ln_apply_inv_zl", "policy", ["stkcd", "year"])
    assert w["weights"].sum() == pytest.approx(1.0, abs=IDENTITY_ATOL)
    assert w["n_negative"] > 0 and w["sum_negative"] < 0
    late = df.loc[w["treated_index"]].assign(w=w["weights"])
    assert late.loc[(late["first_treated_year"] == 2011) & (late["year"] >= 2018), "w"].lt(0).all()


# ----------------------------------------------------------------------------- negative binomial


def _nb_panel(seed: int = 2, n_firms: int = 60, T: int = 8, theta: float = 2.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    f = np.repeat(np.arange(n_firms), T)
    t = np.tile(np.arange(T), n_firms)
    a = rng.normal(0, 0.7, n_firms)[f]
    g = np.linspace(0, 0.4, T)[t]
    treat_first = np.where(rng.random(n_firms) < 0.5, rng.integers(3, T, n_firms), 99)[f]
    policy = (t >= treat_first).astype(float)
    x = rng.normal(size=len(f))
    mu = np.exp(0.5 + a + g + 0.3 * policy + 0.2 * x)
    y = rng.poisson(mu * rng.gamma(theta, 1 / theta, len(f)))
    return pd.DataFrame({"firm": f, "t": t, "policy": policy, "x": x, "y": y})


def test_fe_negbin_matches_statsmodels_with_explicit_dummies():
    import statsmodels.api as sm

    from keytech.estimation.count import fenegbin

    df = _nb_panel()
    df = df[df.groupby("firm")["y"].transform("sum") > 0]  # all-zero firms carry no information
    fe = np.column_stack([pd.factorize(df["firm"])[0], pd.factorize(df["t"])[0]])
    res = fenegbin(df["y"].to_numpy(), df[["policy", "x"]].to_numpy(), fe, ["policy", "x"])
    assert res.converged and res.nobs == len(df)
    D = pd.get_dummies(df[["firm", "t"]].astype(str), drop_first=True).to_numpy(float)
    X = np.column_stack([df[["policy", "x"]].to_numpy(float), np.ones(len(df)), D])
    pois = sm.GLM(df["y"].to_numpy(), X, family=sm.families.Poisson()).fit()
    nb = sm.NegativeBinomial(df["y"].to_numpy(), X, loglike_method="nb2").fit(
        start_params=np.append(pois.params, 0.5), method="newton", maxiter=300, tol=1e-12, disp=False)
    assert nb.mle_retvals["converged"]
    np.testing.assert_allclose(res.coef, nb.params[:2], rtol=NB_COEF_RTOL)
    assert res.alpha == pytest.approx(nb.params[-1], rel=NB_ALPHA_RTOL)
    assert res.loglik == pytest.approx(nb.llf, rel=NB_LOGLIK_RTOL)
    # iid SE = inverse expected information at our alpha: statsmodels GLM (IRLS) at the same alpha
    glm = sm.GLM(df["y"].to_numpy(), X, family=sm.families.NegativeBinomial(alpha=res.alpha)).fit(tol=1e-12)
    np.testing.assert_allclose(res.coef, glm.params[:2], rtol=NB_COEF_RTOL)
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov_iid)), glm.bse[:2], rtol=NB_SE_RTOL)
    # and the discrete-model (observed-information) SE is close
    np.testing.assert_allclose(np.sqrt(np.diag(res.vcov_iid)), nb.bse[:2], rtol=NB_OBSERVED_SE_RTOL)


def test_fe_negbin_drops_all_zero_groups_and_tends_to_poisson(sim, reg, ctx):
    from keytech.estimation.count import fenegbin

    df = _nb_panel(seed=5)
    df.loc[df["firm"] == 0, "y"] = 0
    fe = np.column_stack([df["firm"].to_numpy(), df["t"].to_numpy()])
    res = fenegbin(df["y"].to_numpy(), df[["policy", "x"]].to_numpy(), fe)
    assert not res.keep[df["firm"].to_numpy() == 0].any()
    assert res.n_dropped_zero >= 8
    # Poisson data: theta -> large, NB coefficient and clustered SE -> pyfixest fepois
    nb = _fit(reg, ctx, sim, "robust_negbin")
    po = _fit(reg, ctx, sim, "robust_poisson")
    assert nb.diagnostics["theta"] > 1e3
    assert nb.main.estimate == pytest.approx(po.main.estimate, rel=NB_POISSON_LIMIT_RTOL)
    assert nb.main.std_error == pytest.approx(po.main.std_error, rel=NB_POISSON_LIMIT_RTOL)
    assert nb.nobs == po.nobs
