"""Callaway–Sant'Anna doubly robust with covariates (issue 14 item 4; keytech.estimation.did.cs_dr).

(1) On the public ``mpdta`` panel (frozen in reference/mpdta.csv) every ATT(g,t), the simple and
event-time aggregations and their analytic SEs equal the reference implementation (moderndid's port
of R did::att_gt/aggte, est_method "dr", xformla ~lpop; frozen by reference/make_python_reference.py)
to 1e-6 in ATT and 1e-3 (relative) in SE, for never-treated and not-yet-treated controls.
(2) Clustering with one unit per cluster gives did's unclustered SE exactly; the uniform band's
critical value lies between the pointwise and the Bonferroni value. (3) Without covariates the
estimator equals the project's separate unconditional implementation (staggered.cs_group_time /
cs_estimate, spec robust_staggered_cs); the registry spec runs and is seeded.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from keytech.estimation.core import panel as pnl
from keytech.estimation.did.cs_dr import aggregate, group_time, se_from_if, uniform_critical_value
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.registry import load_registry
from keytech.estimation.simulate import simulate_panel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

REF = Path(__file__).parent / "reference"
ATT_ATOL = 1e-6
SE_RTOL = 1e-3


@pytest.fixture(scope="module")
def mpdta() -> pd.DataFrame:
    return pd.read_csv(REF / "mpdta.csv")


@pytest.mark.parametrize("control", ["nevertreated", "notyettreated"])
def test_mpdta_equals_reference(mpdta, control):
    ref = pd.read_csv(REF / "cs_dr_reference.csv")
    ref = ref.loc[ref["control_group"] == control]
    gt = group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], control)
    n = gt["n"]
    assert n == 500
    cells = gt["cells"]
    rg = ref.loc[ref["aggregation"] == "group_time"]
    assert len(cells) == len(rg) == 12
    for r in rg.itertuples():
        j = cells.index[(cells["g"] == r.g) & (cells["t"] == r.t)][0]
        assert cells.loc[j, "att"] == pytest.approx(r.att, abs=ATT_ATOL)
        assert se_from_if(gt["inf"][:, j], n) == pytest.approx(r.se, rel=SE_RTOL)
    agg = aggregate(gt)
    s = ref.loc[ref["aggregation"] == "simple"].iloc[0]
    assert agg["simple"][0] == pytest.approx(s.att, abs=ATT_ATOL)
    assert se_from_if(agg["simple"][1], n) == pytest.approx(s.se, rel=SE_RTOL)
    o = ref.loc[ref["aggregation"] == "dynamic_overall"].iloc[0]
    assert agg["dynamic_overall"][0] == pytest.approx(o.att, abs=ATT_ATOL)
    assert se_from_if(agg["dynamic_overall"][1], n) == pytest.approx(o.se, rel=SE_RTOL)
    dyn = ref.loc[ref["aggregation"] == "dynamic"]
    assert sorted(agg["dynamic"]) == sorted(int(e) for e in dyn["e"])
    for r in dyn.itertuples():
        a, psi = agg["dynamic"][int(r.e)]
        assert a == pytest.approx(r.att, abs=ATT_ATOL)
        assert se_from_if(psi, n) == pytest.approx(r.se, rel=SE_RTOL)


def test_clustered_se_and_uniform_band(mpdta):
    gt = group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], "nevertreated")
    n = gt["n"]
    agg = aggregate(gt)
    psi = agg["simple"][1]
    own = np.arange(n)
    assert se_from_if(psi, n, own) == pytest.approx(se_from_if(psi, n), rel=1e-12)
    # states (county FIPS // 1000) as clusters: the cluster sums, written out
    state = np.unique(gt["units"] // 1000, return_inverse=True)[1]
    by_hand = np.sqrt(sum(psi[state == s].sum() ** 2 for s in np.unique(state))) / n
    assert se_from_if(psi, n, state) == pytest.approx(by_hand, rel=1e-12)
    es = sorted(agg["dynamic"])
    Psi = np.column_stack([agg["dynamic"][e][1] for e in es])
    se = np.array([se_from_if(Psi[:, k], n, own) for k in range(len(es))])
    crit = uniform_critical_value(Psi, se, n, own, draws=4999, seed=1)
    K = len(es)
    assert stats.norm.ppf(0.975) < crit < stats.norm.ppf(1 - 0.025 / K)
    one = uniform_critical_value(Psi[:, :1], se[:1], n, own, draws=4999, seed=1)
    assert one == pytest.approx(stats.norm.ppf(0.975), abs=0.08)  # one estimate: the pointwise value


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    return pnl.prepare_panel(simulate_panel(seed=21, n_cities=40, firms_per_city=5.0, beta_key=0.3, beta_dynamic=0.05))


def test_no_covariates_equals_unconditional_cs(sim):
    from keytech.estimation.did.cs import cs_estimate, cs_group_time

    gt = group_time(sim, "ln_apply_inv_zl", "year", "stkcd", "first_treated_year", [], "notyettreated")
    agg = aggregate(gt)
    other = cs_estimate(cs_group_time(sim, "ln_apply_inv_zl"), draws=2, seed=1)
    assert agg["simple"][0] == pytest.approx(other["simple"]["estimate"], abs=1e-10)
    for e, a in other["dynamic"].items():
        assert agg["dynamic"][int(e)][0] == pytest.approx(a["estimate"], abs=1e-10)


def test_registry_spec(sim):
    spec = load_registry().get("robust_staggered_drcs")
    spec = dataclasses.replace(spec, options={**spec.options, "band_draws": 299})
    a = run_spec(spec, sim, RunContext(seed=5))[0]
    b = run_spec(spec, sim, RunContext(seed=5))[0]
    assert a.main.estimate == b.main.estimate and a.diagnostics["uniform_band"] == b.diagnostics["uniform_band"]
    ub = a.diagnostics["uniform_band"]
    assert ub["critical_value"] > ub["pointwise_critical_value"]
    t0 = a.term("rel_time=0")
    lo, hi = t0.diagnostics["uniform_band"]
    assert lo < t0.ci_low < t0.estimate < t0.ci_high < hi
    assert a.diagnostics["covariates"] == ["ln_size", "lnage", "roa"]
    assert np.isfinite(a.main.std_error) and a.main.std_error > 0
