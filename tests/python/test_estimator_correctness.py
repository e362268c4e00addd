"""Issue 16: estimator correctness on hand-made tiny panels (each case built so that the old code
gives a different answer): did2s identification, Bacon with a mover, FE Poisson separation,
placebo p-value and seeds, PSM ties, permutation blocks, IFE diagnostics."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import load_registry

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

HAND_RTOL = 1e-6  # estimator vs explicit-dummy hand computation (iterative demeaning inside)


@pytest.fixture(scope="module")
def reg():
    return load_registry()


@pytest.fixture(scope="module")
def ctx(reg):
    return RunContext(placebo_draws=50, seed=7, fe_labels=reg.fe_labels)


def _spec(reg, base_id, **changes):
    return dataclasses.replace(reg.get(base_id), **changes)


def _rows_to_panel(rows, extra_cols=()):
    cols = ["stkcd", "year", "city_code", "province_code", "industry_code", "first_treated_year", "policy",
            "ln_apply_inv_zl", *extra_cols]
    df = pd.DataFrame(rows, columns=cols)
    df["rel_time"] = df["year"] - df["first_treated_year"]
    return pnl.prepare_panel(df)


# ----------------------------------------------------------------------------- 1. did2s


def _did2s_island_panel(seed: int = 0) -> pd.DataFrame:
    """Component A: 8 firms 2010-2015 (firms 0-2 treated from 2013). Island B: firms 8-9 observed
    untreated only in 2016-2017. Firm 0 is also observed treated in 2016: its firm level and the year
    2016 both occur among untreated rows, but a_0 + g_2016 is not estimable (A and B share no year)."""
    rng = np.random.default_rng(seed)
    rows = []
    a = rng.normal(size=10)
    g = {t: 0.1 * (t - 2010) for t in range(2010, 2018)}
    for i in range(8):
        c = 2013.0 if i < 3 else np.nan
        for t in range(2010, 2016):
            d = float(t >= c) if i < 3 else 0.0
            rows.append((f"{i:06d}", t, f"{i % 4:04d}00", "11", "C39", c, d, a[i] + g[t] + 0.3 * d + 0.01 * rng.normal()))
    for i in (8, 9):
        for t in (2016, 2017):
            rows.append((f"{i:06d}", t, f"{i % 4:04d}00", "11", "C39", np.nan, 0.0, a[i] + g[t] + 0.01 * rng.normal()))
    rows.append(("000000", 2016, "000000", "11", "C39", 2013.0, 1.0, a[0] + g[2016] + 0.3 + 0.01 * rng.normal()))
    return _rows_to_panel(rows)


def test_did2s_drops_treated_rows_without_estimable_counterfactual(reg, ctx):
    df = _did2s_island_panel()
    spec = _spec(reg, "robust_staggered_did2s", controls=(), control_sets=(), fixed_effects=("stkcd", "year"))
    (r,) = run_spec(spec, df, ctx)
    assert r.diagnostics["treated_obs_dropped_unidentified"] == 1
    assert r.diagnostics["treated_obs_dropped_fe_level_absent"] == 0  # the old level check passes it
    # hand imputation: OLS of y on firm + year dummies among untreated rows, predict the identified treated
    u = df[df["policy"] == 0]
    tr = df[(df["policy"] == 1) & (df["year"] <= 2015)]
    firms, years = sorted(df["stkcd"].unique()), sorted(df["year"].unique())

    def design(d):
        return np.column_stack([(d["stkcd"].to_numpy()[:, None] == np.array(firms)[None, :]).astype(float),
                                (d["year"].to_numpy()[:, None] == np.array(years)[None, 1:]).astype(float)])

    b = np.linalg.lstsq(design(u), u["ln_apply_inv_zl"].to_numpy(), rcond=None)[0]
    att = float(np.mean(tr["ln_apply_inv_zl"].to_numpy() - design(tr) @ b))
    assert r.main.estimate == pytest.approx(att, rel=HAND_RTOL)
    assert r.nobs == len(u) + len(tr)
    (r2,) = run_spec(spec, df, ctx)  # deterministic
    assert (r2.main.estimate, r2.main.std_error) == (r.main.estimate, r.main.std_error)


def test_identified_rows_rank_test_three_fe():
    """Three FE dimensions, every level of the treated row present among untreated rows, yet the
    row is not in the row space of the untreated design."""
    from keytech.estimation.did.did2s import identified_rows

    # untreated cells (f, a, b): f1 + a2 + b2 is not a combination of their rows (matching f1, f2, a1
    # and a2 forces weights 1, -1, 1, which give b1 weight 2); the rank computation is the reference
    u = pd.DataFrame({"f": ["f1", "f2", "f2"], "a": ["a1", "a1", "a2"], "b": ["b1", "b2", "b1"]})
    t = pd.DataFrame({"f": ["f1", "f1", "f2"], "a": ["a2", "a1", "a2"], "b": ["b2", "b1", "b1"]})
    Z = lambda d: np.column_stack([(d[c].to_numpy()[:, None] == np.array(sorted(set(u[c])))[None, :]).astype(float)
                                   for c in "fab"])
    rank_u = np.linalg.matrix_rank(Z(u))
    expected = [np.linalg.matrix_rank(np.vstack([Z(u), Z(t)[[i]]])) == rank_u for i in range(len(t))]
    ok, info = identified_rows(u, t, [], ["f", "a", "b"])
    assert info["levels_present"].all()
    assert list(ok) == expected
    assert expected == [False, True, True]  # the case really contains a non-identified row


# ----------------------------------------------------------------------------- 2. Bacon with movers


def _mover_panel(seed: int = 1) -> pd.DataFrame:
    """Balanced 2010-2017 panel, 40 firms in 8 cities (cohorts 2012, 2014, 2016, never), plus two
    movers: firm M1 in a 2016-city until 2012, then in a 2012-city (policy from 2013, while its first
    non-null city cohort is 2016); firm M2 in a 2012-city until 2013, then in a never-pilot city
    (policy 1 in 2012-2013 only: not absorbing)."""
    rng = np.random.default_rng(seed)
    city_cohort = {f"{c:04d}00": coh for c, coh in enumerate([2012, 2012, 2014, 2014, 2016, 2016, np.nan, np.nan])}
    cities = list(city_cohort)
    rows = []

    def add(firm, t, city, a):
        c = city_cohort[city]
        d = float(not np.isnan(c) and t >= c)
        rows.append((firm, t, city, "11", "C39", c, d, a + 0.05 * (t - 2010) + (0.2 + 0.05 * (t - 2010)) * d + 0.1 * rng.normal()))

    for i in range(40):
        a = rng.normal()
        for t in range(2010, 2018):
            add(f"{i:06d}", t, cities[i % 8], a)
    for t in range(2010, 2018):
        add("900001", t, cities[4] if t <= 2012 else cities[0], 0.3)
        add("900002", t, cities[0] if t <= 2013 else cities[6], -0.2)
    return _rows_to_panel(rows)


def test_bacon_decomposes_the_reported_policy_term_with_movers(reg, ctx):
    df = _mover_panel()
    (r,) = run_spec(reg.get("robust_staggered_bacon"), df, ctx)
    d = r.diagnostics
    assert d["firms_dropped_non_absorbing"] == 1
    assert r.nobs == len(df) - 8  # the mover that leaves a pilot city
    assert d["weight_total"] == pytest.approx(1.0, abs=1e-10)
    assert d["beta_decomposed"] == pytest.approx(r.main.estimate, abs=1e-8)
    # reported term = hand TWFE (firm + year dummies) of policy on the same rows
    s = df[df["stkcd"] != "900002"]
    X = np.column_stack([s["policy"].to_numpy(float), pd.get_dummies(s["stkcd"], dtype=float).to_numpy(),
                         pd.get_dummies(s["year"], drop_first=True, dtype=float).to_numpy()])
    b = np.linalg.lstsq(X, s["ln_apply_inv_zl"].to_numpy(float), rcond=None)[0]
    assert r.main.estimate == pytest.approx(b[0], rel=HAND_RTOL)
    # the mover M1 is timed by its policy (2013), not by its first city's cohort (2016)
    assert any(c["treated"] == 2013 or c["control"] == 2013 for c in d["comparisons"])


# ----------------------------------------------------------------------------- 3. FE Poisson separation


def _poisson_separation_panel(seed: int = 2) -> pd.DataFrame:
    """Firm + year Poisson panel 2010-2015, 30 firms. Firm S has zero counts in 2010-2011 (separated);
    the year 2016 holds only firm S and firm C, so once S goes, C's 2016 row is a singleton (one more
    round); C's 2016 row has a large count so keeping it would change nothing in beta but N."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(30):
        a = rng.normal(scale=0.5)
        for t in range(2010, 2016):
            d = float(i < 12 and t >= 2013)
            mu = np.exp(0.5 + a + 0.05 * (t - 2010) + 0.3 * d)
            rows.append((f"{i:06d}", t, f"{i % 6:04d}00", "11", "C39", 2013.0 if i < 12 else np.nan, d,
                         float(rng.poisson(mu))))
    for t in (2010, 2011, 2016):
        rows.append(("S00001", t, "000000", "11", "C39", np.nan, 0.0, 0.0))
    rows.append(("000013", 2016, "000100", "11", "C39", np.nan, 0.0, 9.0))
    df = _rows_to_panel(rows)
    return df.rename(columns={"ln_apply_inv_zl": "apply_inv_zl"})


