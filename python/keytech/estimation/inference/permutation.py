"""Permutation (Fisher) test of a between-group coefficient difference.

The "empirical p-value" of a subsample difference as used in the Chinese empirical literature
(Stata ``bdiff``, after Cleary 1999 and Lian & Liao 2017): with groups 1 (e.g. above the median)
and 0 (below), the statistic is ``d = b_1 − b_0``, the coefficient of interest estimated on each
group separately. Group membership is reshuffled ``draws`` times keeping the group sizes (the
labels are permuted across observations, or across the units of ``permute_by`` when the label is
constant within them), both regressions are re-estimated and ``d*`` recorded.

* ``p_one_sided`` = (1 + #{d* ≥ d}) / (1 + B) when d ≥ 0 (#{d* ≤ d} when d < 0): the share of
  reshuffles at least as favourable to the observed direction (bdiff reports this share);
* ``p_two_sided`` = (1 + #{|d*| ≥ |d|}) / (1 + B).

The +1 counts the observed labelling (Phipson & Smyth 2010), so p is never 0. When the number of
distinct labellings is at most ``draws``, every labelling is enumerated instead and the p-values
are exact (the observed labelling is among them, no +1). Draws come from
``numpy.random.default_rng(seed)``: reproducible.

``jobs`` > 1 re-estimates the draws in that many forked worker processes (chunks of draws, in
order; issue 17). The reshuffles are all drawn first in the calling process and each draw runs
the same function on the same data as with ``jobs=1``, so p-values and d* are bit-identical
(tested); only the wall time changes. Without the ``fork`` start method (Windows) or inside a
daemonic worker the draws run in this process.
"""

from __future__ import annotations

import math
import multiprocessing
from itertools import combinations
from typing import Callable

import numpy as np
import pandas as pd


def _exact_labellings(n: int, k: int) -> np.ndarray:
    out = np.zeros((math.comb(n, k), n), dtype=bool)
    for i, idx in enumerate(combinations(range(n), k)):
        out[i, list(idx)] = True
    return out


def permutation_test(
    data: pd.DataFrame,
    labels: np.ndarray,
    coef_fn: Callable[[pd.DataFrame], float],
    draws: int = 500,
    seed: int = 20240601,
    permute_by: str | list[str] | tuple[str, ...] | None = None,
    jobs: int = 1,
) -> dict:
    """Permutation test of ``coef_fn(group 1) − coef_fn(group 0)``; :func:`permutation_tests`
    with one statistic (see there)."""
    return permutation_tests(data, labels, coef_fn, draws, seed, permute_by, jobs=jobs)[0]


