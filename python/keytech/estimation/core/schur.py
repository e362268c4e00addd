"""The Schur complement of fixed-effect dummies, shared by the exact FE rank
(:func:`keytech.estimation.core.ssc.exact_fe_rank`) and the closed-form wild-bootstrap cluster
scores (:func:`keytech.estimation.inference.wild_bootstrap.cluster_scores_direct`).

With D1 the dummies of the fixed effect with most levels (D1'D1 = diag(a)) and D2 the dummies of
the others, S = D2'D2 − W diag(a)⁻¹ W' with W = D2'D1: dense, as many rows as the levels of D2.
Specs on the same rows (siblings, multiple-testing members) have the same codes, hence the same
S; its decompositions are kept per fixed-effect structure (:func:`fe_structure_key`) in small
bounded caches (:func:`remember`), so a repeated structure costs no second decomposition and gives
the same numbers (issue 17).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np


def schur_complement(D1, D2) -> tuple[np.ndarray, Any, np.ndarray]:
    """(S, W, a) for the sparse dummy matrices ``D1`` (N x L1) and ``D2`` (N x L2): a = the level
    counts of D1, W = D2'D1 (sparse CSR), S = D2'D2 − W diag(a)⁻¹ W' (dense L2 x L2)."""
    import scipy.sparse as sp

    a = np.asarray(D1.sum(axis=0), dtype=float).ravel()
    W = (D2.T @ D1).tocsr()
    S = (D2.T @ D2).toarray() - (W @ sp.diags(1.0 / a) @ W.T).toarray()
    return S, W, a


def fe_structure_key(codes: np.ndarray, *parts) -> tuple:
    """A cache key of a fixed-effect structure: the shape of ``codes``, ``parts`` (what else the
    cached value depends on) and a digest of the codes."""
    digest = hashlib.blake2b(np.ascontiguousarray(codes).tobytes(), digest_size=20).digest()
    return (codes.shape, *parts, digest)


def remember(cache: dict, key, limit: int, compute: Callable[[], Any]) -> Any:
    """``cache[key]``, computed by ``compute()`` when absent; at ``limit`` entries the oldest goes."""
    if key not in cache:
        value = compute()
        if len(cache) >= limit:
            cache.pop(next(iter(cache)))
        cache[key] = value
    return cache[key]