def test_poisson_iterates_separation_and_singletons(reg, ctx):
    import statsmodels.api as sm

    df = _poisson_separation_panel()
    spec = _spec(reg, "robust_poisson", controls=(), control_sets=(), fixed_effects=("stkcd", "year"),
                 vcov=reg.get("table3_col2").vcov)
    (r,) = run_spec(spec, df, ctx)
    informative = df[(df["stkcd"] != "S00001") & (df["year"] <= 2015)]
    assert r.nobs == len(informative) == len(df) - 4
    assert r.diagnostics["uninformative_obs_removed"] == 4
    X = np.column_stack([informative["policy"].to_numpy(float),
                         pd.get_dummies(informative["stkcd"], dtype=float).to_numpy(),
                         pd.get_dummies(informative["year"], drop_first=True, dtype=float).to_numpy()])
    glm = sm.GLM(informative["apply_inv_zl"].to_numpy(float), X, family=sm.families.Poisson()).fit(tol=1e-12)
    assert r.main.estimate == pytest.approx(glm.params[0], rel=1e-6)
    # iid SE: the GLM's with the small-sample factor on the informative N (N-1)/(N-K), K = slopes + FE
    N, K = len(informative), X.shape[1]
    assert r.main.std_error == pytest.approx(glm.bse[0] * np.sqrt((N - 1) / (N - K)), rel=1e-4)  # IRLS tolerances


