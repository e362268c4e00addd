"""Honest DiD: sensitivity of event-study conclusions to violations of parallel trends.

Rambachan & Roth (2023), "A More Credible Approach to Parallel Trends", Review of Economic Studies.
Input is an event study's coefficient vector ``beta`` (pre periods first, earliest first, then post
periods; the reference period omitted) and its variance matrix ``sigma``. The parameter is
``theta = l' tau_post`` (``l`` = e1: the first post period; ``l`` = 1/T_post: the average post effect).

Two restriction sets on the post-period bias ``delta_post`` (both as in the R package HonestDiD):

- **Smoothness** ``Delta^SD(M)``: the second differences of the trend ``delta`` (with
  ``delta_ref = 0``) are at most ``M`` in absolute value; ``M = 0`` allows exactly a linear trend.
  Confidence interval: the optimal **fixed-length CI** (FLCI, Armstrong & Kolesár 2018/2020) — the
  affine estimator ``l' beta_post + v' beta_pre`` and half-length ``cv_alpha(bias/sd) * sd`` that
  minimise the half-length, where ``bias`` is the worst-case bias over ``Delta^SD(M)`` and
  ``cv_alpha(t)`` the ``1-alpha`` quantile of ``|N(t, 1)|``. This is HonestDiD's default for
  ``Delta^SD``. We solve it as one convex problem (the half-length is the perspective of the
  convex, increasing ``cv_alpha`` applied to the convex bias and standard deviation) with scipy's
  SLSQP; HonestDiD searches over the standard deviation instead. Same optimum.
- **Relative magnitudes** ``Delta^RM(Mbar)``: every post-period first difference of ``delta`` is at
  most ``Mbar`` times the largest pre-period first difference. ``Delta^RM`` is a union of
  polyhedra (which pre-period difference is the largest, and its sign); the confidence set is the
  union of the Andrews–Roth–Pakes (2023) **conditional least-favourable hybrid** (``C-LF``) sets of
  the polyhedra, by test inversion on HonestDiD's grid (1000 points on ``[-20 sd, 20 sd]`` of
  ``theta``'s standard deviation), the least-favourable critical value from 1000 normal draws of
  ``numpy.random.RandomState(0)`` and ``kappa = alpha/10``, post-period moments only — HonestDiD's
  defaults. The end points are grid points (spacing 40 sd / 999).

Breakdown value: the largest ``Mbar`` (``M``) at which the robust CI still excludes 0, found by
bisection to a stated tolerance; ``None`` when the ordinary CI already includes 0.

Checked against ``honestdid`` (Python port of the R package; ``Delta^RM``) and ``moderndid``
(``Delta^SD`` FLCI) on the package's published example and a small case of our own, to 1e-3:
``tests/python/test_honest_did.py`` with frozen values in
``tests/python/reference/honest_did_reference.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy import optimize, special, stats

DEFAULT_MBAR = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_POINTS = 1000
# the dual vertices are enumerated (C(m, k+1) bases) only for at most this many moments m;
# with more, each LP value is solved by HiGHS
MAX_ENUMERATED_MOMENTS = 16
LF_SIMS = 1000


# --------------------------------------------------------------------------- helpers


def _check(beta: np.ndarray, sigma: np.ndarray, num_pre: int, num_post: int, l_vec: np.ndarray) -> None:
    if num_pre < 1 or num_post < 1:
        raise ValueError(f"need at least one pre and one post period, got num_pre={num_pre}, num_post={num_post}")
    n = num_pre + num_post
    if beta.shape != (n,):
        raise ValueError(f"beta has {beta.shape[0] if beta.ndim else 0} elements, expected num_pre+num_post={n}")
    if sigma.shape != (n, n):
        raise ValueError(f"sigma is {sigma.shape}, expected ({n}, {n})")
    if l_vec.shape != (num_post,):
        raise ValueError(f"l_vec has {l_vec.shape} elements, expected num_post={num_post}")
    if not np.all(np.isfinite(beta)) or not np.all(np.isfinite(sigma)):
        raise ValueError("beta and sigma must be finite")
    if np.max(np.abs(sigma - sigma.T)) > 1e-8 * max(1.0, np.max(np.abs(sigma))):
        raise ValueError("sigma is not symmetric")


def target_vector(kind: str, num_post: int) -> np.ndarray:
    """``l`` for ``'first'`` (first post period) or ``'average'`` (mean of the post periods)."""
    if kind == "first":
        return np.eye(num_post)[0]
    if kind == "average":
        return np.full(num_post, 1.0 / num_post)
    raise ValueError(f"target must be 'first' or 'average', got {kind!r}")


def original_ci(beta, sigma, num_pre: int, num_post: int, l_vec, alpha: float = 0.05) -> tuple[float, float]:
    """The ordinary CI for ``l' beta_post`` under exact parallel trends."""
    beta, sigma, l_vec = np.asarray(beta, float), np.asarray(sigma, float), np.asarray(l_vec, float)
    _check(beta, sigma, num_pre, num_post, l_vec)
    est = float(l_vec @ beta[num_pre:])
    se = float(np.sqrt(l_vec @ sigma[num_pre:, num_pre:] @ l_vec))
    z = stats.norm.ppf(1 - alpha / 2)
    return est - z * se, est + z * se