def permutation_tests(
    data: pd.DataFrame,
    labels: np.ndarray,
    coef_fn: Callable[[pd.DataFrame], float],
    draws: int = 500,
    seed: int = 20240601,
    permute_by: str | list[str] | tuple[str, ...] | None = None,
    jobs: int = 1,
) -> list[dict]:
    """Permutation tests of ``coef_fn(group 1) − coef_fn(group 0)``, one per value of
    ``coef_fn`` (a float, or an array of K statistics, e.g. :func:`fe_ols_coefficient` with K
    outcomes): the same reshuffles for all K, each test's result as :func:`permutation_test`
    would give it for that statistic alone.

    ``labels``: boolean array aligned with ``data`` (True = group 1). ``permute_by``: the blocks
    whose labels are reshuffled as wholes — a column or a list of columns of ``data`` (blocks = their
    combinations, e.g. ``[city_code, year]``), ``"auto"`` (the coarsest of city, city-year, firm
    within which the label is constant, else observations), or None/``"observation"``. Permute at the
    level the split varies: a split variable constant within city-years is exchanged in city-year
    blocks, not firm-year by firm-year.
    When ``coef_fn`` has a ``prepare(data)`` method (as :func:`fe_ols_coefficient`'s), it is called
    once and the function of a boolean row mask it returns replaces ``coef_fn(data[mask])``: the
    same statistic without subsetting the frame in every draw.
    ``jobs``: worker processes for the draws (see the module docstring); results do not depend on it.
    """
    if int(jobs) < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    labels = np.asarray(labels, dtype=bool)
    if len(labels) != len(data):
        raise ValueError("labels must align with data")
    if permute_by == "auto":
        permute_by = constant_level(data, labels)
    if permute_by in (None, "observation"):
        permute_by = None
        unit = np.arange(len(data))
        unit_label = labels
    else:
        cols = [permute_by] if isinstance(permute_by, str) else list(permute_by)
        codes = _block_codes(data, cols)
        first = pd.Series(labels).groupby(codes).agg(["min", "max"])
        if (first["min"] != first["max"]).any():
            raise ValueError(f"group label is not constant within {'+'.join(cols)} blocks "
                             f"({int((first['min'] != first['max']).sum())} mixed); permute a finer level")
        unit = codes
        unit_label = first["max"].to_numpy().astype(bool)
        permute_by = "+".join(cols)
    n_units, k = len(unit_label), int(unit_label.sum())
    if k == 0 or k == n_units:
        raise ValueError("both groups need at least one unit")
    if hasattr(coef_fn, "prepare"):
        on_rows = coef_fn.prepare(data)
    else:
        def on_rows(mask: np.ndarray) -> float:
            return coef_fn(data[mask])
    d_obs_all = np.atleast_1d(np.asarray(on_rows(labels) - on_rows(~labels), dtype=float))
    n_labellings = math.comb(n_units, k)
    exact = n_labellings <= draws
    if exact:
        unit_draws = _exact_labellings(n_units, k)
    else:
        rng = np.random.default_rng(seed)
        unit_draws = np.stack([rng.permutation(unit_label) for _ in range(draws)])
    d_star_all = _draw_differences(on_rows, unit_draws, unit, len(d_obs_all), int(jobs))
    return [_test_result(d_obs, d_star_all[:, j], exact, seed, permute_by, n_units, k)
            for j, d_obs in enumerate(d_obs_all)]


def _draw_difference(on_rows: Callable[[np.ndarray], float], unit_draw: np.ndarray, unit: np.ndarray):
    """d* of one reshuffle: the statistic on the rows of the units drawn into group 1 minus group 0."""
    lab = unit_draw[unit]
    return on_rows(lab) - on_rows(~lab)


# (on_rows, unit_draws, unit) of the test whose draws the forked workers compute: set in the parent
# just before the pool forks, so each worker inherits it (closures need not be pickled)
_FORK_TASK: tuple | None = None


def _draw_chunk(indices: np.ndarray) -> np.ndarray:
    on_rows, unit_draws, unit = _FORK_TASK
    return np.array([np.atleast_1d(np.asarray(_draw_difference(on_rows, unit_draws[i], unit), dtype=float))
                     for i in indices]).reshape(len(indices), -1)


def _can_fork() -> bool:
    return ("fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def _draw_differences(on_rows, unit_draws: np.ndarray, unit: np.ndarray, n_stats: int, jobs: int) -> np.ndarray:
    """(draws × statistics) array of d*, draw i from ``unit_draws[i]``. With ``jobs`` > 1 (and
    fork available) the draws are split into ordered chunks (4 per worker, for balance) computed
    by a pool of ``jobs`` forked processes; each draw's arithmetic is the serial loop's."""
    global _FORK_TASK
    out = np.empty((len(unit_draws), n_stats))
    if jobs <= 1 or len(unit_draws) < 2 or not _can_fork():
        for i, ul in enumerate(unit_draws):
            out[i] = _draw_difference(on_rows, ul, unit)
        return out
    chunks = np.array_split(np.arange(len(unit_draws)), min(len(unit_draws), 4 * jobs))
    _FORK_TASK = (on_rows, unit_draws, unit)
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(chunks))) as pool:
            for indices, values in zip(chunks, pool.map(_draw_chunk, chunks, chunksize=1)):
                out[indices] = values
    finally:
        _FORK_TASK = None
    return out


