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