# --------------------------------------------------------------------------- Delta^SD: FLCI


def folded_normal_quantile(p: float, t: float) -> float:
    """``p`` quantile of ``|N(t, 1)|``."""
    t = abs(float(t))
    if not np.isfinite(t):
        raise ValueError(f"folded normal quantile of a non-finite mean {t}")
    if t == 0.0:
        return float(stats.norm.ppf(0.5 + p / 2))
    if t > 30.0:  # the mass below -x is < Phi(-30): |N(t,1)| is N(t,1) to double precision
        return t + float(stats.norm.ppf(p))

    def f(x: float) -> float:
        # scipy.special.ndtr is what stats.norm.cdf evaluates (bit for bit at finite x, without the
        # distribution machinery's argument checks: brentq calls this ~10 times per quantile)
        return special.ndtr(x - t) - special.ndtr(-x - t) - p

    hi = t + 10.0
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-14, rtol=1e-14))


def _sd_bias_constant(l_vec: np.ndarray) -> float:
    T = len(l_vec)
    const = sum(abs(float(np.arange(1, s + 1) @ l_vec[T - s:])) for s in range(1, T + 1))
    # HonestDiD subtracts sum_s s*l_s; the sum over |cumsum(w)| below always contains
    # |sum(w)| = |sum_s s*l_s|, so the two agree when that target is >= 0 (e1, the average) and
    # subtracting its absolute value keeps the bound exact otherwise (checked against an LP in the tests)
    return const - abs(float(np.arange(1, T + 1) @ l_vec))


def sd_max_bias(l_pre, l_vec, M: float) -> float:
    """Worst-case bias of ``l' beta_post + l_pre' beta_pre`` for ``l' tau_post`` over ``Delta^SD(M)``.

    Closed form (HonestDiD's, exact also for a negative ``sum_s s*l_s``): with ``w = cumsum(l_pre)``
    the estimator is unbiased under a linear trend only if ``sum(w) = sum_s s*l_s``; the bias is then
    ``M * (c(l) + sum |cumsum(w)|)``; otherwise it is infinite.
    """
    l_pre, l_vec = np.asarray(l_pre, float), np.asarray(l_vec, float)
    w = np.cumsum(l_pre)
    target = float(np.arange(1, len(l_vec) + 1) @ l_vec)
    if abs(w.sum() - target) > 1e-9 * max(1.0, abs(target)):
        return float("inf")
    return M * (_sd_bias_constant(l_vec) + float(np.abs(np.cumsum(w)).sum()))


@dataclass
class FLCIResult:
    lb: float
    ub: float
    estimate: float
    half_length: float
    l_pre: np.ndarray
    sd: float
    max_bias: float