def _test_result(d_obs: float, d_star: np.ndarray, exact: bool, seed: int, permute_by, n_units: int, k: int) -> dict:
    ok = np.isfinite(d_star)
    d_star = d_star[ok]
    B = len(d_star)
    tol = 1e-12 * max(1.0, abs(d_obs))
    as_extreme_dir = int((d_star >= d_obs - tol).sum()) if d_obs >= 0 else int((d_star <= d_obs + tol).sum())
    as_extreme_abs = int((np.abs(d_star) >= abs(d_obs) - tol).sum())
    if exact:
        p_one, p_two = as_extreme_dir / B, as_extreme_abs / B
    else:
        p_one, p_two = (1 + as_extreme_dir) / (1 + B), (1 + as_extreme_abs) / (1 + B)
    return {
        "difference": float(d_obs),
        "p_one_sided": float(p_one),
        "p_two_sided": float(p_two),
        "n_draws": int(B),
        "n_draws_failed": int((~ok).sum()),
        "exact_enumeration": bool(exact),
        "seed": int(seed),
        "permute_by": permute_by or "observation",
        "n_blocks": int(n_units),
        "n_blocks_group1": int(k),
        "p_definition": "exact enumeration of all labellings" if exact else "(1 + count) / (1 + draws)",
        "draws_quantiles": {q: float(np.quantile(d_star, q)) for q in (0.025, 0.5, 0.975)} if B else {},
    }


def _block_codes(data: pd.DataFrame, cols: list[str]) -> np.ndarray:
    if len(cols) == 1:
        return pd.factorize(data[cols[0]])[0]
    return data.groupby(cols, sort=False, dropna=False).ngroup().to_numpy()


AUTO_LEVELS = (["city_code"], ["city_code", "year"], ["stkcd"])


def constant_level(data: pd.DataFrame, labels: np.ndarray) -> list[str] | None:
    """The coarsest of :data:`AUTO_LEVELS` (present in ``data``) within whose blocks ``labels`` is
    constant; None (observations) when the label varies within every one."""
    lab = pd.Series(np.asarray(labels, dtype=bool))
    for cols in AUTO_LEVELS:
        if all(c in data.columns for c in cols):
            codes = _block_codes(data, cols)
            if (lab.groupby(codes).nunique() == 1).all():
                return cols
    return None


def fe_ols_coefficient(
    y: str | list[str],
    regressors: list[str],
    fixed_effects: list[str] | tuple[str, ...],
    drop_singletons: bool = True,
    ridge: float = 1e-10,
) -> "FEOLSCoefficient":
    """A fast ``coef_fn``: OLS coefficient of ``regressors[0]`` with the fixed effects absorbed,
    singletons dropped first (as ``fixef_rm='singleton'``). See :class:`FEOLSCoefficient`; with a
    list of outcomes ``y`` it returns the array of the K coefficients (one per outcome, same rows)."""
    return FEOLSCoefficient(y, list(regressors), tuple(fixed_effects), drop_singletons, ridge)


