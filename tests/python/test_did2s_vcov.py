"""did2s's variance with a rank-deficient first stage (found 2026-12-04).

Gardner's GMM-corrected variance needs ``(X10'X10)^-1``, the untreated rows' first-stage Gram
matrix. pyfixest (0.60) solves it with a sparse LU, but with firm, industry-year and province-year
dummies of every level that matrix is singular (the demo's: 895 columns of rank 773), and the LU's
near-zero pivots made the demo's standard error depend on the BLAS kernels (0.1993 against 0.1981).
``did2s.gardner_vcov`` uses a generalized inverse. Independent checks: on a full-rank first stage
it equals pyfixest's ``_did2s_vcov``; on a rank-deficient one it equals a dense computation with
the Moore–Penrose pseudo-inverse and a loop over clusters; and ``fit_did2s`` reports its square root.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.did.common import identified_rows
from keytech.estimation.did.did2s import gardner_vcov
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import load_registry

COVARIATES = ["x1", "x2", "city_gdp", "foreign", "age"]
FE3 = ["stkcd", "ind_year", "prov_year"]


def _panel(seed: int = 2, n_firms: int = 100, n_industries: int = 30, n_provinces: int = 25) -> pd.DataFrame:
    """Firms 2010-2017 (a tenth of the rows missing), staggered absorbing adoption (2013-2015 or
    never), industry and province cells that cut across each other and a few firms that move
    province: firm, industry-year and province-year dummies are collinear beyond their structure.
    x1 on a scale of 1e4 (the Gram matrix's conditioning)."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_firms):
        first = rng.choice([2013, 2014, 2015, 9999], p=[0.2, 0.2, 0.2, 0.4])
        ind, prov = f % n_industries, int(rng.integers(n_provinces))
        for year in range(2010, 2018):
            if rng.random() < 0.1:
                continue
            prov_now = (prov + 1) % n_provinces if f % 11 == 0 and year >= 2014 else prov
            rows.append((f"{f:03d}", year, ind, prov_now, float(year >= first)))
    df = pd.DataFrame(rows, columns=["stkcd", "year", "ind", "prov", "policy"])
    df["ind_year"] = df["ind"] * 10000 + df["year"]
    df["prov_year"] = df["prov"] * 10000 + df["year"]
    n = len(df)
    df["x1"], df["x2"] = rng.normal(size=n) * 1e4, rng.normal(size=n)
    # a city-level control of a province with one city: a function of the province-year cell, so
    # collinear with the province-year dummies (the first stage drops it; X1 keeps it)
    cells = sorted(df["prov_year"].unique())
    df["city_gdp"] = df["prov_year"].map(dict(zip(cells, rng.normal(size=len(cells))))) * 1e3
    # a firm constant (a foreign-ownership flag: collinear with the firm dummies) and a firm's age
    # (year - founding year: collinear with firm and year dummies together)
    df["foreign"] = (rng.random(n_firms) < 0.3).astype(float)[df["stkcd"].astype(int)]
    df["age"] = df["year"] - rng.integers(1980, 2005, n_firms)[df["stkcd"].astype(int)]
    firm_effect = rng.normal(size=n_firms)[df["stkcd"].astype(int)]
    df["y"] = 0.3 * df["policy"] + 5e-5 * df["x1"] + firm_effect + 0.1 * df["ind"] * (df["year"] - 2010) + rng.normal(size=n)
    return df


def _sample(fixed_effects: list[str], covariates: list[str] = COVARIATES, seed: int = 2) -> tuple[pd.DataFrame, dict]:
    """The untreated rows and the treated rows whose counterfactual is estimable, as fit_did2s keeps
    them."""
    df = _panel(seed)
    untreated = pnl.estimation_sample(df[df["policy"] == 0], ["y", *covariates], fixed_effects)
    treated = df[df["policy"] == 1]
    ok, info = identified_rows(untreated, treated, covariates, fixed_effects)
    sample = pd.concat([untreated, treated[ok]]).sort_index(kind="stable")
    return sample.assign(policy=sample["policy"].astype(int)), info


def _residuals(sample: pd.DataFrame, fixed_effects: list[str], covariates: list[str] = COVARIATES):
    did2s = importlib.import_module("pyfixest.did.did2s")
    data = sample.copy()
    first = f"~ {' + '.join(covariates)} | {' + '.join(fixed_effects)}"
    _, u1, u2 = did2s._did2s_estimate(data, "y", first, "~ policy", "policy")
    return data, first, np.asarray(u1, float), np.asarray(u2, float)


def _pseudo_inverse_vcov(data: pd.DataFrame, fixed_effects: list[str], u1, u2) -> float:
    """The formula with dense matrices: raw covariates and every FE level's dummy, the Moore–Penrose
    pseudo-inverse of X10'X10, one cluster (firm) at a time."""
    X1 = np.column_stack([data[COVARIATES].to_numpy(float)] + [pd.get_dummies(data[f]).to_numpy(float) for f in fixed_effects])
    untreated = (~data["policy"].astype(bool)).to_numpy()
    X10 = X1 * untreated[:, None]
    x2 = data["policy"].to_numpy(float)
    scale = 1.0 / np.sqrt(np.maximum((X10 * X10).sum(axis=0), 1e-300))  # equilibrate before pinv
    gram = (X10 * scale).T @ (X10 * scale)
    V = (x2 @ X1 * scale) @ np.linalg.pinv(gram, rcond=1e-10, hermitian=True) * scale
    vcov = 0.0
    for g in data["stkcd"].unique():
        idx = (data["stkcd"] == g).to_numpy()
        w = x2[idx] @ u2[idx] - V @ (X10[idx].T @ u1[idx])
        vcov += (w / (x2 @ x2)) ** 2
    return vcov


def test_full_rank_first_stage_equals_pyfixest():
    fes, covariates = ["stkcd", "year"], ["x1", "x2"]  # no covariate collinear with the dummies
    sample, _ = _sample(fes, covariates)
    # in the sample, the covariates and the firm and year dummies of every level have only the one
    # structural dependency (pyfixest's encoding drops a year level: its X10'X10 is regular, its
    # sparse LU exact)
    untreated = sample[sample["policy"] == 0]
    design = np.column_stack([untreated[covariates].to_numpy(float)]
                             + [pd.get_dummies(untreated[f]).to_numpy(float) for f in fes])
    assert np.linalg.matrix_rank(design) == design.shape[1] - 1
    data, first, u1, u2 = _residuals(sample, fes, covariates)
    estimation = importlib.import_module("pyfixest.did.estimation")
    want, g_want = estimation._did2s_vcov(data=data, yname="y", first_stage=first, second_stage="~ policy", treatment="policy",
                                          first_u=u1.copy(), second_u=u2.copy(), cluster="stkcd")
    got, g_got = gardner_vcov(data, "y", first, "~ policy", "policy", u1, u2, "stkcd", covariates=covariates, fixed_effects=fes)
    assert g_got == g_want == sample["stkcd"].nunique()
    assert got[0, 0] == pytest.approx(float(want[0, 0]), rel=1e-9)


def test_rank_deficient_first_stage_equals_the_pseudo_inverse():
    sample, info = _sample(FE3)
    assert info["null_dim"] > 2  # more than the two structural dependencies of three FE
    data, first, u1, u2 = _residuals(sample, FE3)
    got, _ = gardner_vcov(data, "y", first, "~ policy", "policy", u1, u2, "stkcd", covariates=COVARIATES, fixed_effects=FE3)
    assert got[0, 0] == pytest.approx(_pseudo_inverse_vcov(data, FE3, u1, u2), rel=1e-9)
    # the same with the rows in another order (the column choice follows the data, not the order)
    shuffled = data.sample(frac=1.0, random_state=5)
    position = data.index.get_indexer(shuffled.index)
    again, _ = gardner_vcov(shuffled, "y", first, "~ policy", "policy", u1[position], u2[position], "stkcd",
                            covariates=COVARIATES, fixed_effects=FE3)
    assert again[0, 0] == pytest.approx(got[0, 0], rel=1e-9)


def test_fit_did2s_reports_the_generalized_inverse_standard_error(monkeypatch):
    """fit_did2s's standard error is the square root of the pseudo-inverse formula on the residuals
    its two stages produced (pyfixest's own sparse LU gives a variance 42 % too large on this panel's
    first stage with covariates, NaN without them)."""
    import keytech.estimation.did.did2s as did2s

    seen = {}

    def recording(data, yname, first_stage, second_stage, treatment, first_u, second_u, cluster, weights=None, **design):
        seen.update(data=data.copy(), u1=np.array(first_u, float), u2=np.array(second_u, float), **design)
        return gardner_vcov(data, yname, first_stage, second_stage, treatment, first_u, second_u, cluster, weights, **design)

    monkeypatch.setattr(did2s, "gardner_vcov", recording)
    reg = load_registry()
    base = reg.get("robust_staggered_did2s")
    spec = dataclasses.replace(base, outcome="y", controls=tuple(COVARIATES), control_sets=(), fixed_effects=tuple(FE3),
                               vcov=dataclasses.replace(base.vcov, cluster=("stkcd",)))
    (result,) = run_spec(spec, _panel(), RunContext(fe_labels=reg.fe_labels))
    sample, _ = _sample(FE3)
    assert result.nobs == len(sample) == len(seen["data"])
    assert (seen["covariates"], seen["fixed_effects"]) == (COVARIATES, FE3)
    want = np.sqrt(_pseudo_inverse_vcov(seen["data"], FE3, seen["u1"], seen["u2"]))
    assert result.main.std_error == pytest.approx(want, rel=1e-9)
    assert "generalized inverse" in result.diagnostics["vcov"]