def flci(beta, sigma, num_pre: int, num_post: int, l_vec, M: float, alpha: float = 0.05) -> FLCIResult:
    """Optimal fixed-length CI for ``l' tau_post`` under ``Delta^SD(M)``."""
    beta, sigma, l_vec = np.asarray(beta, float), np.asarray(sigma, float), np.asarray(l_vec, float)
    _check(beta, sigma, num_pre, num_post, l_vec)
    if M < 0:
        raise ValueError(f"M must be >= 0, got {M}")
    scale = float(np.sqrt(l_vec @ sigma[num_pre:, num_pre:] @ l_vec))
    if not scale > 0:
        raise ValueError("the target has zero variance")
    S = sigma / scale**2
    m = M / scale
    K = num_pre
    S_pre, S_pp = S[:K, :K], S[:K, K:] @ l_vec
    v_post = float(l_vec @ S[K:, K:] @ l_vec)
    D = np.eye(K) - np.eye(K, k=-1)  # l_pre = D w
    L = np.tril(np.ones((K, K)))  # cumsum
    const = _sd_bias_constant(l_vec)
    target = float(np.arange(1, num_post + 1) @ l_vec)
    q = 1 - alpha

    def parts(x):
        u, w = x[:K], x[K:]
        lp = D @ w
        var = lp @ S_pre @ lp + 2 * lp @ S_pp + v_post
        sd = np.sqrt(max(var, 1e-300))
        bias = m * (const + u.sum())
        return u, w, lp, sd, bias

    def obj(x):
        _, _, _, sd, bias = parts(x)
        return sd * folded_normal_quantile(q, bias / sd)

    def grad(x):
        _, _, lp, sd, bias = parts(x)
        t = bias / sd
        c = folded_normal_quantile(q, t)
        a, b = stats.norm.pdf(c - t), stats.norm.pdf(c + t)
        dc = (a - b) / (a + b)
        d_bias = m * dc
        d_sd = c - t * dc
        g_w = D.T @ (S_pre @ lp + S_pp) / sd * d_sd
        return np.concatenate([np.full(K, d_bias), g_w])

    cons = [
        {"type": "ineq", "fun": lambda x: x[:K] - L @ x[K:], "jac": lambda x: np.hstack([np.eye(K), -L])},
        {"type": "ineq", "fun": lambda x: x[:K] + L @ x[K:], "jac": lambda x: np.hstack([np.eye(K), L])},
        {"type": "eq", "fun": lambda x: np.array([x[K:].sum() - target]),
         "jac": lambda x: np.concatenate([np.zeros(K), np.ones(K)])[None, :]},
    ]
    starts = []
    w0 = np.zeros(K)
    w0[-1] = target  # the minimum-bias estimator
    starts.append(w0)
    starts.append(np.full(K, target / K))
    best = None
    for w in starts:
        x0 = np.concatenate([np.abs(L @ w) + 1e-3, w])
        for _ in range(3):  # restart from the solution: SLSQP can stop early at kinks
            r = optimize.minimize(obj, x0, jac=grad, constraints=cons, method="SLSQP",
                                  options={"ftol": 1e-14, "maxiter": 1000})
            x0 = r.x
        if best is None or obj(r.x) < obj(best):
            best = r.x
    u, w, lp, sd, bias = parts(best)
    l_pre = D @ w
    true_bias = sd_max_bias(l_pre, l_vec, m)  # u may exceed |cumsum(w)| only by solver slack
    half = sd * folded_normal_quantile(q, true_bias / sd) * scale
    est = float(l_pre @ beta[:K] + l_vec @ beta[K:])
    return FLCIResult(lb=est - half, ub=est + half, estimate=est, half_length=half, l_pre=l_pre,
                      sd=sd * scale, max_bias=true_bias * scale)


# --------------------------------------------------------------------------- Delta^RM: ARP C-LF


def rm_constraints(num_pre: int, num_post: int, mbar: float, s: int, positive: bool) -> np.ndarray:
    """``A`` with ``Delta^RM_{s,sign}(Mbar) = {delta : A delta <= 0}`` (reference period dropped).

    ``s`` in ``-(num_pre-1)..0`` picks the pre-period first difference assumed largest
    (``s = 0``: the one into the reference period; HonestDiD's indexing).
    """
    if not -(num_pre - 1) <= s <= 0:
        raise ValueError(f"s must be in {-(num_pre - 1)}..0, got {s}")
    n = num_pre + num_post
    first = np.zeros((n, n + 1))
    for r in range(n):
        first[r, r], first[r, r + 1] = -1.0, 1.0
    v = np.zeros(n + 1)
    v[num_pre + s - 1], v[num_pre + s] = -1.0, 1.0
    if not positive:
        v = -v
    ub = np.vstack([np.tile(v, (num_pre, 1)), np.tile(mbar * v, (num_post, 1))])
    A = np.vstack([first - ub, -first - ub])
    A = A[np.sum(A**2, axis=1) > 1e-10]
    return np.delete(A, num_pre, axis=1)


def _lp_eta(y: np.ndarray, X: np.ndarray, sd: np.ndarray):
    """min eta s.t. y <= eta*sd + X delta; returns (eta, lambda (duals), ok)."""
    k = X.shape[1]
    c = np.zeros(1 + k)
    c[0] = 1.0
    r = optimize.linprog(c, A_ub=-np.column_stack([sd, X]), b_ub=-y, bounds=[(None, None)] * (1 + k),
                         method="highs")
    if r.status != 0:
        return np.nan, np.zeros(len(y)), False
    return float(r.x[0]), -np.asarray(r.ineqlin.marginals), True


def _lp_eta_vertices(y: np.ndarray, vertices: tuple[np.ndarray, np.ndarray] | None, X: np.ndarray, sd: np.ndarray):
    """``_lp_eta`` from the dual vertices: eta = max over the vertices of lambda' y and lambda the
    maximising vertex (strong duality), when that vertex is the unique maximiser by a clear margin
    (then it is the LP's only dual solution, the one HiGHS returns). Ties, an empty vertex set or
    too many moments to enumerate fall back to the LP."""
    if vertices is None or not len(vertices[1]):
        return _lp_eta(y, X, sd)
    exact = vertices[1]
    vals = exact @ y
    j = int(np.argmax(vals))
    if len(vals) > 1:
        second = float(np.max(np.delete(vals, j)))
        if vals[j] - second <= 1e-7 * (1.0 + abs(float(vals[j]))):
            return _lp_eta(y, X, sd)
    return float(vals[j]), exact[j].copy(), True