class FEOLSCoefficient:
    """OLS coefficient of ``regressors[0]`` with the fixed effects absorbed, singletons dropped
    first (as ``fixef_rm='singleton'``). No standard errors: only the point estimate is needed for
    each reshuffle.

    ``coef(df)`` estimates on a frame. ``coef.prepare(data)`` does once what does not depend on
    the subsample (the regressor matrix, the integer codes of the fixed effects, the elimination
    plan below) and returns a function of a boolean row mask of ``data``: the same coefficient on
    ``data[mask]`` without pandas. :func:`permutation_test` uses it. On a subsample, the singletons
    are detected on the codes of the subsample's rows (iterated, as pyfixest), and fixed-effect
    levels absent from the subsample are dropped before the algebra below.

    Frisch–Waugh–Lovell with the dummies' normal equations solved directly. With D = [D1, D2]
    the sparse dummy matrices (D1 = the fixed effect with most levels in the prepared data, e.g.
    firm, whose D1'D1 = A is diagonal) and W = D2'D1, the projection on the dummies is
    u'D(D'D)⁻¹D'v = (D1'u)'A⁻¹(D1'v) + r(u)'S⁻¹r(v) with r(v) = D2'v − W A⁻¹ D1'v and the Schur
    complement S = D2'D2 − W A⁻¹ W' + λI. The tiny ridge λ = ``ridge`` × mean(diag S) only
    resolves the collinearity among the dummies (X's coefficient stays identified; on small
    subsamples it moves the coefficient by up to ~1e-7 relative to an exact solution).

    S is sparse: two levels of one fixed effect e of D2 are linked only through a firm (D1 level)
    observed in both, so S restricted to e is block diagonal, one block per connected component
    of e's levels (e.g. the 11 industry×year cells of one industry when firms keep their
    industry). ``S⁻¹`` is therefore applied by block elimination: the small diagonal blocks of e
    are solved in batches and only the Schur complement on the other levels of D2 (e.g. the
    province×year cells) is factorised densely. This is the Cholesky factorisation of S with e's
    levels ordered first, so the result is the dense solution's up to rounding. e is the fixed
    effect of D2 that minimises the cubic cost (sum of block sizes³ + remaining levels³), chosen
    on the prepared data (a subsample's blocks split its components further). A subsample too
    small for the regressors, or whose system cannot be factorised, gives NaN (a failed draw in
    :func:`permutation_test`). The tests compare the result with pyfixest, an explicit dummy
    regression and the dense factorisation of the whole S used before (which took ≈ 4× longer
    at paper scale, see docs/performance.md)."""

    def __init__(self, y: str | list[str], regressors: list[str], fixed_effects: tuple[str, ...],
                 drop_singletons: bool = True, ridge: float = 1e-10):
        self.y, self.regressors, self.fixed_effects = y, list(regressors), tuple(fixed_effects)
        self.drop_singletons, self.ridge = drop_singletons, ridge
        self.outcomes = [y] if isinstance(y, str) else list(y)

    def __call__(self, df: pd.DataFrame) -> float:
        return self.prepare(df)(np.ones(len(df), dtype=bool))

    def prepare(self, data: pd.DataFrame) -> Callable[[np.ndarray], float]:
        """A function of a boolean mask over ``data``'s rows returning the coefficient on them."""
        from pyfixest.estimation import detect_singletons

        from keytech.estimation.core.panel import factorize_columns

        n_y = len(self.outcomes)
        V = data[[*self.outcomes, *self.regressors]].to_numpy(dtype=float)
        k = len(self.regressors)
        first = _first_coefficient if isinstance(self.y, str) else (lambda M: _first_coefficients(M, n_y))
        nan = float("nan") if isinstance(self.y, str) else np.full(n_y, np.nan)
        if not self.fixed_effects:
            def coef_no_fe(mask: np.ndarray) -> float:
                Vs = V[np.asarray(mask, dtype=bool)]
                if len(Vs) < k + 2:
                    return nan
                Vc = Vs - Vs.mean(axis=0)
                return first(Vc.T @ Vc)

            return coef_no_fe
        codes = factorize_columns(data, self.fixed_effects).astype(np.int64)
        n_levels = codes.max(axis=0) + 1 if len(codes) else np.zeros(codes.shape[1], dtype=np.int64)
        big = int(np.argmax(n_levels))
        others = [j for j in range(codes.shape[1]) if j != big]
        e, components = _elimination_plan(codes, n_levels, big, others)
        rest = [j for j in others if j != e]
        codes_f = np.asfortranarray(codes)

        def coef(mask: np.ndarray) -> float:
            rows = np.flatnonzero(mask)
            if len(rows) < k + 2:
                return nan
            if self.drop_singletons:
                rows = rows[~np.asarray(detect_singletons(codes_f[rows]), dtype=bool)]
            n = len(rows)
            if n <= k:
                return nan
            Vs = V[rows]
            # codes of the levels present in the subsample, renumbered 0..L-1 (absent levels dropped)
            sub, present = {}, {}
            for j in range(codes.shape[1]):
                cj = codes_f[rows, j]
                present[j] = np.bincount(cj, minlength=n_levels[j]) > 0
                sub[j] = (np.cumsum(present[j]) - 1)[cj]
            D1 = _onehot(sub[big][:, None], int(present[big].sum()))
            a = np.asarray(D1.sum(axis=0)).ravel()
            D1V = np.asarray(D1.T @ Vs)
            Vbar = D1V / a[:, None]
            M = Vs.T @ Vs - D1V.T @ Vbar
            if e is not None:
                try:
                    M -= self._dummy_projection(Vs, Vbar, D1, a, sub, present, e, components[present[e]], rest)
                except np.linalg.LinAlgError:
                    return nan
            return first(M)

        return coef

    def _dummy_projection(self, Vs, Vbar, D1, a, sub, present, e, comp, rest) -> np.ndarray:
        """r(V)'S⁻¹r(V) (see the class docstring), S solved by block elimination of e's levels:
        with L the block-diagonal Cholesky factor of S_ee + λI, Z = L⁻¹r_e and Y = L⁻¹S_er, it is
        Z'Z + r̃'C⁻¹r̃ with the Schur complement C = S_rr + λI − Y'Y and r̃ = r_r − Y'Z. Y'Y, Y'Z
        and Z'Z come from one matrix product (few, large BLAS calls per draw)."""
        import scipy.linalg as sla
        import scipy.sparse as sp

        sizes = [int(present[j].sum()) for j in (e, *rest)]
        offsets = np.cumsum([0] + sizes)
        D2 = _onehot(np.column_stack([sub[j] + offsets[i] for i, j in enumerate((e, *rest))]), int(offsets[-1]))
        W = (D2.T @ D1).tocsr()
        R = np.asarray(D2.T @ Vs) - W @ Vbar
        G = (W @ sp.diags(a ** -0.5)).tocsr()
        le = sizes[0]
        DD_ee, DD_rr, DD_er = _dummy_cross_products(D2, le, [sub[j] for j in (e, *rest)], sizes)
        G_e, G_r = G[:le], G[le:]
        S_ee = (DD_ee - G_e @ G_e.T).tocoo()
        if not rest:
            lam = self.ridge * max(float(np.mean(S_ee.diagonal())), 1.0)
            Z = _block_cholesky_inverse(S_ee, lam, comp) @ R
            return Z.T @ Z
        S_rr = DD_rr - (G_r @ G_r.T).toarray()
        lam = self.ridge * max(float(np.mean(np.r_[S_ee.diagonal(), np.diag(S_rr)])), 1.0)
        S_er = DD_er - (G_e @ G_r.T).toarray()
        YZ = _block_cholesky_inverse(S_ee, lam, comp) @ np.hstack([S_er, R[:le]])
        cross = YZ.T @ YZ
        lr = S_rr.shape[0]
        schur = S_rr - cross[:lr, :lr]
        schur[np.diag_indices_from(schur)] += lam
        R_r = R[le:] - cross[:lr, lr:]
        CR = sla.cho_solve(sla.cho_factor(schur, check_finite=False), R_r, check_finite=False)
        return cross[lr:, lr:] + R_r.T @ CR


