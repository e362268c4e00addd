"""Multiple-testing adjusted p-values (issue 14 item 2; keytech.estimation.inference.multiple_testing, specs mt_*).

(1) Romano–Wolf and Holm equal hand computations on a three-hypothesis family; (2) Romano–Wolf
equals pyfixest's step-down routine (``_get_rwolf_pval``, the one behind ``pf.rwolf``) and Holm
equals statsmodels' ``multipletests(method='holm')`` on random families; (3) the registry family
``mt_het_fc`` runs: member coefficients are the member specs' own, adjusted >= raw, seeded.
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
from keytech.estimation.inference.multiple_testing import holm, romano_wolf, single_bootstrap_p
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def test_hand_family():
    # three hypotheses, four bootstrap draws
    t = np.array([2.5, -1.0, 3.0])
    tb = np.array([[1.0, 0.5, 2.0],
                   [3.1, 0.2, 0.1],
                   [0.3, 1.5, 0.4],
                   [2.6, 0.9, 3.5]])
    # step 1 (|t| = 3.0, hyp 3): max over all = [2.0, 3.1, 1.5, 3.5] -> #>=3.0 = 2 -> (2+1)/5 = 0.6
    # step 2 (|t| = 2.5, hyp 1): max over {1, 2} = [1.0, 3.1, 1.5, 2.6] -> #>=2.5 = 2 -> 0.6
    # step 3 (|t| = 1.0, hyp 2): max over {2} = [0.5, 0.2, 1.5, 0.9] -> #>=1.0 = 1 -> 0.4 -> monotone 0.6
    np.testing.assert_allclose(romano_wolf(t, tb), [0.6, 0.6, 0.6])
    # single-hypothesis: hyp1 #>=2.5 = 2 -> 0.6; hyp2 #>=1 = 1 -> 0.4; hyp3 #>=3 = 1 -> 0.4
    np.testing.assert_allclose(single_bootstrap_p(t, tb), [0.6, 0.4, 0.4])
    # Holm: sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, 1*0.04 -> max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])


def test_equal_to_pyfixest_and_statsmodels_on_random_families():
    from pyfixest.estimation.post_estimation.multcomp import _get_rwolf_pval
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for S, B in [(2, 50), (5, 199), (9, 999)]:
        t = rng.normal(0, 2.5, S)
        tb = rng.standard_t(6, size=(B, S)) @ np.linalg.cholesky(0.5 * np.eye(S) + 0.5).T
        np.testing.assert_allclose(romano_wolf(t, tb), _get_rwolf_pval(t.copy(), tb.copy()), atol=1e-15)
        p = rng.uniform(0, 0.2, S)
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], atol=1e-15)
        assert np.all(romano_wolf(t, tb) >= single_bootstrap_p(t, tb) - 1e-15)


@pytest.fixture(scope="module")
def sim() -> pd.DataFrame:
    df = pnl.prepare_panel(simulate_panel(seed=3, n_cities=30, n_provinces=8, firms_per_city=4.0, beta_key=0.3))
    return df.assign(fc_index=np.random.default_rng(7).normal(size=len(df)))


def test_registry_family_het_fc(sim):
    reg = load_registry()
    spec = reg.get("mt_het_fc")
    spec = dataclasses.replace(spec, options={**spec.options, "draws": 199})
    a = run_spec(spec, sim, RunContext(seed=9))[0]
    b = run_spec(spec, sim, RunContext(seed=9))[0]
    members = spec.options["members"]
    assert [t.term for t in a.terms] == members
    for t in a.terms:
        own = run_spec(reg.get(t.term), sim, RunContext(seed=9, permutation_draws=1))[0].main
        assert t.estimate == pytest.approx(own.estimate, rel=1e-10)
        d = t.diagnostics
        assert d["raw_p_value"] == pytest.approx(own.p_value, rel=1e-12)
        assert d["holm_p_value"] >= d["raw_p_value"] - 1e-15
        assert t.p_value == d["romano_wolf_p_value"] >= d["raw_bootstrap_p_value"] - 1e-15
        assert b.term(t.term).p_value == t.p_value  # same seed, same draws
    np.testing.assert_allclose([t.diagnostics["holm_p_value"] for t in a.terms],
                               holm([t.diagnostics["raw_p_value"] for t in a.terms]))


def test_members_estimated_earlier_in_the_run_are_reused(sim):
    """Issue 17: a member already in RunContext.shared (as the runner stores every spec's result)
    is not re-estimated; the family's numbers are those of a fresh run. A stored result of another
    panel or of a modified spec is not used."""
    reg = load_registry()
    spec = reg.get("mt_het_fc")
    spec = dataclasses.replace(spec, options={**spec.options, "draws": 199})
    fresh = run_spec(spec, sim, RunContext(seed=9))[0]
    assert fresh.diagnostics["members_taken_from_this_run"] == []
    ctx = RunContext(seed=9)
    for m in spec.options["members"]:
        ms = reg.get(m)
        ctx.shared[("spec_result", m)] = {"spec": ms, "df": sim, "result": run_spec(ms, sim, RunContext(seed=9))[0]}
    reused = run_spec(spec, sim, ctx)[0]
    assert reused.diagnostics["members_taken_from_this_run"] == spec.options["members"]
    for a, b in zip(fresh.terms, reused.terms):
        assert (a.term, a.estimate, a.std_error, a.p_value, a.ci_low, a.ci_high) == \
            (b.term, b.estimate, b.std_error, b.p_value, b.ci_low, b.ci_high)
        assert a.diagnostics == b.diagnostics
    assert fresh.nobs == reused.nobs
    # another panel object, or a spec that differs from the registry's: estimated afresh
    first = spec.options["members"][0]
    ctx.shared[("spec_result", first)]["df"] = sim.copy()
    ctx.shared[("spec_result", spec.options["members"][1])]["spec"] = dataclasses.replace(
        reg.get(spec.options["members"][1]), fixef_tol=1e-6)
    again = run_spec(spec, sim, ctx)[0]
    assert again.diagnostics["members_taken_from_this_run"] == spec.options["members"][2:]