# ----------------------------------------------------------------------------- 4. placebo p and seeds


def test_placebo_p_counts_the_real_assignment(reg):
    df = _mover_panel(seed=3)
    spec = _spec(reg, "placebo", controls=(), control_sets=(), fixed_effects=("stkcd", "year"))
    B = 40
    (r,) = run_spec(spec, df, RunContext(placebo_draws=B, seed=11, fe_labels=reg.fe_labels))
    d = r.diagnostics
    count = int(np.sum(np.abs(np.asarray(d["draws"])) >= abs(d["real_beta"]) * (1 - 1e-5)))
    assert d["n_draws_as_extreme"] == count
    assert d["p_empirical"] == pytest.approx((count + 1) / (B + 1), abs=1e-12)
    assert r.term("placebo:p_empirical").estimate == d["p_empirical"] > 0
    assert d["seed"] == 11


def test_one_seed_policy_cli_runner_context_and_specs(reg):
    import inspect

    from keytech.cli import _run_seed, build_parser
    from keytech.estimation.core.results import DEFAULT_SEED
    from keytech.estimation.orchestration.runner import run_estimation

    args = build_parser().parse_args(["estimate"])
    assert _run_seed(args.seed) == DEFAULT_SEED == RunContext().seed
    assert inspect.signature(run_estimation).parameters["seed"].default == DEFAULT_SEED
    sub = next(a for a in build_parser()._subparsers._group_actions[0].choices["estimate"]._actions if "--seed" in a.option_strings)
    assert str(DEFAULT_SEED) in sub.help and "bootstrap" in sub.help and "permutation" in sub.help
    # no spec pins its own seed: the run seed drives every permutation test
    for s in reg.specs:
        perm = s.options.get("permutation")
        assert not (isinstance(perm, dict) and "seed" in perm), s.id


