"""Fast paths of issue 17 that must give the results of the computation they replace.

* Caches that let specs on the same rows share a decomposition: a cached result must be the one a
  fresh computation gives, and a different fixed-effect structure must never get another's
  (checked against the rank of the explicit dummy matrix, numpy's SVD rank, and the closed-form
  wild-bootstrap pieces recomputed with the cache emptied).
* did2s's identification check (``identified_rows``): the null space from the Schur complement
  gives the same kept rows and null dimension as the dense eigendecomposition of Z'Z and as a
  row-by-row rank test with explicit dummies, on random unbalanced three-FE panels with and
  without covariates.
* Honest DiD (``honest_did.rm_ci``): the conditional test from the polyhedron's dual vertices equals
  the HiGHS LP path (same confidence sets and per-polyhedron records; eta and lambda equal HiGHS's
  optimum and duals); the screen of the critical value (truncated-normal tail at the statistic)
  decides as scipy's ``truncnorm.ppf`` does; the folded-normal quantile via ``special.ndtr`` is
  bit-identical."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import ssc
from keytech.estimation.inference import wild_bootstrap as wbmod


def _codes(seed: int, n_firms: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_firms):
        ind, prov = rng.integers(0, 3), rng.integers(0, 4)
        for yr in range(5):
            if rng.random() < 0.8:
                rows.append((f, ind * 10 + yr, prov * 10 + yr))
    return np.array(rows)


def _dummy_rank(codes: np.ndarray) -> int:
    D = np.column_stack([np.eye(codes[:, j].max() + 1)[codes[:, j]] for j in range(codes.shape[1])])
    return int(np.linalg.matrix_rank(D))


def test_exact_fe_rank_cache_keyed_by_structure():
    ssc._SCHUR_EIGVALS.clear()
    structures = [_codes(s) for s in range(6)]
    first = [ssc.exact_fe_rank(c) for c in structures]
    assert len(ssc._SCHUR_EIGVALS) == 6
    again = [ssc.exact_fe_rank(c) for c in structures]  # from the cache
    assert first == again == [_dummy_rank(c) for c in structures]
    # the same shape with one code changed is another structure: not served from the cache
    c = structures[0].copy()
    c[0, 1] = c[:, 1].max() + 1
    assert ssc.exact_fe_rank(c) == _dummy_rank(c)


def test_schur_eigh_cache_gives_the_fresh_result():
    rng = np.random.default_rng(1)
    codes = _codes(3, 60)
    n = len(codes)
    cl = codes[:, 0] // 4
    G = cl.max() + 1
    u0, xdd = rng.normal(size=n), rng.normal(size=n)
    Xd = rng.normal(size=(n, 3))
    wbmod._SCHUR_EIGH.clear()
    a = wbmod.cluster_scores_direct(codes, cl, G, u0, xdd, Xd)
    assert len(wbmod._SCHUR_EIGH) == 1
    b = wbmod.cluster_scores_direct(codes, cl, G, u0, xdd, Xd)  # cached decomposition
    wbmod._SCHUR_EIGH.clear()
    c = wbmod.cluster_scores_direct(codes, cl, G, u0, xdd, Xd)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    other = codes.copy()
    other[:5, 2] = other[5:10, 2]
    wbmod.cluster_scores_direct(other, cl, G, u0, xdd, Xd)
    assert len(wbmod._SCHUR_EIGH) == 2


def _did_panel(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(int(rng.integers(15, 60))):
        ind, prov = rng.integers(0, 4), rng.integers(0, 5)
        for yr in range(6):
            if rng.random() < 0.7:
                rows.append((f, ind * 10 + yr, prov * 10 + yr, rng.normal(), rng.normal()))
    d = pd.DataFrame(rows, columns=["f", "a", "b", "x1", "x2"])
    treated = rng.random(len(d)) < 0.3
    return d[~treated], d[treated]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("covs", [[], ["x1", "x2"]])
def test_identified_rows_schur_equals_dense_and_rank(seed, covs):
    import keytech.estimation.did.common as did2s  # did2s's (and the imputation estimator's) check

    u, t = _did_panel(seed)
    fell_back = []
    orig = did2s._null_space_schur
    try:
        did2s._null_space_schur = lambda *a: (lambda r: fell_back.append(r is None) or r)(orig(*a))
        ok, info = did2s.identified_rows(u, t, covs, ["f", "a", "b"])
    finally:
        did2s._null_space_schur = orig
    assert fell_back == [False]  # the fast path ran
    ok_dense, info_dense = did2s.identified_rows(u, t, covs, ["f", "a", "b"], method="dense")
    assert (ok == ok_dense).all() and info["null_dim"] == info_dense["null_dim"]
    # independent: a treated row is identified iff appending it leaves the rank unchanged
    levels = {c: sorted(set(u[c]) | set(t[c])) for c in "fab"}

    def Z(d):
        cols = [d[covs].to_numpy(float)] if covs else []
        cols += [(d[c].to_numpy()[:, None] == np.array(levels[c])[None, :]).astype(float) for c in "fab"]
        return np.column_stack(cols)

    Zu, Zt = Z(u), Z(t)
    rank_u = np.linalg.matrix_rank(Zu)
    expected = [np.linalg.matrix_rank(np.vstack([Zu, Zt[[i]]])) == rank_u for i in range(len(t))]
    assert list(ok) == expected
    assert info["null_dim"] == Zu.shape[1] - rank_u


def test_t_boot_at_zero_equals_general_form():
    """The r = 0 shortcut of WildBootstrap.t_boot (only K0 v) is bit-identical to the general
    form from the per-draw quadratic forms."""
    rng = np.random.default_rng(2)
    codes = _codes(5, 50)
    n = len(codes)
    cl = codes[:, 0] // 3
    y, x = rng.normal(size=n), rng.normal(size=n) + (cl % 2)
    wb = wbmod.prepare(y, x, rng.normal(size=(n, 2)), codes, cl)
    for kind, seed in (("rademacher", 1), ("webb", 2)):
        v = wbmod.draw_weights(kind, wb.G, 999, seed)
        np.testing.assert_array_equal(wb.t_boot(0.0, v), wb.t_boot(0.0, wb.draws(v)))
        assert wb.pvalue(0.0, v) == wb.pvalue(0.0, wb.draws(v))


# --------------------------------------------------------------------------- Honest DiD (issue 17, h17l)
#
# rm_ci enumerates the dual vertices of a polyhedron's LP once and every grid point's conditional
# test takes eta and lambda from them (unique maximiser by a margin, else the LP); the folded-normal
# quantile evaluates scipy.special.ndtr instead of stats.norm.cdf. Compared with the computation they
# replace (HiGHS LP per grid point, vertices re-enumerated per call, stats.norm.cdf) and with
# independent checks (the LP's own optimum and duals; the folded normal's CDF at the quantile).

import json
from pathlib import Path

from scipy import optimize as _opt, stats as _stats

from keytech.estimation.inference import honest_did as hdmod

_HD_REF = Path(__file__).parent / "reference" / "honest_did_reference.json"
_HD_CASES = [  # (beta, sigma, num_pre, num_post): the reference examples plus random event studies
    (np.asarray(c["betahat"]), np.asarray(c["sigma"]), c["num_pre"], c["num_post"])
    for c in json.loads(_HD_REF.read_text())["cases"]
]
for _seed in range(2):
    _rng = np.random.default_rng(100 + _seed)
    _n_pre, _n_post = 4, 4
    _A = _rng.normal(size=(8, 8)) * 0.02
    _S = _A @ _A.T + np.diag(np.full(8, 4e-4))
    _b = np.concatenate([_rng.normal(0, 0.01, _n_pre), 0.05 + _rng.normal(0, 0.02, _n_post)])
    _HD_CASES.append((_b, _S, _n_pre, _n_post))


def _exact_exceeds(stat, p, lo, hi):
    """The decision before the screen: against the critical value from scipy's truncnorm.ppf."""
    return stat > max(0.0, hdmod._truncnorm_quantile(p, lo, hi))


