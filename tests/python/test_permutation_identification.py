"""The identification rule of the permutation draws (h17q): FEOLSCoefficient drops a regressor when
pyfixest ``feols`` would (its ``collin_tol`` rule on the residualised regressors), returns NaN (a
failed draw) when that regressor is the treatment, and otherwise gives pyfixest's coefficient;
draws where nothing is dropped are bit-identical to the code before the rule (4a4d4b9)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.inference import permutation as perm
from keytech.estimation.inference.permutation import fe_ols_coefficient, permutation_test
from test_mechanisms import FE3, RHS, _fe_panel

PLANTED = ["did", "x1", "firm_const", "big_cell", "x2"]


def _planted_panel(seed: int) -> pd.DataFrame:
    """_fe_panel plus regressors that are collinear with the fixed effects on some or all subsamples:
    ``did`` (treated firm × year ≥ its adoption year: in the span of the firm and year-cell dummies
    on the subsamples where no firm is seen both before and after adoption), ``firm_const``
    (constant within firm: always collinear), ``big_cell`` (around 2000, constant within
    province×year: always collinear, and large enough that the rounding of its cross-products is
    far above pyfixest's absolute collin_tol)."""
    df = _fe_panel(seed=seed, n_firms=150)
    rng = np.random.default_rng(seed + 100)
    f = df["stkcd"].astype(int).to_numpy()
    adopt = rng.integers(2011, 2019, 150)[f]
    treated = (rng.random(150) < 0.5)[f]
    df["did"] = (treated & (df["year"].to_numpy() >= adopt)).astype(float)
    df["firm_const"] = rng.normal(size=150)[f]
    cells = pd.factorize(df["prov_year"])[0]
    df["big_cell"] = 2000 + 300 * rng.normal(size=cells.max() + 1)[cells]
    df["y"] = df["y"] + 0.4 * df["did"]
    return df


def _pyfixest_did(sub: pd.DataFrame):
    """pyfixest's coefficient of ``did`` (NaN: not estimated — dropped, or no observation left
    after singletons), or None when pyfixest fails for another reason (e.g. its SVD)."""
    import pyfixest as pf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = pf.feols(f"y ~ {' + '.join(PLANTED)} | {' + '.join(FE3)}", data=sub.reset_index(drop=True),
                           vcov="iid", fixef_rm="singleton",
                           demeaner=pf.LsmrDemeaner(fixef_atol=1e-12, fixef_btol=1e-12))
        except ValueError as exc:
            if "no observations" in str(exc) or "collinear" in str(exc):
                return np.nan
            raise
        except np.linalg.LinAlgError:
            return None
    return float(fit.coef()["did"]) if "did" in fit._coefnames else np.nan


def test_draw_equals_pyfixest_or_both_not_estimated(monkeypatch):
    """(a) Random half-samples of panels with planted collinear regressors: our coefficient equals
    pyfixest's to 1e-8, or both are not estimated; each kind occurs, and without the rule (every
    regressor kept, the code before h17q) the comparison fails."""
    cases = []  # (ours, pyfixest, ours without the rule)
    skipped = 0
    for seed in (1, 2, 3):
        data = _planted_panel(seed)
        ours = fe_ols_coefficient("y", PLANTED, FE3).prepare(data)
        rng = np.random.default_rng(seed)
        for share in (0.2, 0.35, 0.5):
            for _ in range(5):
                mask = rng.random(len(data)) < share
                ref = _pyfixest_did(data[mask])
                if ref is None:
                    skipped += 1
                    continue
                with monkeypatch.context() as m:
                    m.setattr(perm, "_identified_columns", lambda Mx, tol, raw: np.arange(len(Mx)))
                    without = ours(mask)
                cases.append((ours(mask), ref, without))
    assert skipped <= 2
    for got, ref, _ in cases:
        if np.isnan(ref):
            assert np.isnan(got), (got, ref)
        else:
            assert got == pytest.approx(ref, rel=1e-8, abs=1e-10)
    finite = [c for c in cases if np.isfinite(c[1])]
    assert sum(np.isnan(c[1]) and np.isnan(c[0]) for c in cases) >= 5
    assert len(finite) >= 15
    # the rule matters: without it, estimates where pyfixest has none, and values far from pyfixest's
    assert any(np.isnan(ref) and np.isfinite(w) for _, ref, w in cases)
    assert any(np.isfinite(ref) and abs(w - ref) > 1e-3 * max(1.0, abs(ref)) for _, ref, w in finite)


def test_draw_without_fixed_effects_drops_as_pyfixest():
    """No fixed effects: a regressor collinear with the others (and the intercept) is dropped as
    pyfixest drops it; a treatment constant on the subsample gives NaN."""
    import pyfixest as pf

    data = _fe_panel(seed=4, n_firms=80)
    data["x3"] = 2 * data["x1"] - data["x2"] + 5
    rhs = ["policy", "x1", "x3", "x2"]
    mask = np.random.default_rng(2).random(len(data)) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pf.feols(f"y ~ {' + '.join(rhs)}", data=data[mask].reset_index(drop=True), vcov="iid")
    assert fit._collin_vars == ["x2"]
    got = fe_ols_coefficient("y", rhs, []).prepare(data)(mask)
    assert got == pytest.approx(float(fit.coef()["policy"]), rel=1e-8)
    const = mask & (data["policy"] == 1).to_numpy()
    assert np.isnan(fe_ols_coefficient("y", rhs, []).prepare(data)(const))


@pytest.mark.parametrize("fes", [[], ["stkcd"]])
def test_few_rows_as_pyfixest(fes):
    """Subsamples of 3-6 rows of one firm (at most k = 3 rows is no longer a failed draw by itself,
    as it was before h17q): the draw gives pyfixest's coefficient, or NaN where pyfixest drops the
    treatment or has no row left. (Where pyfixest raises in its standard-error step — the
    small-sample factor divides by N − k — or its SVD fails on such rows, there is no pyfixest
    estimate to compare: skipped.)"""
    import pyfixest as pf

    data = _fe_panel()
    coef = fe_ols_coefficient("y", RHS, fes).prepare(data)
    rng = np.random.default_rng(5)
    compared = 0
    firms = rng.choice(data["stkcd"].unique(), 16, replace=False)
    for firm, rows in zip(firms, [3, 4, 5, 6] * 4):
        mask = (data["stkcd"] == firm).to_numpy() & (data.groupby("stkcd").cumcount() < rows).to_numpy()
        got = coef(mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # one firm's rows: its fixed effect is the intercept (pyfixest's demeaner aborts on
                # such tiny frames, so the reference is the regression with an intercept)
                fit = pf.feols(f"y ~ {' + '.join(RHS)}", data=data[mask].reset_index(drop=True), vcov="iid")
                ref = float(fit.coef()["policy"]) if "policy" in fit._coefnames else np.nan
            except (ZeroDivisionError, np.linalg.LinAlgError):  # its standard-error step on N ≤ k rows
                continue
            except ValueError as exc:
                if "no observations" not in str(exc):  # no row left after singletons
                    raise
                ref = np.nan
        if np.isnan(ref):
            assert np.isnan(got)
        else:
            compared += 1
            assert got == pytest.approx(ref, rel=1e-8, abs=1e-10)
    assert compared >= 2


def test_identified_columns_rule():
    """pyfixest's Cholesky rule, in column order; the threshold is collin_tol × max(1, raw sum of
    squares): absolute (pyfixest's) for small columns, relative for large ones."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    Mx = X.T @ X
    assert list(perm._identified_columns(Mx, 1e-10, np.ones(3))) == [0, 1, 2]
    # a fourth column = x0 + x1 + rounding noise of a column in the thousands: kept by the absolute
    # rule (noise 1e-8 > 1e-10), dropped once scaled by its raw sum of squares (1e8)
    X4 = np.c_[X, X[:, 0] + X[:, 1]]
    M4 = X4.T @ X4
    M4[3, 3] += 1e-8
    assert list(perm._identified_columns(M4, 1e-10, np.ones(4))) == [0, 1, 2, 3]
    assert list(perm._identified_columns(M4, 1e-10, np.r_[1, 1, 1, 1e8])) == [0, 1, 2]
    # a small column: pyfixest's absolute threshold
    X5 = np.c_[X, 1e-6 * rng.normal(size=50)]  # sum of squares ≈ 5e-11 < 1e-10: dropped
    assert list(perm._identified_columns(X5.T @ X5, 1e-10, (X5 ** 2).sum(axis=0))) == [0, 1, 2]
    # the treatment (first column) dropped: None
    X6 = np.c_[np.zeros(50), X]
    assert perm._identified_columns(X6.T @ X6, 1e-10, np.ones(4)) is None


# (b) the coefficient of regressors[0] on data = _fe_panel().assign(y2=y/2 + x2), regressors RHS,
# with the masks rng = np.random.default_rng(17); rng.random(n) < share for share 0.35, 0.5, 0.7,
# 1.0 in turn, computed by FEOLSCoefficient at 4a4d4b9 (before the rule): tests/tools/
# freeze_permutation_identified.py prints them (it checks the current code gives them bit for bit).
FROZEN_4A4D4B9 = {
    "stkcd+ind_year+prov_year": {
        "y": [0.0073765814470087305, -0.004619678256854408, 0.30403802231823174, 0.3748805345093289],
        "y,y2": [(0.007376581447081294, 0.0036882907231116464), (-0.004619678256853983, -0.0023098391284213367),
                 (0.30403802231823174, 0.15201901115911443), (0.374880534509329, 0.18744026725466517)],
    },
    "stkcd+year": {
        "y": [0.8609810528999655, -0.058668240776266506, 0.3586494057761715, 0.3559046703306489],
        "y,y2": [(0.8609810528999655, 0.4304905264499822), (-0.05866824077626656, -0.029334120388133107),
                 (0.3586494057761716, 0.17932470288808489), (0.35590467033064904, 0.17795233516532466)],
    },
    "stkcd+ind_year": {
        "y": [0.4170449409373324, -0.20721186978665818, 0.35169251350259945, 0.37768970512412026],
        "y,y2": [(0.41704494093733285, 0.20852247046866576), (-0.20721186978665815, -0.10360593489332973),
                 (0.35169251350259945, 0.17584625675129809), (0.37768970512412026, 0.18884485256206046)],
    },
    "": {
        "y": [0.3225200981463679, 0.2199672663652024, 0.36146840304958217, 0.31569178136121734],
        "y,y2": [(0.3225200981463679, 0.16126004907318373), (0.2199672663652024, 0.1099836331826006),
                 (0.36146840304958217, 0.180734201524791), (0.31569178136121734, 0.1578458906806087)],
    },
}


@pytest.mark.parametrize("fes", list(FROZEN_4A4D4B9))
@pytest.mark.parametrize("y", ["y", "y,y2"])
def test_identified_draw_is_bit_identical_to_before_the_rule(fes, y):
    """(b) Nothing dropped (x1, x2 continuous, policy varying): the coefficient is exactly the one
    computed before the rule existed (frozen values: one BLAS thread, OpenBLAS's Haswell kernels, which
    keytech pins on every AVX2 machine; an AVX-512 machine's own kernels differ in the last bit)."""
    data = _fe_panel().assign(y2=lambda d: d["y"] * 0.5 + d["x2"])
    outcome = y if y == "y" else y.split(",")
    coef = fe_ols_coefficient(outcome, RHS, fes.split("+") if fes else []).prepare(data)
    rng = np.random.default_rng(17)
    for share, want in zip((0.35, 0.5, 0.7, 1.0), FROZEN_4A4D4B9[fes][y]):
        mask = rng.random(len(data)) < share
        assert np.array_equal(np.atleast_1d(coef(mask)), np.atleast_1d(np.asarray(want, dtype=float))), (fes, y, share)


def test_permutation_counts_draws_where_treatment_is_not_identified_as_failed():
    """A split whose small group is often not identified: the unidentified draws are counted in
    n_draws_failed (d* NaN), the others enter the p-value."""
    data = _planted_panel(1)
    labels = np.random.default_rng(9).random(len(data)) < 0.25
    res = permutation_test(data, labels, fe_ols_coefficient("y", PLANTED, FE3), draws=30, seed=2)
    assert res["n_draws_failed"] > 0 and res["n_draws"] > 0
    assert res["n_draws"] + res["n_draws_failed"] == 30
