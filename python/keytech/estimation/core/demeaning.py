"""Fixed-effect demeaning for our own estimators (negative binomial, placebo fast path, dCDH).

Uses pyfixest's ``within`` backend: LSMR with an additive-Schwarz preconditioner. On the
project's three-way FE structure (firm, industry×year, province×year, with small and poorly
connected cells) it is one to two orders of magnitude faster than alternating projections (MAP)
and converges to a tighter solution; MAP at tol 1e-10 can still be off by ~1e-7 there. With one
FE dimension pyfixest falls back to MAP. The preconditioner depends only on the FE structure (and
weights), so callers that demean many matrices on the same sample pass it back in.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class DemeaningFailed(RuntimeError):
    pass


def demean(
    M: np.ndarray,
    fe_codes: np.ndarray,
    weights: np.ndarray | None = None,
    tol: float = 1e-8,
    maxiter: int = 10_000,
    preconditioner: Any = "additive",
) -> tuple[np.ndarray, Any]:
    """Residuals of each column of ``M`` on the FE (weighted when ``weights`` is given).

    Returns (demeaned matrix, preconditioner to reuse). Raises :class:`DemeaningFailed` when the
    solver does not converge.
    """
    from pyfixest.core.demean import demean_within

    M = np.ascontiguousarray(M, dtype=float)
    squeeze = M.ndim == 1
    if squeeze:
        M = M[:, None]
    fe_codes = np.asarray(fe_codes)
    if fe_codes.ndim == 1:
        fe_codes = fe_codes[:, None]
    if fe_codes.shape[1] == 0:
        if weights is None:
            out = M - M.mean(axis=0)
        else:
            out = M - (weights @ M) / weights.sum()
        return (out[:, 0] if squeeze else out), None
    out, ok, precond = demean_within(
        M, fe_codes.astype(np.uint32), None if weights is None else np.asarray(weights, float), tol=tol,
        maxiter=maxiter, preconditioner=preconditioner if preconditioner is not None else "additive",
    )
    if not ok:
        raise DemeaningFailed(f"fixed-effect demeaning did not converge (tol {tol}, maxiter {maxiter})")
    return (out[:, 0] if squeeze else out), precond