def _truncnorm_quantile(p: float, lo: float, hi: float) -> float:
    if lo >= hi:
        return lo
    if np.isinf(lo) and np.isinf(hi):
        return float(stats.norm.ppf(p))
    return float(stats.truncnorm.ppf(p, a=lo, b=hi))


def _round_eps(x: float) -> float:
    return 0.0 if abs(x) < np.finfo(float).eps ** 0.75 else float(x)


def _vlo_vup_dual(eta: float, s_t: np.ndarray, gamma: np.ndarray, sigma: np.ndarray, W: np.ndarray,
                  V: np.ndarray | None = None):
    """Truncation bounds of the conditional test in the degenerate case (ARP 2023, Appendix; the
    bisection of HonestDiD's ``.vlo_vup_dual_fn``). ``V``: ``_dual_vertices(W)`` when the caller
    has it (the same W at every grid point of a polyhedron)."""
    tol_c = tol_eq = 1e-6
    gsg = float(gamma @ sigma @ gamma)
    if abs(gsg) < 1e-30:
        return -np.inf, np.inf
    sigma_b = np.sqrt(gsg)
    b_vec = sigma @ gamma / gsg
    n = len(s_t)
    A_eq = W.T
    b_eq = np.zeros(A_eq.shape[0])
    b_eq[0] = 1.0

    # the LP max f'lambda over {lambda >= 0 : W'lambda = e1} (bounded: sd'lambda = 1) is attained at a
    # vertex; with few moments the vertices are enumerated once and each check is a matrix product
    if V is None:
        V = _dual_vertices(W) if n <= MAX_ENUMERATED_MOMENTS else np.zeros((0, n))

    def check(cval: float):
        f = s_t + b_vec * cval
        if len(V):
            vals = V @ f
            j = int(np.argmax(vals))
            return abs(cval - float(vals[j])) <= tol_eq, V[j]
        r = optimize.linprog(-f, A_eq=A_eq, b_eq=b_eq, bounds=[(0, None)] * n, method="highs")
        ok = r.status == 0
        sol = r.x if ok else np.zeros(n)
        return ok and abs(cval - (-r.fun)) <= tol_eq, sol

    if not check(eta)[0]:
        return eta, np.inf
    out = []
    for direction in (+1, -1):
        start = max(100.0, eta + 20 * sigma_b) if direction > 0 else min(-100.0, eta - 20 * sigma_b)
        good, sol = check(start)
        if good:
            out.append(direction * np.inf)
            continue
        dif, iters = 0.0, 1

        def nxt(sol, mid):
            den = 1.0 - float(sol @ b_vec)
            return _round_eps(float(sol @ s_t)) / den if abs(den) > 1e-15 else mid

        mid = nxt(sol, start)
        good, sol = check(mid)
        while not good and iters < 10000:
            iters += 1
            if iters >= 10:
                dif = tol_c + 1
                break
            mid = nxt(sol, mid)
            good, sol = check(mid)
        lo, hi = (eta, mid) if direction > 0 else (mid, eta)
        while dif > tol_c and iters < 10000:
            iters += 1
            mid = (lo + hi) / 2
            inside = check(mid)[0]
            if direction > 0:
                lo, hi = (mid, hi) if inside else (lo, mid)
            else:
                lo, hi = (lo, mid) if inside else (mid, hi)
            dif = hi - lo
        out.append(mid)
    return out[1], out[0]


def _conditional_test(y: np.ndarray, X: np.ndarray, sigma: np.ndarray, alpha: float, kappa: float,
                      lf_cv: float, vertices: tuple[np.ndarray, np.ndarray] | None = None) -> bool:
    """ARP conditional least-favourable hybrid test of ``E[y] <= X delta`` for some delta.
    Returns True when rejected. ``vertices``: ``_dual_vertex_sets(W)`` of ``W = [sd, X]`` when the
    caller has them (rm_ci: one per polyhedron); then the LP is solved from the vertices."""
    sd = np.sqrt(np.diag(sigma))
    if vertices is not None:
        eta, lam, ok = _lp_eta_vertices(y, vertices, X, sd)
    else:
        eta, lam, ok = _lp_eta(y, X, sd)
    if not ok:
        return False
    if eta > lf_cv:
        return True
    size = (alpha - kappa) / (1 - kappa)
    k = X.shape[1]
    B = lam > 1e-6
    XB = X[B]
    full_rank = XB.size > 0 and min(XB.shape) > 0 and np.linalg.matrix_rank(XB) == min(XB.shape)
    if not full_rank or B.sum() != k + 1:
        gamma = lam
        gsg = float(gamma @ sigma @ gamma)
        if abs(gsg) < np.finfo(float).eps:
            return eta > 0
        W = np.column_stack([sd, X])
        s_t = y - sigma @ gamma * float(gamma @ y) / gsg
        vlo, vup = _vlo_vup_dual(eta, s_t, gamma, sigma, W, None if vertices is None else vertices[0])
        sb = np.sqrt(gsg)
        stat, zlo, zup = eta / sb, vlo / sb, min(vup, lf_cv) / sb
    else:
        n = len(y)
        I = np.eye(n)
        WB = np.column_stack([sd[B], XB])
        WBc = np.column_stack([sd[~B], X[~B]])
        inv_SB = np.linalg.solve(WB, I[B])
        Gam = WBc @ inv_SB - I[~B]
        v = inv_SB[0]
        s2 = float(v @ sigma @ v)
        sb = np.sqrt(s2)
        rho = Gam @ sigma @ v / s2
        vals = -(Gam @ y) / rho + float(v @ y)
        vlo = float(vals[rho > 0].max()) if np.any(rho > 0) else -np.inf
        vup = float(vals[rho < 0].min()) if np.any(rho < 0) else np.inf
        stat, zlo, zup = eta / sb, vlo / sb, min(vup, lf_cv) / sb
    if not zlo <= stat <= zup:
        return False
    return _exceeds_truncnorm_quantile(stat, 1 - size, zlo, zup)


