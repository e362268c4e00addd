"""The per-draw FE coefficient of the permutation test (issue 17, h17n) against the implementation
it replaced: FEOLSCoefficient as it was at e798ef3 (sparse one-hot dummies and sparse products per
draw), kept below verbatim as the reference. The current code forms the same Schur complement, with
the same singleton rule, ridge λ and elimination plan, from integer codes (np.bincount over the
pairs of observations of one D1 level); only the order of floating-point additions differs, so the
coefficients agree to rounding: 1e-10 relative, except on the few subsamples where the coefficient is
so poorly identified that the reference itself moves by more when only the order of the rows changes
(up to ~1e-5 relative on some 30% subsamples of these small panels); there the difference must stay
within 10 times that spread of the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.inference import permutation as perm
from keytech.estimation.inference.permutation import fe_ols_coefficient
from test_mechanisms import RHS, _fe_panel

REL = 1e-10


@pytest.fixture(autouse=True)
def _without_identification_rule(monkeypatch):
    """These tests compare the algebra with the former implementation, which had no identification
    rule: every regressor is kept here (a draw where the rule drops none is unchanged by it, bit for
    bit). The rule — pyfixest's collin_tol, h17q — is tested in test_permutation_identification.py."""
    monkeypatch.setattr(perm, "_identified_columns", lambda Mx, tol, raw: np.arange(len(Mx)))


# --------------------------------------------------------------------------- the reference (e798ef3)


class _ReferenceFEOLS:
    """FEOLSCoefficient.prepare/_dummy_projection as at e798ef3 (only the pieces on row masks)."""

    def __init__(self, y, regressors, fixed_effects, drop_singletons=True, ridge=1e-10):
        self.y, self.regressors, self.fixed_effects = y, list(regressors), tuple(fixed_effects)
        self.drop_singletons, self.ridge = drop_singletons, ridge
        self.outcomes = [y] if isinstance(y, str) else list(y)

    def prepare(self, data):
        from pyfixest.estimation import detect_singletons

        from keytech.estimation.core.panel import factorize_columns

        n_y = len(self.outcomes)
        V = data[[*self.outcomes, *self.regressors]].to_numpy(dtype=float)
        k = len(self.regressors)
        first = _ref_first_coefficient if isinstance(self.y, str) else (lambda M: _ref_first_coefficients(M, n_y))
        nan = float("nan") if isinstance(self.y, str) else np.full(n_y, np.nan)
        if not self.fixed_effects:
            def coef_no_fe(mask):
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
        # the elimination plan is unchanged since e798ef3: the product's (h17n changed the assembly)
        e, components = perm._elimination_plan(codes, n_levels, big, others)
        rest = [j for j in others if j != e]
        codes_f = np.asfortranarray(codes)

        def coef(mask):
            rows = np.flatnonzero(mask)
            if len(rows) < k + 2:
                return nan
            if self.drop_singletons:
                rows = rows[~np.asarray(detect_singletons(codes_f[rows]), dtype=bool)]
            n = len(rows)
            if n <= k:
                return nan
            Vs = V[rows]
            sub, present = {}, {}
            for j in range(codes.shape[1]):
                cj = codes_f[rows, j]
                present[j] = np.bincount(cj, minlength=n_levels[j]) > 0
                sub[j] = (np.cumsum(present[j]) - 1)[cj]
            D1 = _ref_onehot(sub[big][:, None], int(present[big].sum()))
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

    def _dummy_projection(self, Vs, Vbar, D1, a, sub, present, e, comp, rest):
        import scipy.linalg as sla
        import scipy.sparse as sp

        sizes = [int(present[j].sum()) for j in (e, *rest)]
        offsets = np.cumsum([0] + sizes)
        D2 = _ref_onehot(np.column_stack([sub[j] + offsets[i] for i, j in enumerate((e, *rest))]), int(offsets[-1]))
        W = (D2.T @ D1).tocsr()
        R = np.asarray(D2.T @ Vs) - W @ Vbar
        G = (W @ sp.diags(a ** -0.5)).tocsr()
        le = sizes[0]
        DD_ee, DD_rr, DD_er = _ref_dummy_cross_products(D2, le, [sub[j] for j in (e, *rest)], sizes)
        G_e, G_r = G[:le], G[le:]
        S_ee = (DD_ee - G_e @ G_e.T).tocoo()
        if not rest:
            lam = self.ridge * max(float(np.mean(S_ee.diagonal())), 1.0)
            Z = _ref_block_cholesky_inverse(S_ee, lam, comp) @ R
            return Z.T @ Z
        S_rr = DD_rr - (G_r @ G_r.T).toarray()
        lam = self.ridge * max(float(np.mean(np.r_[S_ee.diagonal(), np.diag(S_rr)])), 1.0)
        S_er = DD_er - (G_e @ G_r.T).toarray()
        YZ = _ref_block_cholesky_inverse(S_ee, lam, comp) @ np.hstack([S_er, R[:le]])
        cross = YZ.T @ YZ
        lr = S_rr.shape[0]
        schur = S_rr - cross[:lr, :lr]
        schur[np.diag_indices_from(schur)] += lam
        R_r = R[le:] - cross[:lr, lr:]
        CR = sla.cho_solve(sla.cho_factor(schur, check_finite=False), R_r, check_finite=False)
        return cross[lr:, lr:] + R_r.T @ CR


