"""End-to-end on the synthetic world: generate (small, fixed seed) → warehouse → Table 4 and the
spillover specs (keytech.estimation.run_estimation) → the planted endogeneity is recovered.

The planted effect is on the Poisson log-rate (``rates.beta_key``) while Table 4 regresses
ln(1 + count), so "the truth" for OLS vs IV is defined on the same scale and the same world: the
**oracle**, the column (5) OLS on the IV sample with the two planted nuisance terms as controls —
the confounder ``U*_c·(year − 2008)/10`` (per city in ``_truth.json['endogeneity']['cities']``)
and the spillover shape ``(1 − Policy)·exp(−d/spill_decay_km)``. It shares sample, controls, FE,
heterogeneity and Poisson noise with OLS, so OLS − oracle is the planted bias.

Asserted: (a) the confounder biases OLS visibly (spillover-controlled OLS − oracle > 0.10); both
first stages are strong (first-stage F and KP rk Wald F > 8.96, KP LM p < 0.05) with positive
coefficients. "2SLS closer to the oracle than OLS" is an xfail: at this scale 2SLS is too
imprecise to show it honestly (see the reason). (b) PSM (Mahalanobis within the propensity
caliper) lowers the mean |standardised difference| of the covariates and of the score;
(c) the spillover shows up in the planted direction (near controls below far controls; the two
nearest distance bands positive and above the farther ones) and the effect is larger in high- than
in low-agglomeration cities. One generate + build + estimation run per module (~1.5 min)."""

from __future__ import annotations

import dataclasses
import json

import duckdb
import numpy as np
import pytest

from keytech.build import BuildOptions, build_warehouse
from keytech.estimation import panel as pnl
from keytech.estimation import run_estimation
from keytech.estimation.estimators import RunContext, fit_ols
from keytech.estimation.registry import load_registry
from keytech.synth import generate

pytestmark = pytest.mark.slow

SCALE, SEED = "small", 12
MIN_OLS_BIAS = 0.10  # OLS − oracle on ln(1+y): the confounder must bias OLS visibly
STOCK_YOGO_15 = 8.96


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("endog")
    raw = root / "raw"
    # the issue-4 stress world: strong selection, confounder trend and spillover (the demo default
    # is milder so that Table 3 shows the baseline effect)
    from keytech import synth_endogeneity

    saved = dict(synth_endogeneity.DEFAULT_RATES_OVERRIDE)
    synth_endogeneity.DEFAULT_RATES_OVERRIDE.update(synth_endogeneity.STRESS_RATES)
    try:
        truth = generate(SCALE, SEED, raw, progress=False)
    finally:
        synth_endogeneity.DEFAULT_RATES_OVERRIDE.clear()
        synth_endogeneity.DEFAULT_RATES_OVERRIDE.update(saved)
    db = root / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing", warehouse=db, quiet=True))
    run_id = run_estimation(only=["table4", "spill"], force=True, db_path=db, out_dir=root / "output",
                            progress=False, render=False)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "select spec_id, term, estimate, std_error, p_value, diagnostics_json from results.estimates "
            "where run_id = ?", [run_id]).fetchall()
    finally:
        con.close()
    est: dict[str, dict] = {}
    for sid, term, b, se, p, dj in rows:
        entry = est.setdefault(sid, {"diag": {}, "terms": {}})
        entry["terms"][term] = (b, se, p)
        entry["diag"].update(json.loads(dj) if dj else {})  # spec diagnostics ride on the main row
    return {"truth": truth, "db": db, "est": est}


def _b(world, sid, term="policy"):
    assert sid in world["est"], sid
    terms = world["est"][sid]["terms"]
    assert "(error)" not in terms, world["est"][sid]["diag"]
    return terms[term][0]


def _planted_terms(world):
    """The IV sample of rpt_endogeneity_panel with the planted confounder term ``u_trend`` =
    U*_c·(year − 2008)/10 and the planted spillover shape ``spill`` = (1 − Policy)·exp(−d/decay)."""
    reg = load_registry()
    spec = reg.get("table4_col3")
    e = world["truth"]["endogeneity"]
    df = pnl.load_panel(spec.panel, world["db"])
    u = {c["city_code"]: c["confounder_outcome"] for c in e["cities"]}
    df["u_trend"] = df["city_code"].astype(str).map(u) * (df["year"] - 2008) / 10.0
    d = df["dist_nearest_treated_km"].astype(float).fillna(np.inf)
    df["spill"] = (1 - df["policy"]) * np.exp(-d / e["rates"]["spill_decay_km"])
    df = df.loc[df["iv1"].notna() & df["iv2"].notna() & df["u_trend"].notna()]
    return spec, df