SCREEN_MARGIN = 1e-6


def _exceeds_truncnorm_quantile(stat: float, p: float, lo: float, hi: float) -> bool:
    """``stat > max(0, _truncnorm_quantile(p, lo, hi))`` for ``lo <= stat <= hi``.

    Decided from the truncated normal's upper tail at ``stat`` when that is clearly on one side of
    ``1 - p``: with Q(x) = P(N(0,1) > x), R = (Q(stat) - Q(hi)) / (Q(lo) - Q(hi)) = P(Z > stat | lo <=
    Z <= hi), and stat exceeds the p quantile exactly when R < 1 - p. Only when R is within
    ``SCREEN_MARGIN`` plus a bound on its rounding error of 1 - p (or the interval is narrower
    than 1e-3, or a tail probability underflows) is the quantile itself computed (scipy's
    ``truncnorm.ppf``, as before): the decision is the one the quantile gives."""
    if not stat > 0.0:  # the critical value is at least 0
        return False
    if hi - lo > 1e-3:  # (an infinite end is fine: Q(-inf) = 1, Q(inf) = 0)
        q_lo, q_s, q_hi = special.ndtr(-lo), special.ndtr(-stat), special.ndtr(-hi)
        mass = q_lo - q_hi
        if q_lo > 0.0 and mass > 0.0:
            r = (q_s - q_hi) / mass
            err = 1e-9 * (q_lo + q_s + q_hi) / mass
            if abs(r - (1.0 - p)) > SCREEN_MARGIN + err:
                return bool(r < 1.0 - p)
    return stat > max(0.0, _truncnorm_quantile(p, lo, hi))


def _dual_vertices(W: np.ndarray) -> np.ndarray:
    """Vertices of ``{lambda >= 0 : W' lambda = e1}`` (rows), the feasible set of the dual of
    ``min eta s.t. y <= W (eta, delta)``: ``eta(y) = max over vertices of lambda' y``."""
    return _dual_vertex_sets(W)[0]