def _old_conditional_test(y, X, sigma, alpha, kappa, lf_cv, vertices=None):
    """The test before the fast paths: HiGHS for eta and lambda, vertices enumerated inside, the
    critical value from truncnorm.ppf."""
    saved = hdmod._exceeds_truncnorm_quantile
    hdmod._exceeds_truncnorm_quantile = _exact_exceeds
    try:
        return _ORIGINAL_CONDITIONAL_TEST(y, X, sigma, alpha, kappa, lf_cv)
    finally:
        hdmod._exceeds_truncnorm_quantile = saved


_ORIGINAL_CONDITIONAL_TEST = hdmod._conditional_test


@pytest.mark.parametrize("case", range(len(_HD_CASES)))
def test_rm_ci_from_dual_vertices_equals_lp_path(case, monkeypatch):
    b, S, n_pre, n_post = _HD_CASES[case]
    for target in ("first", "average"):
        l = hdmod.target_vector(target, n_post)
        for mbar in (0.0, 1.0):
            fast = hdmod.rm_ci(b, S, n_pre, n_post, l, mbar)
            with monkeypatch.context() as m:
                m.setattr(hdmod, "_conditional_test", _old_conditional_test)
                slow = hdmod.rm_ci(b, S, n_pre, n_post, l, mbar)
            assert (fast.lb, fast.ub, fast.open_end) == (slow.lb, slow.ub, slow.open_end) or (
                np.isnan(fast.lb) and np.isnan(slow.lb))
            assert fast.polyhedra == slow.polyhedra


