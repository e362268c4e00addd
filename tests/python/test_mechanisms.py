"""Mechanisms estimation layer on hand-made data: the permutation p-value (known answers), the fast
FE coefficient used in each reshuffle (against pyfixest, an explicit dummy regression and the former
dense algorithm, on row masks with absent levels and singletons), the --permutation-draws override
from the CLI to the stored diagnostics, the median-split rule, the ols_split estimator,
Policy × ln(Sale), the extra-mart join, and the synthetic generator's planted mechanisms. The SQL
constructions (similarity, widths, WW, HHI) are tested by hand in dbt unit tests
(models/intermediate/mechanisms/_int_mechanisms__unit_tests.yml), which test_dbt_unit_tests runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.mechanisms import median_split
from keytech.estimation.inference.permutation import fe_ols_coefficient, permutation_test
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel
from _panels import firm_year_cells

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


def _city_year_random(df: pd.DataFrame, seed: int = 5) -> np.ndarray:
    """Random values constant within city-year (technology similarity is a city-year variable)."""
    block = df.groupby(["city_code", "year"]).ngroup().to_numpy()
    return np.random.default_rng(seed).random(block.max() + 1)[block]


def test_ols_split_groups_and_permutation(sim):
    reg = load_registry()
    df = sim.assign(similarity_ipc4=_city_year_random(sim))  # a city-year variable, as in the marts
    base = reg.get("table5_col2")
    opts = {**base.options, "permutation": {"draws": 9, "seed": 1}}
    ctx = RunContext()
    hi = run_spec(dataclasses.replace(base, options=opts), df, ctx)[0]
    lo = run_spec(reg.get("table5_col1"), df, ctx)[0]
    n = df.dropna(subset=[base.outcome, *base.regressors, *base.fixed_effects, "city_code"]).shape[0]
    split = hi.diagnostics["split"]
    # the median cuts between city-year blocks (firms of a city-year share the value)
    assert split["n_high"] + split["n_low"] == n
    assert abs(split["n_high"] - split["n_low"]) <= df.groupby(["city_code", "year"]).size().max()
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


# --------------------------------------------------------------------------- fast path of the permutation test

FAST_TOL = 1e-8  # FE OLS on a row mask vs on the subsample's frame and vs the former dense algorithm


def _fe_panel(seed: int = 11, n_firms: int = 160) -> pd.DataFrame:
    """An unbalanced firm-year panel with firm, industry×year and province×year cells: spells of
    1-10 years (so subsamples have singletons and miss levels), a few firms that move province or
    change industry (so the cells' blocks are not one per industry or province)."""
    rng = np.random.default_rng(seed)
    df = firm_year_cells(rng, n_firms)
    df["city"] = df["prov"].astype(str) + "_" + (df["stkcd"].str[-1].astype(int) % 3).astype(str)
    n = len(df)
    firm_effect = rng.normal(0, 1, n_firms)[df["stkcd"].astype(int)]
    df["policy"] = (rng.random(n) < 0.4).astype(float)
    df["x1"], df["x2"] = rng.normal(size=n), rng.normal(size=n)
    df["y"] = 0.3 * df["policy"] + 0.5 * df["x1"] + firm_effect + 0.2 * df["ind"] + rng.normal(0, 1, n)
    return df


FE3 = ["stkcd", "ind_year", "prov_year"]
RHS = ["policy", "x1", "x2"]


def _dummy_ols(df: pd.DataFrame, fes: list[str]) -> float:
    """The policy coefficient from y on [X, all FE dummies] by least squares, singletons dropped."""
    df = df[~pnl.singleton_mask(df, fes)] if fes else df
    dummies = [pd.get_dummies(df[c]).to_numpy(float) for c in fes] or [np.ones((len(df), 1))]
    Z = np.column_stack([df[RHS].to_numpy(float), *dummies])
    return float(np.linalg.lstsq(Z, df["y"].to_numpy(float), rcond=None)[0][0])


def _dense_ridge_reference(df: pd.DataFrame, fes: list[str], ridge: float = 1e-10) -> float:
    """The algorithm fe_ols_coefficient had before the block elimination: the subsample's own FE
    codes, the whole Schur complement S (with the same ridge) factorised densely."""
    import scipy.linalg as sla
    import scipy.sparse as sp

    df = df[~pnl.singleton_mask(df, fes)] if fes else df
    V = df[["y", *RHS]].to_numpy(float)
    if not fes:
        V = V - V.mean(axis=0)
        M = V.T @ V
    else:
        n = len(df)
        mats = [sp.csr_matrix((np.ones(n), (np.arange(n), pd.factorize(df[c])[0]))) for c in fes]
        big = int(np.argmax([m.shape[1] for m in mats]))
        D1 = mats[big]
        a = np.asarray(D1.sum(axis=0)).ravel()
        D1V = np.asarray(D1.T @ V)
        M = V.T @ V - D1V.T @ (D1V / a[:, None])
        others = [m for j, m in enumerate(mats) if j != big]
        if others:
            D2 = sp.hstack(others).tocsr()
            W = (D2.T @ D1).tocsr()
            S = (D2.T @ D2).toarray() - (W @ sp.diags(1.0 / a) @ W.T).toarray()
            S[np.diag_indices_from(S)] += ridge * max(float(np.mean(np.diag(S))), 1.0)
            R = np.asarray(D2.T @ V) - W @ (D1V / a[:, None])
            M -= R.T @ sla.cho_solve(sla.cho_factor(S), R)
    return float(np.linalg.lstsq(M[1:, 1:], M[1:, 0], rcond=None)[0][0])


@pytest.mark.parametrize("fes", [FE3, ["stkcd", "year"], ["stkcd"], []])
def test_fast_path_on_row_masks_equals_dense_algorithm_and_dummy_regression(fes):
    """Random subsamples (some FE levels absent, singletons present): the mask path equals the
    frame path and the former dense algorithm to 1e-8, and an explicit dummy regression to the
    ridge's precision (COEF_TOL)."""
    data = _fe_panel()
    coef = fe_ols_coefficient("y", RHS, fes)
    fast = coef.prepare(data)
    rng = np.random.default_rng(4)
    saw_absent = saw_singletons = False
    for share in (0.35, 0.5, 0.7):
        for _ in range(4):
            mask = rng.random(len(data)) < share
            sub = data[mask]
            got = fast(mask)
            assert got == pytest.approx(_dense_ridge_reference(sub, fes), rel=FAST_TOL, abs=FAST_TOL)
            assert got == pytest.approx(coef(sub), rel=FAST_TOL, abs=FAST_TOL)  # codes of the subsample only
            assert got == pytest.approx(_dummy_ols(sub, fes), rel=COEF_TOL, abs=FAST_TOL)
            saw_absent |= any(sub[c].nunique() < data[c].nunique() for c in fes)
            saw_singletons |= bool(fes) and pnl.singleton_mask(sub, fes).any()
    assert (saw_absent and saw_singletons) or not fes


def test_fast_path_equals_pyfixest_on_a_subsample():
    import pyfixest as pf

    data = _fe_panel(seed=2, n_firms=120)
    mask = np.random.default_rng(8).random(len(data)) < 0.5
    fit = pf.feols(f"y ~ {' + '.join(RHS)} | {' + '.join(FE3)}", data=data[mask].reset_index(drop=True),
                   fixef_rm="singleton", demeaner=pf.LsmrDemeaner(fixef_atol=1e-12, fixef_btol=1e-12))
    fast = fe_ols_coefficient("y", RHS, FE3).prepare(data)(mask)
    assert fast == pytest.approx(float(fit.coef()["policy"]), rel=COEF_TOL, abs=FAST_TOL)


def test_fast_path_too_small_subsample_is_nan():
    data = _fe_panel()
    fast = fe_ols_coefficient("y", RHS, FE3).prepare(data)
    mask = np.zeros(len(data), bool)
    mask[:4] = True
    assert np.isnan(fast(mask))


@pytest.mark.parametrize("permute_by", [None, "city"])
def test_permutation_fast_path_gives_the_slow_paths_p_values(permute_by):
    data = _fe_panel(seed=5, n_firms=90)
    if permute_by:  # label constant within city
        labels = data["city"].isin(sorted(data["city"].unique())[::2]).to_numpy()
    else:
        labels = np.random.default_rng(1).random(len(data)) < 0.5
    coef = fe_ols_coefficient("y", RHS, FE3)
    fast = permutation_test(data, labels, coef, draws=25, seed=3, permute_by=permute_by)
    slow = permutation_test(data, labels, lambda d: coef(d), draws=25, seed=3, permute_by=permute_by)
    assert fast["exact_enumeration"] == slow["exact_enumeration"]
    for key in ("p_one_sided", "p_two_sided", "n_draws", "n_draws_failed", "seed", "permute_by"):
        assert fast[key] == slow[key], key
    assert fast["difference"] == pytest.approx(slow["difference"], rel=FAST_TOL, abs=FAST_TOL)
    for q, v in slow["draws_quantiles"].items():
        assert fast["draws_quantiles"][q] == pytest.approx(v, rel=FAST_TOL, abs=FAST_TOL)


def test_permutation_fast_path_exact_enumeration():
    # 6 cities, 3 labelled: C(6, 3) = 20 labellings <= draws, enumerated through the mask path
    data = _fe_panel(seed=6, n_firms=90)
    data = data[data["city"].isin(sorted(data["city"].unique())[:6])].reset_index(drop=True)
    labels = data["city"].isin(sorted(data["city"].unique())[:3]).to_numpy()
    coef = fe_ols_coefficient("y", RHS, FE3)
    fast = permutation_test(data, labels, coef, draws=50, permute_by="city")
    slow = permutation_test(data, labels, lambda d: coef(d), draws=50, permute_by="city")
    assert fast["exact_enumeration"] and fast["n_draws"] + fast["n_draws_failed"] == 20
    assert (fast["p_one_sided"], fast["p_two_sided"]) == (slow["p_one_sided"], slow["p_two_sided"])


# --------------------------------------------------------------------------- --permutation-draws


def test_permutation_draws_override_in_run_context(sim):
    reg = load_registry()
    df = sim.assign(similarity_ipc4=_city_year_random(sim))  # a city-year variable, as in the marts
    hi = run_spec(reg.get("table5_col2"), df, RunContext(permutation_draws=7))[0]
    assert hi.diagnostics["permutation"]["n_draws"] == 7


def test_cli_permutation_draws_reaches_the_stored_diagnostics(tmp_path, monkeypatch):
    """`keytech estimate --permutation-draws 7` → run_estimation → RunContext → fit_split → results.estimates."""
    import json

    import duckdb

    from keytech import cli, estimation, tables
    from keytech.estimation.orchestration import store

    monkeypatch.setenv("KEYTECH_RAW_DIR", str(tmp_path / "raw-none"))
    monkeypatch.setenv("KEYTECH_OUTPUT_DIR", str(tmp_path / "output"))
    db = tmp_path / "warehouse.duckdb"
    panel = simulate_panel(seed=3, n_cities=30, firms_per_city=5.0, beta_key=0.3)
    mech = panel[["stkcd", "year"]].assign(similarity_ipc4=_city_year_random(panel))
    with duckdb.connect(str(db)) as con:
        con.execute("create schema marts")
        con.register("p", panel)
        con.execute("create table marts.rpt_analysis_panel as select * from p")
        con.register("m", mech)
        con.execute("create table marts.fct_firm_year_mechanisms as select * from m")
    monkeypatch.setenv("KEYTECH_DB", str(db))

    args = cli.build_parser().parse_args(["estimate", "--only", "table5_col2", "--force", "--permutation-draws", "7"])
    assert args.permutation_draws == 7
    assert cli.build_parser().parse_args(["estimate"]).permutation_draws is None  # the registry's draws
    calls = {}
    real = estimation.run_estimation

    def run(**kwargs):
        calls.update(kwargs)
        return real(**{**kwargs, "render": None}, db_path=db)  # no tables

    monkeypatch.setattr(estimation, "run_estimation", run)
    monkeypatch.setattr(tables, "table3_vs_paper", lambda run_id, synthetic: "")
    assert cli.cmd_estimate(args) == 0
    assert calls["permutation_draws"] == 7
    est = store.read_estimates(db)
    row = est[(est["spec_id"] == "table5_col2") & (est["term"] == "policy")].iloc[0]
    assert json.loads(row["diagnostics_json"])["permutation"]["n_draws"] == 7


def test_joint_split_cells_partition_the_sample_and_equal_a_plain_ols_on_the_cell(sim):
    """Issue 11 §4 (het_visit_similarity_* / het_standard_similarity_*): each cell of the joint
    median split equals a plain column-5 OLS on the rows picked by hand (each variable at its own
    median over the same complete-case rows), and the four cells partition those rows."""
    import pyfixest as pf

    rng = np.random.default_rng(9)
    df = sim.assign(visit_count=rng.poisson(2.0, len(sim)).astype(float),
                    similarity_ipc4=rng.random(len(sim)))
    reg = load_registry()
    ctx = RunContext()
    base = reg.get("table3_col5")
    elig = df.dropna(subset=[base.outcome, *base.regressors, *base.fixed_effects, "city_code",
                             "visit_count", "similarity_ipc4"])
    v_hi = (median_split(elig["visit_count"])[0] == 1).to_numpy()
    s_hi = elig["similarity_ipc4"].to_numpy() > np.median(elig["similarity_ipc4"])
    n_cells = 0
    for a, va in (("high", v_hi), ("low", ~v_hi)):
        for b, sb in (("high", s_hi), ("low", ~s_hi)):
            spec = reg.get(f"het_visit_similarity_{a}_{b}")
            res = run_spec(spec, df, ctx)[0]
            cell = elig.loc[va & sb]
            assert res.diagnostics["split"]["n_cell"] == len(cell)
            n_cells += len(cell)
            fit = pf.feols(f"{base.outcome} ~ {' + '.join(base.regressors)} | {' + '.join(base.fixed_effects)}",
                           data=cell, vcov={"CRV1": "city_code"}, fixef_tol=1e-12)
            assert res.main.estimate == pytest.approx(float(fit.coef()["policy"]), rel=1e-6)
            assert res.nobs == fit._N
    assert n_cells == len(elig)