def _ols_with(spec, df, extra: tuple[str, ...]) -> float:
    s = dataclasses.replace(spec, id="oracle", estimator="ols", extra_regressors=extra, options={})
    return float(fit_ols(s, df, RunContext()).main.estimate)


@pytest.fixture(scope="module")
def oracle(world) -> dict:
    """Column (5) OLS on the IV sample with the planted terms as controls: ``oracle`` controls for
    both (the target), ``no_confounder_control`` for the spillover only (OLS − oracle there is
    the confounding bias alone, the spillover being a separate, downward, bias of OLS *and* IV)."""
    spec, df = _planted_terms(world)
    return {"oracle": _ols_with(spec, df, ("u_trend", "spill")),
            "no_confounder_control": _ols_with(spec, df, ("spill",))}


def test_confounder_biases_ols_visibly(oracle):
    assert oracle["no_confounder_control"] - oracle["oracle"] > MIN_OLS_BIAS, oracle


@pytest.mark.xfail(strict=False, reason=(
    "2SLS is too imprecise at 'small' with the column (5) FE (province×year absorbs most "
    "city variation; IV SE ≈ 0.2 without, ≈ 0.4 with the spillover control): on seed 12 both "
    "2SLS estimates (0.167, 0.159) land nearer the oracle (0.192) than OLS (0.153) only "
    "because the planted spillover offsets the confounder; adding the spillover term to the "
    "2SLS gives ≈ 0.62, i.e. no measurable removal of the confounding at this scale"))
def test_both_ivs_closer_to_the_oracle_than_ols(world, oracle):
    ols = world["est"]["table4_col3"]["diag"]["ols_policy"]
    spec, df = _planted_terms(world)
    import pyfixest as pf

    rhs = " + ".join(["spill", *spec.controls])
    fe = " + ".join(spec.fixed_effects)
    for z in ("iv1", "iv2"):
        fit = pf.feols(f"{spec.outcome} ~ {rhs} | {fe} | policy ~ {z}", data=df, vcov={"CRV1": "city_code"})
        iv = float(fit.coef()["policy"])
        ols_s = oracle["no_confounder_control"]
        assert abs(iv - oracle["oracle"]) < abs(ols_s - oracle["oracle"]), (z, iv, ols_s, oracle)
    for sid in ("table4_col3", "table4_col5"):
        assert abs(_b(world, sid) - oracle["oracle"]) < abs(ols - oracle["oracle"])


@pytest.mark.parametrize("sid", ["table4_col2", "table4_col3", "table4_col4", "table4_col5"])
def test_first_stages_are_strong(world, sid):
    d = world["est"][sid]["diag"]
    assert d["first_stage_F"] > STOCK_YOGO_15
    assert d["kp_rk_wald_f"] > d["stock_yogo_15pct"] == STOCK_YOGO_15
    assert d["kp_rk_lm_p"] < 0.05


def test_first_stage_coefficients_are_positive(world):
    assert _b(world, "table4_col2", "iv1") > 0
    assert _b(world, "table4_col4", "iv2") > 0


@pytest.mark.parametrize("sid", ["table4_col6", "table4_col7"])
def test_psm_improves_covariate_balance(world, sid):
    d = world["est"][sid]["diag"]
    assert d["metric"] == "mahalanobis"
    assert d["mean_abs_std_diff_after"] < d["mean_abs_std_diff_before"]
    score = next(r for r in d["balance"] if r["covariate"] == "logit_pscore")
    assert abs(score["std_diff_after"]) < abs(score["std_diff_before"])
    assert abs(score["std_diff_after"]) < 10  # the caliper keeps the score balanced
    assert d["n_treated_matched"] > 0.5 * d["n_treated"]


def test_distance_spillover_in_the_planted_direction(world):
    # untreated firms near pilots gain (planted spillover), so near controls understate the effect
    assert _b(world, "spill_near") < _b(world, "spill_far")
    bands = world["est"]["spill_distance"]["diag"]["bands"]
    coefs = [b["coef"] for b in bands]
    assert all(c is not None and np.isfinite(c) for c in coefs)
    near, far = coefs[:2], coefs[2:]
    assert min(near) > 0
    assert min(near) > max(far)


def test_effect_larger_where_agglomeration_is_high(world):
    assert _b(world, "cate_agglomeration_high") > _b(world, "cate_agglomeration_low")


def test_truth_records_the_planted_endogeneity(world):
    e = world["truth"]["endogeneity"]
    assert e["rates"]["orthogonal_confounder"] is True
    assert e["mean_confounder_pilot_cities"] > e["mean_confounder_other_cities"]
    assert e["corr_confounder_outcome_selection"] > 0.5  # selection and outcome share U
    assert len(e["cities"]) == world["truth"]["cities"]["n"]