@pytest.mark.parametrize("case", range(len(_HD_CASES)))
def test_lp_eta_from_vertices_equals_highs(case):
    """eta and lambda from the vertices = HiGHS's optimum and duals (an independent LP solver), and
    the conditional test's decision is the same, at grid points of every polyhedron."""
    b, S, n_pre, n_post = _HD_CASES[case]
    l = hdmod.target_vector("average", n_post)
    G_inv = np.linalg.inv(hdmod._gamma_matrix(l))
    sd_theta = float(np.sqrt(l @ S[n_pre:, n_pre:] @ l))
    n_fast = 0
    for mbar in (0.5, 1.0):
        for s in range(-(n_pre - 1), 1):
            for positive in (True, False):
                A = hdmod.rm_constraints(n_pre, n_post, mbar, s, positive)
                rows = np.where(np.any(A[:, n_pre:] != 0, axis=1))[0]
                AG = A[:, n_pre:] @ G_inv
                a1, X = AG[rows, 0], AG[rows, 1:]
                Sy = (A @ S @ A.T)[np.ix_(rows, rows)]
                sd = np.sqrt(np.diag(Sy))
                W = np.column_stack([sd, X])
                vertices = hdmod._dual_vertex_sets(W)
                assert np.array_equal(vertices[0], hdmod._dual_vertices(W))
                assert np.abs(vertices[0] - vertices[1]).max() <= 5e-13
                cv = hdmod._lf_cv(X, Sy, 0.005)
                assert hdmod._lf_cv(X, Sy, 0.005, V=vertices[0]) == cv
                for theta in np.linspace(-8 * sd_theta, 8 * sd_theta, 25):
                    y = (A @ b)[rows] - a1 * theta
                    e_fast, lam_fast, ok_fast = hdmod._lp_eta_vertices(y, vertices, X, sd)
                    e_lp, lam_lp, ok_lp = hdmod._lp_eta(y, X, sd)
                    assert ok_fast and ok_lp
                    assert e_fast == pytest.approx(e_lp, rel=1e-10, abs=1e-13)
                    np.testing.assert_allclose(lam_fast, lam_lp, rtol=1e-9, atol=1e-11)
                    n_fast += 1
                    assert (hdmod._conditional_test(y, X, Sy, 0.05, 0.005, cv, vertices)
                            == _old_conditional_test(y, X, Sy, 0.05, 0.005, cv))
    assert n_fast > 100


def test_lp_eta_vertices_falls_back_on_ties():
    """Two vertices with the same value (a tie in the dual): the LP decides, as before."""
    W = np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])  # rows 0 and 2 equal: tied vertices
    X = W[:, 1:]
    sd = W[:, 0]
    vertices = hdmod._dual_vertex_sets(W)
    y = np.array([0.3, -0.1, 0.3])
    assert hdmod._lp_eta_vertices(y, vertices, X, sd)[0] == hdmod._lp_eta(y, X, sd)[0]
    calls = []
    orig = hdmod._lp_eta
    try:
        hdmod._lp_eta = lambda *a: calls.append(1) or orig(*a)
        hdmod._lp_eta_vertices(y, vertices, X, sd)
    finally:
        hdmod._lp_eta = orig
    assert calls  # the tie went to the LP


def test_folded_normal_quantile_ndtr_is_bit_identical():
    def old(p, t):
        t = abs(float(t))
        if t == 0.0:
            return float(_stats.norm.ppf(0.5 + p / 2))
        if t > 30.0:
            return t + float(_stats.norm.ppf(p))
        f = lambda x: _stats.norm.cdf(x - t) - _stats.norm.cdf(-x - t) - p  # noqa: E731
        return float(_opt.brentq(f, 0.0, t + 10.0, xtol=1e-14, rtol=1e-14))

    rng = np.random.default_rng(0)
    for p in (0.9, 0.95, 0.99):
        for t in [0.0, 1e-9, 0.3, 1.0, 2.5, 7.0, 29.0, 31.0, *rng.exponential(2.0, 40)]:
            q = hdmod.folded_normal_quantile(p, t)
            assert q == old(p, t)
            # independent: the folded normal's CDF at the quantile is p
            assert _stats.norm.cdf(q - t) - _stats.norm.cdf(-q - t) == pytest.approx(p, abs=1e-12)