def _dual_vertex_sets(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(_dual_vertices(W), the same vertices unrounded)``: the rounded rows (to 12 decimals,
    de-duplicated) and, row for row, the first basic solution that rounded to each.

    Every basis (``k1`` of the ``m`` rows, in ``itertools.combinations`` order) with
    ``|det W_B| >= 1e-12`` whose solution of ``W_B' lam_B = e1`` is non-negative (to -1e-12) gives
    a vertex. The determinants and solves run as one stacked LAPACK call each (numpy applies the
    same getrf/gesv to every matrix of a stack as to a single one: the basis-by-basis loop this
    replaced gives the same bits; tests/python/test_estimation_fast_paths.py compares them)."""
    from itertools import combinations

    m, k1 = W.shape
    if m < k1:
        return np.zeros((0, m)), np.zeros((0, m))
    bases = np.array(list(combinations(range(m), k1)), dtype=np.intp).reshape(-1, k1)
    WB = W[bases]  # (n_bases, k1, k1)
    ok = np.abs(np.linalg.det(WB)) >= 1e-12
    bases, WB = bases[ok], WB[ok]
    if not len(bases):
        return np.zeros((0, m)), np.zeros((0, m))
    e1 = np.zeros((len(bases), k1, 1))
    e1[:, 0, 0] = 1.0
    lam_B = np.linalg.solve(np.swapaxes(WB, 1, 2), e1)[:, :, 0]
    feasible = np.all(lam_B >= -1e-12, axis=1)
    bases, lam_B = bases[feasible], lam_B[feasible]
    if not len(bases):
        return np.zeros((0, m)), np.zeros((0, m))
    raw = np.zeros((len(bases), m))
    raw[np.arange(len(bases))[:, None], bases] = np.maximum(lam_B, 0.0)
    V, first = np.unique(np.round(raw, 12), axis=0, return_index=True)
    return V, raw[first]


def _lf_cv(X: np.ndarray, sigma: np.ndarray, kappa: float, sims: int = LF_SIMS, seed: int = 0,
           V: np.ndarray | None = None) -> float:
    """Least-favourable critical value: the 1-kappa quantile of the LP statistic at y ~ N(0, sigma)
    (``sims`` draws of ``RandomState(seed)``, as HonestDiD). The LP value of each draw is the
    maximum of ``lambda' y`` over the dual vertices (strong duality), which equals the LP optimum
    and is vectorised over the draws."""
    rng = np.random.RandomState(seed)
    xi = rng.multivariate_normal(np.zeros(sigma.shape[0]), sigma, size=sims)
    sd = np.sqrt(np.diag(sigma))
    W = np.column_stack([sd, X])
    if V is None:
        V = _dual_vertices(W) if W.shape[0] <= MAX_ENUMERATED_MOMENTS else np.zeros((0, W.shape[0]))
    if len(V):
        etas = (xi @ V.T).max(axis=1)
    else:
        etas = np.array([e for e, _, ok in (_lp_eta(x, X, sd) for x in xi) if ok])
    if not len(etas):
        return float("inf")
    return float(np.quantile(etas, 1 - kappa))


def _gamma_matrix(l_vec: np.ndarray) -> np.ndarray:
    """Rows: l, then the unit vectors HonestDiD's RREF picks (the first that keep it invertible)."""
    T = len(l_vec)
    rows = [l_vec]
    for i in range(T):
        cand = np.vstack(rows + [np.eye(T)[i]])
        if np.linalg.matrix_rank(cand) == len(rows) + 1:
            rows.append(np.eye(T)[i])
        if len(rows) == T:
            break
    G = np.vstack(rows)
    if abs(np.linalg.det(G)) < 1e-14:
        raise ValueError("could not complete l to a basis")
    return G


def _accepted_interval(test: Callable[[int], bool], n: int, start: int) -> tuple[int, int] | None:
    """Accepted grid indices (assumed an interval): scan outward from ``start`` for an accepted
    point, then bisect to each end."""
    seed = None
    for off in range(n):
        for i in (start - off, start + off) if off else (start,):
            if 0 <= i < n and test(i):
                seed = i
                break
        if seed is not None:
            break
        if start - off < 0 and start + off >= n:
            break
    if seed is None:
        return None
    lo, hi = 0, seed
    if test(0):
        lb = 0
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if test(mid) else (mid, hi)
        lb = hi
    lo, hi = seed, n - 1
    if test(n - 1):
        ub = n - 1
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if test(mid) else (lo, mid)
        ub = lo
    return lb, ub


@dataclass
class RMResult:
    lb: float
    ub: float
    mbar: float
    grid_step: float
    open_end: bool = False
    polyhedra: list[dict[str, Any]] = field(default_factory=list)


def rm_ci(beta, sigma, num_pre: int, num_post: int, l_vec, mbar: float, alpha: float = 0.05,
          grid_points: int = GRID_POINTS, grid: tuple[float, float] | None = None) -> RMResult:
    """ARP C-LF confidence set for ``l' tau_post`` under ``Delta^RM(Mbar)`` (HonestDiD defaults).

    Needs at least 2 pre periods and 2 post periods (with one post period HonestDiD uses a
    different, nuisance-free test that is not implemented here).
    """
    beta, sigma, l_vec = np.asarray(beta, float), np.asarray(sigma, float), np.asarray(l_vec, float)
    _check(beta, sigma, num_pre, num_post, l_vec)
    if num_pre < 2:
        raise ValueError("Delta^RM needs at least 2 pre periods")
    if num_post < 2:
        raise ValueError("this implementation of Delta^RM needs at least 2 post periods")
    if mbar < 0:
        raise ValueError(f"Mbar must be >= 0, got {mbar}")
    kappa = alpha / 10
    sd_theta = float(np.sqrt(l_vec @ sigma[num_pre:, num_pre:] @ l_vec))
    g_lb, g_ub = grid if grid is not None else (-20 * sd_theta, 20 * sd_theta)
    theta = np.linspace(g_lb, g_ub, grid_points)
    est = float(l_vec @ beta[num_pre:])
    start = int(np.argmin(np.abs(theta - est)))
    G_inv = np.linalg.inv(_gamma_matrix(l_vec))
    lbs, ubs, info = [], [], []
    for s in range(-(num_pre - 1), 1):
        for positive in (True, False):
            A = rm_constraints(num_pre, num_post, mbar, s, positive)
            post_rows = np.where(np.any(A[:, num_pre:] != 0, axis=1))[0]
            AG = A[:, num_pre:] @ G_inv
            a1, X = AG[:, 0], AG[:, 1:]
            y = A @ beta
            Sy = A @ sigma @ A.T
            rows = post_rows
            Xr, Syr = X[rows], Sy[np.ix_(rows, rows)]
            # the dual vertices of this polyhedron's LP, enumerated once: the least-favourable critical
            # value, the screen below and every grid point's conditional test use them
            W = np.column_stack([np.sqrt(np.diag(Syr)), Xr])
            vertices = _dual_vertex_sets(W) if W.shape[0] <= MAX_ENUMERATED_MOMENTS else None
            V = vertices[0] if vertices is not None else np.zeros((0, W.shape[0]))
            cv = _lf_cv(Xr, Syr, kappa, V=V)
            # the LP statistic at every grid point at once (max over the dual vertices): a point whose
            # statistic exceeds the least-favourable critical value is rejected without the conditional
            # test (the tolerance keeps every point the LP itself could accept)
            if len(V):
                Yg = y[rows][None, :] - np.outer(theta, a1[rows])
                etas = (Yg @ V.T).max(axis=1)
                candidate = etas <= cv + 1e-9 * (1.0 + abs(cv))
            else:
                candidate = np.ones(grid_points, dtype=bool)
            cache: dict[int, bool] = {}

            def test(i: int, y=y, a1=a1, Xr=Xr, Syr=Syr, cv=cv, rows=rows, cache=cache, candidate=candidate,
                     vertices=vertices) -> bool:
                if not candidate[i]:
                    return False
                if i not in cache:
                    cache[i] = not _conditional_test((y - a1 * theta[i])[rows], Xr, Syr, alpha, kappa, cv,
                                                     vertices)
                return cache[i]

            iv = _accepted_interval(test, grid_points, start)
            info.append({"s": s, "sign": "+" if positive else "-", "lf_cv": cv,
                         "accepted": None if iv is None else [float(theta[iv[0]]), float(theta[iv[1]])]})
            if iv is not None:
                lbs.append(iv[0])
                ubs.append(iv[1])
    if not lbs:
        return RMResult(np.nan, np.nan, mbar, float(theta[1] - theta[0]), False, info)
    lo, hi = min(lbs), max(ubs)
    return RMResult(float(theta[lo]), float(theta[hi]), mbar, float(theta[1] - theta[0]),
                    lo == 0 or hi == grid_points - 1, info)


# --------------------------------------------------------------------------- sensitivity + breakdown


def _excludes_zero(lb: float, ub: float) -> bool:
    return bool(np.isfinite(lb) and np.isfinite(ub) and (lb > 0 or ub < 0))


def breakdown(ci_at: Callable[[float], tuple[float, float]], hi_start: float, tol: float,
              max_value: float | None = None) -> dict[str, Any]:
    """Largest restriction value at which ``ci_at(value)`` still excludes 0, by bisection.

    Returns ``{"value": lo, "upper": hi, "tol": tol}`` with ``ci_at(lo)`` excluding 0 and
    ``ci_at(hi)`` not, ``hi - lo <= tol``; ``value`` None when the CI at 0 already includes 0;
    ``upper`` None when the CI still excludes 0 at ``max_value``.
    """
    if not _excludes_zero(*ci_at(0.0)):
        return {"value": None, "upper": 0.0, "tol": tol, "note": "the CI at 0 already includes 0"}
    lo, hi = 0.0, hi_start
    while _excludes_zero(*ci_at(hi)):
        lo = hi
        if max_value is not None and hi >= max_value:
            return {"value": hi, "upper": None, "tol": tol, "note": f"excludes 0 up to the largest value tried ({hi:g})"}
        hi = hi * 2 if max_value is None else min(hi * 2, max_value)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if _excludes_zero(*ci_at(mid)):
            lo = mid
        else:
            hi = mid
    return {"value": lo, "upper": hi, "tol": tol}


def sensitivity(beta, sigma, num_pre: int, num_post: int, *, targets=("first", "average"),
                mbar_vec=DEFAULT_MBAR, m_vec=None, alpha: float = 0.05,
                breakdown_rm: bool = True, rm_tol: float = 0.05, max_mbar: float = 8.0) -> list[dict[str, Any]]:
    """Rows ``{target, restriction ('original'|'SD'|'RM'), value, lb, ub, method}`` plus breakdown
    rows (``restriction`` 'SD_breakdown' / 'RM_breakdown'). ``m_vec`` default: 6 values from 0 to
    the larger of the target's standard error and 1.25 times the SD breakdown value."""
    beta, sigma = np.asarray(beta, float), np.asarray(sigma, float)
    rows: list[dict[str, Any]] = []
    for target in targets:
        l = target_vector(target, num_post)
        o = original_ci(beta, sigma, num_pre, num_post, l, alpha)
        se = float(np.sqrt(l @ sigma[num_pre:, num_pre:] @ l))
        rows.append({"target": target, "restriction": "original", "value": None, "lb": o[0], "ub": o[1],
                     "method": "normal"})
        bd = breakdown(lambda m: (lambda r: (r.lb, r.ub))(flci(beta, sigma, num_pre, num_post, l, m, alpha)),
                       hi_start=max(se, 1e-12), tol=se * 1e-3)
        top = max(se, 1.25 * bd["value"]) if bd["value"] else se
        ms = list(m_vec) if m_vec is not None else list(np.linspace(0, top, 6))
        for m in ms:
            r = flci(beta, sigma, num_pre, num_post, l, m, alpha)
            rows.append({"target": target, "restriction": "SD", "value": float(m), "lb": r.lb, "ub": r.ub,
                         "method": "FLCI"})
        rows.append({"target": target, "restriction": "SD_breakdown", "value": bd["value"], "lb": None, "ub": None,
                     "method": "FLCI", "upper": bd["upper"], "tol": bd["tol"]})
        if num_pre >= 2 and num_post >= 2:
            cache: dict[float, RMResult] = {}

            def rm_at(mb: float, l=l, cache=cache) -> tuple[float, float]:
                mb = round(float(mb), 10)
                if mb not in cache:
                    cache[mb] = rm_ci(beta, sigma, num_pre, num_post, l, mb, alpha)
                return cache[mb].lb, cache[mb].ub

            for mb in mbar_vec:
                lb, ub = rm_at(mb)
                r = cache[round(float(mb), 10)]
                rows.append({"target": target, "restriction": "RM", "value": float(mb), "lb": lb, "ub": ub,
                             "method": "C-LF", "open_end": r.open_end, "grid_step": r.grid_step})
            if breakdown_rm:
                bd = breakdown(rm_at, hi_start=0.5, tol=rm_tol, max_value=max_mbar)
                rows.append({"target": target, "restriction": "RM_breakdown", "value": bd["value"], "lb": None,
                             "ub": None, "method": "C-LF", "upper": bd["upper"], "tol": bd["tol"]})
    return rows


# --------------------------------------------------------------------------- event-study glue


def event_study_input(coef: dict[int, float], vcov: dict[tuple[int, int], float], base: int = -1):
    """``(beta, sigma, pre_periods, post_periods)`` from event-time coefficients ``{k: b_k}`` and
    covariances ``{(k, j): cov}``: pre periods ``k < base`` (earliest first), post periods ``k >= 0``;
    the reference period ``base`` must be -1 (the period just before treatment, as the method assumes)."""
    if base != -1:
        raise ValueError(f"Honest DiD needs the reference period -1 (the last pre period), got base={base}")
    pre = sorted(k for k in coef if k < base)
    post = sorted(k for k in coef if k >= 0)
    if not pre or not post:
        raise ValueError(f"need pre and post event-time coefficients, got periods {sorted(coef)}")
    if pre[-1] != -2 or post[0] != 0 or pre != list(range(pre[0], -1)) or post != list(range(0, post[-1] + 1)):
        raise ValueError(f"event times must be consecutive around the reference -1, got pre {pre}, post {post}")
    ks = pre + post
    beta = np.array([coef[k] for k in ks], dtype=float)
    sigma = np.array([[vcov[(a, b)] for b in ks] for a in ks], dtype=float)
    return beta, sigma, pre, post


def sensitivity_for_spec(coef: dict[int, float], vcov: dict[tuple[int, int], float], base: int = -1,
                         options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :func:`sensitivity` on an event study; ``options`` (the spec's ``honest_did`` option):
    ``mbar`` (list), ``m`` (list; default: 6 values from 0 to max(SE, 1.25 x breakdown)), ``alpha``."""
    o = dict(options or {}) if isinstance(options, dict) else {}
    try:
        return _sensitivity_for_spec(coef, vcov, base, o)
    except (ValueError, np.linalg.LinAlgError) as exc:  # recorded in the spec's diagnostics, the spec stands
        return {"reference_period": base, "error": f"{type(exc).__name__}: {exc}"}


def _sensitivity_for_spec(coef, vcov, base, o):
    beta, sigma, pre, post = event_study_input(coef, vcov, base)
    sd = np.sqrt(np.clip(np.diag(sigma), 0, None))
    if not np.all(sd > 1e-10 * max(1.0, float(np.max(np.abs(beta))))):
        return {"pre_periods": pre, "post_periods": post, "reference_period": base,
                "error": "an event-time coefficient has (numerically) zero variance; no sensitivity analysis"}
    rows = sensitivity(beta, sigma, len(pre), len(post), mbar_vec=tuple(o.get("mbar", DEFAULT_MBAR)),
                       m_vec=o.get("m"), alpha=float(o.get("alpha", 0.05)))
    summary = {
        f"{r['restriction']}_{r['target']}": r["value"] for r in rows if r["restriction"].endswith("_breakdown")
    }
    return {"pre_periods": pre, "post_periods": post, "reference_period": base, "rows": rows,
            "breakdown": summary}
