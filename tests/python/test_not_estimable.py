"""A spec whose sample leaves no residual degrees of freedom is "not estimable": named, stored
with term '(not estimable)', shown as such, and not a failure of the run (keytech estimate exits 0).

On the demo data the above-median patent-subsidy cell (median 0) has 355 observations after
singleton removal for 356 parameters under the column-5 fixed effects; before this rule pyfixest
failed inside its Wald step ("SVD did not converge") and `make demo` exited 1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from keytech.estimation import load_registry, run_estimation
from keytech.estimation.orchestration import store
from keytech.estimation.core.results import NotEstimable
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.core.panel import sample_size_and_parameters
from keytech.estimation.orchestration.registry import Spec, Vcov

SEED = 99


def _spec(**kw) -> Spec:
    base = load_registry().get("table3_col1")
    return dataclasses.replace(base, id="tiny", **kw)


def test_parameter_count_equals_a_hand_count_with_singletons_removed():
    # firms a, b over two years and firm c once (a singleton firm, removed; then every year
    # still has two rows, so nothing else goes)
    df = pd.DataFrame({
        "stkcd": ["a", "a", "b", "b", "c"], "year": [2015, 2016, 2015, 2016, 2015],
        "ln_apply_inv_zl": [0.1, 0.4, 0.2, 0.9, 0.3], "policy": [0, 1, 0, 0, 1],
        "city_code": ["1", "1", "2", "2", "3"],
    })
    spec = _spec(treatment="policy", controls=(), extra_regressors=(), fixed_effects=("stkcd", "year"),
                 fixef_rm="singleton", vcov=Vcov("hetero"))
    n, k = sample_size_and_parameters(spec, df, ["policy"], ("stkcd", "year"))
    # 4 rows after dropping firm c; 1 regressor + 2 firms + 2 years − (2 − 1) = 4 parameters
    assert (n, k) == (4, 4)
    # without singleton removal firm c stays: 5 rows, 1 + 3 + 2 − 1 = 5
    n, k = sample_size_and_parameters(dataclasses.replace(spec, fixef_rm="none"), df, ["policy"], ("stkcd", "year"))
    assert (n, k) == (5, 5)
    # no fixed effects: regressors + intercept
    assert sample_size_and_parameters(spec, df, ["policy"], ()) == (5, 2)


def _tiny_panel() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "stkcd": np.repeat([f"00000{i}" for i in range(4)], 2), "year": np.tile([2015, 2016], 4),
        "ln_apply_inv_zl": rng.normal(size=8), "policy": [0, 1, 0, 1, 0, 0, 0, 0],
        "x": rng.normal(size=8), "z": rng.normal(size=8), "city_code": np.repeat(["1", "2", "3", "4"], 2),
        "province_code": "11", "industry_code": "C39",
    })


def _tiny_spec(controls: tuple[str, ...]) -> Spec:
    return _spec(treatment="policy", controls=controls, extra_regressors=(), fixed_effects=("stkcd", "year"),
                 vcov=Vcov("hetero"), sample="all", sample_query="")


def test_a_sample_with_no_residual_degrees_of_freedom_raises_not_estimable():
    df = _tiny_panel()
    # 8 rows, 3 regressors + 4 firms + 2 years − 1 = 8 parameters: pyfixest's variance step fails
    ctx = RunContext(placebo_draws=0, seed=SEED, progress=False)
    with pytest.raises(NotEstimable, match="8 observations .* for 8 parameters"):
        run_spec(_tiny_spec(("x", "z")), df, ctx)
    # one regressor fewer leaves one residual degree of freedom: estimable
    ok = run_spec(_tiny_spec(("x",)), df, ctx)
    assert ok[0].nobs == 8 and np.isfinite(ok[0].main.estimate)


def test_the_run_records_not_estimable_without_failing(tmp_path: Path):
    import duckdb

    from keytech import warehouse
    from keytech.estimation.orchestration.runner import run_outcome

    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create schema marts")
        con.register("p", _tiny_panel())
        con.execute("create table marts.rpt_analysis_panel as select * from p")
        con.execute("create schema results")
        con.execute("create table results.check_runs (check_run_id text, checked_at timestamp, passed boolean, "
                    "data_fingerprint text, details_json text)")
        con.execute("insert into results.check_runs values ('ok', timestamp '2030-01-01', true, ?, '{}')",
                    [warehouse.mart_fingerprint(con)])
    reg = load_registry()
    specs = (dataclasses.replace(_tiny_spec(("x",)), id="tiny_ok"), dataclasses.replace(_tiny_spec(("x", "z")), id="tiny_too_many"))
    rid = run_estimation(["tiny_ok", "tiny_too_many"], False, 0, SEED, db_path=db, progress=False,
                         render=False, registry=dataclasses.replace(reg, specs=specs))
    outcome = run_outcome(rid, db)
    assert outcome["failures"] == {}
    assert list(outcome["not_estimable"]) == ["tiny_too_many"]
    est = store.read_estimates(db, rid)
    assert list(est.loc[est["spec_id"] == "tiny_too_many", "term"]) == ["(not estimable)"]
    assert np.isfinite(est.loc[(est["spec_id"] == "tiny_ok") & (est["term"] == "policy"), "estimate"]).all()
