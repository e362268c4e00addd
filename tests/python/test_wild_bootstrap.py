"""Wild cluster bootstrap (issue 14 item 1; keytech.estimation.inference.wild_bootstrap, specs robust_wcr_*).

(1) Same draws => same p-value as the ``wildboottest`` package (pyfixest's wild-bootstrap backend),
frozen in ``reference/wildboottest_reference.csv`` by ``reference/make_python_reference.py``: there
the fixed effects are explicit dummy columns; ours never builds dummies (FE-demeaned G x G form).
(2) A brute-force bootstrap written out draw by draw (dummy-variable regression refitted for every
draw, CRV1 from the residuals) gives the same t-statistics, so the p-value at any null r — and the
test-inverted CI — is that of the textbook algorithm. (3) The registry specs run and are seeded.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel
from keytech.estimation.inference.wild_bootstrap import draw_weights, prepare
from _panels import cities_in_provinces_panel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

REF = Path(__file__).parent / "reference"
DESIGNS = {"firm_year": ["stkcd", "year"], "firm_indyear": ["stkcd", "ind_year"]}


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    df = pd.read_csv(REF / "tiny_panel.csv", dtype={"stkcd": str, "city_code": str, "industry_code": str})
    df["ind_year"] = df["industry_code"] + "_" + df["year"].astype(str)
    return df


def _wb(df: pd.DataFrame, design: str):
    fe = pnl.factorize_columns(df, DESIGNS[design])
    return prepare(df["y"].to_numpy(float), df["policy"].to_numpy(float), df[["x1", "x2"]].to_numpy(float), fe,
                   df["city_code"].to_numpy())


@pytest.mark.parametrize("design", list(DESIGNS))
def test_pvalues_equal_wildboottest_with_dummies(tiny, design):
    ref = pd.read_csv(REF / "wildboottest_reference.csv")
    ref = ref.loc[ref["design"] == design]
    assert len(ref) == 7
    wb = _wb(tiny, design)
    assert wb.G == 12
    t_ours, t_ref = [], []
    for r in ref.itertuples():
        v = draw_weights(r.weights, wb.G, int(r.draws), int(r.seed))
        assert v.shape[1] == r.effective_draws
        p = wb.pvalue(float(r.r), v)
        if r.effective_draws == 2**wb.G:
            # full enumeration contains v = +-1, whose t* equals t exactly in exact arithmetic: the
            # strict '>' then depends on rounding in either implementation (2 of 4096 draws)
            assert abs(p - r.p_value) <= 2 / 4096 + 1e-15, (r, p)
        else:
            assert p == pytest.approx(r.p_value, abs=1e-15), (r, p)
        t_ours.append(wb.t_original(float(r.r)))
        t_ref.append(r.t_stat)
    # t statistics agree up to the constant small-sample factor
    ratio = np.array(t_ref) / np.array(t_ours)
    assert np.ptp(ratio) < 1e-8 * ratio.mean()


def _brute_force_t(df: pd.DataFrame, fes: list[str], r: float, v: np.ndarray) -> tuple[float, np.ndarray]:
    """Textbook WCR with dummies: restricted fit, y* = fit + u~ v_g, refit the full model per draw."""
    D = np.column_stack([pd.get_dummies(df[f], dtype=float).to_numpy() for f in fes])
    x = df["policy"].to_numpy(float)
    Z = np.column_stack([df[["x1", "x2"]].to_numpy(float), D])
    X = np.column_stack([x, Z])
    y = df["y"].to_numpy(float)
    cl = np.unique(df["city_code"], return_inverse=True)[1]
    Xp = np.linalg.pinv(X)  # rank-deficient dummies: minimum-norm LS; x's coefficient is identified

    def t_of(yy: np.ndarray, null: float) -> float:
        b = Xp @ yy
        e = yy - X @ b
        row = Xp[0]  # x's coefficient = row @ y
        scores = np.bincount(cl, weights=row * e)
        return (b[0] - null) / np.sqrt(np.sum(scores**2))

    g_r = np.linalg.lstsq(Z, y - r * x, rcond=None)[0]
    fit_r = r * x + Z @ g_r
    u_r = y - fit_r
    t0 = t_of(y, r)
    tb = np.array([t_of(fit_r + u_r * v[cl, b], r) for b in range(v.shape[1])])
    return t0, tb


@pytest.mark.parametrize("design", list(DESIGNS))
def test_bootstrap_t_equal_brute_force_dummy_refits(tiny, design):
    wb = _wb(tiny, design)
    v = draw_weights("webb", wb.G, 60, 5)
    for r in (0.0, 0.25, -0.4):
        t0, tb = _brute_force_t(tiny, DESIGNS[design], r, v)
        assert wb.t_original(r) == pytest.approx(t0, rel=1e-7)
        np.testing.assert_allclose(wb.t_boot(r, v), tb, rtol=1e-7)


def test_confidence_interval_is_test_inversion(tiny):
    wb = _wb(tiny, "firm_indyear")
    v = draw_weights("rademacher", wb.G, 999, 11)
    lo, hi = wb.confidence_interval(v, alpha=0.05)
    assert lo < wb.beta < hi
    eps = 1e-4 * wb.se_crv1_unscaled
    # inside the interval the null is not rejected, just outside it is
    assert wb.pvalue(lo + eps, v) > 0.05 and wb.pvalue(hi - eps, v) > 0.05
    assert wb.pvalue(lo - eps, v) <= 0.05 and wb.pvalue(hi + eps, v) <= 0.05


def test_registry_specs_run_seeded():
    reg = load_registry()
    df = pnl.prepare_panel(simulate_panel(seed=5, n_cities=24, n_provinces=6, firms_per_city=4.0, beta_key=0.3))
    for sid in ("robust_wcr_city", "robust_wcr_province"):
        spec = dataclasses.replace(reg.get(sid), options={"weights": ["rademacher", "webb"], "draws": 399})
        base = run_spec(dataclasses.replace(reg.get("table3_col5"), vcov=spec.vcov), df, RunContext(seed=3))[0]
        a = run_spec(spec, df, RunContext(seed=3))[0]
        b = run_spec(spec, df, RunContext(seed=3))[0]
        c = run_spec(spec, df, RunContext(seed=4))[0]
        ma, mw = a.term("policy"), a.term("policy[webb]")
        # coefficient and analytic SE are the base spec's; p and CI come from the bootstrap
        assert ma.estimate == pytest.approx(base.main.estimate, rel=1e-10)
        assert ma.std_error == pytest.approx(base.main.std_error, rel=1e-10)
        assert ma.p_value == b.term("policy").p_value and ma.ci_low == b.term("policy").ci_low
        assert ma.ci_low < ma.estimate < ma.ci_high and mw.ci_low < mw.estimate < mw.ci_high
        assert a.diagnostics["wild_bootstrap"]["webb"]["seed"] == 4
        assert 0.0 <= ma.p_value <= 1.0
        # a different seed gives different Webb draws (Rademacher may be a full enumeration here)
        assert c.term("policy[webb]").ci_low != mw.ci_low


def _dummy_cluster_scores(df: pd.DataFrame, fes: list[str], u0: np.ndarray, xdd: np.ndarray) -> np.ndarray:
    """K = [K0, K1] of the fast-and-wild form written out with explicit dummies: M = I - H H^+ for
    H = [x, Z, all dummies], K_hg = sum_{i in h} xdd_i (M u^(g))_i."""
    D = np.column_stack([pd.get_dummies(df[f], dtype=float).to_numpy() for f in fes])
    H = np.column_stack([df[["policy", "x1", "x2"]].to_numpy(float), D])
    cl = np.unique(df["city_code"], return_inverse=True)[1]
    G = cl.max() + 1
    onehot = np.eye(G)[cl]
    U = np.hstack([onehot * u0[:, None], onehot * xdd[:, None]])
    MU = U - H @ np.linalg.lstsq(H, U, rcond=None)[0]
    return onehot.T @ (xdd[:, None] * MU)


@pytest.mark.parametrize("fes", [["stkcd", "ind_year", "prov_year"], ["stkcd", "year"], ["stkcd"]])
def test_direct_cluster_scores_equal_dummies_and_lsmr(fes):
    """Issue 17: the closed-form G x G pieces (cluster_scores_direct) equal an explicit
    dummy-variable computation to 1e-10 and the LSMR demeaning of the 2G columns (the computation
    before) to its solver tolerance; the bootstrap p-values of both are the same draw for draw."""
    from keytech.estimation.inference.wild_bootstrap import cluster_scores_direct

    df = cities_in_provinces_panel(4)
    fe = pnl.factorize_columns(df, fes)
    args = (df["y"].to_numpy(float), df["policy"].to_numpy(float), df[["x1", "x2"]].to_numpy(float), fe,
            df["city_code"].to_numpy())
    direct, lsmr = prepare(*args, method="direct"), prepare(*args, method="lsmr")
    assert direct.G == 15 and direct.beta == lsmr.beta and direct.se_crv1_unscaled == lsmr.se_crv1_unscaled
    # the same restricted residuals and FWL regressor as prepare uses, rebuilt here with dummies
    D = np.column_stack([pd.get_dummies(df[f], dtype=float).to_numpy() for f in fes])
    Z = np.column_stack([df[["x1", "x2"]].to_numpy(float), D])
    y, x = args[0], args[1]
    u0 = y - Z @ np.linalg.lstsq(Z, y, rcond=None)[0]
    xdd = x - Z @ np.linalg.lstsq(Z, x, rcond=None)[0]
    K = _dummy_cluster_scores(df, fes, u0, xdd)
    scale = np.abs(K).max()
    # on the same (exact) inputs the closed form equals the dummy computation to rounding ...
    cl = np.unique(df["city_code"], return_inverse=True)[1]
    Xd = np.column_stack([x, args[2]])
    Xd = Xd - D @ np.linalg.lstsq(D, Xd, rcond=None)[0]
    np.testing.assert_allclose(cluster_scores_direct(fe, cl, 15, u0, xdd, Xd), K, atol=1e-10 * scale, rtol=0)
    # ... and prepare (whose restricted residuals come from the LSMR demeaning at tol 1e-10) agrees
    # with it and with the former LSMR demeaning of the 2G columns up to that tolerance
    for wb in (direct, lsmr):
        np.testing.assert_allclose(np.hstack([wb.K0, wb.K1]), K, atol=1e-8 * scale, rtol=0)
    v = draw_weights("webb", direct.G, 999, 3)
    for r in (0.0, 0.2, -0.5):
        np.testing.assert_allclose(direct.t_boot(r, v), lsmr.t_boot(r, v), rtol=1e-8)
        assert direct.pvalue(r, v) == lsmr.pvalue(r, v)
    # the direct form is what prepare uses when it applies
    auto = prepare(*args)
    np.testing.assert_array_equal(auto.K0, direct.K0)
    # too many levels in the dense part: the caller falls back to demeaning
    import keytech.estimation.inference.wild_bootstrap as wbmod
    old = wbmod.DIRECT_MAX_LEVELS
    try:
        wbmod.DIRECT_MAX_LEVELS = 0
        assert len(fes) == 1 or cluster_scores_direct(fe, cl, 15, u0, xdd, Xd) is None
    finally:
        wbmod.DIRECT_MAX_LEVELS = old
