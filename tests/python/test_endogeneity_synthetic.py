"""End-to-end on the synthetic world: generate (fixed seed) → warehouse → Table 4 and the spillover
specs (keytech.estimation.run_estimation) → the planted endogeneity is recovered.

Two worlds, each planting one thing so that each claim has one unambiguous truth:

* the **IV world** (``IV_WORLD_RATES``, paper-scale firms and cities, seed 12): confounding only.
  Its firms file few patents besides their key-tech inventions (``KEY_TECH_ONLY``: non-key
  invention, utility-model and design log-ratios −4, so 250,648 patent rows instead of 1,723,386);
  the key-tech draws are the paper-scale world's (they come before the other kinds' in the
  generator's stream), so Table 4's outcome ln(1 + Apply_inv_zl), Policy, the instruments and
  the controls are those of the full-volume world, row for row (rpt_endogeneity_panel compared
  column by column, 2026-12-03: only non-key, joint, grant and citation outcomes differ), and so
  are the estimates below, to the last bit; the build is ≈ 2.3× cheaper. Pilot cities are
  selected on the instruments' robot exposure *and* on an unobserved ``U_c``; ``U*_c`` (``U_c``
  made orthogonal to the instrument inputs within province) raises the key-tech log-rate by
  ``U*_c·path(year)`` with path a 2014–2018 ramp — a local boom in the pilot era. No spillover and
  no effect heterogeneity by agglomeration (either would make "the truth" differ between OLS and
  2SLS). The truth on the ln(1 + count) scale of Table 4 is the **oracle**: column (5) OLS on the IV
  sample with the planted confounder term as a control (same sample, controls, FE, noise).
  Paper scale because the confounder is city-level: with ~85 cities (``small``) 2SLS is too
  imprecise (SE ≈ 0.2–0.6) to separate from OLS honestly; with ~270 cities it is.
  Asserted: OLS is biased (OLS − oracle > 0.2); each 2SLS barely moves when the confounder term
  is added as a control (the instrument is valid in the drawn world, not only in expectation)
  while OLS moves by the whole bias; both 2SLS are closer to the oracle than OLS; first stages are
  strong (F and KP rk Wald F > 8.96, KP LM p < 0.05); interactive FE pick ≥ 1 factor — the
  confounder *is* a factor structure, loading U*_c on the pilot-era path — and remove at least
  half of the TWFE bias.
* the **spillover world** (``STRESS_RATES``, small scale, seed 12, ``KEY_TECH_ONLY`` as the IV
  world: 51,135 patent rows instead of 307,138, the same rpt_endogeneity_panel but for the non-key,
  joint, grant and citation outcomes, the same estimates): selection, a confounder trend,
  a spillover decaying with distance and agglomeration heterogeneity. Asserted: PSM (Mahalanobis
  within the propensity caliper) lowers the mean |standardised difference| of the covariates and
  of the score; near controls below far controls and the two nearest distance bands positive and
  above the farther ones; a larger effect in high- than in low-agglomeration cities.

One generate + build + estimation per world (≈ 1 min each on an idle core)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from keytech.build import BuildOptions, build_warehouse
from keytech.estimation.core import panel as pnl
from keytech.estimation import run_estimation
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.linear import fit_ols
from keytech.estimation.iv import fit_iv
from keytech.estimation.orchestration.registry import load_registry
from keytech.synth import generate

pytestmark = pytest.mark.slow
# `make test` (pytest-xdist): the two worlds are separate units of work, built on two workers at
# once (tests/python/conftest.py, units_of_work)
XDIST_SPLIT_FIXTURES = ("iv_world", "world")

STOCK_YOGO_15 = 8.96
MIN_OLS_BIAS = 0.20  # OLS − oracle on ln(1+y) in the IV world: the confounder must bias OLS visibly
IV_CONFOUNDER_SHIFT_MAX = 0.25  # |2SLS − 2SLS with the confounder controlled| ≤ this × OLS bias


# The shape both worlds were calibrated on: firms' home cities ∝ exp(1.0 × size), pilot selection
# loading 0.9 on size (unless the rates set size_selection). Issue 11 concentrated the demo's
# ``small`` world more (keytech.synth.config.SCALES); with it the spill world's nearest distance
# band came out slightly negative (−0.04) on this seed, so these tests keep their world.
CALIBRATED_SHAPE = {"firm_city_concentration": 1.0, "pilot_size_selection": 0.9}


# Non-key inventions, utility models and designs almost absent (keytech.synth.config.Rates): the
# key-tech draws, and so every column Table 4 and the spillover specs read, stay those of the
# default rates (see the module docstring), with a fraction of the patent rows to build.
KEY_TECH_ONLY = {"nonkey_log_ratio": -4.0, "utility_log_ratio": -4.0, "design_log_ratio": -4.0}


def _make_world(root: Path, scale: str, seed: int, rates: dict, only: list[str],
                core_rates: dict | None = None) -> dict:
    from keytech.synth import config as synth_config
    from keytech.synth import endogeneity as synth_endogeneity

    raw = root / "raw"
    saved = dict(synth_endogeneity.DEFAULT_RATES_OVERRIDE)
    saved_scale = synth_config.SCALES[scale]
    synth_endogeneity.DEFAULT_RATES_OVERRIDE.clear()
    synth_endogeneity.DEFAULT_RATES_OVERRIDE.update(rates)
    synth_config.SCALES[scale] = dataclasses.replace(saved_scale, **CALIBRATED_SHAPE)
    try:
        truth = generate(scale, seed, raw, progress=False, rates=synth_config.Rates(**(core_rates or {})))
    finally:
        synth_endogeneity.DEFAULT_RATES_OVERRIDE.clear()
        synth_endogeneity.DEFAULT_RATES_OVERRIDE.update(saved)
        synth_config.SCALES[scale] = saved_scale
    db = root / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing", warehouse=db, quiet=True))
    run_id = run_estimation(only=only, force=True, db_path=db, out_dir=root / "output", progress=False, render=False)
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


@pytest.fixture(scope="module")
def iv_world(tmp_path_factory) -> dict:
    from keytech.synth.endogeneity import IV_WORLD_RATES

    return _make_world(tmp_path_factory.mktemp("iv_world"), "paper", 12, IV_WORLD_RATES,
                       ["table4_col1", "table4_col2", "table4_col3", "table4_col4", "table4_col5"],
                       core_rates=KEY_TECH_ONLY)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from keytech.synth.endogeneity import STRESS_RATES

    return _make_world(tmp_path_factory.mktemp("spill_world"), "small", 12, STRESS_RATES,
                       ["table4_col6", "table4_col7", "spill"], core_rates=KEY_TECH_ONLY)


def _b(world, sid, term="policy"):
    assert sid in world["est"], sid
    terms = world["est"][sid]["terms"]
    assert "(error)" not in terms, world["est"][sid]["diag"]
    return terms[term][0]


def _planted_terms(world) -> tuple:
    """The IV sample of rpt_endogeneity_panel with the planted confounder term ``u_path`` =
    U*_c·confounder_trend·path(year) (from ``_truth.json``)."""
    spec = load_registry().get("table4_col3")
    e = world["truth"]["endogeneity"]
    df = pnl.load_panel(spec.panel, world["db"])
    u = {c["city_code"]: c["confounder_outcome"] for c in e["cities"]}
    path = {int(y): v for y, v in e["confounder_path_by_year"].items()}
    df["u_path"] = (df["city_code"].astype(str).map(u) * df["year"].map(path)
                    * e["rates"]["confounder_trend"])
    df = df.loc[df["iv1"].notna() & df["iv2"].notna() & df["u_path"].notna()]
    return spec, df


@pytest.fixture(scope="module")
def oracle(iv_world) -> dict:
    """Column (5) OLS and 2SLS on the IV sample with the planted confounder term as a control."""
    spec, df = _planted_terms(iv_world)
    ols = dataclasses.replace(spec, id="oracle", estimator="ols", extra_regressors=("u_path",), options={})
    out = {"oracle": float(fit_ols(ols, df, RunContext()).main.estimate)}
    for z in ("iv1", "iv2"):
        iv = dataclasses.replace(spec, id=f"{z}_controlled", extra_regressors=("u_path",),
                                 options={"instruments": [z], "stage": "second"})
        out[f"{z}_controlled"] = float(fit_iv(iv, df, RunContext()).main.estimate)
    return out


def test_iv_world_plants_confounding_only(iv_world):
    r = iv_world["truth"]["endogeneity"]["rates"]
    assert r["spill_beta"] == 0 and r["agglomeration_beta"] == 0 and r["confounder_path"] == "pilot_era"
    e = iv_world["truth"]["endogeneity"]
    assert e["mean_confounder_pilot_cities"] > e["mean_confounder_other_cities"] + 0.5


def test_confounder_biases_ols_visibly(iv_world, oracle):
    ols = iv_world["est"]["table4_col3"]["diag"]["ols_policy"]
    assert ols - oracle["oracle"] > MIN_OLS_BIAS, (ols, oracle)


@pytest.mark.parametrize("sid, z", [("table4_col3", "iv1"), ("table4_col5", "iv2")])
def test_instrument_is_valid_in_the_drawn_world(iv_world, oracle, sid, z):
    """Controlling for the (unobservable) confounder moves OLS by its whole bias and 2SLS hardly."""
    ols_bias = iv_world["est"]["table4_col3"]["diag"]["ols_policy"] - oracle["oracle"]
    assert abs(_b(iv_world, sid) - oracle[f"{z}_controlled"]) < IV_CONFOUNDER_SHIFT_MAX * ols_bias


@pytest.mark.parametrize("sid", ["table4_col3", "table4_col5"])
def test_2sls_closer_to_the_oracle_than_ols(iv_world, oracle, sid):
    ols = iv_world["est"]["table4_col3"]["diag"]["ols_policy"]
    assert abs(_b(iv_world, sid) - oracle["oracle"]) < abs(ols - oracle["oracle"]), (_b(iv_world, sid), ols, oracle)


@pytest.mark.parametrize("sid", ["table4_col3", "table4_col5"])
def test_first_stages_are_strong(iv_world, sid):
    d = iv_world["est"][sid]["diag"]
    assert d["first_stage_F"] > STOCK_YOGO_15
    assert d["kp_rk_wald_f"] > d["stock_yogo_15pct"] == STOCK_YOGO_15
    assert d["kp_rk_lm_p"] < 0.05


def test_first_stage_coefficients_are_positive(iv_world):
    assert _b(iv_world, "table4_col2", "iv1") > 0
    assert _b(iv_world, "table4_col4", "iv2") > 0


def test_ife_finds_the_planted_factor_and_removes_most_of_the_bias(iv_world, oracle):
    d = iv_world["est"]["table4_col1"]["diag"]
    assert d["n_factors"] >= 1 and d["converged"], d
    twfe_bias = d["twfe_policy"] - oracle["oracle"]
    assert abs(_b(iv_world, "table4_col1") - oracle["oracle"]) < 0.5 * abs(twfe_bias), (d, oracle)


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
    """The split specs (cate_agglomeration_low/high) run; their difference at ``small`` is a ~1 SE
    comparison (the low half has SE ≈ 0.4: few treated cities per province), so the planted
    heterogeneity is checked with the pooled interaction Policy × is_high_agglomeration on the
    warehouse's split (Poisson, firm + year FE, city clusters): positive and within 2.5 SE of the
    planted log-rate difference agglomeration_beta × (mean z | treated high − mean z | treated low)."""
    import pyfixest as pf

    for sid in ("cate_agglomeration_low", "cate_agglomeration_high"):
        assert np.isfinite(_b(world, sid))
    e = world["truth"]["endogeneity"]
    df = pnl.load_panel("rpt_endogeneity_panel", world["db"])
    df["policy_x_high"] = df["policy"] * df["is_high_agglomeration"]
    fit = pf.fepois("apply_inv_zl ~ policy + policy_x_high | stkcd + year", data=df, vcov={"CRV1": "city_code"})
    b, se = float(fit.coef()["policy_x_high"]), float(fit.se()["policy_x_high"])
    z = df["city_code"].astype(str).map({c["city_code"]: c["agglomeration_z"] for c in e["cities"]})
    treated = df["policy"] == 1
    dz = z[treated & (df["is_high_agglomeration"] == 1)].mean() - z[treated & (df["is_high_agglomeration"] == 0)].mean()
    planted = e["rates"]["agglomeration_beta"] * dz
    assert b > 0, (b, se, planted)
    assert abs(b - planted) < 2.5 * se, (b, se, planted)


def test_truth_records_the_planted_endogeneity(world):
    e = world["truth"]["endogeneity"]
    assert e["rates"]["orthogonal_confounder"] is True
    assert e["confounder_path_by_year"]["2018"] == pytest.approx(1.0)  # trend path: (2018 − 2008)/10
    assert e["mean_confounder_pilot_cities"] > e["mean_confounder_other_cities"]
    assert e["corr_confounder_outcome_selection"] > 0.5  # selection and outcome share U
    assert len(e["cities"]) == world["truth"]["cities"]["n"]
