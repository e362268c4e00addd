"""Caches of issue 17 that let specs on the same rows share a decomposition: a cached result must be
the one a fresh computation gives, and a different fixed-effect structure must never get another's.

Checked against an independent computation: the rank of the explicit dummy matrix (numpy's SVD
rank), and the closed-form wild-bootstrap pieces recomputed with the cache emptied."""

from __future__ import annotations

import numpy as np

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
