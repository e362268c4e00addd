"""Reading and preparing the analysis panel: types, FE cells, derived regressors, event time."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from keytech import warehouse
from keytech.estimation.orchestration.registry import Spec


ID_COLUMNS = ("stkcd", "city_code", "province_code", "industry_code")
INT_COLUMNS = ("year",)
FLOAT_NULLABLE = ("first_treated_year", "rel_time")


def load_panel(name: str, db_path: str | Path | None = None, extra_marts: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read ``marts.<name>`` read-only and prepare it (see :func:`prepare_panel`).

    ``extra_marts``: marts keyed (stkcd, year) left-joined onto the panel (a spec's
    ``extra_marts``); their columns already in the panel are not taken."""
    df = warehouse.read_mart(name, db_path)
    for mart in extra_marts:
        extra = warehouse.read_mart(mart, db_path)
        keep = ["stkcd", "year", *[c for c in extra.columns if c not in df.columns]]
        extra = extra[keep].assign(stkcd=extra["stkcd"].astype(str), year=pd.to_numeric(extra["year"]).astype(int))
        df = df.assign(stkcd=df["stkcd"].astype(str), year=pd.to_numeric(df["year"]).astype(int))
        df = df.merge(extra, on=["stkcd", "year"], how="left", validate="one_to_one")
    return prepare_panel(df)


