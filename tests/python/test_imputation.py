"""Borusyak–Jaravel–Spiess imputation estimator (issue 14 item 5; keytech.estimation.did.imputation).

(1) On a tiny panel the estimate, the event-time estimates and the conservative clustered SEs equal
a dense computation with explicit dummy matrices and pseudo-inverses (the paper's formulas written
out: b = Z0^+ Y0, v0 = -Z0 (Z0'Z0)^+ Z1'w); the estimator is linear, sum v Y = tau_w; (2) the
pooled ATT equals pyfixest's did2s (Gardner two-stage, an independent implementation) up to its
demeaning tolerance; (3) the pre-trend test rejects a planted pre-trend and not parallel trends.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.core.panel import prepare_spec_data
from keytech.estimation.dispatch import run_spec
from keytech.estimation.did.imputation import imputation
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def _dense(d: pd.DataFrame, fes, controls, w_of) -> tuple[float, float]:
    D = d["policy"].to_numpy() > 0
    Z = np.column_stack([*(pd.get_dummies(d[f], dtype=float).to_numpy() for f in fes), d[controls].to_numpy(float)])
    Z = Z / np.linalg.norm(Z, axis=0)  # unit columns (b's and v0's formulas do not depend on the scale)
    Y = d["ln_apply_inv_zl"].to_numpy(float)
    Z0, Z1 = Z[~D], Z[D]
    b = np.linalg.pinv(Z0) @ Y[~D]
    tau = Y[D] - Z1 @ b
    w = w_of(d.loc[D])
    v0 = -Z0 @ np.linalg.pinv(Z0.T @ Z0) @ Z1.T @ w
    cell = pd.factorize(pd.Series(list(zip(d.loc[D, "first_treated_year"], d.loc[D, "year"]))))[0]
    tb = np.bincount(cell, weights=w**2 * tau)
    den = np.bincount(cell, weights=w**2)
    tbar = np.divide(tb, den, out=np.zeros_like(tb), where=den > 0)[cell]
    v = np.zeros(len(d))
    v[D], v[~D] = w, v0
    e = np.zeros(len(d))
    e[~D], e[D] = Y[~D] - Z0 @ b, tau - tbar
    cl = pd.factorize(d["city_code"])[0]
    return float(w @ tau), float(np.sqrt(np.sum(np.bincount(cl, weights=v * e) ** 2)))


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    return pnl.prepare_panel(simulate_panel(seed=13, n_cities=14, n_provinces=4, firms_per_city=3.0, beta_key=0.3))


@pytest.mark.parametrize("size_scale", [1.0, 1e4])
def test_equals_dense_formulas(tiny, size_scale):
    """To 1e-9, also with a control on the scale of 10^4 (as `infor` is in the demo): the LSMR
    solves used until 2026-12-04 stopped early there (about 1e-7 relative off). The dense side
    scales Z's columns to unit norm first: without, pinv(Z0'Z0) of the 10^4 panel (condition
    ≈ 10^16) is itself off in the third digit."""
    spec = load_registry().get("robust_staggered_imputation")
    fes, controls = list(spec.fixed_effects), ["roa", "ln_size"]
    data = prepare_spec_data(spec, tiny).assign(ln_size=lambda t: t["ln_size"] * size_scale)
    res = imputation(data, spec.outcome, "policy", fes, controls, "city_code", horizons=2)
    d = data.dropna(subset=[spec.outcome, "policy", *fes, *controls, "city_code"]).reset_index(drop=True)
    D = d["policy"].to_numpy() > 0
    ok = np.ones(len(d), bool)
    for f in fes:
        ok &= d[f].isin(set(d.loc[~D, f])).to_numpy()
    d = d.loc[~D | ok].reset_index(drop=True)
    assert res["n_obs"] == len(d) and res["n_treated_unidentified_dropped"] == int((D & ~ok).sum())
    est, se = _dense(d, fes, controls, lambda t: np.full(len(t), 1 / len(t)))
    assert res["att"]["estimate"] == pytest.approx(est, rel=1e-9)
    assert res["att"]["estimate_linear"] == pytest.approx(est, rel=1e-9)
    assert res["att"]["se"] == pytest.approx(se, rel=1e-9)
    for h in (0, 1):
        est_h, se_h = _dense(d, fes, controls, lambda t: (t["rel_time"] == h).to_numpy(float) / (t["rel_time"] == h).sum())
        assert res["horizons"][h]["estimate"] == pytest.approx(est_h, rel=1e-9)
        assert res["horizons"][h]["se"] == pytest.approx(se_h, rel=1e-9)


def test_null_space_of_the_rank_test_is_reused_with_the_same_numbers(tiny, monkeypatch):
    """When every treated row is identified, the solver's design is the rank test's, so its null
    space is taken from identified_rows instead of being computed again: one computation, and the
    same numbers, bit for bit, as computing it for the solver."""
    from keytech.estimation.did import common

    spec = load_registry().get("robust_staggered_imputation")
    fes, controls = list(spec.fixed_effects), ["roa", "ln_size"]
    data = prepare_spec_data(spec, tiny)
    calls = []
    original = common.untreated_null_space
    monkeypatch.setattr(common, "untreated_null_space", lambda *a, **k: calls.append(1) or original(*a, **k))
    shared = imputation(data, spec.outcome, "policy", fes, controls, "city_code", horizons=2)
    assert len(calls) == 1  # (two if a treated row had failed the rank test: then the designs differ)
    original_solver = common.generalized_gram_solver
    monkeypatch.setattr(common, "generalized_gram_solver",
                        lambda Zu, fe_sizes, tol, null=None: original_solver(Zu, fe_sizes, tol))
    again = imputation(data, spec.outcome, "policy", fes, controls, "city_code", horizons=2)
    assert len(calls) == 3  # the rank test's, and the solver's own
    assert shared["horizons"].keys() == again["horizons"].keys() and len(shared["horizons"]) >= 2
    for a, b in [(shared["att"], again["att"]), *((shared["horizons"][h], again["horizons"][h]) for h in shared["horizons"])]:
        assert (a["estimate"], a["se"]) == (b["estimate"], b["se"])


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return pnl.prepare_panel(simulate_panel(seed=21, n_cities=40, firms_per_city=5.0, beta_key=0.3))


def test_att_equals_did2s_and_pretrend(sim):
    reg = load_registry()
    imp = run_spec(reg.get("robust_staggered_imputation"), sim, RunContext())[0]
    g2 = run_spec(reg.get("robust_staggered_did2s"), sim, RunContext())[0]
    assert imp.main.estimate == pytest.approx(g2.main.estimate, abs=1e-4)  # did2s demeans to ~1e-8 tolerance
    assert imp.diagnostics["pretrend_test"]["p_value"] > 0.05
    assert [t.term for t in imp.terms] == ["policy", "rel_time=0", "rel_time=1", "rel_time=2", "rel_time=3"]
    bumped = pnl.prepare_panel(simulate_panel(seed=21, n_cities=40, firms_per_city=5.0, beta_key=0.3,
                                              pretrend=((-3, 0.6), (-2, 0.6), (-1, 0.6))))
    pre = run_spec(reg.get("robust_staggered_imputation"), bumped, RunContext())[0].diagnostics["pretrend_test"]
    assert pre["p_value"] < 0.01


def test_unidentified_treated_observation_dropped_and_hand_value():
    # firm + year FE. Untreated rows connect {f1, f3, 2010, 2013} and {f2, f4, 2011, 2012}; f1 in 2011
    # has both levels seen untreated but in different components: not identified, dropped.
    rows = [("f1", 2010, 0, 1.0), ("f3", 2010, 0, 2.5), ("f3", 2013, 0, 4.0), ("f1", 2013, 1, 7.0),
            ("f2", 2011, 0, 0.3), ("f2", 2012, 0, 0.9), ("f4", 2011, 0, 1.7), ("f4", 2012, 0, 2.0),
            ("f1", 2011, 1, 9.0)]
    d = pd.DataFrame(rows, columns=["stkcd", "year", "policy", "y"]).assign(
        city_code=lambda x: x["stkcd"], first_treated_year=lambda x: np.where(x["stkcd"] == "f1", 2011.0, np.nan))
    d["rel_time"] = d["year"] - d["first_treated_year"]
    res = imputation(d, "y", "policy", ["stkcd", "year"], [], "city_code", horizons=None)
    assert res["n_treated_unidentified_dropped"] == 1 and res["n_treated"] == 1
    # a_f1 + l_2013 = Y(f1,2010) + Y(f3,2013) - Y(f3,2010)
    assert res["att"]["estimate"] == pytest.approx(7.0 - (1.0 + 4.0 - 2.5), abs=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_unidentified_rows_are_the_dense_rank_test_and_the_old_probe(seed):
    """The identification check (exact null space of the untreated design, ``did2s.identified_rows``)
    drops exactly the treated rows whose design row is outside the row space of Z0 by a dense SVD
    rank test, and the same rows as the random LSMR probes it replaced (issue 17; the probes put
    identified rows at up to 0.74 of their threshold on the paper panel, the exact test at 4e-10)."""
    from scipy.sparse.linalg import lsmr

    import scipy.sparse as sp

    from keytech.estimation.did.imputation import identified

    LSMR_TOL = 1e-14  # the replaced computation's tolerance

    def design(df, fes, controls):  # [one dummy per level of each FE | controls]
        return sp.hstack([*(sp.csr_matrix(pd.get_dummies(df[f], dtype=float).to_numpy()) for f in fes),
                          sp.csr_matrix(df[controls].to_numpy(float))], format="csr")

    rng = np.random.default_rng(seed)
    n = 50
    d = pd.DataFrame({"stkcd": rng.integers(0, 14, n), "year": rng.integers(2010, 2016, n),
                      "prov_year": rng.integers(0, 5, n), "x": rng.normal(size=n)})
    d = d.drop_duplicates(["stkcd", "year"]).reset_index(drop=True)
    d["policy"] = (rng.random(len(d)) < 0.35).astype(float)
    d["y"] = rng.normal(size=len(d))
    d["city_code"] = d["stkcd"] % 4
    d["first_treated_year"], d["rel_time"] = 2012.0, d["year"] - 2012.0
    fes, controls = ["stkcd", "year", "prov_year"], ["x"]
    D = d["policy"].to_numpy() > 0
    level_ok = identified(d, ~D, fes)
    kept = d.loc[~D | level_ok].reset_index(drop=True)
    Dk = kept["policy"].to_numpy() > 0
    Z = design(kept, fes, controls).toarray()
    Z0, Z1 = Z[~Dk], Z[Dk]
    rank0 = np.linalg.matrix_rank(Z0)
    dense_unid = np.array([np.linalg.matrix_rank(np.vstack([Z0, z])) > rank0 for z in Z1])
    if seed in (1, 2):  # panels where the rank test, not the level test, drops some treated rows
        assert 0 < dense_unid.sum() < Dk.sum()
    old = np.zeros(int(Dk.sum()), bool)  # the replaced computation
    probe_rng = np.random.default_rng(0)
    for _ in range(3):
        g = probe_rng.normal(size=Z.shape[1])
        r = g - lsmr(Z0, Z0 @ g, atol=LSMR_TOL, btol=LSMR_TOL, maxiter=100_000)[0]
        old |= np.abs(Z1 @ r) > 1e-6 * max(1.0, float(np.linalg.norm(r)))
    np.testing.assert_array_equal(old, dense_unid)
    res = imputation(d, "y", "policy", fes, controls, "city_code", horizons=None)
    assert res["n_treated_unidentified_dropped"] == int((D & ~level_ok).sum()) + int(dense_unid.sum())
    assert res["n_treated"] == int(Dk.sum()) - int(dense_unid.sum())
