"""Fast paths of issue 17 that must give the results of the computation they replace.

* Caches that let specs on the same rows share a decomposition: a cached result must be the one a
  fresh computation gives, and a different fixed-effect structure must never get another's
  (checked against the rank of the explicit dummy matrix, numpy's SVD rank, and the closed-form
  wild-bootstrap pieces recomputed with the cache emptied).
* did2s's identification check (``identified_rows``): the null space from the Schur complement
  gives the same kept rows and null dimension as the dense eigendecomposition of Z'Z and as a
  row-by-row rank test with explicit dummies, on random unbalanced three-FE panels with and
  without covariates."""

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
    import keytech.estimation.did.did2s as did2s

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