# ----------------------------------------------------------------------------- 5. PSM (psmatch2 conventions)


def test_psm_ties_are_shared_and_independent_of_row_order():
    from keytech.estimation.psm import mahalanobis_within_caliper, nearest_neighbour

    # one stratum: treated T0 (x=0), T1 (x=5); controls C0, C1 tied at x=1, C2 at x=1.5, C3 at x=9 (outside caliper)
    x = np.array([0.0, 5.0, 1.0, 1.0, 1.5, 9.0])
    treated = np.array([True, True, False, False, False, False])
    w, k, m = nearest_neighbour(x, treated, caliper=2.0)
    # T0: C0 and C1 tie (distance 1) and share its weight; T1: nothing within 2 -> unmatched
    assert list(k) == [2, 0, 0, 0, 0, 0]
    assert list(w) == [1.0, 0.0, 0.5, 0.5, 0.0, 0.0]
    for perm in (np.array([5, 3, 1, 4, 2, 0]), np.array([2, 3, 0, 1, 5, 4])):
        wp, kp, _ = nearest_neighbour(x[perm], treated[perm], caliper=2.0)
        assert np.array_equal(wp, w[perm]) and np.array_equal(kp, k[perm])
    # Mahalanobis within the caliper: same tie rule
    wm, km, _ = mahalanobis_within_caliper(x[:, None], x, treated, caliper=2.0)
    assert list(wm) == [1.0, 0.0, 0.5, 0.5, 0.0, 0.0]


def _psm_panel(seed: int = 5) -> pd.DataFrame:
    """City-level covariates (every firm of a city-year ties), 24 cities x 5 firms x 2010-2015;
    half the cities ever treated (cohort 2013); some firm controls missing."""
    rng = np.random.default_rng(seed)
    rows = []
    cities = [f"{c:04d}00" for c in range(24)]
    cx = {c: rng.normal(size=2) for c in cities}
    for ci, c in enumerate(cities):
        ever = ci % 2 == 0
        for f in range(5):
            a = rng.normal()
            for t in range(2010, 2016):
                d = float(ever and t >= 2013)
                x1, x2 = cx[c] + 0.1 * (t - 2010) + 0.05 * rng.normal(size=2)
                rows.append((f"{ci:02d}{f:04d}", t, c, f"{ci % 3 + 11}", "C39", 2013.0 if ever else np.nan, d,
                             a + 0.2 * d + 0.3 * x1 + 0.1 * rng.normal(), x1 + 0.0, x2 + 0.0,
                             np.nan if rng.random() < 0.05 else rng.normal(), float(ever)))
    # city covariates are the same for every firm of a city-year
    df = _rows_to_panel(rows, ("cx1", "cx2", "roa", "is_ever_treated"))
    df[["cx1", "cx2"]] = df.groupby(["city_code", "year"])[["cx1", "cx2"]].transform("first")
    return df


