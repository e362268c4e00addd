"""Issue 17: work shared between specs of one run gives what each spec computes alone.

* the heterogeneity splits' permutation tests of sibling specs (same split, rows, regressors,
  fixed effects, draws; another outcome) run once for all their outcomes: the same p-values and,
  up to rounding, the same differences as a test per outcome;
* Table 4's first- and second-stage IV specs share the first stage / OLS / KP statistics, and
  the two PSM columns share the matching: every number equals a run with a fresh context.
All in memory, seconds."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from keytech.estimation import mechanisms
from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.inference.permutation import fe_ols_coefficient, permutation_test, permutation_tests
from keytech.estimation import load_registry
from keytech.estimation.simulate import simulate_panel
from _panels import firm_year_cells

FAST_TOL = 1e-9  # joint vs separate re-estimations: the same algebra with one more column (rounding)
FE3 = ["stkcd", "ind_year", "prov_year"]
RHS = ["policy", "x1", "x2"]


def _fe_panel(seed: int = 11, n_firms: int = 120) -> pd.DataFrame:
    """Unbalanced firm-year panel with firm, industry×year and province×year cells and two
    outcomes (a few firms move province or change industry)."""
    rng = np.random.default_rng(seed)
    df = firm_year_cells(rng, n_firms)
    n = len(df)
    firm = rng.normal(0, 1, n_firms)[df["stkcd"].astype(int)]
    df["policy"] = (rng.random(n) < 0.4).astype(float)
    df["x1"], df["x2"] = rng.normal(size=n), rng.normal(size=n)
    df["y"] = 0.3 * df["policy"] + 0.5 * df["x1"] + firm + rng.normal(0, 1, n)
    df["y2"] = -0.2 * df["policy"] + 0.1 * df["x2"] + 0.5 * firm + rng.normal(0, 1, n)
    return df


def test_multi_outcome_coefficient_equals_one_outcome_at_a_time():
    data = _fe_panel()
    joint = fe_ols_coefficient(["y", "y2"], RHS, FE3).prepare(data)
    alone = [fe_ols_coefficient(y, RHS, FE3).prepare(data) for y in ("y", "y2")]
    rng = np.random.default_rng(2)
    for _ in range(5):
        mask = rng.random(len(data)) < 0.5
        both = joint(mask)
        assert both.shape == (2,)
        for j, fn in enumerate(alone):
            assert both[j] == pytest.approx(fn(mask), rel=FAST_TOL, abs=FAST_TOL)
    # too few rows: NaN for every outcome (a failed draw)
    assert np.isnan(joint(np.arange(len(data)) < 3)).all()


@pytest.mark.parametrize("permute_by", [None, "stkcd"])
def test_joint_permutation_tests_equal_one_test_per_outcome(permute_by):
    data = _fe_panel(seed=5)
    if permute_by:
        labels = data["stkcd"].astype(int).to_numpy() % 2 == 0
    else:
        labels = np.random.default_rng(1).random(len(data)) < 0.5
    joint = permutation_tests(data, labels, fe_ols_coefficient(["y", "y2"], RHS, FE3), draws=30, seed=3,
                              permute_by=permute_by)
    for y, res in zip(("y", "y2"), joint):
        alone = permutation_test(data, labels, fe_ols_coefficient(y, RHS, FE3), draws=30, seed=3, permute_by=permute_by)
        for key in ("p_one_sided", "p_two_sided", "n_draws", "n_draws_failed", "seed", "permute_by", "exact_enumeration"):
            assert res[key] == alone[key], (y, key)
        assert res["difference"] == pytest.approx(alone["difference"], rel=FAST_TOL, abs=FAST_TOL)
        for q, v in alone["draws_quantiles"].items():
            assert res["draws_quantiles"][q] == pytest.approx(v, rel=FAST_TOL, abs=FAST_TOL)


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    df = pnl.prepare_panel(simulate_panel(seed=3, n_cities=30, firms_per_city=5.0, beta_key=0.3))
    return df.assign(fc_index=np.random.default_rng(4).normal(size=len(df)))


def test_het_siblings_share_one_permutation_pass(sim, monkeypatch):
    """het_fc_high_key and het_fc_high_nonkey (same split, other outcome): the second spec of a run
    reuses the joint test, and both equal a test computed for the spec alone."""
    reg = load_registry()
    key, nonkey = (dataclasses.replace(reg.get(i), options={**reg.get(i).options, "permutation": {
        "draws": 19, "permute_by": "observation"}}) for i in ("het_fc_high_key", "het_fc_high_nonkey"))
    monkeypatch.setattr(mechanisms, "_sibling_outcomes", lambda spec, registry=None: [nonkey.outcome] if spec.outcome == key.outcome else [])
    ctx = RunContext(seed=5)
    shared = [run_spec(s, sim, ctx)[0].diagnostics["permutation"] for s in (key, nonkey)]
    assert len(ctx.shared) == 1  # one joint pass, reused by the second spec
    assert shared[0]["computed_jointly_with"] == shared[1]["computed_jointly_with"] == [key.outcome, nonkey.outcome]
    assert "computed_in_pass_of" not in shared[0] and shared[1]["computed_in_pass_of"] == key.id
    monkeypatch.setattr(mechanisms, "_sibling_outcomes", lambda spec, registry=None: [])
    for spec, res in zip((key, nonkey), shared):
        alone = run_spec(spec, sim, RunContext(seed=5))[0].diagnostics["permutation"]
        assert "computed_jointly_with" not in alone
        for k in ("p_one_sided", "p_two_sided", "n_draws", "n_draws_failed", "seed", "permute_by"):
            assert res[k] == alone[k], (spec.id, k)
        assert res["difference"] == pytest.approx(alone["difference"], rel=FAST_TOL, abs=FAST_TOL)


def test_siblings_come_from_the_runs_registry(sim):
    """A run whose registry differs from the packaged one (here: 19 draws instead of 199) finds the
    siblings in its own registry (RunContext.registry), not in the packaged one, where the changed
    options match no spec."""
    reg = load_registry()
    ids = ("het_fc_high_key", "het_fc_high_nonkey")
    changed = {i: dataclasses.replace(reg.get(i), options={**reg.get(i).options, "permutation": {
        "draws": 19, "permute_by": "observation"}}) for i in ids}
    run_registry = dataclasses.replace(reg, specs=tuple(changed.get(s.id, s) for s in reg.specs))
    key, nonkey = changed[ids[0]], changed[ids[1]]
    assert mechanisms._sibling_outcomes(key) == []  # the packaged registry has no such sibling
    assert mechanisms._sibling_outcomes(key, run_registry) == [nonkey.outcome]
    ctx = RunContext(seed=5, registry=run_registry)
    tests = [run_spec(s, sim, ctx)[0].diagnostics["permutation"] for s in (key, nonkey)]
    assert tests[0]["computed_jointly_with"] == [key.outcome, nonkey.outcome]
    assert tests[1]["computed_in_pass_of"] == key.id
    alone = run_spec(key, sim, RunContext(seed=5))[0].diagnostics["permutation"]
    assert "computed_jointly_with" not in alone and alone["p_two_sided"] == tests[0]["p_two_sided"]


def test_registry_siblings_of_the_heterogeneity_splits():
    reg = load_registry()
    assert mechanisms._sibling_outcomes(reg.get("het_fc_high_key")) == [reg.get("het_fc_high_nonkey").outcome]
    assert mechanisms._sibling_outcomes(reg.get("table5_col2")) == []  # table5_col4 splits on another variable


def _numbers(res) -> str:
    return json.dumps({"terms": [dataclasses.asdict(t) for t in res.terms], "nobs": res.nobs, "adj_r2": res.adj_r2,
                       "diagnostics": res.diagnostics}, sort_keys=True, default=str)


def _iv_psm_panel() -> pd.DataFrame:
    df = pnl.prepare_panel(simulate_panel(seed=7, n_cities=40, firms_per_city=6.0, beta_key=0.3))
    rng = np.random.default_rng(3)
    city = pd.factorize(df["city_code"])[0]
    z = rng.normal(size=city.max() + 1)
    return df.assign(iv1=z[city] * (df["year"] - 2009) + rng.normal(0, 0.1, len(df)),
                     iv2=df["policy"] + rng.normal(0, 1, len(df)),
                     is_ever_treated=df["first_treated_year"].notna().astype(int),
                     agglomeration_lq=rng.lognormal(0, 0.3, city.max() + 1)[city])


@pytest.mark.parametrize("ids", [("table4_col2", "table4_col3"), ("table4_col6", "table4_col7")])
def test_table4_shared_first_stage_and_matching_equal_fresh_runs(ids):
    reg = load_registry()
    df = _iv_psm_panel()
    ctx = RunContext()
    together = [run_spec(reg.get(i), df, ctx)[0] for i in ids]
    assert len(ctx.shared) == 1  # computed by the first spec, reused by the second
    for spec_id, res in zip(ids, together):
        alone = run_spec(reg.get(spec_id), df, RunContext())[0]
        assert _numbers(res) == _numbers(alone), spec_id