def test_truncnorm_screen_gives_the_quantile_decision():
    """The screen of the conditional test (upper tail at the statistic against 1 - p) decides as the
    critical value from scipy's truncnorm.ppf, on random and on hard cases: statistics at the
    quantile itself and 1e-9 either side, narrow intervals, far tails, infinite ends."""
    rng = np.random.default_rng(7)
    p = 1 - (0.05 - 0.005) / (1 - 0.005)
    cases = []
    for _ in range(800):
        lo = rng.choice([-np.inf, rng.normal(0, 3)])
        hi = rng.choice([np.inf, lo + rng.exponential(2.0) if np.isfinite(lo) else rng.normal(1, 3)])
        if not lo < hi:
            continue
        s_lo = lo if np.isfinite(lo) else min(hi, 0.0) - 5
        s_hi = hi if np.isfinite(hi) else max(lo, 0.0) + 5
        cases.append((rng.uniform(s_lo, s_hi), lo, hi))
        q = hdmod._truncnorm_quantile(p, lo, hi)
        for d in (0.0, 1e-9, -1e-9, 1e-7, -1e-7):
            if lo <= q + d <= hi:
                cases.append((q + d, lo, hi))
    for lo, hi in [(30.0, 30.5), (36.0, 37.0), (39.0, 40.0), (0.5, 0.5005), (-0.2, 0.2), (-40.0, 0.1), (5.0, np.inf)]:
        for stat in np.linspace(lo if np.isfinite(lo) else -3, hi if np.isfinite(hi) else lo + 3, 41):
            cases.append((stat, lo, hi))
    screened = 0
    for stat, lo, hi in cases:
        assert hdmod._exceeds_truncnorm_quantile(stat, p, lo, hi) == _exact_exceeds(stat, p, lo, hi), (stat, lo, hi)
        calls = []
        saved = hdmod._truncnorm_quantile
        hdmod._truncnorm_quantile = lambda *a: calls.append(1) or saved(*a)
        try:
            hdmod._exceeds_truncnorm_quantile(stat, p, lo, hi)
        finally:
            hdmod._truncnorm_quantile = saved
        screened += stat > 0 and not calls
    assert screened > 250  # the screen decides most of the random cases (else it saves nothing)


def _dual_vertex_sets_loop(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The basis-by-basis enumeration that ``honest_did._dual_vertex_sets`` replaced (the computation
    the stacked one is checked against)."""
    from itertools import combinations

    m, k1 = W.shape
    e1 = np.zeros(k1)
    e1[0] = 1.0
    out = []
    for B in combinations(range(m), k1):
        WB = W[list(B)]
        if abs(np.linalg.det(WB)) < 1e-12:
            continue
        lam_B = np.linalg.solve(WB.T, e1)
        if np.all(lam_B >= -1e-12):
            lam = np.zeros(m)
            lam[list(B)] = np.maximum(lam_B, 0.0)
            out.append(lam)
    if not out:
        return np.zeros((0, m)), np.zeros((0, m))
    raw = np.array(out)
    V, first = np.unique(np.round(raw, 12), axis=0, return_index=True)
    return V, raw[first]


@pytest.mark.parametrize("case", range(len(_HD_CASES)))
def test_dual_vertices_stacked_equal_the_basis_loop(case):
    """The stacked enumeration of the dual vertices = the basis-by-basis loop it replaces (same
    bits), and every vertex is a feasible dual point (independent check: W'lam = e1, lam >= 0)."""
    b, S, n_pre, n_post = _HD_CASES[case]
    rng = np.random.default_rng(case)
    for mbar in (0.0, 1.0):
        for s in range(-(n_pre - 1), 1):
            A = hdmod.rm_constraints(n_pre, n_post, mbar, s, bool(rng.integers(2)))
            rows = np.where(np.any(A[:, n_pre:] != 0, axis=1))[0]
            G_inv = np.linalg.inv(hdmod._gamma_matrix(hdmod.target_vector("first", n_post)))
            X = (A[:, n_pre:] @ G_inv)[rows, 1:]
            W = np.column_stack([np.sqrt(np.diag((A @ S @ A.T)[np.ix_(rows, rows)])), X])
            fast, slow = hdmod._dual_vertex_sets(W), _dual_vertex_sets_loop(W)
            assert len(fast[0]) > 0
            assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
            e1 = np.eye(W.shape[1])[0]
            np.testing.assert_allclose(fast[1] @ W, np.tile(e1, (len(fast[1]), 1)), atol=1e-9)
            assert (fast[1] >= 0).all()
    # degenerate inputs: fewer rows than columns, repeated rows (singular bases)
    W = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    for M in (W, W[:1]):
        f, s2 = hdmod._dual_vertex_sets(M), _dual_vertex_sets_loop(M)
        assert np.array_equal(f[0], s2[0]) and np.array_equal(f[1], s2[1])
