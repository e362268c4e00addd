"""Issue 17: the wild bootstrap demeans a spec's regressors once (for the collinearity check and
for ``prepare``), and once per sample across the members of a multiple-testing family. The
numbers must be those of demeaning [y, x, Z] together for each step, to the bit: that rests on
the demeaner solving the columns of a matrix (of two or more columns) each on its own, which the
first test checks on the project's three-way fixed-effect structure (it would catch a pyfixest
release that solves columns jointly), and on the product seeing the same memory layout.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.demeaning import demean
from keytech.estimation.core.fitting import noncollinear_columns
from keytech.estimation.inference import wild_bootstrap as wb_module
from keytech.estimation.inference.wild_bootstrap import WildBootstrap, demeaned_regressors, prepare, prepare_spec
from keytech.estimation.orchestration.registry import load_registry
from _panels import cities_in_provinces_panel

FES = ["stkcd", "ind_year", "prov_year"]


def _panel(seed: int = 8) -> pd.DataFrame:
    """:func:`_panels.cities_in_provinces_panel` with 120 firms in 20 cities over 2010-2016, x2 on
    the scale of 10^3, a control that is constant within firm (collinear with the firm FE) and a
    second outcome ``y2``."""
    df = cities_in_provinces_panel(seed, n_firms=120, n_cities=20, cities_per_province=4, n_industries=5,
                                   years=range(2010, 2017))
    df["x2"] *= 1e3
    df["firm_constant"] = (df["stkcd"] % 9).astype(float)
    df["y2"] = -0.2 * df["policy"] + np.random.default_rng(seed + 1).normal(size=len(df))
    return df


def _same(a: WildBootstrap, b: WildBootstrap) -> None:
    for field in dataclasses.fields(WildBootstrap):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert np.array_equal(np.asarray(x), np.asarray(y)), field.name


def test_the_demeaner_solves_each_column_on_its_own():
    df = _panel()
    fe = pnl.factorize_columns(df, FES)
    M = df[["y", "policy", "x1", "x2", "firm_constant"]].to_numpy(float)
    together, _ = demean(M, fe, tol=1e-10)
    # (a single column goes another way in pyfixest, whose last bits can differ: on the paper-scale
    # Table 3 sample y alone was 1.8e-15 off; the wild bootstrap never relies on it)
    assert np.array_equal(together[:, :2], demean(M[:, :2], fe, tol=1e-10)[0])
    assert np.array_equal(together[:, 1:], demean(M[:, 1:], fe, tol=1e-10)[0])
    assert np.array_equal(together[:, [3, 1]], demean(M[:, [3, 1]], fe, tol=1e-10)[0])
    # and the result is not trivially exact: the firm-constant control is demeaned to ~0, not 0
    assert np.abs(together[:, 4]).max() < 1e-6


@pytest.mark.parametrize("fes", [FES, ["stkcd"], None])
def test_prepare_with_demeaned_regressors_is_bit_identical(fes):
    df = _panel()
    fe = None if fes is None else pnl.factorize_columns(df, fes)
    y, x = df["y"].to_numpy(float), df["policy"].to_numpy(float)
    Z = df[["x1", "x2"]].to_numpy(float)
    codes = fe if fe is not None else np.zeros((len(df), 1), dtype=np.int64)
    Xd = demean(np.column_stack([x, Z]), codes, tol=1e-10)[0]
    for method in ("direct", "lsmr"):
        if fe is None and method == "direct":
            continue
        before = prepare(y, x, Z, fe, df["city_code"].to_numpy(), method=method)
        after = prepare(y, x, Z, fe, df["city_code"].to_numpy(), method=method, demeaned_regressors=Xd)
        _same(before, after)


def test_noncollinear_columns_with_demeaned_regressors_is_the_same():
    df = _panel()
    fe = pnl.factorize_columns(df, FES)
    X = df[["policy", "x1", "firm_constant", "x2"]].to_numpy(float)
    keep = noncollinear_columns(X, fe, 1e-8)
    assert keep == [0, 1, 3]  # the firm-constant control goes
    assert noncollinear_columns(X, fe, 1e-8, demeaned=demeaned_regressors(X, fe, 1e-10)) == keep


def _prepare_spec_before(spec, data: pd.DataFrame) -> WildBootstrap:
    """prepare_spec as it was before the regressors were demeaned once: each step demeans."""
    sample = data.dropna(subset=list(dict.fromkeys([spec.outcome, *spec.regressors, *spec.fixed_effects,
                                                    spec.vcov.cluster[0]])))
    sample = sample.loc[~pnl.singleton_mask(sample, spec.fixed_effects)]
    fe = pnl.factorize_columns(sample, spec.fixed_effects)
    X = sample[list(spec.regressors)].to_numpy(float)
    keep = noncollinear_columns(X, fe, spec.fixef_tol)
    Z = X[:, [j for j in keep if j != 0]]
    return prepare(sample[spec.outcome].to_numpy(float), X[:, 0], Z, fe, sample[spec.vcov.cluster[0]].to_numpy())


def test_prepare_spec_shares_the_demeaned_regressors_and_gives_the_same_numbers():
    df = _panel()
    base = load_registry().get("table3_col5")
    spec = dataclasses.replace(base, treatment="policy", extra_regressors=(), controls=("x1", "firm_constant", "x2"),
                               fixed_effects=tuple(FES), fixef_rm="singleton", fixef_tol=1e-8)
    spec = dataclasses.replace(spec, vcov=dataclasses.replace(spec.vcov, kind="cluster", cluster=("city_code",)))
    wb_module._DEMEANED_REGRESSORS.clear()
    first = prepare_spec(dataclasses.replace(spec, outcome="y"), df)
    assert len(wb_module._DEMEANED_REGRESSORS) == 1
    # a second outcome on the same rows (a family member) reuses the demeaned regressors
    second = prepare_spec(dataclasses.replace(spec, outcome="y2"), df)
    assert len(wb_module._DEMEANED_REGRESSORS) == 1
    _same(first, _prepare_spec_before(dataclasses.replace(spec, outcome="y"), df))
    _same(second, _prepare_spec_before(dataclasses.replace(spec, outcome="y2"), df))
    # other rows are another entry, with their own numbers
    half = df.loc[df["stkcd"] % 2 == 0]
    third = prepare_spec(dataclasses.replace(spec, outcome="y"), half)
    assert len(wb_module._DEMEANED_REGRESSORS) == 2
    _same(third, _prepare_spec_before(dataclasses.replace(spec, outcome="y"), half))
    # every control collinear with the fixed effects: [x] alone reaches prepare (y is demeaned with x)
    only_collinear = dataclasses.replace(spec, outcome="y", controls=("firm_constant",))
    _same(prepare_spec(only_collinear, df), _prepare_spec_before(only_collinear, df))
    # a fixef_tol below 1e-10: the collinearity check and prepare demean at their own tolerances
    tight = dataclasses.replace(spec, outcome="y", fixef_tol=1e-12)
    _same(prepare_spec(tight, df), _prepare_spec_before(tight, df))
    assert any(key[1] == 1e-12 for key in wb_module._DEMEANED_REGRESSORS)