def prepare_panel(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise types and add the FE cell columns ``ind_year`` and ``prov_year``.

    Ids become text, ``year`` int, every other column float64 with NaN for nulls (DuckDB hands
    nullable integers over in several ways). Idempotent.
    """
    out = df.copy()
    missing = [c for c in ("stkcd", "year", "city_code", "province_code", "industry_code", "policy") if c not in out]
    if missing:
        raise ValueError(f"analysis panel lacks columns {missing}")
    for col in ID_COLUMNS:
        out[col] = out[col].astype("string").astype(object)
    out["year"] = pd.to_numeric(out["year"]).astype(int)
    for col in out.columns:
        if col in ID_COLUMNS or col in INT_COLUMNS or col in ("ind_year", "prov_year"):
            continue
        if pd.api.types.is_bool_dtype(out[col]) or pd.api.types.is_numeric_dtype(out[col]) or col in FLOAT_NULLABLE:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    if "first_treated_year" in out and "rel_time" in out:
        # rel_time is redundant with first_treated_year; recompute where the mart left it null
        rel = out["year"] - out["first_treated_year"]
        out["rel_time"] = out["rel_time"].where(out["rel_time"].notna(), rel)
    # a missing industry or province leaves its FE cell missing (not a "None_2015" cell), so the
    # specs with that FE drop the row like any other missing variable
    # (one concat, not two inserts: after the per-column conversions above the frame has a block per
    # column, and inserting into it made pandas warn "highly fragmented" on the widest panels)
    cells = pd.DataFrame({
        "ind_year": (out["industry_code"].astype(str) + "_" + out["year"].astype(str)).where(out["industry_code"].notna()),
        "prov_year": (out["province_code"].astype(str) + "_" + out["year"].astype(str)).where(out["province_code"].notna()),
    }, index=out.index)
    present = [c for c in cells if c in out]  # a panel prepared before: replaced in place
    out[present] = cells[present]
    out = pd.concat([out, cells.drop(columns=present)], axis=1)
    return out.sort_values(["stkcd", "year"]).reset_index(drop=True)


# --------------------------------------------------------------------------- event time


def event_dummy_name(k: int) -> str:
    return f"ev_m{-k}" if k < 0 else f"ev_p{k}"


def event_term_label(k: int) -> str:
    return f"rel_time={k}"


def event_time_dummies(rel_time: pd.Series | np.ndarray, k_min: int = -5, k_max: int = 3, base: int = -1) -> pd.DataFrame:
    """Relative-time dummies for Eq. 2.

    ``k < k_min`` is binned into ``k_min`` and ``k > k_max`` into ``k_max``; the ``base`` period is
    omitted; never-treated rows (rel_time null) have every dummy 0. Columns are ordered k_min..k_max
    and named ``ev_m5 .. ev_p3``.
    """
    rel = pd.to_numeric(pd.Series(rel_time), errors="coerce").to_numpy(dtype=float)
    binned = np.clip(rel, k_min, k_max)  # NaN stays NaN
    cols = {}
    for k in range(k_min, k_max + 1):
        if k == base:
            continue
        cols[event_dummy_name(k)] = (binned == k).astype(float)  # NaN == k is False -> 0
    index = rel_time.index if isinstance(rel_time, pd.Series) else None
    return pd.DataFrame(cols, index=index)


# --------------------------------------------------------------------------- derived regressors


def _lead(k: int) -> Callable[[pd.DataFrame, dict], pd.Series]:
    def make(df: pd.DataFrame, options: dict) -> pd.Series:
        return (df["rel_time"] == -k).astype(float)

    make.__doc__ = f"1 in the year {k} year(s) before treatment starts (rel_time == -{k}); 0 otherwise."
    return make


def pretrend_slope(df: pd.DataFrame, outcome: str, window: tuple[int, int], min_obs: int) -> pd.Series:
    """Each firm's OLS slope of ``outcome`` on year over ``window`` (NaN if < min_obs years)."""
    lo, hi = window
    pre = df.loc[(df["year"] >= lo) & (df["year"] <= hi) & df[outcome].notna(), ["stkcd", "year", outcome]]
    g = pre.groupby("stkcd")
    n = g["year"].transform("size")
    xm = g["year"].transform("mean")
    ym = g[outcome].transform("mean")
    pre = pre.assign(dx=pre["year"] - xm, dy=pre[outcome] - ym, n=n)
    pre = pre.assign(sxy=pre["dx"] * pre["dy"], sxx=pre["dx"] ** 2)
    agg = pre.groupby("stkcd").agg(sxy=("sxy", "sum"), sxx=("sxx", "sum"), n=("n", "first"))
    slope = (agg["sxy"] / agg["sxx"]).where(agg["n"] >= min_obs)
    return df["stkcd"].map(slope).astype(float)


def _pretrend_x_t(df: pd.DataFrame, options: dict) -> pd.Series:
    window = tuple(options.get("pretrend_window", (2010, 2014)))
    min_obs = int(options.get("pretrend_min_obs", 3))
    outcome = options.get("pretrend_outcome", "ln_apply_inv_zl")
    slope = pretrend_slope(df, outcome, window, min_obs)
    return slope * (df["year"] - window[0])


def _policy_x_ln_sale(df: pd.DataFrame, options: dict) -> pd.Series:
    """Policy × ln(Sale) (Table 6, column 6)."""
    return df["policy"] * df["ln_sale"]


DERIVED: dict[str, Callable[[pd.DataFrame, dict], pd.Series]] = {
    "policy_x_ln_sale": _policy_x_ln_sale,
    "lead1": _lead(1),
    "lead2": _lead(2),
    "lead3": _lead(3),
    "pretrend_x_t": _pretrend_x_t,
}


def add_derived(df: pd.DataFrame, names: tuple[str, ...] | list[str], options: dict | None = None) -> pd.DataFrame:
    """Add derived regressors that are not panel columns (see :data:`DERIVED`)."""
    options = options or {}
    out = df
    for name in names:
        if name in df.columns:
            continue
        if name not in DERIVED:
            raise KeyError(f"{name!r} is neither a panel column nor a derived variable ({', '.join(DERIVED)})")
        if out is df:
            out = df.copy()
        out[name] = DERIVED[name](out, options)
    return out


# --------------------------------------------------------------------------- estimation sample


def factorize_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> np.ndarray:
    """Integer codes (n x k, uint64, Fortran order) for FE columns."""
    if not columns:
        return np.zeros((len(df), 0), dtype=np.uint64)
    codes = [pd.factorize(df[c])[0].astype(np.uint64) for c in columns]
    return np.asfortranarray(np.column_stack(codes))


def singleton_mask(df: pd.DataFrame, fixed_effects: tuple[str, ...] | list[str]) -> np.ndarray:
    """True for observations that pyfixest's ``fixef_rm='singleton'`` drops (iterated)."""
    if not fixed_effects:
        return np.zeros(len(df), dtype=bool)
    from pyfixest.estimation import detect_singletons

    return np.asarray(detect_singletons(factorize_columns(df, fixed_effects)), dtype=bool)


def estimation_sample(
    df: pd.DataFrame,
    variables: list[str] | tuple[str, ...],
    fixed_effects: tuple[str, ...] | list[str] = (),
    cluster: tuple[str, ...] | list[str] = (),
    fixef_rm: str = "singleton",
) -> pd.DataFrame:
    """Rows pyfixest would use: complete cases on every variable, FE and cluster column, then
    singleton FE groups removed (iteratively) when ``fixef_rm == 'singleton'``."""
    cols = list(dict.fromkeys([*variables, *fixed_effects, *cluster]))
    sub = df.dropna(subset=cols)
    if fixef_rm == "singleton" and fixed_effects:
        sub = sub.loc[~singleton_mask(sub, fixed_effects)]
    return sub


# --------------------------------------------------------------------------- spec samples


def prepare_spec_data(spec: Spec, df: pd.DataFrame) -> pd.DataFrame:
    """Derived regressors added and the spec's sample filter applied."""
    out = add_derived(df, spec.extra_regressors, spec.options)
    if spec.sample_query:
        out = out.query(spec.sample_query, engine="python")
    return out


def sample_description(spec: Spec, n_complete: int, nobs: int, extra: str = "") -> str:
    filt = "all rows" if not spec.sample_query else spec.sample_query
    s = f"{spec.panel} [{filt}]; complete cases {n_complete}; used {nobs}"
    if n_complete != nobs:
        s += f" ({n_complete - nobs} dropped: singletons/separation)"
    return s + (f"; {extra}" if extra else "")


def complete_cases(spec: Spec, data: pd.DataFrame, rhs: list[str], fe: tuple[str, ...] | None = None) -> int:
    fe = spec.fixed_effects if fe is None else fe
    cols = [spec.outcome, *rhs, *fe, *(spec.vcov.cluster if spec.vcov.kind == "cluster" else ())]
    return int(data[cols].notna().all(axis=1).sum())


def sample_size_and_parameters(spec: Spec, data: pd.DataFrame, rhs: list[str],
                               fe: tuple[str, ...]) -> tuple[int, int]:
    """(N, parameters) of a linear FE fit, counted as fixest/pyfixest count them: complete cases,
    singletons removed iteratively when ``fixef_rm == 'singleton'``, then regressors + the FE
    levels − (number of FE dimensions − 1). ``N <= parameters`` leaves no residual degrees of
    freedom (the spec is not estimable)."""
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = data.dropna(subset=list(dict.fromkeys([spec.outcome, *rhs, *fe, *cl])))
    if not fe:
        return len(sample), len(rhs) + 1
    codes = factorize_columns(sample, fe)
    # y = 1 everywhere: only singletons are removed (no group has an all-zero outcome)
    keep, _, _ = drop_uninformative(np.ones(len(sample)), codes, drop_singletons=spec.fixef_rm == "singleton")
    levels = sum(len(np.unique(codes[keep, j])) for j in range(codes.shape[1]))
    return int(keep.sum()), len(rhs) + levels - (codes.shape[1] - 1)


def poisson_informative_sample(spec: Spec, data: pd.DataFrame, rhs: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Complete cases minus the observations that carry no information in an FE Poisson model,
    removed as ppmlhdfe does: FE groups whose outcome is zero throughout (separated: their FE goes
    to −∞) and singleton groups (when ``fixef_rm == 'singleton'``), iterated until neither is left
    (removing one can create the other). Regressor-induced separation (ppmlhdfe's ReLU/simplex
    checks) is not tested."""
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = data.dropna(subset=list(dict.fromkeys([spec.outcome, *rhs, *spec.fixed_effects, *cl])))
    if not spec.fixed_effects:
        return sample, {"separated_obs_removed": 0, "singleton_obs_removed": 0}
    keep, n_zero, n_single = drop_uninformative(
        sample[spec.outcome].to_numpy(float), factorize_columns(sample, spec.fixed_effects),
        drop_singletons=spec.fixef_rm == "singleton")
    return sample.loc[keep], {"separated_obs_removed": int(n_zero), "singleton_obs_removed": int(n_single)}


def drop_uninformative(y: np.ndarray, fe: np.ndarray, drop_singletons: bool) -> tuple[np.ndarray, int, int]:
    keep = np.ones(len(y), dtype=bool)
    n_zero = n_single = 0
    changed = True
    while changed:
        changed = False
        for j in range(fe.shape[1]):
            codes = fe[keep, j]
            _, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
            sums = np.bincount(inv, weights=y[keep])
            bad_zero = sums[inv] == 0
            bad_single = (counts[inv] == 1) & drop_singletons
            bad = bad_zero | bad_single
            if bad.any():
                idx = np.flatnonzero(keep)[bad]
                n_zero += int((bad_zero & ~bad_single).sum())
                n_single += int(bad_single.sum())
                keep[idx] = False
                changed = True
    return keep, n_zero, n_single
