"""Honest DiD sensitivity (Rambachan & Roth 2023): keytech.estimation.inference.honest_did.

Independent checks:
- frozen reference values (tests/python/reference/honest_did_reference.json, made by
  make_honest_did_reference.py beside it from ``honestdid`` 0.1.1 — the Python port of the R
  package — for Delta^RM and ``moderndid`` 0.2.0 for the Delta^SD FLCI) on the R package's published
  example (BCdata_EventStudy) and a small case of our own: bounds to 1e-3;
- theory: under Delta^SD(0) the trend is exactly linear, so the FLCI is the minimum-variance
  linear-trend-unbiased estimator +- z_{alpha/2} times its SD (closed form here);
- the closed-form worst-case bias of an affine estimator equals a linear program over Delta^SD(M);
- breakdown values: the set excludes 0 at the breakdown value and includes it just above.
No reference package is called at test time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from keytech.estimation.inference import honest_did as hd

REF = Path(__file__).parent / "reference" / "honest_did_reference.json"
TOL = 1e-3


def _ref():
    return json.loads(REF.read_text())


def _cases():
    return [(c["name"], t) for c in _ref()["cases"] for t in c["results"]]


def _case(name):
    c = next(c for c in _ref()["cases"] if c["name"] == name)
    return c, np.asarray(c["betahat"]), np.asarray(c["sigma"])


@pytest.mark.parametrize("name,target", _cases())
def test_original_ci_matches_reference(name, target):
    c, b, S = _case(name)
    ref = c["results"][target]
    lo, hi = hd.original_ci(b, S, c["num_pre"], c["num_post"], np.asarray(ref["l_vec"]))
    assert lo == pytest.approx(ref["original"]["lb"], abs=1e-10)
    assert hi == pytest.approx(ref["original"]["ub"], abs=1e-10)


@pytest.mark.parametrize("name,target", _cases())
def test_flci_matches_reference(name, target):
    c, b, S = _case(name)
    ref = c["results"][target]
    l = np.asarray(ref["l_vec"])
    for row in ref["sd_flci"]:
        r = hd.flci(b, S, c["num_pre"], c["num_post"], l, row["M"])
        assert r.lb == pytest.approx(row["lb"], abs=TOL), (name, target, row["M"], r.lb, row["lb"])
        assert r.ub == pytest.approx(row["ub"], abs=TOL), (name, target, row["M"], r.ub, row["ub"])
        # never longer than the reference optimum by more than solver slack (ours is the optimum too)
        assert (r.ub - r.lb) <= (row["ub"] - row["lb"]) + 1e-6


@pytest.mark.parametrize("name,target", _cases())
def test_rm_clf_matches_reference(name, target):
    c, b, S = _case(name)
    ref = c["results"][target]
    l = np.asarray(ref["l_vec"])
    for row in ref["rm_clf"]:
        r = hd.rm_ci(b, S, c["num_pre"], c["num_post"], l, row["Mbar"])
        assert r.lb == pytest.approx(row["lb"], abs=TOL), (name, target, row["Mbar"], r.lb, row["lb"])
        assert r.ub == pytest.approx(row["ub"], abs=TOL), (name, target, row["Mbar"], r.ub, row["ub"])


def _linear_trend_ci(b, S, npre, npost, l, alpha=0.05):
    """Minimum-variance estimator l'b_post + v'b_pre that is unbiased when delta_t = slope * t
    (t = event time + 1, so the reference period -1 has t = 0): minimise Var s.t. v't_pre = -l't_post."""
    t_pre = np.arange(-npre, 0, dtype=float)
    t_post = np.arange(1, npost + 1, dtype=float)
    Spp, Spq = S[:npre, :npre], S[:npre, npre:] @ l
    # Lagrange: Spp v + Spq = mu t_pre, t_pre'v = -l't_post
    a = np.linalg.solve(Spp, -Spq)
    d = np.linalg.solve(Spp, t_pre)
    mu = (-(l @ t_post) - t_pre @ a) / (t_pre @ d)
    v = a + mu * d
    est = v @ b[:npre] + l @ b[npre:]
    var = v @ Spp @ v + 2 * v @ Spq + l @ S[npre:, npre:] @ l
    z = stats.norm.ppf(1 - alpha / 2)
    return est - z * np.sqrt(var), est + z * np.sqrt(var), v


@pytest.mark.parametrize("name", ["own_3pre_2post", "BCdata_EventStudy"])
@pytest.mark.parametrize("target", ["first", "average"])
def test_flci_at_m0_is_linear_trend_ci(name, target):
    c, b, S = _case(name)
    l = hd.target_vector(target, c["num_post"])
    lo, hi, v = _linear_trend_ci(b, S, c["num_pre"], c["num_post"], l)
    r = hd.flci(b, S, c["num_pre"], c["num_post"], l, 0.0)
    assert r.lb == pytest.approx(lo, abs=1e-7)
    assert r.ub == pytest.approx(hi, abs=1e-7)
    assert np.allclose(r.l_pre, v, atol=1e-5)


def test_flci_one_pre_period_m0_is_exact_extrapolation():
    # one pre period: the only linear-trend-unbiased estimator is beta_0 + beta_{-2} (t_pre = -1, t_post = 1)
    b = np.array([0.1, 0.5])
    S = np.array([[0.01, 0.002], [0.002, 0.02]])
    r = hd.flci(b, S, 1, 1, np.array([1.0]), 0.0)
    se = np.sqrt(0.01 + 0.02 + 2 * 0.002)
    assert r.estimate == pytest.approx(0.6, abs=1e-9)
    assert r.half_length == pytest.approx(stats.norm.ppf(0.975) * se, rel=1e-8)


def test_max_bias_formula_equals_linear_program():
    rng = np.random.default_rng(3)
    npre, npost, M = 3, 3, 0.7
    n = npre + npost
    # second differences of (delta_pre, 0, delta_post)
    full = np.zeros((n - 1, n + 1))
    for r in range(n - 1):
        full[r, r:r + 3] = [1, -2, 1]
    A = np.delete(full, npre, axis=1)
    for _ in range(5):
        l = rng.normal(size=npost)
        w = rng.normal(size=npre)
        w[-1] += np.arange(1, npost + 1) @ l - w.sum()  # unbiased under linear trends
        l_pre = np.diff(np.concatenate([[0.0], w]))
        f = np.concatenate([l_pre, l])
        res = optimize.linprog(-f, A_ub=np.vstack([A, -A]), b_ub=np.full(2 * (n - 1), M),
                               bounds=[(None, None)] * n, method="highs")
        assert res.status == 0
        assert hd.sd_max_bias(l_pre, l, M) == pytest.approx(-res.fun, rel=1e-8)
    # biased under a linear trend: infinite worst case
    assert hd.sd_max_bias(np.zeros(npre), np.ones(npost), M) == np.inf


def test_rm_sets_are_nested_in_mbar():
    c, b, S = _case("own_3pre_2post")
    l = hd.target_vector("first", 2)
    prev = None
    for mb in (0.0, 0.5, 1.0, 2.0):
        r = hd.rm_ci(b, S, 3, 2, l, mb)
        if prev is not None:
            assert r.lb <= prev.lb + 1e-12 and r.ub >= prev.ub - 1e-12
        prev = r


def test_breakdown_values_just_touch_zero():
    c, b, S = _case("own_3pre_2post")
    rows = hd.sensitivity(b, S, 3, 2, targets=("first",), mbar_vec=(0.0, 1.0), m_vec=[0.0, 0.05])
    l = hd.target_vector("first", 2)
    sd = next(r for r in rows if r["restriction"] == "SD_breakdown")
    assert sd["value"] is not None and sd["value"] > 0
    at = hd.flci(b, S, 3, 2, l, sd["value"])
    above = hd.flci(b, S, 3, 2, l, sd["upper"])
    assert at.lb > 0 and above.lb <= 0
    assert sd["upper"] - sd["value"] <= sd["tol"]
    assert abs(at.lb) < 1e-3  # the lower end is at 0 (to the bisection tolerance)
    rm = next(r for r in rows if r["restriction"] == "RM_breakdown")
    assert rm["value"] is not None
    at = hd.rm_ci(b, S, 3, 2, l, rm["value"])
    above = hd.rm_ci(b, S, 3, 2, l, rm["upper"])
    assert at.lb > 0 and above.lb <= 0
    assert rm["upper"] - rm["value"] <= rm["tol"]
    assert at.lb <= 2 * at.grid_step + 0.05 * (at.ub - at.lb)


def test_breakdown_none_when_original_ci_includes_zero():
    b = np.array([0.01, -0.02, 0.03, 0.01, 0.02])
    S = np.diag([0.01, 0.01, 0.01, 0.01, 0.01])
    rows = hd.sensitivity(b, S, 3, 2, targets=("first",), mbar_vec=(0.0,), m_vec=[0.0])
    assert next(r for r in rows if r["restriction"] == "SD_breakdown")["value"] is None


def test_event_study_input_orders_periods_and_checks_reference():
    coef = {-3: 0.1, -2: 0.2, 0: 1.0, 1: 2.0}
    cov = {(a, c): (1.0 if a == c else 0.1) for a in coef for c in coef}
    b, S, pre, post = hd.event_study_input(coef, cov)
    assert pre == [-3, -2] and post == [0, 1]
    assert b.tolist() == [0.1, 0.2, 1.0, 2.0]
    with pytest.raises(ValueError, match="reference period -1"):
        hd.event_study_input(coef, cov, base=-2)
    with pytest.raises(ValueError, match="consecutive"):
        hd.event_study_input({-4: 0.1, -2: 0.2, 0: 1.0}, cov | {(a, c): 0.0 for a in (-4,) for c in (-4, -2, 0)}
                             | {(a, -4): 0.0 for a in (-2, 0)})


def test_store_writes_honest_did_table(tmp_path):
    from keytech.estimation.orchestration import store
    from keytech.estimation.core.results import SpecResult, TermEstimate

    c, b, S = _case("own_3pre_2post")
    coef = dict(zip([-4, -3, -2, 0, 1], b))
    ks = list(coef)
    cov = {(a, d): S[i, j] for i, a in enumerate(ks) for j, d in enumerate(ks)}
    hdres = hd.sensitivity_for_spec(coef, cov, -1, {"mbar": [0.0, 1.0], "m": [0.0, 0.05]})
    res = SpecResult("event_study", [TermEstimate("rel_time=0", 0.25)], 10, None, "", "", "", "rel_time=0",
                     {"honest_did": hdres})
    db = tmp_path / "w.duckdb"
    import datetime as dt

    now = dt.datetime(2026, 1, 1)
    store.write_run(db, {"run_id": "r1", "started_at": now, "finished_at": now, "data_fingerprint": "x",
                         "code_version": "t", "parameters": {}}, [res])
    rows = store.read_honest_did(db, {"event_study": "r1"})
    assert len(rows) == len(hdres["rows"])
    rm1 = rows.loc[(rows["target"] == "first") & (rows["restriction"] == "RM") & (rows["value"] == 1.0)]
    direct = hd.rm_ci(b, S, 3, 2, hd.target_vector("first", 2), 1.0)
    assert rm1["ci_low"].iloc[0] == pytest.approx(direct.lb, abs=1e-12)
    est = store.read_estimates(db, "r1")
    diag = json.loads(est["diagnostics_json"].iloc[0])
    assert "rows" not in diag["honest_did"] and diag["honest_did"]["table"] == "results.honest_did"
    assert res.diagnostics["honest_did"]["rows"]  # the caller's result is not mutated

    # the report block shows the stored breakdown values and draws the figure
    from keytech.report.inference import honest_did_block

    html = honest_did_block({"estimation": (est, {"event_study": "r1"}, {}, None), "db": db})
    assert "id='honest-did-event_study'" in html and 'data-figure="honest-did-event_study"' in html
    bd = rows.loc[(rows["target"] == "first") & (rows["restriction"] == "RM_breakdown"), "value"].iloc[0]
    from keytech.report.page import fmt_num

    assert fmt_num(bd, 4) in html


def test_spec_level_errors_are_recorded_not_raised():
    coef = {-3: 0.1, -2: 0.2, 0: 1.0, 1: 2.0}
    zero = {(a, c): 0.0 for a in coef for c in coef}
    out = hd.sensitivity_for_spec(coef, zero, -1)
    assert "zero variance" in out["error"] and "rows" not in out
    out = hd.sensitivity_for_spec(coef, zero, -2)
    assert "reference period -1" in out["error"]