def _ref_dummy_cross_products(D2, le, codes, sizes):
    import scipy.sparse as sp

    if len(codes) == 2:
        counts = np.bincount(codes[0] * sizes[1] + codes[1], minlength=le * sizes[1]).reshape(le, sizes[1]).astype(float)
        return sp.diags(counts.sum(axis=1)).tocsr(), np.diag(counts.sum(axis=0)), counts
    DD = (D2.T @ D2).tocsr()
    if len(codes) == 1:
        return DD[:le, :le], None, None
    return DD[:le, :le], DD[le:, le:].toarray(), DD[:le, le:].toarray()


def _ref_first_coefficient(M):
    return float(np.linalg.lstsq(M[1:, 1:], M[1:, 0], rcond=None)[0][0])


def _ref_first_coefficients(M, n_y):
    out = np.empty(n_y)
    for j in range(n_y):
        idx = [j, *range(n_y, M.shape[0])]
        out[j] = _ref_first_coefficient(M[np.ix_(idx, idx)])
    return out


def _ref_onehot(codes, n_cols):
    import scipy.sparse as sp

    n, m = codes.shape
    return sp.csr_matrix((np.ones(n * m), codes.ravel(), np.arange(0, n * m + 1, m)), shape=(n, n_cols))


def _ref_block_cholesky_inverse(S, lam, comp):
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


# --------------------------------------------------------------------------- the comparisons


def _panel(seed: int) -> pd.DataFrame:
    data = _fe_panel(seed=seed, n_firms=150)
    rng = np.random.default_rng(seed + 100)
    data["y2"] = 0.8 * data["policy"] - 0.4 * data["x2"] + data["y"] * 0.3 + rng.normal(size=len(data))
    data["y3"] = -0.6 * data["policy"] + rng.normal(size=len(data))
    return data


FE_SETS = [
    ["stkcd", "ind_year", "prov_year"],          # the paper's: D1 firm, e and one rest fixed effect
    ["stkcd", "ind_year", "prov_year", "city"],  # two fixed effects in the rest
    ["stkcd", "ind", "prov"],                    # a firm's observations share e and rest levels (W counts > 1)
    ["stkcd", "year"],                           # e only, no rest
    ["ind", "year"],                             # D1 is not the firm
    ["stkcd"],                                   # no D2
    [],                                          # no fixed effect
]


def _masks(data: pd.DataFrame, seed: int):
    rng = np.random.default_rng(seed)
    for share in (0.3, 0.5, 0.7):
        for _ in range(3):
            mask = rng.random(len(data)) < share
            yield mask
            yield ~mask


def _former_too_few_rows(data: pd.DataFrame, mask: np.ndarray, fes) -> bool:
    """The reference's (and the code's before h17q) "too few rows" NaN: fewer than k + 2 rows in the
    mask, or at most k after singletons. Since h17q such a draw is left to the identification rule
    (pyfixest estimates when the treatment is identified), so there the reference is not compared."""
    from keytech.estimation.core import panel as pnl

    k = len(RHS)
    if mask.sum() < k + 2:
        return True
    sub = data[mask]
    return bool(fes) and int((~pnl.singleton_mask(sub, list(fes))).sum()) <= k


def _assert_close(new, old, spread=0.0) -> bool:
    """|new − old| ≤ max(1e-10 |old|, 10 × spread) (NaN where old is NaN); True when the 1e-10
    relative bound alone holds."""
    new, old = np.atleast_1d(np.asarray(new, float)), np.atleast_1d(np.asarray(old, float))
    assert np.array_equal(np.isnan(new), np.isnan(old))
    ok = ~np.isnan(old)
    diff = np.abs(new[ok] - old[ok])
    assert np.all(diff <= np.maximum(REL * np.abs(old[ok]), 10 * np.broadcast_to(np.asarray(spread, float), old.shape)[ok])), (new, old, spread)
    return bool(np.all(diff <= REL * np.abs(old[ok])))


class _ReferenceSpread:
    """The reference on the same panel with its rows in other orders: how far rounding alone moves
    it on a mask (its own reproducibility)."""

    def __init__(self, y, fes, data, n_orders=3):
        self.orders = [np.random.default_rng(100 + s).permutation(len(data)) for s in range(n_orders)]
        self.fns = [_ReferenceFEOLS(y, RHS, fes).prepare(data.iloc[o].reset_index(drop=True)) for o in self.orders]

    def __call__(self, mask, old):
        return np.max([np.abs(np.asarray(f(mask[o]), float) - np.asarray(old, float))
                       for f, o in zip(self.fns, self.orders)], axis=0)