def _dummy_cross_products(D2, le: int, codes: list[np.ndarray], sizes: list[int], bincount: bool = True):
    """The blocks of D2'D2 (D2 = [D_e, D_r], ``le`` columns of e): (D_e'D_e sparse, D_r'D_r dense,
    D_e'D_r dense; the last two None without D_r). With one fixed effect in D_r they come from one
    ``bincount`` of the level pairs (diagonal blocks = level counts, off-diagonal = their
    cross-tabulation): the same integers as the sparse product, hence the same floats
    (``bincount=False`` forms the sparse product; the tests compare the two)."""
    import scipy.sparse as sp

    if bincount and len(codes) == 2:
        counts = np.bincount(codes[0] * sizes[1] + codes[1], minlength=le * sizes[1]).reshape(le, sizes[1]).astype(float)
        return sp.diags(counts.sum(axis=1)).tocsr(), np.diag(counts.sum(axis=0)), counts
    DD = (D2.T @ D2).tocsr()
    if len(codes) == 1:
        return DD[:le, :le], None, None
    return DD[:le, :le], DD[le:, le:].toarray(), DD[:le, le:].toarray()


def _first_coefficient(M: np.ndarray) -> float:
    """The first slope from the cross-products M = [y, X]'[y, X] of the residualised data."""
    beta = np.linalg.lstsq(M[1:, 1:], M[1:, 0], rcond=None)[0]
    return float(beta[0])


