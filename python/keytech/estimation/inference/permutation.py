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

A draw whose coefficient is not estimable on one of its halves (no row left after singletons,
or the treatment dropped by pyfixest's collinearity rule: :class:`FEOLSCoefficient`) gives d* = NaN:
it is left out of B and counted in ``n_draws_failed``.

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
from typing import Callable, NamedTuple

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
    drawn = reshuffles(data, labels, draws, seed, permute_by)
    if hasattr(coef_fn, "prepare"):
        on_rows = coef_fn.prepare(data)
    else:
        def on_rows(mask: np.ndarray) -> float:
            return coef_fn(data[mask])
    d_obs_all = np.atleast_1d(np.asarray(on_rows(labels) - on_rows(~labels), dtype=float))
    d_star_all = _draw_differences(on_rows, drawn.unit_draws, drawn.unit, len(d_obs_all), int(jobs))
    return [_test_result(d_obs, d_star_all[:, j], drawn.exact, seed, drawn.permute_by, drawn.n_units, drawn.k)
            for j, d_obs in enumerate(d_obs_all)]


class Reshuffles(NamedTuple):
    """The reshuffles of a permutation test (:func:`reshuffles`)."""

    unit_draws: np.ndarray  # (draws × units) booleans: the units drawn into group 1, one row per draw
    unit: np.ndarray  # the unit (block) of each row of the data: ``unit_draws[i][unit]`` labels the rows
    exact: bool  # every labelling enumerated (no random draws)
    permute_by: str | None  # the blocks' columns joined by "+", None for observations
    n_units: int
    k: int  # units in group 1


def reshuffles(data: pd.DataFrame, labels: np.ndarray, draws: int, seed: int, permute_by) -> Reshuffles:
    """The reshuffles :func:`permutation_tests` re-estimates (its ``labels``, ``draws``, ``seed``
    and ``permute_by``, see there): the blocks whose labels are exchanged, and every labelling
    when there are at most ``draws`` of them, else ``draws`` permutations of the blocks' labels
    from ``numpy.random.default_rng(seed)``. Raises when the label varies within a block or a
    group is empty."""
    labels = np.asarray(labels, dtype=bool)
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
    exact = math.comb(n_units, k) <= draws
    if exact:
        unit_draws = _exact_labellings(n_units, k)
    else:
        rng = np.random.default_rng(seed)
        unit_draws = np.stack([rng.permutation(unit_label) for _ in range(draws)])
    return Reshuffles(unit_draws, unit, exact, permute_by, n_units, k)


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
    collin_tol: float = 1e-10,
) -> "FEOLSCoefficient":
    """A fast ``coef_fn``: OLS coefficient of ``regressors[0]`` with the fixed effects absorbed,
    singletons dropped first (as ``fixef_rm='singleton'``). See :class:`FEOLSCoefficient`; with a
    list of outcomes ``y`` it returns the array of the K coefficients (one per outcome, same rows)."""
    return FEOLSCoefficient(y, list(regressors), tuple(fixed_effects), drop_singletons, ridge, collin_tol)


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

    **Identification (h17q)**: the draw applies pyfixest's rule (``feols``' ``collin_tol``,
    default 1e-10, as the observed estimates): on the cross-products M of the residualised
    regressors, a Cholesky factorisation in column order drops each regressor whose residual sum
    of squares on the kept ones before it is below the tolerance (:func:`_identified_columns`).
    The treatment (``regressors[0]``) dropped → NaN: a failed draw (``n_draws_failed``); another
    regressor dropped (e.g. a firm-constant control, always collinear with the firm FE) → the
    coefficient of the regression without it, as pyfixest reports; none dropped → the coefficient
    as before the rule, bit for bit. For the rule, M is corrected to first order for the ridge
    (the ridge leaves λ‖γ‖² of a regressor x = Dγ in the span of the dummies, which can exceed
    1e-10: M − λ z'z with z = (S + λI)⁻¹r(V), exact to O(λ²)), and the tolerance is scaled by
    max(1, the regressor's raw sum of squares on the rows): M is formed by differences of raw
    cross-products, whose rounding (≈ 1e-16 × that sum, e.g. 1e-8 for a control in the
    thousands) would otherwise keep an exactly collinear regressor. A subsample with no row left
    after singletons is NaN; one with at most k rows is left to the rule, as pyfixest (which,
    on such rows, may then fail in its standard-error step — not a point-estimate matter).

    S is sparse: two levels of one fixed effect e of D2 are linked only through a firm (D1 level)
    observed in both, so S restricted to e is block diagonal, one block per connected component
    of e's levels (e.g. the 11 industry×year cells of one industry when firms keep their
    industry). ``S⁻¹`` is therefore applied by block elimination: the small diagonal blocks of e
    are solved in batches and only the Schur complement on the other levels of D2 (e.g. the
    province×year cells) is factorised densely. This is the Cholesky factorisation of S with e's
    levels ordered first, so the result is the dense solution's up to rounding. e is the fixed
    effect of D2 that minimises the cubic cost (sum of block sizes³ + remaining levels³), chosen
    on the prepared data (a subsample's blocks split its components further). A subsample with
    no row left after singletons, or whose system cannot be factorised, or on which the treatment
    is not identified (above), gives NaN (a failed draw in :func:`permutation_test`). The tests
    compare the result with pyfixest (test_permutation_identification.py: the rule), an explicit dummy
    regression, the dense factorisation of the whole S used before (which took ≈ 4× longer
    at paper scale, see docs/performance.md) and the sparse-product assembly of S used before
    h17n (tests/python/test_permutation_fast_draws.py)."""

    def __init__(self, y: str | list[str], regressors: list[str], fixed_effects: tuple[str, ...],
                 drop_singletons: bool = True, ridge: float = 1e-10, collin_tol: float = 1e-10):
        self.y, self.regressors, self.fixed_effects = y, list(regressors), tuple(fixed_effects)
        self.drop_singletons, self.ridge, self.collin_tol = drop_singletons, ridge, collin_tol
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
        collin_tol = self.collin_tol

        def identified_first(M: np.ndarray, ridge_term: np.ndarray | None, raw_ss: np.ndarray):
            # pyfixest's rule on the residualised regressors (see _identified_columns)
            M_exact = M if ridge_term is None else M - ridge_term
            keep = _identified_columns(M_exact[n_y:, n_y:], collin_tol, raw_ss[n_y:])
            if keep is None:
                return nan
            if len(keep) == k:
                return first(M)  # nothing dropped: the coefficient as before the rule (bit for bit)
            idx = [*range(n_y), *(n_y + keep)]
            return first(M_exact[np.ix_(idx, idx)])
        if not self.fixed_effects:
            def coef_no_fe(mask: np.ndarray) -> float:
                Vs = V[np.asarray(mask, dtype=bool)]
                if len(Vs) < 2:  # (fewer regressors than rows is left to the rule below, as pyfixest)
                    return nan
                Vc = Vs - Vs.mean(axis=0)
                M = Vc.T @ Vc
                return identified_first(M, None, np.diag(M))

            return coef_no_fe
        codes = factorize_columns(data, self.fixed_effects).astype(np.int64)
        n_levels = codes.max(axis=0) + 1 if len(codes) else np.zeros(codes.shape[1], dtype=np.int64)
        big = int(np.argmax(n_levels))
        others = [j for j in range(codes.shape[1]) if j != big]
        e, components = _elimination_plan(codes, n_levels, big, others)
        rest = [j for j in others if j != e]
        codes_f = np.asfortranarray(codes)
        code_cols = [np.ascontiguousarray(codes[:, j]) for j in range(codes.shape[1])]
        # the rows in the order of their D1 level (ties by row): a subsample's observation pairs
        # of one D1 level are formed from them per draw
        by_big = np.argsort(code_cols[big], kind="stable") if e is not None else None
        n_all = len(data)

        def coef(mask: np.ndarray) -> float:
            rows = np.flatnonzero(mask)
            if len(rows) < 2:
                return nan
            if self.drop_singletons:
                rows = rows[~np.asarray(detect_singletons(codes_f[rows]), dtype=bool)]
            n = len(rows)
            if n == 0:  # (n ≤ k is left to the identification rule, as pyfixest)
                return nan
            Vs = V[rows]
            # codes of the levels present in the subsample, renumbered 0..L-1 (absent levels dropped)
            renum, present = {}, {}
            for j in range(codes.shape[1]):
                present[j] = np.bincount(code_cols[j][rows], minlength=n_levels[j]) > 0
                renum[j] = np.cumsum(present[j]) - 1
            sub_big = renum[big][code_cols[big][rows]]
            a = np.bincount(sub_big, minlength=int(present[big].sum())).astype(float)
            D1V = _group_sums(sub_big, Vs, len(a))
            Vbar = D1V / a[:, None]
            VV = Vs.T @ Vs
            M = VV - D1V.T @ Vbar
            ridge_term = None
            if e is not None:
                try:
                    projection, ridge_term = self._dummy_projection(
                        Vs, Vbar, sub_big, a, rows, n_all, code_cols, renum, present, big, e,
                        components[present[e]], rest, by_big)
                except np.linalg.LinAlgError:
                    return nan
                M -= projection
            return identified_first(M, ridge_term, np.diag(VV))

        return coef

    def _dummy_projection(self, Vs, Vbar, sub_big, a, rows, n_all, code_cols, renum, present, big, e, comp, rest,
                          by_big) -> np.ndarray:
        """(r(V)'S⁻¹r(V), λ z'z) with z = S⁻¹r(V) (see the class docstring; the second term is the
        first-order ridge correction used by the identification rule), S solved by block elimination of e's levels:
        with L the block-diagonal Cholesky factor of S_ee + λI, Z = L⁻¹r_e and Y = L⁻¹S_er, it is
        Z'Z + r̃'C⁻¹r̃ with the Schur complement C = S_rr + λI − Y'Y and r̃ = r_r − Y'Z. Y'Y, Y'Z
        and Z'Z come from one matrix product (few, large BLAS calls per draw).

        No dummy matrix is formed. D2 = [D_e, D_r] has e's levels first, numbered block by block
        (:class:`_BlockPlan`), then the levels of the other fixed effects. D2'D2 counts the pairs of
        D2 columns of each observation; W A⁻¹ W' = G G' (G = W A^-½) sums a_f^-½ · a_f^-½ over the
        ordered pairs of observations (o, o') of the same level f of D1 at (column of o, column of
        o'), the pairs formed per draw from the subsample's rows in D1-level order (``by_big``,
        sorted once in ``prepare``; through W's nonzeros, :func:`_pairs_through_w`, when there
        would be more than ``_PAIR_CAP``); D2'V − W V̄ sums each observation's V − V̄ at its
        columns: ``np.bincount`` on integer codes throughout, no sparse matrix (issue 17, h17n:
        the same S, λ and elimination as the sparse products used before, up to the order of the
        floating-point additions)."""
        import scipy.linalg as sla

        fes = (e, *rest)
        sizes = [int(present[j].sum()) for j in fes]
        offsets = np.cumsum([0] + sizes)
        le, n_cols = sizes[0], int(offsets[-1])
        lr = n_cols - le
        blocks = _BlockPlan(comp)
        # D2 column of each level of each of D2's fixed effects (e's levels in block order; absent: unused)
        col_of = [renum[j] + offsets[i] for i, j in enumerate(fes)]
        col_of[0] = blocks.rank[renum[e]]
        cols = [col_of[i][code_cols[j][rows]] for i, j in enumerate(fes)]
        Vd = Vs - Vbar[sub_big]
        R = np.concatenate([_group_sums(c - offsets[i], Vd, sizes[i]) for i, c in enumerate(cols)])
        ah = a ** -0.5
        counts = a.astype(np.int64)
        if int((counts * counts).sum()) <= _PAIR_CAP:
            inside = np.zeros(n_all, dtype=bool)
            inside[rows] = True
            srows = by_big[inside[by_big]]  # the subsample's rows grouped by D1 level, as ``a``
            rep, second = _group_pairs(counts)
            w = np.repeat(ah * ah, counts * counts)
            cs = [col_of[i][code_cols[j][srows]] for i, j in enumerate(fes)]
            gg = _split_pairs([np.repeat(c, rep) for c in cs], [c[second] for c in cs], w)
        else:  # D1 levels with too many observation pairs to list: the same sums through W
            gg = _pairs_through_w(sub_big, cols, ah, le)
        dd = _split_pairs(cols, cols, None)
        S_ee = blocks.accumulate(*dd["ee"][:2]) - blocks.accumulate(*gg["ee"])
        if not rest:
            lam = self.ridge * max(float(np.mean(blocks.diagonal(S_ee))), 1.0)
            inverses = blocks.cholesky_inverse(S_ee, lam)
            Z = blocks.solve_lower(inverses, R)
            z = blocks.solve_upper(inverses, Z)  # (S + λI)⁻¹ r(V)
            return Z.T @ Z, lam * (z.T @ z)
        # S_rr (lr × lr) and S_er (le × lr): the counts of D2'D2 minus the G G' sums
        S_rr = _count_minus_sums(dd["rr"], gg["rr"], le, lr, le, lr)
        X = np.empty((le, lr + R.shape[1]))
        X[:, :lr] = _count_minus_sums(dd["er"], gg["er"], 0, le, le, lr)
        X[:, lr:] = R[:le]
        lam = self.ridge * max(float(np.mean(np.r_[blocks.diagonal(S_ee), np.diag(S_rr)])), 1.0)
        inverses = blocks.cholesky_inverse(S_ee, lam)
        YZ = blocks.solve_lower(inverses, X)
        cross = YZ.T @ YZ
        schur = S_rr - cross[:lr, :lr]
        schur[np.diag_indices_from(schur)] += lam
        R_r = R[le:] - cross[:lr, lr:]
        CR = sla.cho_solve(sla.cho_factor(schur, check_finite=False), R_r, check_finite=False)
        # (S + λI)⁻¹ r(V) = [z_e; z_r]: z_r = C⁻¹r̃ (CR), z_e = L⁻ᵀ(Z − Y z_r)
        z_e = blocks.solve_upper(inverses, YZ[:, lr:] - YZ[:, :lr] @ CR)
        return cross[lr:, lr:] + R_r.T @ CR, lam * (CR.T @ CR + z_e.T @ z_e)


def _identified_columns(Mx: np.ndarray, collin_tol: float, raw_ss: np.ndarray) -> np.ndarray | None:
    """pyfixest's identification rule (``feols``' ``collin_tol``, fixest's): the regressors kept,
    by index, when the cross-product of the residualised regressors is ``Mx`` — a Cholesky
    factorisation in column order drops each column whose squared residual norm on the kept columns
    before it is below ``collin_tol`` (``pyfixest.core.find_collinear_variables``, the function
    feols calls on X̃'X̃). pyfixest's threshold is absolute; here it is ``collin_tol`` × max(1, the
    column's raw sum of squares ``raw_ss``): ``Mx`` is formed by differences of raw cross-products,
    whose rounding (≈ 1e-16 × ``raw_ss``, e.g. 1e-8 for a control in the thousands) would
    otherwise keep a regressor that is exactly collinear (the columns are scaled by
    max(1, raw_ss)^-½ before the same factorisation; for columns with ``raw_ss`` ≤ 1 the rule is
    pyfixest's). None when the first regressor (the treatment) is dropped: its coefficient is not
    estimated."""
    from pyfixest.core import find_collinear_variables

    scale = 1.0 / np.sqrt(np.maximum(np.asarray(raw_ss, dtype=float), 1.0))
    excluded, _, all_removed = find_collinear_variables(
        np.ascontiguousarray(Mx * scale[:, None] * scale[None, :], dtype=np.float64), collin_tol)
    excluded = np.asarray(excluded, dtype=bool)
    if all_removed or excluded[0]:
        return None
    return np.flatnonzero(~excluded)


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


# observation pairs of the same D1 level formed per draw at most; above, the pairs of D2 columns
# are formed through W (_pairs_through_w)
_PAIR_CAP = 4_000_000


def _group_pairs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i, i') of positions 0..n − 1 in the same group, the groups being
    consecutive runs of ``counts`` positions, grouped by group, then by i, then i': (how many
    pairs each position is the first of, so that ``np.repeat(x, rep)`` is x at the first
    positions; the second positions)."""
    counts = np.asarray(counts, dtype=np.int64)
    rep = np.repeat(counts, counts)
    total = int(rep.sum())
    start = np.repeat(np.cumsum(counts) - counts, counts)
    second = np.repeat(start, rep) + (np.arange(total) - np.repeat(np.cumsum(rep) - rep, rep))
    return rep, second


def _group_sums(codes: np.ndarray, X: np.ndarray, n: int) -> np.ndarray:
    """(n × columns of X): the sums of X's rows by ``codes`` (one ``np.bincount`` per column, rows
    added in their order, as the sparse product D'X)."""
    Xt = np.ascontiguousarray(X.T)
    return np.stack([np.bincount(codes, weights=x, minlength=n) for x in Xt], axis=1) if len(Xt) else np.zeros((n, 0))


def _count_minus_sums(counted, summed, off_x: int, n_x: int, off_y: int, n_y: int) -> np.ndarray:
    """Dense (n_x × n_y): at each (x − off_x, y − off_y) the number of ``counted`` pairs (x, y)
    minus the sum of the weights of the ``summed`` pairs (x, y, w), in one ``np.bincount``
    (the counts first, then the weights subtracted in their order)."""
    (x1, y1, _), (x2, y2, w) = counted, summed
    idx = np.concatenate([(x1 - off_x) * n_y + (y1 - off_y), (x2 - off_x) * n_y + (y2 - off_y)])
    return np.bincount(idx, weights=np.concatenate([np.ones(len(x1)), -w]), minlength=n_x * n_y).reshape(n_x, n_y)


def _split_pairs(c1: list[np.ndarray], c2: list[np.ndarray], w):
    """The D2 column pairs of observation pairs (``c1[i]``/``c2[i]``: the columns of fixed effect i
    of D2, e first, for the pairs' first and second observations; w the pairs' weights or None) as
    {"ee", "er", "rr"}: (first columns, second columns, weights) of the e × e, e × rest and
    rest × rest blocks."""
    nr = len(c1) - 1
    ww = (lambda m: None if w is None else np.tile(w, m))
    return {
        "ee": (c1[0], c2[0], w),
        "er": (np.concatenate([c1[0]] * nr) if nr else c1[0][:0], np.concatenate(c2[1:]) if nr else c2[0][:0], ww(nr)),
        "rr": (np.concatenate([x for x in c1[1:] for _ in c2[1:]]) if nr else c1[0][:0],
               np.concatenate([y for _ in c1[1:] for y in c2[1:]]) if nr else c2[0][:0], ww(nr * nr)),
    }


def _pairs_through_w(sub_big: np.ndarray, cols: list[np.ndarray], ah: np.ndarray, le: int) -> dict:
    """The G G' sums as :func:`_split_pairs` blocks, from the nonzeros of W = D2'D1 (a count c per
    (D2 column, D1 level f)): every pair of D2 columns of the same f, weight (c·a_f^-½)(c'·a_f^-½).
    Used when the pairs of observations would be too many to list."""
    n1 = len(ah)
    key = np.concatenate(cols).astype(np.int64) * n1 + np.tile(sub_big, len(cols))
    uniq, cnt = np.unique(key, return_counts=True)
    col, f = uniq // n1, uniq % n1
    order = np.argsort(f, kind="stable")
    col, cnt, f = col[order], cnt[order], f[order]
    rep, i2 = _group_pairs(np.bincount(f, minlength=n1))
    i1 = np.repeat(np.arange(len(f)), rep)
    c1, c2 = col[i1], col[i2]
    w = (cnt[i1] * ah[f[i1]]) * (cnt[i2] * ah[f[i2]])
    out = {}
    for name, sel in (("ee", (c1 < le) & (c2 < le)), ("er", (c1 < le) & (c2 >= le)), ("rr", (c1 >= le) & (c2 >= le))):
        out[name] = (c1[sel], c2[sel], w[sel])
    return out


class _BlockPlan:
    """The diagonal blocks of S_ee (``comp``: the block of each of e's levels present, in level
    order). ``rank[level]``: the level's row in block order (by block size, block, level). For the
    Cholesky factorisation the blocks are padded with the identity to the next power of two and
    stored by padded size in one flat buffer (block b of padded size P: its levels at positions
    0..size_b − 1, in level order); L⁻¹ is applied to rows in block order, by exact block size."""

    def __init__(self, comp: np.ndarray):
        _, comp = np.unique(comp, return_inverse=True)
        sizes = np.bincount(comp)
        order = np.argsort(comp, kind="stable")
        pos = np.empty(len(comp), dtype=np.int64)
        pos[order] = np.arange(len(comp)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        padded = 1 << np.ceil(np.log2(sizes)).astype(np.int64)
        self.padded_groups = []  # (P, number of blocks, offset in the buffer, slot and position of the real diagonal)
        slot = np.empty(len(sizes), dtype=np.int64)
        group = np.empty(len(sizes), dtype=np.int64)
        base = np.empty(len(sizes), dtype=np.int64)
        offset = 0
        for g, size in enumerate(np.unique(padded)):
            blocks = np.flatnonzero(padded == size)
            slot[blocks], group[blocks] = np.arange(len(blocks)), g
            base[blocks] = offset + np.arange(len(blocks)) * size * size
            levels = np.flatnonzero(padded[comp] == size)
            self.padded_groups.append((int(size), len(blocks), offset, slot[comp[levels]], pos[levels]))
            offset += len(blocks) * size * size
        self.total = offset
        block_order = np.lexsort((np.arange(len(sizes)), sizes))
        level_order = np.lexsort((pos, np.argsort(block_order)[comp]))  # levels by (block size, block, position)
        self.rank = np.empty(len(comp), dtype=np.int64)
        self.rank[level_order] = np.arange(len(comp))
        self.exact_groups = []  # (size, first row, blocks' padded group, their slots)
        start = 0
        for size in np.unique(sizes):
            blocks = block_order[sizes[block_order] == size]
            self.exact_groups.append((int(size), start, len(blocks), group[blocks], slot[blocks]))
            start += len(blocks) * int(size)
        level_index = base[comp] + pos * padded[comp]  # flat index of (level, position 0) of its block row
        self.index, self.pos = level_index[level_order], pos[level_order]  # by rank
        self.diag = level_index + pos  # by level

    def accumulate(self, c1: np.ndarray, c2: np.ndarray, w=None) -> np.ndarray:
        """Flat buffer with the sums of ``w`` (or counts) at the entries (c1, c2) (ranks, both in one block) of S_ee."""
        return np.bincount(self.index[c1] + self.pos[c2], weights=w, minlength=self.total).astype(float)

    def diagonal(self, flat: np.ndarray) -> np.ndarray:
        """The diagonal of S_ee from its flat buffer, in level order."""
        return flat[self.diag]

    def cholesky_inverse(self, flat: np.ndarray, lam: float) -> list[np.ndarray]:
        """L⁻¹ of each padded block of S_ee + λI = LL' (identity on the padding), by padded size."""
        out = []
        for size, nb, offset, slot, pos in self.padded_groups:
            A = flat[offset:offset + nb * size * size].reshape(nb, size, size).copy()
            pad = np.ones((nb, size))
            pad[slot, pos] = lam
            A[:, np.arange(size), np.arange(size)] += pad
            out.append(np.tril(np.linalg.inv(np.linalg.cholesky(A))))
        return out

    def solve_lower(self, inverses: list[np.ndarray], X: np.ndarray, transpose: bool = False) -> np.ndarray:
        """L⁻¹X (``transpose``: L⁻ᵀX) for X with one row per level of e, in block order (the top-left
        size × size corner of a padded block's L⁻¹ is the block's own)."""
        out = np.empty_like(X)
        m = X.shape[1]
        for size, start, nb, group, slot in self.exact_groups:
            Li = np.stack([inverses[g][s, :size, :size] for g, s in zip(group, slot)]) if len(set(group)) > 1 \
                else inverses[group[0]][slot, :size, :size]
            if transpose:
                Li = Li.transpose(0, 2, 1)
            stop = start + nb * size
            np.matmul(Li, X[start:stop].reshape(nb, size, m), out=out[start:stop].reshape(nb, size, m))
        return out

    def solve_upper(self, inverses: list[np.ndarray], X: np.ndarray) -> np.ndarray:
        """L⁻ᵀX (with L⁻¹X of :meth:`solve_lower`: (S_ee + λI)⁻¹X = L⁻ᵀL⁻¹X)."""
        return self.solve_lower(inverses, X, transpose=True)