def test_psm_psmatch2_samples_on_fixed_estimation_sample(reg, ctx):
    from keytech.estimation.psm import psm_sample

    df = _psm_panel()
    fe = ("stkcd", "year")
    base_opts = {"covariates": ["cx1", "cx2"], "caliper_sd": 0.2, "metric": "mahalanobis"}
    s6 = _spec(reg, "table4_col6", controls=("roa", "cx1"), control_sets=(), fixed_effects=fe,
               options={**base_opts, "sample": "matched"})
    s7 = _spec(reg, "table4_col7", controls=("roa", "cx1"), control_sets=(), fixed_effects=fe,
               options={**base_opts, "sample": "common_support"})
    (r6,) = run_spec(s6, df, ctx)
    (r7,) = run_spec(s7, df, ctx)
    # independent: matching on the complete-case sample (roa missing rows dropped first)
    est = pnl.estimation_sample(df, ["ln_apply_inv_zl", "policy", "roa", "cx1", "cx2", "is_ever_treated"], fe, ["city_code"])
    m, info = psm_sample(est, "is_ever_treated", ["cx1", "cx2"], 0.2, metric="mahalanobis")
    assert r6.diagnostics["n_estimation_sample"] == len(est) < len(df)
    assert info["n_treated_with_tied_controls"] > 0  # city-level covariates: ties everywhere
    # all control firms of the nearest city-year tie (identical covariates) and share the weight
    tr = m[(m["is_ever_treated"] == 1) & (m["__n_ties"] > 0)]
    assert (tr["__n_ties"] >= 5 - 1).all()  # 5 firms per city, a few rows lost to missing roa
    assert r6.diagnostics["n_selected"] == int((m["__w_match"] > 0).sum())
    assert r7.diagnostics["n_selected"] == int(m["__support"].sum())
    # (6) is an unweighted regression on the matched rows: hand dummy OLS
    sub = m[m["__w_match"] > 0]
    sub = pnl.estimation_sample(sub, ["ln_apply_inv_zl", "policy", "roa", "cx1"], fe, ["city_code"])
    X = np.column_stack([sub[["policy", "roa", "cx1"]].to_numpy(float), pd.get_dummies(sub["stkcd"], dtype=float).to_numpy(),
                         pd.get_dummies(sub["year"], drop_first=True, dtype=float).to_numpy()])
    b = np.linalg.lstsq(X, sub["ln_apply_inv_zl"].to_numpy(float), rcond=None)[0]
    assert r6.main.estimate == pytest.approx(b[0], rel=HAND_RTOL)
    assert r6.diagnostics["weights"].startswith("none")
    # row order does not matter
    (r6s,) = run_spec(s6, df.sample(frac=1.0, random_state=1), ctx)
    assert r6s.main.estimate == pytest.approx(r6.main.estimate, rel=1e-9) and r6s.nobs == r6.nobs
    # pstest balance: after-column standardised by the before-matching variances
    row = next(x for x in info["balance"] if x["covariate"] == "cx1")
    t = est["is_ever_treated"].to_numpy(bool)
    den = np.sqrt((est["cx1"][t].var() + est["cx1"][~t].var()) / 2)
    assert row["std_diff_after"] == pytest.approx(100 * (row["mean_treated_after"] - row["mean_control_after"]) / den, rel=1e-9)


def _drop_singletons(df: pd.DataFrame, fe: tuple[str, ...]) -> pd.DataFrame:
    """Iteratively drop rows alone in a level of any FE (pyfixest fixef_rm='singleton'), by hand."""
    while True:
        alone = np.zeros(len(df), bool)
        for f in fe:
            alone |= (df.groupby(f)[f].transform("size") == 1).to_numpy()
        if not alone.any():
            return df
        df = df.loc[~alone]


