"""Mechanisms estimation layer on hand-made data: the permutation p-value (known answers), the fast
FE coefficient used in each reshuffle (against pyfixest), the median-split rule, the ols_split
estimator, Policy × ln(Sale), the extra-mart join, and the synthetic generator's planted
mechanisms. The SQL constructions (similarity, widths, WW, HHI) are tested by hand in dbt unit
tests (models/intermediate/mechanisms/_int_mechanisms__unit_tests.yml), which run in dbt build."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from keytech.estimation import panel as pnl
from keytech.estimation.estimators import RunContext, run_spec
from keytech.estimation.mechanisms import median_split
from keytech.estimation.permutation import fe_ols_coefficient, permutation_test
from keytech.estimation.registry import load_registry
from keytech.estimation.simulate import simulate_panel

COEF_TOL = 1e-6  # fast FE OLS vs pyfixest (relative)


def _mean_fn(col: str = "y"):
    return lambda d: float(d[col].mean())


def test_permutation_exact_enumeration_known_answer():
    # group 1 = {4, 5, 6}, group 0 = {1, 2, 3}: d = 3 is the largest of the C(6,3) = 20 labellings
    data = pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 6]})
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    res = permutation_test(data, labels, _mean_fn(), draws=100)
    assert res["exact_enumeration"] and res["n_draws"] == 20
    assert res["difference"] == pytest.approx(3.0)
    assert res["p_one_sided"] == pytest.approx(1 / 20)
    assert res["p_two_sided"] == pytest.approx(2 / 20)  # the mirror labelling gives d = -3


def test_permutation_exact_middle_case():
    # group 1 = {1, 6}, group 0 = {2, 3, 4, 5}: d = 3.5 - 3.5 = 0, every labelling is as extreme in |d|
    data = pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 6]})
    labels = np.array([1, 0, 0, 0, 0, 1], bool)
    res = permutation_test(data, labels, _mean_fn(), draws=100)
    assert res["n_draws"] == 15 and res["difference"] == pytest.approx(0.0)
    assert res["p_two_sided"] == pytest.approx(1.0)
    # d* >= 0 for the labellings whose pair sums to >= 7: {1,6},{2,5},{3,4},{2,6},{3,5},{3,6},{4,5},{4,6},{5,6}
    assert res["p_one_sided"] == pytest.approx(9 / 15)


def test_permutation_random_draws_reproducible_and_bounded():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"y": np.r_[rng.normal(5, 1, 40), rng.normal(0, 1, 40)]})
    labels = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    a = permutation_test(data, labels, _mean_fn(), draws=199, seed=7)
    b = permutation_test(data, labels, _mean_fn(), draws=199, seed=7)
    assert a == b and not a["exact_enumeration"]
    assert a["p_one_sided"] == pytest.approx(1 / 200)  # no reshuffle reaches a 5-sd gap
    # no difference at all: p is large
    flat = pd.DataFrame({"y": rng.normal(0, 1, 80)})
    assert permutation_test(flat, labels, _mean_fn(), draws=199, seed=7)["p_two_sided"] > 0.05


def test_permutation_by_cluster_keeps_units_together():
    data = pd.DataFrame({"y": [1.0, 1, 2, 2, 5, 5, 6, 6], "city": list("aabbccdd")})
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1], bool)
    res = permutation_test(data, labels, _mean_fn(), draws=100, permute_by="city")
    assert res["exact_enumeration"] and res["n_draws"] == 6  # C(4, 2) city labellings
    assert res["p_one_sided"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        permutation_test(data, np.array([1, 0, 0, 0, 1, 1, 1, 1], bool), _mean_fn(), permute_by="city")


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    df = pnl.prepare_panel(simulate_panel(seed=3, n_cities=30, firms_per_city=5.0, beta_key=0.3))
    return df.assign(ln_sale=np.log(df["sale"]) if "sale" in df else np.random.default_rng(1).normal(20, 1, len(df)))


def test_fast_fe_coefficient_equals_pyfixest(sim):
    import pyfixest as pf

    reg = load_registry()
    spec = reg.get("table3_col5")
    rhs = list(spec.regressors)
    data = sim.dropna(subset=[spec.outcome, *rhs, *spec.fixed_effects])
    fast = fe_ols_coefficient(spec.outcome, rhs, spec.fixed_effects)(data)
    fit = pf.feols(f"{spec.outcome} ~ {' + '.join(rhs)} | {' + '.join(spec.fixed_effects)}", data=data,
                   demeaner=pf.LsmrDemeaner(fixef_atol=1e-10, fixef_btol=1e-10))
    assert fast == pytest.approx(float(fit.coef()["policy"]), rel=COEF_TOL, abs=1e-9)


def test_median_split_rule():
    labels, info = median_split(pd.Series([1.0, 2, 3, 4, np.nan]))
    assert labels.tolist()[:4] == [0, 0, 1, 1] and np.isnan(labels.iloc[4])
    assert info["rule"].startswith("above")
    # most values tie at the median (an HHI of 1): ties go to 'high' when that is more balanced
    labels, info = median_split(pd.Series([0.3, 0.5, 1, 1, 1, 1]))
    assert labels.tolist() == [0, 0, 1, 1, 1, 1] and "ties" in info["rule"]


def test_ols_split_groups_and_permutation(sim):
    reg = load_registry()
    df = sim.assign(similarity_ipc4=np.random.default_rng(5).random(len(sim)))
    base = reg.get("table5_col2")
    opts = {**base.options, "permutation": {"draws": 9, "seed": 1}}
    ctx = RunContext()
    hi = run_spec(dataclasses.replace(base, options=opts), df, ctx)[0]
    lo = run_spec(reg.get("table5_col1"), df, ctx)[0]
    n = df.dropna(subset=[base.outcome, *base.regressors, *base.fixed_effects, "city_code"]).shape[0]
    split = hi.diagnostics["split"]
    assert split["n_high"] + split["n_low"] == n and abs(split["n_high"] - split["n_low"]) <= 1
    perm = hi.diagnostics["permutation"]
    assert perm["n_draws"] == 9 and 0 < perm["p_one_sided"] <= 1
    assert perm["difference"] == pytest.approx(hi.main.estimate - lo.main.estimate, abs=1e-6)
    assert "permutation" not in lo.diagnostics


def test_policy_x_ln_sale_derived(sim):
    out = pnl.add_derived(sim, ["policy_x_ln_sale"])
    assert np.allclose(out["policy_x_ln_sale"], sim["policy"] * sim["ln_sale"])


def test_registry_has_every_issue_spec_id():
    ids = set(load_registry().ids)
    want = {f"table5_col{i}" for i in range(1, 6)} | {f"table6_col{i}" for i in range(1, 7)}
    want |= {f"table7_col{i}" for i in range(1, 5)} | {f"field_{k}" for k in range(1, 10)}
    for m in ("fc", "ww", "hhi", "rdsub", "patsub", "visit", "standard"):
        want |= {f"het_{m}_{g}_{o}" for g in ("low", "high") for o in ("key", "nonkey")}
    assert want <= ids
    reg = load_registry()
    for sid in want:
        assert reg.get(sid).extra_marts == ("fct_firm_year_mechanisms",)
        if sid.startswith(("het_", "table5_col2", "table5_col4")) and "_high_" in sid or sid in ("table5_col2", "table5_col4"):
            assert reg.get(sid).options.get("permutation"), sid


def test_generator_plants_mechanisms():
    from keytech.synth import build_world

    w = build_world("tiny", 3)
    m = w.mech
    treat = m["treat"] & (w.fy["year"].to_numpy() >= 2010) & (w.fy["year"].to_numpy() <= 2019)
    assert m["key_scale"][treat].mean() == pytest.approx(1.0)
    hs = m["high_similarity_city"][w.fy["city"].to_numpy()]
    assert m["key_scale"][treat & hs].mean() > m["key_scale"][treat & ~hs].mean()
    assert m["recoded"]["recoded"] > 0 and set(m["recoded"]["by_target_industry"]) == {2, 5, 6, 7}
