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
from keytech.estimation.orchestration.registry import load_registry
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


# --------------------------------------------------------------------------- universal base period
# (issue 14 item 1) Reference: moderndid att_gt/aggte with base_period="universal" on mpdta, frozen by
# reference/make_cs_universal_reference.py in reference/cs_dr_universal_reference.csv, including the
# covariance of the event-time estimates from moderndid's event-time influence functions.


@pytest.mark.parametrize("control", ["nevertreated", "notyettreated"])
def test_mpdta_universal_base_equals_reference(mpdta, control):
    from keytech.estimation.did.cs_dr import vcov_from_if

    ref = pd.read_csv(REF / "cs_dr_universal_reference.csv")
    ref = ref.loc[ref["control_group"] == control]
    gt = group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], control, "universal")
    n = gt["n"]
    cells = gt["cells"]
    rg = ref.loc[ref["aggregation"] == "group_time"]
    assert len(cells) == len(rg) == 15  # 3 cohorts x 5 years, the reference cells t = g - 1 included
    for r in rg.itertuples():
        j = cells.index[(cells["g"] == r.g) & (cells["t"] == r.t)][0]
        assert cells.loc[j, "att"] == pytest.approx(r.att, abs=ATT_ATOL)
        se = se_from_if(gt["inf"][:, j], n)
        if np.isnan(r.se):  # the reference cell: ATT 0, no variance
            assert r.t == r.g - 1 and cells.loc[j, "reference"] and se == 0.0
        else:
            assert not cells.loc[j, "reference"] and se == pytest.approx(r.se, rel=SE_RTOL)
    agg = aggregate(gt)
    for name, (a, psi) in (("simple", agg["simple"]), ("dynamic_overall", agg["dynamic_overall"])):
        o = ref.loc[ref["aggregation"] == name].iloc[0]
        assert a == pytest.approx(o.att, abs=ATT_ATOL)
        assert se_from_if(psi, n) == pytest.approx(o.se, rel=SE_RTOL)
    dyn = ref.loc[ref["aggregation"] == "dynamic"]
    es = sorted(agg["dynamic"])
    assert es == sorted(int(e) for e in dyn["e"]) == [-4, -3, -2, -1, 0, 1, 2, 3]
    for r in dyn.itertuples():
        a, psi = agg["dynamic"][int(r.e)]
        assert a == pytest.approx(r.att, abs=ATT_ATOL)
        if np.isnan(r.se):
            assert r.e == -1 and a == 0.0 and not np.any(psi)
        else:
            assert se_from_if(psi, n) == pytest.approx(r.se, rel=SE_RTOL)
    # the full covariance of the event-time estimates (unclustered; and clusters of one unit)
    rv = ref.loc[ref["aggregation"] == "dynamic_vcov"].pivot(index="e", columns="e2", values="att")
    Psi = np.column_stack([agg["dynamic"][e][1] for e in es])
    V = vcov_from_if(Psi, n)
    scale = np.sqrt(np.outer(np.diag(V), np.diag(V))) + 1e-12
    assert np.max(np.abs(V - rv.loc[es, es].to_numpy()) / scale) < SE_RTOL
    np.testing.assert_allclose(vcov_from_if(Psi, n, np.arange(n)), V, rtol=1e-12, atol=1e-18)
    # post-treatment cells (base g - 1 in both) equal the varying-base run
    var = group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], control, "varying")
    vc = var["cells"]
    for j in vc.index[vc["post"]]:
        k = cells.index[(cells["g"] == vc.loc[j, "g"]) & (cells["t"] == vc.loc[j, "t"])][0]
        assert cells.loc[k, "att"] == vc.loc[j, "att"]
        np.testing.assert_array_equal(gt["inf"][:, k], var["inf"][:, j])


def test_vcov_from_if_clustered_by_hand(mpdta):
    from keytech.estimation.did.cs_dr import vcov_from_if

    gt = group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], "notyettreated", "universal")
    n = gt["n"]
    agg = aggregate(gt)
    es = [e for e in sorted(agg["dynamic"]) if e != -1]
    Psi = np.column_stack([agg["dynamic"][e][1] for e in es])
    state = np.unique(gt["units"] // 1000, return_inverse=True)[1]
    V = vcov_from_if(Psi, n, state)
    for a in range(len(es)):
        assert V[a, a] == pytest.approx(se_from_if(Psi[:, a], n, state) ** 2, rel=1e-12)
        for b in range(len(es)):
            by_hand = sum(Psi[state == s, a].sum() * Psi[state == s, b].sum() for s in np.unique(state)) / n**2
            assert V[a, b] == pytest.approx(by_hand, rel=1e-10, abs=1e-16)
    assert np.all(np.linalg.eigvalsh(V) > -1e-15)


def test_base_period_option_is_checked(mpdta):
    with pytest.raises(ValueError, match="base_period"):
        group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], "notyettreated", "fixed")


