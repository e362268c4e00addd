"""Parity harness: our estimators against frozen R reference values (issue 14, item 6).

The numbers in ``tests/python/reference/`` were computed by ``make_reference.R`` with Debian's R
packages (MASS, sandwich, AER, plm, MatchIt; versions in ``R_VERSIONS.txt``) on public data sets
(plm's Grunfeld, MASS's quine, MatchIt's lalonde) and on a tiny synthetic panel the script itself
generates (so both sides read the same numbers). ``make reference`` regenerates them where R is
installed; these tests only read the frozen files — R is never called at test time.

Each case names its convention: CRV1 standard errors use ``G/(G-1)·(N-1)/(N-K)`` with K under the
"nested" rule (FE dimensions nested in a cluster variable count one parameter: fixest's and
pyfixest's default, which our estimators follow — see ``keytech.estimation.core.ssc``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import parse_registry

REF = Path(__file__).parent / "reference"
COEF_RTOL = 1e-8  # linear estimators: exact up to the demeaning tolerance
SE_RTOL = 1e-6
NB_COEF_RTOL = 1e-6  # the tolerances for the negative binomial
NB_THETA_RTOL = 1e-4
NB_LOGLIK_RTOL = 1e-8
LOGIT_RTOL = 1e-6
FIRST_STAGE_RTOL = 1e-6


@pytest.fixture(scope="module")
def ref() -> dict[tuple[str, str, str], float]:
    df = pd.read_csv(REF / "reference_values.csv", keep_default_na=False)
    return {(r.case, r.quantity, r.term): float(r.value) for r in df.itertuples()}


@pytest.fixture(scope="module")
def tiny() -> pd.DataFrame:
    df = pd.read_csv(REF / "tiny_panel.csv", dtype={"stkcd": str, "city_code": str, "province_code": str,
                                                    "industry_code": str})
    return pnl.prepare_panel(df)


def _spec(**entry):
    raw = {"specs": [{"id": "parity", "estimator": "ols", "outcome": "y", "treatment": "policy",
                      "fixef_rm": "none", "fixef_tol": 1e-12, **entry}]}
    return parse_registry(raw).get("parity")


def _run(spec, df):
    (res,) = run_spec(spec, df, RunContext(placebo_draws=10, seed=1, fe_labels={}))
    return res


def test_reference_files_are_complete(ref):
    cases = {c for c, _, _ in ref}
    assert {"ols_tiny", "ols_tiny_crv1_nested", "ols_tiny_twoway_nested", "ols_grunfeld",
            "plm_grunfeld_within", "iv_tiny", "iv_tiny_crv1_nested", "first_stage_tiny", "negbin_tiny",
            "negbin_quine", "psm_lalonde"} <= cases
    assert (REF / "R_VERSIONS.txt").read_text().startswith("R version")


def test_fe_ols_and_city_clustered_se_equal_lm_with_dummies_and_vcovcl(tiny, ref):
    res = _run(_spec(controls=["x1", "x2"], fixed_effects=["stkcd", "year"],
                     vcov={"cluster": "city_code"}), tiny)
    for term in ("policy", "x1", "x2"):
        t = res.term(term)
        assert t.estimate == pytest.approx(ref["ols_tiny", "coef", term], rel=COEF_RTOL)
        assert t.std_error == pytest.approx(ref["ols_tiny_crv1_nested", "se", term], rel=SE_RTOL)
    assert res.nobs == ref["ols_tiny_crv1_nested", "nobs", ""]


def test_two_way_clustered_se_equals_cgm_from_vcovcl(tiny, ref):
    res = _run(_spec(controls=["x1", "x2"], fixed_effects=["stkcd", "year"],
                     vcov={"cluster": ["city_code", "year"]}), tiny)
    for term in ("policy", "x1", "x2"):
        assert res.term(term).std_error == pytest.approx(ref["ols_tiny_twoway_nested", "se", term], rel=SE_RTOL)


def test_grunfeld_fe_ols_equals_lm_and_plm_within(ref):
    gr = pd.read_csv(REF / "grunfeld.csv")
    df = pnl.prepare_panel(gr.assign(stkcd=gr["firm"].astype(str), city_code=gr["firm"].astype(str),
                                     province_code="P", industry_code="I", policy=0.0))
    res = _run(_spec(outcome="inv", treatment="value", controls=["capital"], fixed_effects=["stkcd", "year"],
                     vcov={"cluster": "stkcd"}), df)
    for term in ("value", "capital"):
        assert res.term(term).estimate == pytest.approx(ref["ols_grunfeld", "coef", term], rel=COEF_RTOL)
        assert res.term(term).estimate == pytest.approx(ref["plm_grunfeld_within", "coef", term], rel=COEF_RTOL)
        assert res.term(term).std_error == pytest.approx(ref["ols_grunfeld_crv1_nested", "se", term], rel=SE_RTOL)


def test_2sls_equals_aer_ivreg_and_first_stage_wald_equals_kp_rk_wald(tiny, ref):
    common = dict(estimator="iv", outcome="y", treatment="d", controls=["policy", "x1"],
                  fixed_effects=["stkcd", "year"], vcov={"cluster": "city_code"})
    second = _run(_spec(**common, options={"instruments": ["iv1", "iv2"], "stage": "second"}), tiny)
    for term in ("d", "policy", "x1"):
        assert second.term(term).estimate == pytest.approx(ref["iv_tiny", "coef", term], rel=COEF_RTOL)
        assert second.term(term).std_error == pytest.approx(ref["iv_tiny_crv1_nested", "se", term], rel=SE_RTOL)
    first = _run(_spec(**common, options={"instruments": ["iv1", "iv2"], "stage": "first"}), tiny)
    for term in ("iv1", "iv2"):
        assert first.term(term).estimate == pytest.approx(ref["first_stage_tiny", "coef", term], rel=COEF_RTOL)
    d = first.diagnostics
    assert d["first_stage_F"] == pytest.approx(ref["first_stage_tiny", "wald_f", "iv1+iv2"], rel=FIRST_STAGE_RTOL)
    assert d["kp_rk_wald_f"] == pytest.approx(ref["first_stage_tiny", "wald_f", "iv1+iv2"], rel=FIRST_STAGE_RTOL)


def test_fe_negative_binomial_equals_mass_glm_nb_with_dummies(tiny, ref):
    from keytech.estimation.count import fenegbin

    fe = np.column_stack([pd.factorize(tiny["stkcd"])[0], pd.factorize(tiny["year"])[0]])
    res = fenegbin(tiny["y_count"].to_numpy(float), tiny[["policy", "x1"]].to_numpy(float), fe,
                   ["policy", "x1"], tol=1e-13, beta_tol=1e-10, fixef_tol=1e-13)
    assert res.converged
    assert res.nobs == ref["negbin_tiny", "nobs", ""]
    for i, term in enumerate(("policy", "x1")):
        assert res.coef[i] == pytest.approx(ref["negbin_tiny", "coef", term], rel=NB_COEF_RTOL)
    assert res.theta == pytest.approx(ref["negbin_tiny", "theta", ""], rel=NB_THETA_RTOL)
    assert res.loglik == pytest.approx(ref["negbin_tiny", "loglik", ""], rel=NB_LOGLIK_RTOL)


def test_negative_binomial_on_quine_equals_mass_glm_nb(ref):
    from keytech.estimation.count import fenegbin

    q = pd.read_csv(REF / "quine.csv")
    X = np.column_stack([(q["Eth"] == "N"), (q["Sex"] == "M"), (q["Lrn"] == "SL")]).astype(float)
    fe = pd.factorize(q["Age"])[0]
    res = fenegbin(q["Days"].to_numpy(float), X, fe, ["EthN", "SexM", "LrnSL"], tol=1e-13, beta_tol=1e-10,
                   fixef_tol=1e-13, drop_singletons=False)
    assert res.converged
    for i, term in enumerate(("EthN", "SexM", "LrnSL")):
        assert res.coef[i] == pytest.approx(ref["negbin_quine", "coef", term], rel=NB_COEF_RTOL)
    assert res.theta == pytest.approx(ref["negbin_quine", "theta", ""], rel=NB_THETA_RTOL)
    assert res.loglik == pytest.approx(ref["negbin_quine", "loglik", ""], rel=NB_LOGLIK_RTOL)


def test_psm_logit_score_and_nearest_neighbour_matches_equal_matchit(ref):
    from keytech.estimation.psm import nearest_neighbour, propensity

    ll = pd.read_csv(REF / "lalonde.csv", dtype={"id": str})
    matches = pd.read_csv(REF / "psm_matches.csv", dtype=str, keep_default_na=False)
    covariates = ["age", "educ", "black", "hispan", "married", "nodegree", "re74", "re75"]
    p = propensity(ll, "treat", covariates, by=None)
    logit = np.log(p / (1 - p))
    by_id = pd.Series(logit, index=ll["id"])
    np.testing.assert_allclose(by_id[matches["treated_id"]].to_numpy(), matches["logit_score"].astype(float),
                               rtol=LOGIT_RTOL)
    # MatchIt: 1:1 nearest neighbour on the logit score, with replacement, caliper 0.2 SD (n-1) of it
    caliper = 0.2 * ref["psm_lalonde", "logit_sd", ""]
    treated = ll["treat"].to_numpy(bool)
    weights, n_tied, match = nearest_neighbour(logit, treated, caliper)
    logit_by_id = pd.Series(logit, index=ll["id"].to_numpy())
    row_of = pd.Series(np.arange(len(ll)), index=ll["id"].to_numpy())
    theirs = dict(zip(matches["treated_id"], matches["control_id"]))
    n_ties = 0
    for i in np.flatnonzero(treated):
        tid, j = ll["id"].iat[i], match[i]
        assert (j >= 0) == (theirs[tid] != ""), tid  # matched by both or by neither (caliper)
        if j < 0:
            continue
        d_ours, d_theirs = abs(logit[j] - logit[i]), abs(logit_by_id[theirs[tid]] - logit[i])
        assert d_ours == pytest.approx(d_theirs, abs=1e-12), tid  # the nearest distance
        if n_tied[i] == 1:  # a unique nearest control: the very same unit
            assert ll["id"].iat[j] == theirs[tid], tid
        else:  # tied controls share the weight (psmatch2); MatchIt's pick is one of them
            n_ties += 1
            assert weights[row_of[theirs[tid]]] > 0, tid
    assert int((match[treated] >= 0).sum()) == ref["psm_lalonde", "n_matched_treated", ""]
    assert n_ties > 0  # lalonde has controls with identical covariates: the tie rule matters there
