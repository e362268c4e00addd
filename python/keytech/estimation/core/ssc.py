"""Small-sample corrections matching pyfixest's default ``ssc()`` (fixest's defaults).

pyfixest 0.60 defaults: ``k_adj=True, k_fixef="nonnested", G_adj=True, G_df="min"``. For a
cluster-robust (CRV1) variance the factor is ``G/(G-1) * (N-1)/(N-df_k)`` with G the (minimum)
number of clusters and ``df_k = k + k_fe_adj - k_fe_nested + n_fe_fully_nested``, where ``k`` is
the number of slope coefficients, ``k_fe_adj`` the number of FE levels minus one per FE dimension
beyond the first, and FE dimensions nested in a cluster variable (every level inside one cluster)
are not counted except for one parameter each. Used by our own estimators (negative binomial,
placebo fast path) so their standard errors are on the same footing as the pyfixest ones.
"""

from __future__ import annotations

import numpy as np

from keytech.estimation.core.schur import fe_structure_key, remember, schur_complement

#: eigenvalues of the Schur complement in :func:`exact_fe_rank` by fixed-effect structure
#: (keytech.estimation.core.schur): a repeated structure costs no second decomposition
_SCHUR_EIGVALS: dict[tuple, np.ndarray] = {}


def _nested(fe: np.ndarray, cl: np.ndarray) -> bool:
    """Every level of ``fe`` lies within one level of ``cl``."""
    pairs = np.unique(np.column_stack([fe, cl]), axis=0)
    return len(pairs) == len(np.unique(fe))


def df_k_nonnested(k: int, fe_codes: np.ndarray | None, cluster_codes: np.ndarray | None) -> int:
    if fe_codes is None or fe_codes.size == 0:
        return k
    fe_codes = np.asarray(fe_codes)
    if fe_codes.ndim == 1:
        fe_codes = fe_codes[:, None]
    n_fe = fe_codes.shape[1]
    levels = [len(np.unique(fe_codes[:, j])) for j in range(n_fe)]
    k_fe_adj = sum(levels) - (n_fe - 1) if n_fe > 1 else sum(levels)
    if cluster_codes is None:
        return k + k_fe_adj
    cluster_codes = np.asarray(cluster_codes)
    if cluster_codes.ndim == 1:
        cluster_codes = cluster_codes[:, None]
    nested = [
        any(_nested(fe_codes[:, j], cluster_codes[:, c]) for c in range(cluster_codes.shape[1]))
        for j in range(n_fe)
    ]
    k_fe_nested = sum(lv for lv, is_n in zip(levels, nested) if is_n)
    return k + k_fe_adj - k_fe_nested + sum(nested)


def cluster_ssc(n: int, k: int, fe_codes: np.ndarray | None, cluster_codes: np.ndarray) -> tuple[float, int]:
    """(factor, G) for a CRV1 variance with pyfixest's default small-sample correction."""
    cluster_codes = np.asarray(cluster_codes)
    if cluster_codes.ndim == 1:
        cluster_codes = cluster_codes[:, None]
    G = min(len(np.unique(cluster_codes[:, c])) for c in range(cluster_codes.shape[1]))
    df_k = df_k_nonnested(k, fe_codes, cluster_codes)
    return (G / (G - 1)) * (n - 1) / (n - df_k), G


def exact_fe_rank(fe_codes: np.ndarray, cluster_codes: np.ndarray | None = None, max_dense: int = 4000) -> int | None:
    """Exact number of FE parameters (rank of the dummy matrix), the reghdfe-style count of
    redundant levels, under the same nesting rule as :func:`df_k_nonnested`: FE dimensions nested in
    a cluster variable are not counted beyond one parameter (a constant). Returns
    ``rank([1 if any FE is nested, dummies of the non-nested FE])``: one dimension → its levels;
    two → L1 + L2 − (connected components of their bipartite graph); three or more → levels of the
    largest dimension (full column rank) + rank of the Schur complement of the others,
    D2'D2 − D2'D1 (D1'D1)⁻¹ D1'D2 (dense; eigenvalues above 1e-9 × the largest), or None when the
    others have more than ``max_dense`` levels (too costly; the caller reports that)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    fe_codes = np.asarray(fe_codes)
    if fe_codes.size == 0:
        return 0
    if fe_codes.ndim == 1:
        fe_codes = fe_codes[:, None]
    n, n_fe = fe_codes.shape
    nested = [False] * n_fe
    if cluster_codes is not None:
        cc = np.asarray(cluster_codes)
        cc = cc[:, None] if cc.ndim == 1 else cc
        nested = [any(_nested(fe_codes[:, j], cc[:, c]) for c in range(cc.shape[1])) for j in range(n_fe)]
    free = [j for j in range(n_fe) if not nested[j]]
    const = 1 if any(nested) else 0
    if not free:
        return const
    mats = []
    for j in free:
        _, inv = np.unique(fe_codes[:, j], return_inverse=True)
        mats.append(sp.csr_matrix((np.ones(n), (np.arange(n), inv)), shape=(n, inv.max() + 1)))
    if len(free) == 1:
        return mats[0].shape[1]  # the constant lies in the span of one full set of dummies
    if len(free) == 2:
        B = (mats[0].T @ mats[1]).tocsr()
        L1, L2 = B.shape
        adj = sp.bmat([[None, B], [B.T, None]])
        c, _ = connected_components(adj, directed=False)
        return L1 + L2 - c
    big = int(np.argmax([m.shape[1] for m in mats]))
    D1 = mats[big]
    D2 = sp.hstack([m for i, m in enumerate(mats) if i != big]).tocsr()
    if D2.shape[1] > max_dense:
        return None
    vals = remember(_SCHUR_EIGVALS, fe_structure_key(fe_codes, tuple(free)), 8,
                    lambda: np.linalg.eigvalsh(schur_complement(D1, D2)[0]))
    scale = max(float(np.abs(vals).max()), 1.0)
    return D1.shape[1] + int((vals > 1e-9 * scale).sum())