def _psmatch2_by_hand(est: pd.DataFrame, treat: str, covariates: list[str], caliper_sd: float):
    """psmatch2 ``mahalanobis() pscore() caliper() ties common`` by brute force: a Newton-Raphson
    logit of ``treat`` on the covariates + year dummies, then, per treated row, the controls of
    its year within the caliper (× SD of the logit score) at the minimum Mahalanobis distance
    (pooled covariance, ties within 1e-9). Returns (matched mask = _weight != ., support mask =
    _support == 1)."""
    X = np.column_stack([np.ones(len(est)), est[covariates].to_numpy(float),
                         pd.get_dummies(est["year"], drop_first=True, dtype=float).to_numpy()])
    y = est[treat].to_numpy(float)
    b = np.zeros(X.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-X @ b))
        step = np.linalg.solve(X.T @ (X * (p * (1 - p))[:, None]), X.T @ (y - p))
        b += step
        if np.abs(step).max() < 1e-12:
            break
    p = np.clip(1 / (1 + np.exp(-X @ b)), 1e-10, 1 - 1e-10)
    score = np.log(p / (1 - p))
    caliper = caliper_sd * score.std()
    Z = est[covariates].to_numpy(float)
    S_inv = np.linalg.pinv(np.cov(Z, rowvar=False))
    t = y == 1
    year = est["year"].to_numpy()
    matched = np.zeros(len(est), bool)
    has_match = np.zeros(len(est), bool)
    for i in np.flatnonzero(t):
        c = np.flatnonzero(~t & (year == year[i]) & (np.abs(score - score[i]) <= caliper))
        if len(c) == 0:
            continue
        diff = Z[c] - Z[i]
        d2 = np.einsum("ij,jk,ik->i", diff, S_inv, diff)
        matched[c[d2 <= d2.min() + 1e-9 * max(1.0, d2.min())]] = True
        matched[i] = has_match[i] = True
    support = ~t | ((p >= p[~t].min()) & (p <= p[~t].max()) & has_match)
    return matched, support


def test_psm_stored_n_equals_psmatch2_rules_recomputed_by_hand(reg, ctx):
    """Table 4 (6)/(7): the N the run stores (fit N, after pyfixest's singleton removal) equals an
    independent recomputation of psmatch2's rules on the panel — complete cases, own logit, brute-force
    Mahalanobis-within-caliper matching per year, (6) rows with a match weight, (7) _support == 1
    (controls plus treated inside the controls' score range with a match), singletons dropped by
    hand."""
    df = _psm_panel(seed=11)
    # a few treated cities far from every control in covariates: off support or unmatched
    far = df["city_code"].isin(["000000", "000200"])
    df.loc[far, "cx1"] = df.loc[far, "cx1"] + 4.0
    fe = ("stkcd", "year")
    opts = {"covariates": ["cx1", "cx2"], "caliper_sd": 0.2, "metric": "mahalanobis"}
    s6 = _spec(reg, "table4_col6", controls=("roa", "cx1"), control_sets=(), fixed_effects=fe,
               options={**opts, "sample": "matched"})
    s7 = _spec(reg, "table4_col7", controls=("roa", "cx1"), control_sets=(), fixed_effects=fe,
               options={**opts, "sample": "common_support"})
    (r6,) = run_spec(s6, df, ctx)
    (r7,) = run_spec(s7, df, ctx)
    est = _drop_singletons(df.dropna(subset=["ln_apply_inv_zl", "policy", "roa", "cx1", "cx2", "is_ever_treated",
                                             "city_code", *fe]), fe)
    matched, support = _psmatch2_by_hand(est, "is_ever_treated", ["cx1", "cx2"], 0.2)
    n6 = len(_drop_singletons(est.loc[matched], fe))
    n7 = len(_drop_singletons(est.loc[support], fe))
    assert r6.diagnostics["n_estimation_sample"] == len(est)
    assert r6.nobs == n6 and r7.nobs == n7
    # the rules bite: some treated rows are off support, some controls are never used
    t = est["is_ever_treated"].to_numpy(bool)
    assert (t & ~support).any() and (~t & ~matched).any()
    assert n6 < len(est) and n7 < len(est)
    # share of the estimation sample as stored for the report's "N / N of (5)" row
    assert r7.diagnostics["share_of_estimation_sample"] == pytest.approx(n7 / len(est))
    # the publication table (also on the report page) shows N / N of (5) beside the paper's 44% / 45%
    # (9,008 and 9,344 of 20,607), and the balance table before/after from (6)'s diagnostics
    import json

    from keytech.estimation.core.results import jsonable
    from keytech.tables.endogeneity import psm_balance_model, table4_model

    n5 = len(est)  # stand-in for column (5)'s N
    est_rows = pd.DataFrame([
        {"spec_id": "table4_col5", "term": "policy", "estimate": 0.5, "std_error": 0.1, "p_value": 0.01, "nobs": n5,
         "adj_r2": None, "diagnostics_json": "{}"},
        *({"spec_id": sid, "term": "policy", "estimate": r.main.estimate, "std_error": r.main.std_error,
           "p_value": r.main.p_value, "nobs": r.nobs, "adj_r2": None,
           "diagnostics_json": json.dumps(jsonable(r.diagnostics))} for sid, r in (("table4_col6", r6), ("table4_col7", r7))),
    ])
    model = table4_model(est_rows, reg, synthetic=True)
    share = next(row for row in model.rows if row.label.startswith("N / N of (5)"))
    assert share.cells[-2:] == [f"{100 * n6 / n5:.0f}% · 44%", f"{100 * n7 / n5:.0f}% · 45%"]
    bal = psm_balance_model(est_rows, reg, synthetic=True)
    assert [row.label for row in bal.rows] == ["cx1", "cx2", "logit_pscore"]
    assert len(bal.headers) == 6 and all(c != "" for row in bal.rows for c in row.cells)