def _first_coefficients(M: np.ndarray, n_y: int) -> np.ndarray:
    """The first slope for each of the ``n_y`` outcomes from M = [y_1..y_K, X]'[y_1..y_K, X]:
    :func:`_first_coefficient` of each outcome's own [y_j, X] block."""
    out = np.empty(n_y)
    for j in range(n_y):
        idx = [j, *range(n_y, M.shape[0])]
        out[j] = _first_coefficient(M[np.ix_(idx, idx)])
    return out


def _onehot(codes: np.ndarray, n_cols: int):
    """Sparse n × ``n_cols`` matrix with a 1 in each row at each of the row's ``codes`` columns."""
    import scipy.sparse as sp

    n, m = codes.shape
    return sp.csr_matrix((np.ones(n * m), codes.ravel(), np.arange(0, n * m + 1, m)), shape=(n, n_cols))


def _elimination_plan(codes: np.ndarray, n_levels: np.ndarray, big: int, others: list[int]):
    """(e, component of each level of e): the fixed effect of D2 eliminated block by block, or
    (None, None) without a D2. Components of e's levels: linked when a level of ``big`` is observed
    with both."""
    from scipy.sparse.csgraph import connected_components

    if not others:
        return None, None
    D1 = _onehot(codes[:, [big]], int(n_levels[big]))
    total = int(sum(n_levels[j] for j in others))
    best = None
    for j in others:
        Dj = _onehot(codes[:, [j]], int(n_levels[j]))
        W = Dj.T @ D1
        _, comp = connected_components(W @ W.T, directed=False)
        cost = float((np.bincount(comp).astype(float) ** 3).sum() + float(total - n_levels[j]) ** 3)
        if best is None or cost < best[0]:
            best = (cost, j, comp)
    return best[1], best[2]


def _block_cholesky_inverse(S, lam: float, comp: np.ndarray):
    """L⁻¹ (sparse CSR) for S + λI = LL', S a sparse (COO) matrix that is block diagonal with
    blocks ``comp`` (a block label per row). Blocks are padded with the identity to the next power
    of two and factorised in batches of equal padded size."""
    import scipy.sparse as sp

    _, comp = np.unique(comp, return_inverse=True)
    sizes = np.bincount(comp)
    order = np.argsort(comp, kind="stable")
    pos = np.empty(len(comp), dtype=np.int64)
    pos[order] = np.arange(len(comp)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    padded = 1 << np.ceil(np.log2(sizes)).astype(np.int64)
    out_r, out_c, out_v = [], [], []
    for size in np.unique(padded):
        blocks = np.flatnonzero(padded == size)
        slot = np.full(len(sizes), -1)
        slot[blocks] = np.arange(len(blocks))
        rows = np.flatnonzero(slot[comp] >= 0)
        member = np.full((len(blocks), size), -1)
        member[slot[comp[rows]], pos[rows]] = rows
        A = np.zeros((len(blocks), size, size))
        A[:, np.arange(size), np.arange(size)] = np.where(member >= 0, lam, 1.0)
        inside = slot[comp[S.row]] >= 0
        r, c = S.row[inside], S.col[inside]
        A[slot[comp[r]], pos[r], pos[c]] += S.data[inside]
        Li = np.tril(np.linalg.inv(np.linalg.cholesky(A)))
        i, j = member[:, :, None], member[:, None, :]
        keep = (i >= 0) & (j >= 0) & (Li != 0)
        out_r.append(np.broadcast_to(i, Li.shape)[keep])
        out_c.append(np.broadcast_to(j, Li.shape)[keep])
        out_v.append(Li[keep])
    n = len(comp)
    return sp.csr_matrix((np.concatenate(out_v), (np.concatenate(out_r), np.concatenate(out_c))), shape=(n, n))
