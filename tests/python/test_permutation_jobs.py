"""Parallel draws of the permutation test (``jobs``, ``keytech estimate --jobs``; issue 17): the
draws computed by forked workers are bit-identical to the serial loop's — differences d*, p-values,
quantiles — and the workers really are other processes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.inference import permutation as perm
from keytech.estimation.inference.permutation import fe_ols_coefficient, permutation_tests
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel

from test_mechanisms import FE3, RHS, _city_year_random, _fe_panel

_TEST_RESULT = perm._test_result
needs_fork = pytest.mark.skipif(not perm._can_fork(), reason="no fork start method on this platform")


def _draws_of(monkeypatch, **kwargs) -> tuple[list[dict], list[np.ndarray]]:
    """The tests' results and the d* arrays handed to _test_result (every draw, in order)."""
    seen = []
    real = _TEST_RESULT

    def keep(d_obs, d_star, *args, **kw):
        seen.append(np.array(d_star, copy=True))
        return real(d_obs, d_star, *args, **kw)

    monkeypatch.setattr(perm, "_test_result", keep)
    return permutation_tests(**kwargs), seen


@needs_fork
@pytest.mark.parametrize("permute_by", [None, "city"])
@pytest.mark.parametrize("outcomes", [["y"], ["y", "y2"]])
def test_jobs_give_bit_identical_draws(monkeypatch, permute_by, outcomes):
    data = _fe_panel(seed=5, n_firms=90)
    data["y2"] = data["y"] * 0.5 + np.random.default_rng(2).normal(size=len(data))
    if permute_by:  # label constant within city
        labels = data["city"].isin(sorted(data["city"].unique())[::2]).to_numpy()
    else:
        labels = np.random.default_rng(1).random(len(data)) < 0.5
    y = outcomes[0] if len(outcomes) == 1 else outcomes
    runs = {}
    for jobs in (1, 2, 3):
        coef = fe_ols_coefficient(y, RHS, FE3)
        runs[jobs] = _draws_of(monkeypatch, data=data, labels=labels, coef_fn=coef, draws=23, seed=3,
                               permute_by=permute_by, jobs=jobs)
    (res1, d1) = runs[1]
    assert len(d1) == len(outcomes) and all(len(d) == 23 for d in d1)
    assert np.isfinite(np.concatenate(d1)).all()
    for jobs in (2, 3):
        res, d = runs[jobs]
        assert res == res1  # every field: difference, p-values, quantiles, counts
        for a, b in zip(d1, d):
            assert np.array_equal(a, b)  # bit for bit


@needs_fork
def test_jobs_with_a_plain_function_and_failed_draws(monkeypatch):
    """A coef_fn without prepare (frame subsets) and draws that fail (NaN) behave as serially."""
    data = _fe_panel(seed=7, n_firms=40)
    labels = np.random.default_rng(3).random(len(data)) < 0.5

    def coef(df):  # fails on some subsets (a function of their first rows), not on all
        return float("nan") if int(df.index[:5].to_numpy().sum()) % 4 == 0 else float(df["y"].mean())

    res1, d1 = _draws_of(monkeypatch, data=data, labels=labels, coef_fn=coef, draws=30, seed=9, jobs=1)
    res2, d2 = _draws_of(monkeypatch, data=data, labels=labels, coef_fn=coef, draws=30, seed=9, jobs=2)
    assert 0 < res1[0]["n_draws_failed"] < 30
    assert repr(res1) == repr(res2) and np.array_equal(d1[0], d2[0], equal_nan=True)


@needs_fork
def test_jobs_run_in_other_processes():
    """The pool is used: each draw's value is the pid of the process that computed it."""
    unit = np.arange(4)
    unit_draws = np.array([[True, False, True, False]] * 16)

    def on_rows(mask):
        return float(os.getpid()) if mask[0] else 0.0

    serial = perm._draw_differences(on_rows, unit_draws, unit, 1, jobs=1)
    assert set(serial[:, 0]) == {float(os.getpid())}
    pooled = perm._draw_differences(on_rows, unit_draws, unit, 1, jobs=2)
    pids = set(pooled[:, 0])
    # a worker may take every chunk when the other starts late: one or two pids, never this one
    assert float(os.getpid()) not in pids and 1 <= len(pids) <= 2
    assert perm._FORK_TASK is None  # cleared after the pool


def test_jobs_must_be_positive():
    data = _fe_panel(seed=7, n_firms=40)
    labels = np.random.default_rng(3).random(len(data)) < 0.5
    with pytest.raises(ValueError, match="jobs"):
        permutation_tests(data, labels, lambda d: 0.0, draws=5, jobs=0)


@needs_fork
def test_run_context_jobs_reach_the_split_spec():
    """table5_col2 through run_spec: RunContext(jobs=2) stores the same permutation diagnostics."""
    sim = pnl.prepare_panel(simulate_panel(seed=3, n_cities=30, firms_per_city=5.0, beta_key=0.3))
    df = sim.assign(similarity_ipc4=_city_year_random(sim))
    spec = load_registry().get("table5_col2")
    one = run_spec(spec, df, RunContext(permutation_draws=15))[0].diagnostics["permutation"]
    two = run_spec(spec, df, RunContext(permutation_draws=15, jobs=2))[0].diagnostics["permutation"]
    assert one["n_draws"] == 15 and one == two


def test_cli_jobs_option_reaches_run_estimation(monkeypatch):
    from keytech import cli, estimation

    assert cli.build_parser().parse_args(["estimate"]).jobs == 1
    args = cli.build_parser().parse_args(["estimate", "--only", "table5_col2", "--jobs", "2"])
    calls = {}

    class Stop(Exception):
        pass

    def run(**kwargs):
        calls.update(kwargs)
        raise Stop

    monkeypatch.setattr(estimation, "run_estimation", run)
    with pytest.raises(Stop):
        cli.cmd_estimate(args)
    assert calls["jobs"] == 2
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["estimate", "--jobs", "0"])