# ----------------------------------------------------------------------------- 6. permutation blocks


def test_permutation_exchanges_city_year_blocks_and_counts_the_observed():
    from keytech.estimation.inference.permutation import constant_level, permutation_test

    rng = np.random.default_rng(0)
    rows = [(c, t, f) for c in range(6) for t in range(3) for f in range(1 + (c + t) % 3)]
    df = pd.DataFrame(rows, columns=["city_code", "year", "firm"])
    df["stkcd"] = df["city_code"].astype(str) + "_" + df["firm"].astype(str)
    df["y"] = rng.normal(size=len(df))
    block_x = {(c, t): rng.normal() for c in range(6) for t in range(3)}
    x = df.apply(lambda r: block_x[(r["city_code"], r["year"])], axis=1)
    labels = (x > x.median()).to_numpy()
    assert constant_level(df, labels) == ["city_code", "year"]
    seen = []

    def stat(d):
        seen.append(d.index.to_numpy())
        return float(d["y"].mean())

    B = 60
    res = permutation_test(df, labels, stat, draws=B, seed=3, permute_by=["city_code", "year"])
    assert res["permute_by"] == "city_code+year" and res["n_blocks"] == 18
    block = df.groupby(["city_code", "year"]).ngroup().to_numpy()
    k = len(np.unique(block[labels]))
    for idx in seen[2::2]:  # group-1 subsets of the draws: unions of whole blocks, k of them
        chosen = np.unique(block[idx])
        assert len(chosen) == k and np.isin(np.flatnonzero(np.isin(block, chosen)), idx).all()
    d_obs = seen[0], seen[1]
    diffs = np.array([df.loc[seen[i], "y"].mean() - df.loc[seen[i + 1], "y"].mean() for i in range(2, len(seen), 2)])
    d = df.loc[d_obs[0], "y"].mean() - df.loc[d_obs[1], "y"].mean()
    count = int((diffs >= d - 1e-12).sum()) if d >= 0 else int((diffs <= d + 1e-12).sum())
    assert res["p_one_sided"] == pytest.approx((count + 1) / (B + 1), abs=1e-12)
    with pytest.raises(ValueError, match="not constant"):
        permutation_test(df, rng.random(len(df)) > 0.5, stat, draws=5, permute_by=["city_code", "year"])


