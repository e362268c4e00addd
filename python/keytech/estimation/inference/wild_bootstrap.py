"""Restricted wild cluster bootstrap (WCR11) on the FE-demeaned design, no dummy matrices.

For a linear model ``y = x b + Z g + D a + u`` with high-dimensional fixed effects ``D`` and
clusters ``g = 1..G``, the WCR bootstrap of H0: b = r (Cameron, Gelbach & Miller 2008; MacKinnon,
Nielsen & Webb 2023, "WCR11") draws

    y* = (restricted fit) + u~ * v_g,     u~ = M_[Z,D] (y - r x)  (restricted residuals),

refits the full model and compares the CRV1 t-statistic of b with the original one. Everything a
draw needs is linear in the G cluster weights, so (Roodman, MacKinnon, Nielsen & Webb 2019,
"fast and wild") the whole bootstrap reduces to G x G matrices:

* ``x..`` = M_[Z,D] x (FWL: x demeaned on the FE, then residualised on the demeaned controls);
  b* - r = sum_g v_g s_g / Q with s_g = x.._g' u~_g and Q = x..' x.. ;
* the bootstrap residuals are e* = M_[x,Z,D] (u~ * v) = sum_g v_g M_[x,Z,D] u~^(g), where u~^(g)
  is u~ on cluster g and zero elsewhere. The cluster-h score of draw v is (K v)_h with
  K_hg = sum_{i in h} x.._i (M_[x,Z,D] u~^(g))_i, formed in closed form from the fixed-effect
  sums of the cluster columns (:func:`cluster_scores_direct`, issue 17); when that does not apply
  (too many levels outside the largest fixed effect, or no clear spectral gap) the G vectors
  u~^(g) are demeaned on the FE in one call (pyfixest's LSMR ``within`` solver, the same
  demeaner as the estimates) and residualised on the demeaned regressors. This equals the dummy-variable computation
  exactly, also when the fixed effects are not nested in the clusters (industry x year cells vs
  city clusters), which is where "just demean y* once" would be wrong;
* u~ is linear in r (u~(r) = u~(0) - r x..), so K(r) = K0 - r K1 and s(r) = s0 - r q; a t-statistic
  for any r costs O(G B). p(r) is therefore cheap, and the confidence interval is found by test
  inversion: the set of r whose bootstrap p-value exceeds alpha (bisection on each side).

p-value convention (as the ``wildboottest`` package / pyfixest): two-tailed,
p = share of the B draws with |t*_b| > |t| (the original draw v = 1 is not added). The CRV1
small-sample factor multiplies every t-statistic alike and cancels. Weights: Rademacher (+-1) or
Webb's six-point (+-sqrt(1/2), +-1, +-sqrt(3/2)), drawn as ``wildboottest`` draws them
(``numpy.random.default_rng(seed).choice(values, size=G*B).reshape(G, B)``), so the same seed gives
the same draws; with Rademacher weights and 2^G < B all 2^G sign vectors are enumerated instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core.schur import fe_structure_key, remember, schur_complement

WEBB_VALUES = np.concatenate([-np.sqrt(np.array([3, 2, 1]) / 2), np.sqrt(np.array([1, 2, 3]) / 2)])


def draw_weights(kind: str, G: int, B: int, seed: int) -> np.ndarray:
    """G x B weight matrix (rows: clusters in sorted order of their codes)."""
    rng = np.random.default_rng(seed)
    if kind == "rademacher":
        if 2**G < B:  # full enumeration, as wildboottest does
            return np.array(list(product([-1, 1], repeat=G)), dtype=float).T
        return rng.choice([-1, 1], size=G * B, replace=True).reshape(G, B).astype(float)
    if kind == "webb":
        return rng.choice(WEBB_VALUES, size=G * B, replace=True).reshape(G, B)
    raise ValueError(f"unknown wild bootstrap weights {kind!r}; use 'rademacher' or 'webb'")


@dataclass
class _Draws:
    n0: np.ndarray  # s0' v_b
    n1: np.ndarray  # q' v_b
    a: np.ndarray  # |K0 v_b|^2
    b: np.ndarray  # (K0 v_b)'(K1 v_b)
    c: np.ndarray  # |K1 v_b|^2


@dataclass
class WildBootstrap:
    """Precomputed pieces of the WCR bootstrap for one coefficient (see module docstring)."""

    beta: float
    se_crv1_unscaled: float  # sqrt(sum_g (x.._g' e_g)^2) / Q (no small-sample factor)
    s0: np.ndarray  # (G,)
    q: np.ndarray  # (G,)
    K0: np.ndarray  # (G, G)
    K1: np.ndarray  # (G, G)
    Q: float
    G: int
    clusters: np.ndarray  # sorted cluster labels (row g of K and of the weights)

    def t_original(self, r: float) -> float:
        return (self.beta - r) / self.se_crv1_unscaled

    def draws(self, v: np.ndarray) -> "_Draws":
        """Per-draw quadratic forms: t*(r) for every r in O(B) after one O(G^2 B) product."""
        S0, S1 = self.K0 @ v, self.K1 @ v
        return _Draws(self.s0 @ v, self.q @ v, np.einsum("gb,gb->b", S0, S0), np.einsum("gb,gb->b", S0, S1),
                      np.einsum("gb,gb->b", S1, S1))

    def t_boot(self, r: float, v) -> np.ndarray:
        """Bootstrap t-statistics (CRV1 without small-sample factor) for H0: b = r, one per draw
        (``v``: G x B weights, or the :meth:`draws` of them)."""
        if r == 0.0 and not isinstance(v, _Draws):
            # H0: b = 0 needs only K0 v: the same numbers as the general form below at r = 0
            # (there n0 - 0 n1 = n0 and a - 0 b + 0 c = a exactly), half the G x G x B product
            S0 = self.K0 @ v
            return (self.s0 @ v) / np.sqrt(np.maximum(np.einsum("gb,gb->b", S0, S0), 0.0))
        d = v if isinstance(v, _Draws) else self.draws(v)
        return (d.n0 - r * d.n1) / np.sqrt(np.maximum(d.a - 2 * r * d.b + r * r * d.c, 0.0))

    def pvalue(self, r: float, v) -> float:
        return float(np.mean(np.abs(self.t_boot(r, v)) > abs(self.t_original(r))))

    def confidence_interval(self, v: np.ndarray, alpha: float = 0.05, tol: float = 1e-7) -> tuple[float, float]:
        """{r : p(r) > alpha} by bisection on each side of the estimate (interval hull)."""
        se = self.se_crv1_unscaled
        v = v if isinstance(v, _Draws) else self.draws(v)

        def side(sign: int) -> float:
            inside, step = self.beta, se
            outside = self.beta + sign * step
            n = 0
            while self.pvalue(outside, v) > alpha:
                inside, step = outside, step * 2
                outside = self.beta + sign * step
                n += 1
                if n > 60:
                    return float(sign * np.inf)
            for _ in range(200):
                if abs(outside - inside) <= tol * max(se, 1e-300):
                    break
                mid = 0.5 * (inside + outside)
                if self.pvalue(mid, v) > alpha:
                    inside = mid
                else:
                    outside = mid
            return 0.5 * (inside + outside)

        return side(-1), side(+1)


def prepare(
    y: np.ndarray,
    x: np.ndarray,
    Z: np.ndarray | None,
    fe_codes: np.ndarray | None,
    cluster: np.ndarray,
    tol: float = 1e-10,
    method: str = "auto",
    demeaned_regressors: np.ndarray | None = None,
) -> WildBootstrap:
    """Build the G x G pieces from the raw (not demeaned) data.

    ``y``, ``x``: (N,); ``Z``: (N, k) controls or None; ``fe_codes``: (N, n_fe) integer codes or
    None (then a constant is partialled out); ``cluster``: (N,) cluster ids (any sortable type).
    ``method``: how M_[x,Z,D] reaches the 2G cluster columns — ``"direct"``
    (:func:`cluster_scores_direct`, closed form over the fixed-effect levels), ``"lsmr"`` (demean
    the 2G columns with pyfixest's LSMR, as before issue 17) or ``"auto"`` (direct when it
    applies, else LSMR). ``demeaned_regressors``: the (N, 1 + k) matrix [x, Z] already demeaned on
    ``fe_codes`` at ``tol`` as (columns of) one matrix of at least two columns
    (:func:`prepare_spec` passes it); then only [y, x] is demeaned here, for y.
    The demeaner solves the columns of a matrix independently, so this gives the numbers of
    demeaning [y, x, Z] together, to the bit (tests/python/test_wild_bootstrap_reuse.py).
    """
    from keytech.estimation.core.demeaning import demean

    y = np.asarray(y, float)
    x = np.asarray(x, float)
    N = len(y)
    Z = np.zeros((N, 0)) if Z is None else np.asarray(Z, float).reshape(N, -1)
    if fe_codes is None:
        fe_codes = np.zeros((N, 1), dtype=np.int64)
    fe_codes = np.asarray(fe_codes)
    if fe_codes.ndim == 1:
        fe_codes = fe_codes[:, None]
    labels, cl = np.unique(np.asarray(cluster), return_inverse=True)
    G = int(cl.max()) + 1
    if demeaned_regressors is None:
        M, precond = demean(np.column_stack([y, x, Z]), fe_codes, tol=tol)
        yd, xd, Zd = M[:, 0], M[:, 1], M[:, 2:]
    else:
        # y with x: pyfixest's demeaner solves the columns of a matrix independently, but a single
        # column takes another path whose last bits can differ (tests/python/test_wild_bootstrap_reuse.py)
        yx, precond = demean(np.column_stack([y, x]), fe_codes, tol=tol)
        yd = yx[:, 0]
        XZd = np.asarray(demeaned_regressors, dtype=float)
        if XZd.shape != (N, 1 + Z.shape[1]):
            raise ValueError(f"demeaned_regressors must be the demeaned [x, Z], shape {(N, 1 + Z.shape[1])}, "
                             f"not {XZd.shape}")
        # in the memory order the demeaner gave [y, x] (and so would give [y, x, Z]: C with one
        # fixed effect, Fortran with several): the products below see the same strides as when
        # [y, x, Z] is demeaned together, hence the same rounding
        M = np.empty((N, 2 + Z.shape[1]), order="F" if _fortran_only(yx) else "C")
        M[:, 0], M[:, 1:] = yd, XZd
        yd, xd, Zd = M[:, 0], M[:, 1], M[:, 2:]

    def resid_Z(A: np.ndarray) -> np.ndarray:
        if Zd.shape[1] == 0:
            return A
        return A - Zd @ np.linalg.lstsq(Zd, A, rcond=None)[0]

    xdd = resid_Z(xd)
    u0 = resid_Z(yd)  # restricted residuals at r = 0; at r: u0 - r * xdd
    Q = float(xdd @ xdd)
    beta = float(xdd @ yd) / Q
    e_hat = u0 - beta * xdd
    onehot = np.zeros((N, G))
    onehot[np.arange(N), cl] = 1.0
    s0 = onehot.T @ (xdd * u0)
    q = onehot.T @ (xdd * xdd)
    se = float(np.sqrt(np.sum((onehot.T @ (xdd * e_hat)) ** 2))) / Q

    Xd = np.column_stack([xd, Zd])
    K = None if method == "lsmr" else cluster_scores_direct(fe_codes, cl, G, u0, xdd, Xd)
    if K is None:
        if method == "direct":
            raise ValueError("the direct G x G computation does not apply to this fixed-effect structure")
        # M_[x,Z,D] applied to u0^(g) and xdd^(g) (cluster-g parts): demean on the FE, then
        # residualise on the demeaned regressors [xd, Zd]
        U = np.hstack([onehot * u0[:, None], onehot * xdd[:, None]])
        Ud, _ = demean(U, fe_codes, tol=tol, preconditioner=precond if precond is not None else "additive")
        Ud = Ud - Xd @ np.linalg.lstsq(Xd, Ud, rcond=None)[0]
        K = onehot.T @ (xdd[:, None] * Ud)  # (G, 2G): K_hg = sum_{i in h} xdd_i (M u^(g))_i
    return WildBootstrap(beta=beta, se_crv1_unscaled=se, s0=s0, q=q, K0=K[:, :G], K1=K[:, G:], Q=Q, G=G, clusters=labels)


def _fortran_only(A: np.ndarray) -> bool:
    return bool(A.flags.f_contiguous and not A.flags.c_contiguous)


#: the direct computation factorises a dense matrix over the levels of every fixed effect but the
#: largest; above this many levels it gives way to the LSMR demeaning of the 2G columns
DIRECT_MAX_LEVELS = 4000


#: eigen-decompositions of the Schur complement S by fixed-effect structure
#: (keytech.estimation.core.schur): members of one multiple-testing family often share their
#: sample (same rows, same codes), and S depends on nothing else
_SCHUR_EIGH: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def cluster_scores_direct(fe_codes: np.ndarray, cl: np.ndarray, G: int, u0: np.ndarray, xdd: np.ndarray,
                          Xd: np.ndarray) -> np.ndarray | None:
    """K = [K0, K1] (G x 2G) of :func:`prepare` without demeaning the 2G cluster columns.

    With A = (cluster indicators) * xdd and U = [indicators * u0, indicators * xdd] (N x 2G),
    K = A' M_[X,D] U = A'U - A'P_D U - (A'Xd)(Xd'Xd)^-1 Xd'M_D U (M_[X,D] = M_D - P_Xd, Xd = M_D X).
    Every product with the FE projection P_D is a quadratic form in the FE sums D'A, D'U
    (levels x clusters): with D1 the fixed effect with most levels (D1'D1 = diag(a)) and D2 the
    others, u'P_D v = (D1'u)'a^-1(D1'v) + r(u)'S^+ r(v), r(v) = D2'v - W a^-1 D1'v, W = D2'D1,
    S = D2'D2 - W a^-1 W' (the Schur complement: dense, as many rows as the levels of D2). S is
    singular (the dummies of several fixed effects are collinear); r(v) lies in its range, so the
    pseudo-inverse from its eigen-decomposition gives the exact projection. The same numbers as
    the LSMR demeaning of the 2G columns up to that solver's tolerance (the tests compare both,
    and an explicit dummy-variable computation). Returns None — the caller then demeans — when
    D2 has more than :data:`DIRECT_MAX_LEVELS` levels or S's spectrum has no clear gap between
    its zero and non-zero eigenvalues."""
    import scipy.sparse as sp

    N = len(u0)
    codes = np.asarray(fe_codes)
    codes = np.stack([np.unique(codes[:, j], return_inverse=True)[1] for j in range(codes.shape[1])], axis=1)
    n_levels = codes.max(axis=0) + 1
    big = int(np.argmax(n_levels))
    others = [j for j in range(codes.shape[1]) if j != big]
    L2 = int(sum(n_levels[j] for j in others))
    if L2 > DIRECT_MAX_LEVELS:
        return None
    rows = np.arange(N)
    D1 = sp.csr_matrix((np.ones(N), (rows, codes[:, big])), shape=(N, int(n_levels[big])))
    a = np.bincount(codes[:, big]).astype(float)
    # the 2G + k right-hand columns as one sparse matrix: [ind * u0, ind * xdd] and the dense Xd
    Uu = sp.csr_matrix((u0, (rows, cl)), shape=(N, G))
    Ux = sp.csr_matrix((xdd, (rows, cl)), shape=(N, G))
    U = sp.hstack([Uu, Ux]).tocsr()
    D1U = np.asarray((D1.T @ U).todense())
    D1X = np.asarray(D1.T @ Xd)
    AU = np.concatenate([np.diag(np.bincount(cl, xdd * u0, minlength=G)), np.diag(np.bincount(cl, xdd * xdd, minlength=G))],
                        axis=1)
    AX = np.asarray(Ux.T @ Xd)
    XU = np.asarray(U.T @ Xd).T
    # u'P_D v, first the D1 part
    APU = D1U[:, G:].T @ (D1U / a[:, None])
    XPU = D1X.T @ (D1U / a[:, None])
    if others:
        offsets = np.cumsum([0] + [int(n_levels[j]) for j in others])
        D2 = sp.csr_matrix((np.ones(N * len(others)),
                            (np.repeat(rows, len(others)), (codes[:, others] + offsets[:-1]).ravel())),
                           shape=(N, L2))
        W = (D2.T @ D1).tocsr()
        lam, Q = remember(_SCHUR_EIGH, fe_structure_key(codes, big), 4,
                          lambda: np.linalg.eigh(schur_complement(D1, D2)[0]))
        top = max(float(lam[-1]), 1e-300)
        zero = lam <= 1e-10 * top
        if np.any((lam > 1e-10 * top) & (lam < 1e-6 * top)):
            return None  # no clear gap: leave it to the iterative solver
        Qk, lk = Q[:, ~zero], lam[~zero]
        rU = Qk.T @ (np.asarray((D2.T @ U).todense()) - W @ (D1U / a[:, None])) / np.sqrt(lk)[:, None]
        rX = Qk.T @ (np.asarray(D2.T @ Xd) - W @ (D1X / a[:, None])) / np.sqrt(lk)[:, None]
        APU += rU[:, G:].T @ rU
        XPU += rX.T @ rU
    XdMU = XU - XPU  # Xd' M_D U
    return AU - APU - AX @ np.linalg.solve(Xd.T @ Xd, XdMU)


def wild_cluster_bootstrap(
    y, x, Z, fe_codes, cluster, *, weights: str = "rademacher", draws: int = 9999, seed: int = 0,
    r: float = 0.0, alpha: float = 0.05, v: np.ndarray | None = None, ci: bool = True,
) -> dict[str, Any]:
    """WCR bootstrap p-value of H0: b = r and the test-inverted (1 - alpha) CI for the coefficient of ``x``."""
    wb = prepare(y, x, Z, fe_codes, cluster)
    if v is None:
        v = draw_weights(weights, wb.G, draws, seed)
    out = {
        "estimate": wb.beta,
        "t_stat_unscaled": wb.t_original(r),
        "p_value": wb.pvalue(r, d := wb.draws(v)),
        "draws": int(v.shape[1]),
        "n_clusters": wb.G,
        "weights": weights,
        "full_enumeration": bool(weights == "rademacher" and 2**wb.G < draws),
        "seed": int(seed),
    }
    if ci:
        out["ci_low"], out["ci_high"] = wb.confidence_interval(d, alpha)
    return out


# --------------------------------------------------------------------------- registry estimator


#: the regressors demeaned on the fixed effects, by (codes, tolerance, regressors): members of one
#: multiple-testing family that share their sample (the nine ``field_*`` outcomes, the key and
#: non-key halves of one split) share their regressor matrix, so it is demeaned once per sample
_DEMEANED_REGRESSORS: dict[tuple, np.ndarray] = {}


def demeaned_regressors(X: np.ndarray, fe_codes: np.ndarray, tol: float) -> np.ndarray:
    """``X`` demeaned on ``fe_codes`` at ``tol`` (:func:`keytech.estimation.core.demeaning.demean`),
    remembered for the last few (codes, tolerance, X); read-only."""
    import hashlib

    from keytech.estimation.core.demeaning import demean

    X = np.ascontiguousarray(X, dtype=float)
    key = fe_structure_key(np.asarray(fe_codes), float(tol), X.shape,
                           hashlib.blake2b(X.tobytes(), digest_size=20).digest())

    def compute() -> np.ndarray:
        Xd = demean(X, fe_codes, None, tol=tol)[0]
        Xd.flags.writeable = False
        return Xd

    return remember(_DEMEANED_REGRESSORS, key, 4, compute)


def prepare_spec(spec, data: pd.DataFrame) -> WildBootstrap:
    """:func:`prepare` for the treatment coefficient of an OLS spec on ``data`` (already filtered
    by the spec's sample): complete cases, singletons dropped as pyfixest does, controls collinear
    with the fixed effects dropped, one cluster variable. The regressors are demeaned once
    (:func:`demeaned_regressors`) for both the collinearity check and :func:`prepare` when their
    tolerances agree (the default ``fixef_tol`` 1e-8: both 1e-10), and once per sample across
    the members of a multiple-testing family (issue 17); the same numbers as demeaning them
    for each step."""
    from keytech.estimation.core import panel as pnl
    from keytech.estimation.core.fitting import noncollinear_columns

    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError(f"{spec.id}: the wild cluster bootstrap needs one cluster variable (vcov: {{cluster: var}})")
    rhs = list(spec.regressors)
    clv = spec.vcov.cluster[0]
    sample = data.dropna(subset=list(dict.fromkeys([spec.outcome, *rhs, *spec.fixed_effects, clv])))
    if spec.fixed_effects and spec.fixef_rm == "singleton":
        sample = sample.loc[~pnl.singleton_mask(sample, spec.fixed_effects)]
    fe = pnl.factorize_columns(sample, spec.fixed_effects) if spec.fixed_effects else None
    X = sample[rhs].to_numpy(float)
    codes = fe if fe is not None else np.zeros((len(sample), 1), dtype=np.int64)
    collinearity_tol = min(spec.fixef_tol, 1e-10)  # noncollinear_columns' tolerance
    Xd = demeaned_regressors(X, codes, collinearity_tol)
    keep = noncollinear_columns(X, codes, spec.fixef_tol, demeaned=Xd)
    if 0 not in keep:
        raise ValueError(f"{spec.id}: {spec.treatment} is collinear with the fixed effects")
    controls = [j for j in keep if j != 0]
    Z = X[:, controls]
    tol = 1e-10  # prepare's
    if collinearity_tol != tol:
        Xd = demeaned_regressors(X, codes, tol)
    # (a single column is demeaned by another path: then prepare demeans [y, x] itself)
    XZd = Xd[:, [0, *controls]] if X.shape[1] >= 2 else None
    return prepare(sample[spec.outcome].to_numpy(float), X[:, 0], Z, fe, sample[clv].to_numpy(), tol=tol,
                   demeaned_regressors=XZd)


def fit_wild_bootstrap(spec, df: pd.DataFrame, ctx):
    """Spec estimator ``wild_bootstrap``: the spec's OLS (coefficient and CRV1 SE from pyfixest, as
    for ``ols``) with WCR bootstrap p-values and test-inverted CIs for the treatment, one term per
    weight type in ``options.weights`` (first = main term ``policy``; others ``policy[webb]``)."""
    from keytech.estimation.core.results import TermEstimate
    from keytech.estimation.linear import fit_ols
    from keytech.estimation.core.panel import prepare_spec_data

    o = spec.options
    kinds = list(o.get("weights", ["rademacher", "webb"]))
    draws = int(o.get("draws", 9999))
    alpha = float(o.get("alpha", 0.05))
    base = fit_ols(spec, df, ctx)
    analytic = base.term(spec.treatment)

    wb = prepare_spec(spec, prepare_spec_data(spec, df))
    terms = []
    boot: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        seed = int(ctx.seed) + i
        v = draw_weights(kind, wb.G, draws, seed)
        d = wb.draws(v)
        p = wb.pvalue(0.0, d)
        lo, hi = wb.confidence_interval(d, alpha)
        name = spec.treatment if i == 0 else f"{spec.treatment}[{kind}]"
        info = {"bootstrap": f"WCR11 {kind}", "draws": int(v.shape[1]), "seed": seed,
                "full_enumeration": bool(kind == "rademacher" and 2**wb.G < draws),
                "analytic_p_value": analytic.p_value, "analytic_ci": [analytic.ci_low, analytic.ci_high]}
        terms.append(TermEstimate(name, analytic.estimate, analytic.std_error, analytic.t_stat, p, lo, hi, info))
        boot[kind] = {"p_value": p, "ci": [lo, hi], **{k: info[k] for k in ("draws", "seed", "full_enumeration")}}
    if abs(wb.beta - analytic.estimate) > 1e-6 * max(1.0, abs(analytic.estimate)):
        raise RuntimeError(f"{spec.id}: FWL coefficient {wb.beta} differs from pyfixest's {analytic.estimate}")
    base.terms = terms + [t for t in base.terms if t.term != spec.treatment]
    base.vcov = f"{base.vcov}; p-value and CI: WCR wild cluster bootstrap (test inversion)"
    base.diagnostics = {**base.diagnostics, "wild_bootstrap": boot, "n_clusters": wb.G, "alpha": alpha,
                        "method": "restricted WCR11 on the FE-demeaned design (fast-and-wild G x G form); "
                                  "p = share of |t*| > |t|; CI by test inversion"}
    return base