def test_registry_universal_spec_and_honest_did_input(sim, monkeypatch, tmp_path):
    """robust_staggered_drcs_event: the Honest DiD input (beta, sigma, number of pre periods) is the
    stored event-time estimates and the clustered IF covariance (diagonal = stored SE^2), and the
    post-period estimates equal the varying-base spec's."""
    import keytech.estimation.inference.honest_did as hd

    seen = {}
    real = hd.sensitivity

    def spy(beta, sigma, num_pre, num_post, **kw):
        seen.update(beta=np.array(beta), sigma=np.array(sigma), num_pre=num_pre, num_post=num_post)
        return real(beta, sigma, num_pre, num_post, **kw)

    monkeypatch.setattr(hd, "sensitivity", spy)
    reg = load_registry()
    spec = reg.get("robust_staggered_drcs_event")
    assert spec.options["base_period"] == "universal" and spec.options["honest_did"]
    spec = dataclasses.replace(spec, options={**spec.options, "band_draws": 99, "honest_did": {"mbar": [0.0, 1.0], "m": [0.0, 0.05]}})
    r = run_spec(spec, sim, RunContext(seed=5))[0]
    hdd = r.diagnostics["honest_did"]
    assert "error" not in hdd, hdd
    pre, post = hdd["pre_periods"], hdd["post_periods"]
    lo, hi = spec.options["honest_did_window"]
    assert pre == list(range(max(lo, min(pre)), -1)) and pre[0] >= lo and post == list(range(0, hi + 1))
    assert seen["num_pre"] == len(pre) and seen["num_post"] == len(post)
    ks = pre + post
    stored = {int(t.term.split("=")[1]): t for t in r.terms if t.term.startswith("rel_time=")}
    assert stored[-1].estimate == 0.0 and stored[-1].diagnostics.get("reference_period")
    np.testing.assert_array_equal(seen["beta"], [stored[k].estimate for k in ks])
    np.testing.assert_allclose(np.sqrt(np.diag(seen["sigma"])), [stored[k].std_error for k in ks], rtol=1e-12)
    vc = r.diagnostics["event_time_vcov"]
    idx = [vc["event_times"].index(k) for k in ks]
    np.testing.assert_allclose(seen["sigma"], np.array(vc["matrix"])[np.ix_(idx, idx)], rtol=1e-12)
    assert {x["restriction"] for x in hdd["rows"]} >= {"original", "SD", "RM", "SD_breakdown", "RM_breakdown"}
    orig = [x for x in hdd["rows"] if x["restriction"] == "original" and x["target"] == "first"][0]
    assert orig["lb"] == pytest.approx(stored[0].ci_low, rel=1e-9) and orig["ub"] == pytest.approx(stored[0].ci_high, rel=1e-9)
    # the varying-base spec: same simple ATT and post-period terms, no Honest DiD
    v = run_spec(dataclasses.replace(reg.get("robust_staggered_drcs"),
                                     options={**reg.get("robust_staggered_drcs").options, "band_draws": 99}),
                 sim, RunContext(seed=5))[0]
    assert v.main.estimate == r.main.estimate and v.main.std_error == r.main.std_error
    for k in post:
        assert v.term(f"rel_time={k}").estimate == pytest.approx(stored[k].estimate, abs=1e-12)
    assert "honest_did" not in v.diagnostics and "event_time_vcov" not in v.diagnostics

    # stored: rows in results.honest_did, the report block shows this spec's table and figure
    import datetime as dt

    from keytech.estimation.orchestration import store
    from keytech.report.inference import honest_did_block

    db = tmp_path / "w.duckdb"
    now = dt.datetime(2026, 1, 1)
    store.write_run(db, {"run_id": "r1", "started_at": now, "finished_at": now, "data_fingerprint": "x",
                         "code_version": "t", "parameters": {}}, [r])
    rows = store.read_honest_did(db, {"robust_staggered_drcs_event": "r1"})
    assert len(rows) == len(hdd["rows"])
    html = honest_did_block({"estimation": (store.read_estimates(db, "r1"), {"robust_staggered_drcs_event": "r1"}, {}, None),
                             "db": db})
    assert "id='honest-did-robust_staggered_drcs_event'" in html
    assert 'data-figure="honest-did-robust_staggered_drcs_event"' in html


def test_honest_did_needs_universal_base(mpdta):
    from keytech.estimation.did.cs_dr import honest_did_for_cs

    gt = group_time(mpdta, "lemp", "year", "countyreal", "first.treat", ["lpop"], "notyettreated", "varying")
    agg = aggregate(gt)
    es = sorted(agg["dynamic"])
    Psi = np.column_stack([agg["dynamic"][e][1] for e in es])
    out = honest_did_for_cs(agg, es, Psi, gt["n"], np.arange(gt["n"]), "varying", {"honest_did": True})
    assert "universal" in out["error"] and "rows" not in out