def test_registry_permutation_levels_and_draws(reg):
    for s in reg.specs:
        perm = s.options.get("permutation")
        if not perm:
            continue
        if s.options["split_by"].startswith("similarity"):
            assert perm["permute_by"] == ["city_code", "year"] and perm["draws"] >= 999, s.id
        else:
            assert perm["permute_by"] == "observation" and perm["draws"] >= 199, s.id


# ----------------------------------------------------------------------------- 8. exact FE degrees of freedom


def test_exact_fe_rank_reported_beside_the_pyfixest_count(reg, ctx):
    rng = np.random.default_rng(8)
    rows = []
    for i in range(36):
        a = rng.normal()
        for t in range(2010, 2016):
            d = float(i < 12 and t >= 2013)
            rows.append((f"{i:06d}", t, f"{i % 9:04d}00", f"{11 + i % 4}", f"C{30 + i % 3}", 2013.0 if i < 12 else np.nan,
                         d, a + 0.2 * d + 0.3 * rng.normal()))
    df = _rows_to_panel(rows)
    df["x1"] = rng.normal(size=len(df))
    spec = _spec(reg, "table3_col5", controls=("x1",), control_sets=(), vcov=reg.get("table3_col2").vcov)
    (r,) = run_spec(spec, df, ctx)
    d = r.diagnostics
    used = pnl.estimation_sample(df, ["ln_apply_inv_zl", "policy", "x1"], ["stkcd", "ind_year", "prov_year"])
    D = np.column_stack([pd.get_dummies(used[c], dtype=float).to_numpy() for c in ("stkcd", "ind_year", "prov_year")])
    k_exact = 2 + np.linalg.matrix_rank(D)
    assert d["df_k_exact"] == k_exact
    assert d["df_k"] - k_exact == d["redundant_fe_levels_counted"] > 0  # per-year links are redundant
    N = r.nobs
    assert d["std_error_exact_dof"] == pytest.approx(r.main.std_error * np.sqrt((N - d["df_k"]) / (N - k_exact)), rel=1e-12)
    # exact-dof iid SE = explicit OLS with a rank-aware sigma^2 = RSS / (N - rank)
    X = np.column_stack([used[["policy", "x1"]].to_numpy(float), D])
    y = used["ln_apply_inv_zl"].to_numpy(float)
    b = np.linalg.lstsq(X, y, rcond=None)[0]
    e = y - X @ b
    se = np.sqrt(e @ e / (N - np.linalg.matrix_rank(X)) * np.linalg.pinv(X.T @ X)[0, 0])
    assert d["std_error_exact_dof"] == pytest.approx(se, rel=1e-6)
    assert d["adj_r2_exact_dof"] > r.adj_r2


def test_cs_times_movers_by_policy_like_twfe(reg, ctx):
    df = _mover_panel()
    spec = _spec(reg, "robust_staggered_cs", options={"bootstrap": 20})
    (r,) = run_spec(spec, df, ctx)
    d = r.diagnostics
    assert d["units_non_absorbing_dropped"] == 1  # M2 leaves a pilot city
    # M1's cohort is its first policy year 2013 (the max city cohort over its rows would say 2016)
    assert d["cohorts"].get("2013") == 1
    cell = next(c for c in d["cells"] if c["g"] == 2013 and c["t"] == 2013)
    m1 = df[df["stkcd"] == "900001"].set_index("year")["ln_apply_inv_zl"]
    ctrl = df[(df["stkcd"] != "900002") & (df["stkcd"] != "900001")]
    ctrl_g = ctrl[ctrl["policy"] == 1].groupby("stkcd")["year"].min().reindex(ctrl["stkcd"].unique()).fillna(0)
    ok = ctrl_g[(ctrl_g == 0) | (ctrl_g > 2013)].index
    w = ctrl[ctrl["stkcd"].isin(ok)].pivot(index="stkcd", columns="year", values="ln_apply_inv_zl")
    att = (m1[2013] - m1[2012]) - float((w[2013] - w[2012]).mean())
    assert cell["att"] == pytest.approx(att, abs=1e-12)