@pytest.mark.parametrize("fes", FE_SETS, ids=lambda f: "+".join(f) or "none")
@pytest.mark.parametrize("y", ["y", ["y", "y2", "y3"]], ids=["one_outcome", "three_outcomes"])
def test_per_draw_coefficient_equals_the_former_implementation(fes, y):
    """Random row masks (singletons dropped, levels absent) on panels with 0-4 fixed effects, one
    or several outcomes: the new per-draw function equals the e798ef3 implementation to 1e-10
    relative (or, on a poorly identified subsample, within 10 × the reference's own spread over row
    orders: at most 3 of the 36 masks), NaN (too few rows) in the same cases."""
    ill_conditioned = []
    for seed in (1, 2):
        data = _panel(seed)
        new = fe_ols_coefficient(y, RHS, fes).prepare(data)
        old = _ReferenceFEOLS(y, RHS, fes).prepare(data)
        spread = _ReferenceSpread(y, fes, data)
        saw_singletons = saw_absent = False
        for mask in _masks(data, seed):
            ref = old(mask)
            if _former_too_few_rows(data, mask, fes):
                assert np.isnan(ref).all()
                continue
            if not _assert_close(new(mask), ref, 0.0 if not fes else spread(mask, ref)):
                ill_conditioned.append(mask.mean())
            if fes:
                sub = data[mask]
                saw_absent |= any(sub[c].nunique() < data[c].nunique() for c in fes)
                from keytech.estimation.core import panel as pnl
                saw_singletons |= bool(pnl.singleton_mask(sub, fes).any())
        assert (saw_singletons and saw_absent) or "stkcd" not in fes  # firm-level sets have both
        tiny = np.zeros(len(data), bool)
        tiny[:4] = True
        # too few rows: NaN in the reference; since h17q left to the identification rule (4 rows can
        # identify the treatment: test_permutation_identification.py compares that with pyfixest)
        assert np.isnan(np.atleast_1d(old(tiny))).all() and _former_too_few_rows(data, tiny, fes)
    assert len(ill_conditioned) <= 3, ill_conditioned


@pytest.mark.parametrize("fes", [["stkcd", "ind_year", "prov_year"], ["stkcd", "ind", "prov"], ["stkcd", "year"],
                                 ["ind", "year"]], ids=lambda f: "+".join(f))
def test_pairs_through_w_give_the_same_coefficient(monkeypatch, fes):
    """Above _PAIR_CAP observation pairs the G G' sums are formed from W's nonzeros instead: the
    same coefficients (to rounding) as the observation pairs and the reference."""
    data = _panel(3)
    masks = list(_masks(data, 3))
    pairs = [fe_ols_coefficient(["y", "y2"], RHS, fes).prepare(data)(m) for m in masks]
    monkeypatch.setattr(perm, "_PAIR_CAP", 0)
    through_w = [fe_ols_coefficient(["y", "y2"], RHS, fes).prepare(data)(m) for m in masks]
    old = _ReferenceFEOLS(["y", "y2"], RHS, fes).prepare(data)
    spread = _ReferenceSpread(["y", "y2"], fes, data)
    for m, a, b in zip(masks, pairs, through_w):
        ref = old(m)
        s = spread(m, ref)
        _assert_close(b, a, s)
        if not _former_too_few_rows(data, m, fes):
            _assert_close(b, ref, s)


def test_group_pairs_lists_every_ordered_pair_within_each_group():
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.integers(1, 6, rng.integers(1, 12))
        rep, second = perm._group_pairs(counts)
        first = np.repeat(np.arange(int(counts.sum())), rep)
        group = np.repeat(np.arange(len(counts)), counts)
        expected = [(i, j) for g in range(len(counts)) for i in np.flatnonzero(group == g)
                    for j in np.flatnonzero(group == g)]
        assert list(zip(first.tolist(), second.tolist())) == expected


def test_block_plan_solves_each_block():
    """_BlockPlan: blocks of several exact and padded sizes; L⁻¹X in block order equals the dense
    Cholesky solve of the block-diagonal S + λI."""
    rng = np.random.default_rng(1)
    comp = rng.permutation(np.repeat(np.arange(7), [1, 2, 3, 5, 5, 8, 9]))
    n = len(comp)
    S = np.zeros((n, n))
    for c in range(7):
        idx = np.flatnonzero(comp == c)
        B = rng.normal(size=(len(idx), len(idx) + 2))
        S[np.ix_(idx, idx)] = B @ B.T
    plan = perm._BlockPlan(comp)
    inv_rank = np.argsort(plan.rank)  # level at each rank
    r1, r2 = np.nonzero(S[np.ix_(inv_rank, inv_rank)])
    flat = plan.accumulate(r1, r2, S[np.ix_(inv_rank, inv_rank)][r1, r2])
    assert np.array_equal(plan.diagonal(flat), np.diag(S))
    X = rng.normal(size=(n, 4))
    lam = 0.5
    Y = plan.solve_lower(plan.cholesky_inverse(flat, lam), X[inv_rank])
    L = np.linalg.cholesky(S + lam * np.eye(n))
    # Y'Y = X'(S + λI)⁻¹X whatever the order of the rows
    assert np.allclose(Y.T @ Y, X.T @ np.linalg.solve(L @ L.T, X), rtol=1e-12, atol=1e-12)
