"""Callaway & Sant'Anna (2021) estimator (keytech.estimation.did.cs.fit_cs, spec robust_staggered_cs).

(1) ATT(g, t) equals hand-computed 2x2 mean differences on a tiny panel (not-yet-treated control
rule, varying/universal base periods, unbalanced firms, always-treated and after-window cohorts);
(2) on a simulated staggered panel with heterogeneous, dynamic effects the simple ATT recovers the
planted average effect where TWFE is biased; (3) the spec runs through the registry, its bootstrap
is reproducible for a fixed seed, and the robustness table picks it up.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel
from keytech.estimation.did.cs import cs_estimate, cs_group_time

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

EXACT_ATOL = 1e-12  # ATT(g,t) and aggregates vs hand-computed means
RECOVERY_SE_MULT = 3.0  # planted ATT within this many bootstrap SE of the CS simple ATT
TWFE_BIAS_MIN = 0.02  # the simulated design must make TWFE visibly biased


@pytest.fixture(scope="module")
def reg():
    return load_registry()


# ----------------------------------------------------------------------------- (1) hand panel


def _hand_panel() -> tuple[pd.DataFrame, dict[str, dict[int, float]]]:
    """Years 2010-2013. Cohorts: 2012 (a1, a2), 2013 (b1, b2, b3), never (n1, n2), first treated
    2015 = after the window (l1, a control like never treated), 2010 = always treated (x1, dropped).
    b3 lacks 2011 and n2 lacks 2012 (unbalanced)."""
    rng = np.random.default_rng(42)
    cohort = {"a1": 2012, "a2": 2012, "b1": 2013, "b2": 2013, "b3": 2013, "n1": None, "n2": None, "l1": 2015, "x1": 2010}
    missing = {("b3", 2011), ("n2", 2012)}
    y: dict[str, dict[int, float]] = {}
    rows = []
    for i, (f, g) in enumerate(cohort.items()):
        y[f] = {}
        for t in range(2010, 2014):
            if (f, t) in missing:
                continue
            v = float(rng.normal())
            y[f][t] = v
            rows.append({"stkcd": f, "year": t, "city_code": f"c{i % 4}", "first_treated_year": g, "ln_apply_inv_zl": v})
    df = pd.DataFrame(rows)
    df["first_treated_year"] = df["first_treated_year"].astype(float)
    return df, y


def _did(y, treated: list[str], controls: list[str], t: int, b: int) -> float:
    def mean_diff(firms):
        d = [y[f][t] - y[f][b] for f in firms if t in y[f] and b in y[f]]
        assert d, (firms, t, b)
        return sum(d) / len(d)

    return mean_diff(treated) - mean_diff(controls)


def test_group_time_att_equals_hand_2x2_means():
    df, y = _hand_panel()
    gt = cs_group_time(df, "ln_apply_inv_zl")
    cells = gt["cells"].set_index(["g", "t"])
    A, B, N = ["a1", "a2"], ["b1", "b2", "b3"], ["n1", "n2", "l1"]
    expect = {
        # cohort 2012: pre 2011 (base 2010), post 2012 and 2013 (universal base 2011)
        (2012, 2011): (_did(y, A, B + N, 2011, 2010), 2010),  # not yet treated: 2013 cohort + never
        (2012, 2012): (_did(y, A, B + N, 2012, 2011), 2011),  # 2013 cohort not yet treated in 2012
        (2012, 2013): (_did(y, A, N, 2013, 2011), 2011),  # 2013 cohort treated by 2013: never only
        # cohort 2013: pre 2011 (base 2010), pre 2012 (base 2011), post 2013 (base 2012)
        (2013, 2011): (_did(y, B, A + N, 2011, 2010), 2010),  # 2012 cohort not yet treated in 2011
        (2013, 2012): (_did(y, B, N, 2012, 2011), 2011),  # 2012 cohort treated in 2012: never only
        (2013, 2013): (_did(y, B, N, 2013, 2012), 2012),
    }
    assert set(cells.index) == set(expect)
    for (g, t), (att, base) in expect.items():
        assert cells.loc[(g, t), "att"] == pytest.approx(att, abs=EXACT_ATOL), (g, t)
        assert cells.loc[(g, t), "base"] == base and cells.loc[(g, t), "e"] == t - g
    # firms in each 2x2: observed in both years (b3 has no 2011, n2 no 2012)
    assert cells.loc[(2013, 2012), ["n_treated", "n_control"]].tolist() == [2, 2]  # b1 b2 | n1 l1
    assert cells.loc[(2012, 2012), ["n_treated", "n_control"]].tolist() == [2, 4]  # a1 a2 | b1 b2 n1 l1
    assert gt["units_always_treated_dropped"] == 1 and gt["units_cohort_after_window_as_never"] == 1
    # aggregations: cohort-size weights (2012: 2 firms, 2013: 3 firms)
    res = cs_estimate(gt, draws=19, seed=1)
    a = {k: v[0] for k, v in expect.items()}
    simple = (2 * a[2012, 2012] + 2 * a[2012, 2013] + 3 * a[2013, 2013]) / 7
    assert res["simple"]["estimate"] == pytest.approx(simple, abs=EXACT_ATOL)
    assert res["simple"]["n_cells"] == 3
    dyn = res["dynamic"]
    assert dyn[0]["estimate"] == pytest.approx((2 * a[2012, 2012] + 3 * a[2013, 2013]) / 5, abs=EXACT_ATOL)
    assert dyn[1]["estimate"] == pytest.approx(a[2012, 2013], abs=EXACT_ATOL)
    assert dyn[-1]["estimate"] == pytest.approx((2 * a[2012, 2011] + 3 * a[2013, 2012]) / 5, abs=EXACT_ATOL)
    assert dyn[-2]["estimate"] == pytest.approx(a[2013, 2011], abs=EXACT_ATOL)
    assert {e: d["n_cells"] for e, d in dyn.items()} == {-2: 1, -1: 2, 0: 2, 1: 1}


# ----------------------------------------------------------------------------- (2) recovery


def _linear_staggered(seed: int = 5, n_cities: int = 80, firms_per_city: int = 6, noise: float = 1.0) -> pd.DataFrame:
    """y = a_i + g_t + city-year shock + tau(g, t) + noise; cohorts 2013/2015/2017 and never;
    tau grows with time since treatment and differs by cohort (TWFE is biased)."""
    rng = np.random.default_rng(seed)
    years = np.arange(2010, 2020)
    city_g = rng.choice([2013.0, 2015.0, 2017.0, np.nan], n_cities, p=[0.3, 0.25, 0.25, 0.2])
    year_fe = rng.normal(0, 0.3, len(years)).cumsum()
    rows = []
    for c in range(n_cities):
        g = city_g[c]
        shock = noise * rng.normal(0, 0.1, len(years))
        for f in range(firms_per_city):
            a = rng.normal(0, 1)
            for j, t in enumerate(years):
                k = t - g
                tau = 0.0 if np.isnan(g) or k < 0 else 0.1 + 0.08 * k + 0.15 * (g == 2013.0)
                rows.append((f"{c:03d}{f:02d}", t, f"{c:03d}", g, float(0 if np.isnan(g) else t >= g),
                             a + year_fe[j] + shock[j] + tau + noise * rng.normal(0, 0.3), tau))
    df = pd.DataFrame(rows, columns=["stkcd", "year", "city_code", "first_treated_year", "policy", "ln_apply_inv_zl", "tau"])
    return df.assign(rel_time=df["year"] - df["first_treated_year"])


def test_simple_att_recovers_planted_effect_where_twfe_is_biased(reg):
    import pyfixest as pf

    # noise-free: the simple ATT is exactly the planted average effect on the treated
    exact = _linear_staggered(noise=0.0)
    (res0,) = run_spec(reg.get("robust_staggered_cs"), exact, RunContext(seed=3, fe_labels=reg.fe_labels))
    assert res0.main.estimate == pytest.approx(float(exact.loc[exact["policy"] == 1, "tau"].mean()), abs=1e-10)
    df = _linear_staggered()
    (res,) = run_spec(reg.get("robust_staggered_cs"), df, RunContext(seed=3, fe_labels=reg.fe_labels))
    # balanced panel: cohort-size-weighted post cells = mean effect over treated firm-years
    truth = float(df.loc[df["policy"] == 1, "tau"].mean())
    cs, se = res.main.estimate, res.main.std_error
    twfe = float(pf.feols("ln_apply_inv_zl ~ policy | stkcd + year", data=df, vcov={"CRV1": "city_code"}).coef()["policy"])
    print(f"planted {truth:.4f}  CS {cs:.4f} (bootstrap SE {se:.4f})  TWFE {twfe:.4f}")
    assert se > 0 and abs(cs - truth) < RECOVERY_SE_MULT * se
    assert abs(twfe - truth) > TWFE_BIAS_MIN
    assert abs(cs - truth) < abs(twfe - truth)
    # event-time terms: the dynamic effect grows with e; pre-period terms near zero
    for e in (0, 2, 4):
        true_e = float(df.loc[(df["policy"] == 1) & (df["rel_time"] == e), "tau"].mean())
        t = res.term(f"rel_time={e}")
        assert abs(t.estimate - true_e) < RECOVERY_SE_MULT * t.std_error, e
    for e in (-3, -2, -1):
        t = res.term(f"rel_time={e}")
        assert abs(t.estimate) < RECOVERY_SE_MULT * t.std_error, e


# ----------------------------------------------------------------------------- (3) registry + report


@pytest.fixture(scope="module")
def sim():
    return pnl.prepare_panel(simulate_panel(seed=11, n_cities=40, firms_per_city=6, beta_key=0.25))


def test_spec_runs_through_registry_reproducibly_and_reaches_the_robustness_table(reg, sim):
    from keytech.tables.baseline import robustness_models
    from keytech.estimation.orchestration.runner import list_specs
    from keytech.estimation.orchestration.store import ESTIMATE_COLUMNS, estimate_rows

    spec = reg.get("robust_staggered_cs")
    assert spec.estimator == "staggered_cs" and spec.options["bootstrap"] == 199
    assert spec.table == "robustness" and spec.table_panel == reg.get("robust_staggered_sunab").table_panel
    assert "robust_staggered_cs" in dict(list_specs())
    assert "robust_staggered_cs" in {s.id for s in reg.select(["staggered"])}
    small = dataclasses.replace(spec, options={"bootstrap": 49})
    (r1,) = run_spec(small, sim, RunContext(seed=7, fe_labels=reg.fe_labels))
    (r2,) = run_spec(small, sim, RunContext(seed=7, fe_labels=reg.fe_labels))
    (r3,) = run_spec(small, sim, RunContext(seed=8, fe_labels=reg.fe_labels))
    assert r1.main_term == "policy" and r1.main.std_error > 0 and 0 <= r1.main.p_value <= 1
    assert [(t.term, t.estimate, t.std_error) for t in r1.terms] == [(t.term, t.estimate, t.std_error) for t in r2.terms]
    assert r3.main.estimate == r1.main.estimate and r3.main.std_error != r1.main.std_error
    assert r1.diagnostics["bootstrap"]["draws"] == 49 and r1.diagnostics["bootstrap"]["seed"] == 7
    assert r1.term("rel_time=0").diagnostics["n_cells"] == r1.diagnostics["n_cells_by_event_time"]["0"]
    assert r1.main.diagnostics["n_cells"] == r1.diagnostics["n_cells_post"] > 0
    est = pd.DataFrame(estimate_rows("run", [r1]), columns=ESTIMATE_COLUMNS)
    (table,) = [t for t in robustness_models(est, reg, False) if spec.label in t.headers]
    j = table.headers.index(spec.label)
    assert table.rows[0].cells[j].startswith(f"{r1.main.estimate:.3f}"[:4])
    assert "post ATT(g,t)" in [row for row in table.rows if row.label == "Note"][0].cells[j]
