"""A small simulated firm-year panel with the columns of ``marts.rpt_analysis_panel``.

Used by the estimation tests and the benchmark: staggered city-level treatment, firm,
industry×year and province×year effects, and a planted multiplicative (log-rate) effect of
``policy`` on a Poisson count of key-technology invention applications. It is *not* the project's
synthetic raw-data generator (that one writes vendor-style raw files); it skips the warehouse and
produces an analysis panel directly, so estimators can be tested against a known truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

INDUSTRIES = ("C13", "C14", "C26", "C27", "C34", "C35", "C36", "C38", "C39", "C40", "I64", "I65")
FIRM_CONTROLS = ("roa", "lnage", "ki", "ifdome", "ln_size", "kd")
CITY_CONTROLS = ("ln_meangdp", "infor", "ln_finsgov", "ln_fdi")


@dataclass(frozen=True)
class SimConfig:
    n_provinces: int = 8
    n_cities: int = 48
    firms_per_city: float = 7.0
    start_year: int = 2010
    end_year: int = 2019
    # share of cities first announced in 2015, 2016, 2017, 2018 (treated from the next year)
    wave_shares: tuple[float, float, float, float] = (0.14, 0.14, 0.13, 0.10)
    beta_key: float = 0.15
    # extra log-rate effect in the years before treatment: {rel_time: effect}; empty = parallel trends
    pretrend: tuple[tuple[int, float], ...] = ()
    # per-year growth of the effect after treatment (dynamic effects), 0 = constant effect
    beta_dynamic: float = 0.0
    base_log_rate: float = 0.3
    firm_sd: float = 0.9
    cell_sd: float = 0.12
    entry_share: float = 0.2  # share of firms that enter the panel after the start year
    drop_share: float = 0.02  # share of firm-years randomly missing
    missing_control_share: float = 0.01
    nb_theta: float | None = None  # gamma mixing (negative binomial) with this theta; None = Poisson


def _winsor(x: np.ndarray, lower: float = 0.01, upper: float = 0.99) -> np.ndarray:
    lo, hi = np.nanquantile(x, [lower, upper])
    return np.clip(x, lo, hi)


def simulate_panel(config: SimConfig | None = None, seed: int = 20240601, **overrides) -> pd.DataFrame:
    """Return a firm-year panel (one row per stkcd, year) with the analysis-panel columns."""
    cfg = config or SimConfig()
    if overrides:
        cfg = SimConfig(**{**cfg.__dict__, **overrides})
    rng = np.random.default_rng(seed)
    years = np.arange(cfg.start_year, cfg.end_year + 1)
    n_years = len(years)

    # geography and treatment timing
    prov_codes = [f"{11 + p:02d}" for p in range(cfg.n_provinces)]
    city_prov = np.array([prov_codes[c % cfg.n_provinces] for c in range(cfg.n_cities)])
    city_codes = np.array([f"{city_prov[c]}{(c // cfg.n_provinces) + 1:02d}00" for c in range(cfg.n_cities)])
    waves = np.array([2015, 2016, 2017, 2018])
    counts = np.floor(np.array(cfg.wave_shares) * cfg.n_cities).astype(int)
    city_first = np.full(cfg.n_cities, np.nan)
    order = rng.permutation(cfg.n_cities)
    pos = 0
    for wave, count in zip(waves, counts):
        city_first[order[pos : pos + count]] = wave + 1
        pos += count
    city_gdp = rng.normal(10.8, 0.4, cfg.n_cities)
    city_infor = rng.normal(0.25, 0.08, cfg.n_cities)
    city_fin = rng.normal(25.0, 0.6, cfg.n_cities)
    city_fdi = rng.normal(19.0, 1.0, cfg.n_cities)

    # firms
    n_firms_city = np.maximum(2, rng.poisson(cfg.firms_per_city, cfg.n_cities))
    firm_city = np.repeat(np.arange(cfg.n_cities), n_firms_city)
    n_firms = len(firm_city)
    stkcd = np.array([f"{600000 + i:06d}" for i in range(n_firms)])
    firm_ind = rng.choice(len(INDUSTRIES), n_firms)
    firm_alpha = rng.normal(0.0, cfg.firm_sd, n_firms)
    firm_soe = (rng.random(n_firms) < 0.35).astype(float)
    firm_founded = rng.integers(1985, 2008, n_firms)
    firm_size0 = 21.5 + 0.4 * firm_alpha + rng.normal(0, 0.8, n_firms)
    entry = np.where(rng.random(n_firms) < cfg.entry_share, rng.integers(cfg.start_year + 1, cfg.start_year + 5, n_firms), cfg.start_year)

    fi, yi = np.meshgrid(np.arange(n_firms), np.arange(n_years), indexing="ij")
    fi, yi = fi.ravel(), yi.ravel()
    year = years[yi]
    keep = (year >= entry[fi]) & (rng.random(len(fi)) >= cfg.drop_share)
    fi, yi, year = fi[keep], yi[keep], year[keep]
    n = len(fi)
    city = firm_city[fi]
    prov_idx = np.array([prov_codes.index(p) for p in city_prov])[city]
    ind = firm_ind[fi]

    first = city_first[city]
    rel = year - first  # NaN for never treated
    policy = np.where(np.isnan(first), 0, (year >= first)).astype(int)

    # controls (firm-year and city-year), mildly correlated with the firm effect
    roa = rng.normal(0.04, 0.05, n) + 0.01 * firm_alpha[fi]
    # ownership changes for some firms (privatisation), so it is not absorbed by the firm effect
    switch_year = np.where(rng.random(n_firms) < 0.15, rng.integers(cfg.start_year + 1, cfg.end_year + 1, n_firms), 9999)
    ifdome = np.where(year >= switch_year[fi], 1.0 - firm_soe[fi], firm_soe[fi])
    lnage = np.log(np.maximum(1, year - firm_founded[fi]))
    ki = np.exp(rng.normal(0.7, 0.4, n))
    ln_size = firm_size0[fi] + 0.08 * (year - cfg.start_year) + rng.normal(0, 0.15, n)
    kd = np.clip(rng.normal(0.42, 0.18, n), 0.02, 0.98)
    t = year - cfg.start_year
    ln_meangdp = city_gdp[city] + 0.07 * t + rng.normal(0, 0.03, n)
    infor = city_infor[city] + 0.02 * t + rng.normal(0, 0.01, n)
    ln_finsgov = city_fin[city] + 0.08 * t + rng.normal(0, 0.03, n)
    ln_fdi = city_fdi[city] + rng.normal(0, 0.2, n)

    # outcome: Poisson (or NB) counts with a multiplicative policy effect
    ind_year_shock = rng.normal(0, cfg.cell_sd, (len(INDUSTRIES), n_years))
    prov_year_shock = rng.normal(0, cfg.cell_sd, (cfg.n_provinces, n_years))
    year_trend = 0.05 * np.arange(n_years)
    effect = cfg.beta_key + cfg.beta_dynamic * np.nan_to_num(rel, nan=0.0)
    eta = (
        cfg.base_log_rate
        + firm_alpha[fi]
        + ind_year_shock[ind, yi]
        + prov_year_shock[prov_idx, yi]
        + year_trend[yi]
        + 0.8 * roa
        + 0.05 * (ln_size - 21.5)
        - 0.2 * (kd - 0.42)
        + 0.1 * (ln_meangdp - 10.8)
        + policy * effect
    )
    for k, delta in cfg.pretrend:
        eta = eta + np.where(rel == k, delta, 0.0)
    lam = np.exp(eta)
    if cfg.nb_theta is not None:
        lam = lam * rng.gamma(cfg.nb_theta, 1.0 / cfg.nb_theta, n)
    apply_zl = rng.poisson(lam)
    lam_nozl = np.exp(eta - policy * effect + 0.4)
    apply_nozl = rng.poisson(lam_nozl)
    joint = rng.binomial(apply_zl, 0.2)
    grant_share = np.where(year >= cfg.end_year - 2, 0.25, 0.55)
    grant = rng.binomial(apply_zl, grant_share)
    cite = rng.poisson(1.5 * grant)

    size = np.exp(ln_size)
    sale = size / ki
    df = pd.DataFrame(
        {
            "stkcd": stkcd[fi],
            "year": year.astype(int),
            "city_code": city_codes[city],
            "province_code": city_prov[city],
            "industry_code": np.array(INDUSTRIES)[ind],
            "first_treated_year": pd.array(np.where(np.isnan(first), pd.NA, first), dtype="Int64"),
            "rel_time": pd.array(np.where(np.isnan(rel), pd.NA, rel), dtype="Int64"),
            "policy": policy,
            "apply_inv_zl": apply_zl,
            "apply_inv_nozl": apply_nozl,
            "apply_inv_zl_joint": joint,
            "grant_inv_zl": grant,
            "cite_inv_zl": cite,
            "roa": _winsor(roa),
            "lnage": lnage,
            "ki": _winsor(ki),
            "ifdome": ifdome,
            "size": size,
            "ln_size": _winsor(ln_size),
            "kd": _winsor(kd),
            "meangdp": np.exp(ln_meangdp),
            "ln_meangdp": _winsor(ln_meangdp),
            "infor": _winsor(infor),
            "finsgov": np.exp(ln_finsgov),
            "ln_finsgov": _winsor(ln_finsgov),
            "fdi": np.exp(ln_fdi),
            "ln_fdi": _winsor(ln_fdi),
            "sale": sale,
            "ln_sale": np.log(sale),
        }
    )
    for name in ("apply_inv_zl", "apply_inv_nozl", "apply_inv_zl_joint", "grant_inv_zl", "cite_inv_zl"):
        df[f"ln_{name}"] = np.log1p(df[name].astype(float))
    ind_sales = df.groupby(["industry_code", "year"])["sale"].transform("sum")
    df["saleshare"] = df["sale"] / ind_sales
    df = df.sort_values(["stkcd", "year"]).reset_index(drop=True)
    prev = df.groupby("stkcd")["year"].shift(1)
    lag = df.groupby("stkcd")["ln_apply_inv_zl"].shift(1)
    df["lag1_ln_apply_inv_zl"] = np.where(prev == df["year"] - 1, lag, np.nan)
    # a few missing controls, as in real data
    for col in ("roa", "kd", "ln_fdi"):
        mask = rng.random(len(df)) < cfg.missing_control_share
        df.loc[mask, col] = np.nan
    return df
