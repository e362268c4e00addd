"""Synthetic inputs for the endogeneity and spillover analyses (Table 4, "Other robustness").

A plug-in world of :mod:`keytech.synth` (``PLUGIN``, see :mod:`keytech.synth.plugin`), run at three points:

* ``plant_selection(w)`` right after the city stage: draws the cities' 2009 industry structure,
  2009 robot density, the US industry robot series and an unobserved confounder ``U_c``, and
  **re-draws the pilot cities** of every wave (same wave sizes) with probability
  ``∝ exp(size_selection·size + instrument_selection·e_c + confounder_selection·U_c)`` (size_selection
  by default the scale's ``pilot_size_selection``, 2.0 at ``small``, 0.9 at ``tiny`` and ``paper``: pilot cities are mostly the big
  cities, where the listed firms are), where ``e_c`` is the
  city's standardised robot exposure (mean of the z-scores of log 2009 robot density and log
  Bartik exposure). The instruments are functions of ``e_c`` only, so they move Policy while
  staying independent of ``U_c``.
* ``key_log_shift(w, ...)`` adds to the key-tech invention log-rate of every firm-year:
  (i) the confounder, a city-specific trend ``confounder_trend · U*_c · path(year)`` with path
  ``(year − 2008) / 10`` (default) or a 2014–2018 ramp (``confounder_path = "pilot_era"``; pilot
  cities have higher ``U_c``, so OLS of the outcome on Policy is biased upwards; with firm FE a
  level would be absorbed, a time path is not). ``U*_c`` is ``U_c`` made orthogonal, in the sample and
  within province, to the instrument inputs (``orthogonal_confounder``, see
  ``_outcome_confounder``), so the instruments are valid in the drawn world and not only in
  expectation; (ii) a spillover on firms in cities *not yet treated*:
  ``spill_beta · exp(−d / spill_decay_km)`` with ``d`` the great-circle distance to the nearest
  treated city that year; (iii) effect heterogeneity on treated firms:
  ``agglomeration_beta · z_c`` with ``z_c`` the standardised 2009 location quotient of
  secondary-sector employment (from the yearbook's IndustrialEmployment / TotalEmployment),
  clipped to [−2, 2].
* ``write_tables(w, out)`` writes the four raw extension tables (contract ``required: false``);
  ``truth(w)`` returns the ``endogeneity`` slot of ``_truth.json``.

Calibration (demo scales, column (5) FE with province×year): selection loadings (3.0 on exposure,
1.5 on U) make both first stages strong (F ≈ 25–40 at ``small``) while OLS stays visibly biased;
the spillover (0.8, decay 150 km) and the agglomeration slope (0.4) are large enough for the
near/far, distance-band and high/low-agglomeration estimates to come out in the planted direction
at ``small`` (tests/python/test_endogeneity_synthetic.py). The OLS-vs-2SLS and IFE recovery test
uses ``IV_WORLD_RATES`` at paper scale instead: confounding only, on a pilot-era time path (with
~85 cities at ``small`` a city-level confounder leaves 2SLS too imprecise to compare with OLS
honestly). ``DEFAULT_RATES_OVERRIDE`` lets
experiments change the rates without touching :mod:`keytech.synth`.

All randomness comes from ``numpy.random.default_rng([seed, 101])``; deterministic per seed.
National internet users are CNNIC's published year-end figures (real public data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from keytech.synth.columns import frame
from keytech.synth.config import FIRST_YEAR
from keytech.synth.plugin import Plugin

BASE_YEAR = 2009
EARTH_RADIUS_KM = 6371.0088

TABLES = ("region_robot_density", "industry_employment", "us_industry_robots", "national_internet_users")
SEED_INDEPENDENT_FILES = ("national_internet_users.csv",)  # real CNNIC figures

# IFR industry classes (ISIC rev.4 based): code, name, US robots per 1,000 workers in 2009, growth
IFR_INDUSTRIES = (
    ("10-12", "Food and beverages", 1.6, 0.08),
    ("13-15", "Textiles", 0.3, 0.05),
    ("16-18", "Wood, paper and printing", 0.6, 0.05),
    ("19-22", "Plastics and chemical products", 2.2, 0.06),
    ("23", "Glass, ceramics, stone, mineral products", 0.9, 0.05),
    ("24", "Basic metals", 1.6, 0.04),
    ("25", "Metal products", 2.1, 0.07),
    ("26-27", "Electrical and electronics", 3.2, 0.09),
    ("28", "Industrial machinery", 1.3, 0.06),
    ("29", "Automotive", 24.0, 0.05),
    ("30", "Other vehicles", 1.1, 0.05),
    ("91", "All other manufacturing", 0.5, 0.04),
)

# CNNIC Statistical Report on Internet Development in China, year-end netizens (10,000 persons)
CNNIC_INTERNET_USERS = {
    2008: 29800, 2009: 38400, 2010: 45730, 2011: 51310, 2012: 56400, 2013: 61758, 2014: 64875,
    2015: 68826, 2016: 73125, 2017: 77198, 2018: 82851, 2019: 90359, 2020: 98899, 2021: 103195,
    2022: 106744, 2023: 109200, 2024: 110800,
}  # written up to the scale's last year (2023 and 2024 at xl only: 53rd and 55th reports)
# 2023 and 2024 checked (issue 17) against the reports' headline figures as the press gave them:
# 53rd report (March 2024), "截至2023年12月，我国网民规模达10.92亿人" (中国科学报, 2024-03-25);
# 55th report (January 2025), 网民规模 "2024年的11.08亿人" (新京报贝壳财经, 2025-01-17)


@dataclass(frozen=True)
class EndogeneityRates:
    """Planted parameters (recorded in ``_truth.json['endogeneity']``)."""

    # loading of city size in pilot selection; replaces keytech.synth.world.plant_cities' own draw
    # (0.9). None = the scale's ScaleConfig.pilot_size_selection (small 2.0, else 0.9; issue 11), the
    # resolved value is what _truth.json records
    size_selection: float | None = None
    instrument_selection: float = 1.2  # loading of the robot exposure e_c in pilot selection
    confounder_selection: float = 1.2  # loading of the unobserved U_c in pilot selection
    confounder_trend: float = 0.5  # key log-rate += this * U*_c * path(year), see confounder_path
    # time path of the confounder: "trend" = (year - 2008) / 10; "pilot_era" = a ramp from 0 in
    # 2014 to 1 in 2018 and after, (clip(year - 2014, 0, 4) / 4), the years of the pilot waves —
    # an unobserved local boom that coincides with the programme, the hardest case for OLS
    confounder_path: str = "trend"
    spill_beta: float = 0.12  # key log-rate += spill_beta * exp(-d / spill_decay_km), untreated
    spill_decay_km: float = 120.0
    agglomeration_beta: float = 0.15  # treated: += agglomeration_beta * z(LQ_2009), clipped ±2
    robot_density_exposure_loading: float = 0.8  # log robot density = ... + loading * z(bartik)
    orthogonal_confounder: bool = True  # outcome confounder orthogonal to the instruments in sample


DEFAULT_RATES_OVERRIDE: dict = {}  # EndogeneityRates fields to override (experiments, tests)

# The defaults above are mild, so that the demo world still shows the baseline effect in Table 3
# (a strong spillover to untreated neighbours and a strong confounder trend push the TWFE estimate
# of the demo seed below zero). Table 4's recovery test uses this stronger world instead
# (tests/python/test_endogeneity_synthetic.py sets it through DEFAULT_RATES_OVERRIDE).
STRESS_RATES: dict = {
    "instrument_selection": 3.0, "confounder_selection": 1.5, "confounder_trend": 1.0,
    "spill_beta": 0.8, "spill_decay_km": 150.0, "agglomeration_beta": 0.4,
}

# The IV world of the Table 4 recovery test (paper scale): confounding only, with the confounder's
# time path on the pilot era (a local boom in 2015-2018 in the cities that were going to be picked,
# invisible to the econometrician). No spillover and no agglomeration heterogeneity, so "the
# truth" for OLS and 2SLS is one number (a spillover to untreated neighbours biases OLS and 2SLS
# differently, and effect heterogeneity makes 2SLS a LATE). Selection loads on the instrument
# exposure and on U about equally (first stages F > 50 and OLS biased up by ≈ 0.35 at paper scale).
IV_WORLD_RATES: dict = {
    "instrument_selection": 3.0, "confounder_selection": 2.0, "size_selection": 0.5,
    "confounder_trend": 1.0, "confounder_path": "pilot_era", "spill_beta": 0.0,
    "agglomeration_beta": 0.0,
}


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def great_circle_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Haversine distance in km (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


def _fmt(values, decimals: int) -> np.ndarray:
    spec = f"{{:.{decimals}f}}"
    return np.array([spec.format(v) for v in np.asarray(values, dtype=float)], dtype=object)


def plant_selection(w) -> None:
    """Draw the instrument inputs and the confounder; re-draw pilot cities (see module doc)."""
    er: EndogeneityRates = getattr(w, "endogeneity_rates", None) or EndogeneityRates(**DEFAULT_RATES_OVERRIDE)
    if er.size_selection is None:
        er = replace(er, size_selection=w.cfg.pilot_size_selection)
    w.endogeneity_rates = er
    rng = np.random.default_rng([int(w.seed), 101])
    cities = w.cities
    nc = len(cities)
    size = cities["size"].to_numpy()
    k = len(IFR_INDUSTRIES)
    # 2009 manufacturing employment (10,000 persons) and industry shares (Dirichlet, city-specific)
    manu_emp = np.exp(2.5 + 0.6 * size + rng.normal(0, 0.3, nc))
    alpha = rng.gamma(0.8, 1.0, (nc, k)) + 0.05
    shares = np.vstack([rng.dirichlet(a) for a in alpha])
    emp = manu_emp[:, None] * shares
    years = w.cfg.years
    base = np.array([r[2] for r in IFR_INDUSTRIES])
    growth = np.array([r[3] for r in IFR_INDUSTRIES])
    us = base[:, None] * np.exp(growth[:, None] * (years - BASE_YEAR)[None, :]
                                + rng.normal(0, 0.02, (k, len(years))))
    bartik_2009 = shares @ us[:, years == BASE_YEAR].ravel()
    zb = _z(np.log(bartik_2009))
    log_density = np.log(9.0) + er.robot_density_exposure_loading * zb + rng.normal(0, 0.6, nc)
    density = np.exp(log_density)
    exposure = _z(0.5 * (zb + _z(log_density)))
    u = rng.normal(0, 1, nc)
    # re-draw the pilot cities of every wave (same sizes) with selection on exposure and U
    latent = er.size_selection * size + er.instrument_selection * exposure + er.confounder_selection * u
    first_wave = np.zeros(nc, dtype=int)
    for wr in w.waves:
        avail = np.flatnonzero(first_wave == 0)
        p = np.exp(latent[avail] - latent[avail].max())
        chosen = rng.choice(avail, wr["new_cities"], replace=False, p=p / p.sum())
        first_wave[chosen] = wr["wave"]
    cities["first_wave"] = first_wave
    cities["first_treated_year"] = np.where(first_wave > 0, first_wave + 1, 0)
    # 三沙市 has no coordinates in the city seed: it is treated as far from every other city
    # (the warehouse leaves its distances null, so it gets no distance-based exposure either)
    lat = pd.to_numeric(cities["latitude"], errors="coerce").to_numpy(dtype=float)
    lon = pd.to_numeric(cities["longitude"], errors="coerce").to_numpy(dtype=float)
    dist = great_circle_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    dist = np.where(np.isnan(dist), np.inf, dist)
    np.fill_diagonal(dist, 0.0)
    w.endog = {
        "shares": shares, "employment_2009": emp, "us_robots": us, "years": years,
        "bartik_2009": bartik_2009, "robot_density_2009": density, "exposure": exposure,
        "confounder": u, "dist": dist,
    }


def _agglomeration_z(w) -> np.ndarray:
    """Standardised 2009 location quotient of secondary-sector employment per world city."""
    yb = w.yearbook_true
    y = yb.loc[yb["year"] == BASE_YEAR].sort_values("city")
    share = y["IndustrialEmployment"].to_numpy() / y["TotalEmployment"].to_numpy()
    lq = share / (y["IndustrialEmployment"].sum() / y["TotalEmployment"].sum())
    return np.clip(_z(lq), -2, 2)


def hypothetical_first_treated_year(w) -> np.ndarray:
    """IV2's hypothetical pilots as the warehouse builds them (fct_city_year_exposures): per wave,
    the not-yet-picked cities ranked by Bartik exposure in the wave year, top n_w (real sizes)."""
    e = w.endog
    fw = w.cities["first_wave"].to_numpy()
    years = list(e["years"])
    hyp = np.zeros(len(fw), dtype=int)
    for wave in sorted({int(x) for x in fw if x > 0}):
        bt = e["shares"] @ e["us_robots"][:, years.index(wave)]
        bt = np.where(hyp > 0, -np.inf, bt)
        hyp[np.argsort(-bt, kind="stable")[: int((fw == wave).sum())]] = wave + 1
    return hyp


def _outcome_confounder(w, city: np.ndarray, year: np.ndarray) -> np.ndarray:
    """The confounder as it enters the outcome: U_c minus its weighted least-squares projection
    on province dummies, city size, the instrument inputs (z log Bartik, log robot density,
    exposure) and IV2's hypothetical-wave dummies, weighted by the city's firm-years in the
    estimation window (2010-2019). Pilot selection used U_c itself (corr with this ≈ 0.7 at ``small``
    — the province dummies take out U's between-province part — recorded in the truth), so OLS stays biased, while the instruments are orthogonal to the
    confounder *within province* and *as the panel weights cities* — the column (5) FE include
    province×year, so a global orthogonality would leave chance within-province correlations
    over a handful of cities that a trend confounder turns into IV bias."""
    e = w.endog
    cities = w.cities
    nc = len(cities)
    win = (year >= 2010) & (year <= 2019)
    n = np.bincount(city[win], minlength=nc).astype(float) + 1e-6
    hyp = hypothetical_first_treated_year(w)
    prov = pd.get_dummies(cities["province_code"].astype(str), dtype=float).to_numpy()
    hw = pd.get_dummies(pd.Series(hyp).astype(str), dtype=float).to_numpy()[:, 1:]
    X = np.column_stack([prov, cities["size"].to_numpy(), np.log(e["bartik_2009"]),
                         np.log(e["robot_density_2009"]), e["exposure"], hw])
    u = e["confounder"]
    sw = np.sqrt(n)
    coef = np.linalg.lstsq(X * sw[:, None], u * sw, rcond=None)[0]
    r = u - X @ coef
    sd = np.sqrt(np.average((r - np.average(r, weights=n)) ** 2, weights=n))
    e["hypothetical_first_treated_year"] = hyp
    e["corr_confounder_outcome_selection"] = float(np.corrcoef(r, u)[0, 1])
    # bounded: with few cities the projection nearly saturates, and a city the window weights at
    # ~0 (no firm-years in 2010-2019) can get a residual many SDs out, which overflowed the Poisson
    # rate of its firms (tiny scale)
    return np.clip(r / sd, -3.0, 3.0) if sd > 0 else r


def confounder_path(er: "EndogeneityRates", year: np.ndarray) -> np.ndarray:
    """Multiplier of ``U*_c`` in the key-tech log-rate by year (``confounder_path``)."""
    year = np.asarray(year, dtype=float)
    if er.confounder_path == "trend":
        return (year - FIRST_YEAR) / 10.0
    if er.confounder_path == "pilot_era":
        return np.clip(year - 2014, 0, 4) / 4.0
    raise ValueError(f"confounder_path must be 'trend' or 'pilot_era', not {er.confounder_path!r}")


def key_log_shift(w, firm: np.ndarray, year: np.ndarray, city: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """Additive key-tech log-rate terms per firm-year: confounder trend, distance-decaying
    spillover on not-yet-treated cities, agglomeration heterogeneity of the treated effect."""
    if not hasattr(w, "endog"):
        return np.zeros(len(year))
    er: EndogeneityRates = w.endogeneity_rates
    e = w.endog
    first = w.cities["first_treated_year"].to_numpy()
    u = _outcome_confounder(w, city, year) if er.orthogonal_confounder else e["confounder"]
    e["confounder_outcome"] = u
    trend = er.confounder_trend * u[city] * confounder_path(er, year)
    # distance of each city to the nearest *other* city treated in year t
    nearest = np.full((len(first), w.cfg.last_year - FIRST_YEAR + 1), np.inf)
    off = e["dist"].copy()
    np.fill_diagonal(off, np.inf)  # a treated city is not its own neighbour
    for t in range(FIRST_YEAR, w.cfg.last_year + 1):
        treated = (first > 0) & (first <= t)
        if treated.any():
            nearest[:, t - FIRST_YEAR] = off[:, treated].min(axis=1)
    e["nearest_treated_km"] = nearest
    city_treated = (first[city] > 0) & (year >= first[city])
    d_ft = nearest[city, year - FIRST_YEAR]
    spill = np.where(city_treated, 0.0, er.spill_beta * np.exp(-d_ft / er.spill_decay_km))
    zagg = _agglomeration_z(w)
    e["agglomeration_z"] = zagg
    het = er.agglomeration_beta * zagg[city] * treat
    e["spill_mean_untreated"] = float(spill[~city_treated].mean()) if (~city_treated).any() else 0.0
    return trend + spill + het


def write_tables(w, out: Path) -> dict:
    """The four raw extension tables as UTF-8 CSV with contract headers; returns ``files`` info."""
    e = w.endog
    cities = w.cities
    names = cities["print_yearbook"].to_numpy().astype(object)
    files = {}
    codes = [r[0] for r in IFR_INDUSTRIES]
    tables = {
        "region_robot_density": frame("region_robot_density", {
            "CityName": names, "Year": str(BASE_YEAR), "RobotDensity": _fmt(e["robot_density_2009"], 3)}),
        "industry_employment": frame("industry_employment", {
            "CityName": np.repeat(names, len(codes)), "Year": str(BASE_YEAR),
            "IndustryCode": np.tile(np.array(codes, dtype=object), len(names)),
            "Employment": _fmt(e["employment_2009"].ravel(), 4)}),
        "us_industry_robots": frame("us_industry_robots", {
            "IndustryCode": np.repeat(np.array(codes, dtype=object), len(e["years"])),
            "IndustryName": np.repeat(np.array([r[1] for r in IFR_INDUSTRIES], dtype=object), len(e["years"])),
            "Year": np.tile(e["years"], len(codes)).astype(str),
            "RobotsPerThousandWorkers": _fmt(e["us_robots"].ravel(), 4)}),
        "national_internet_users": frame("national_internet_users", {
            "Year": [str(y) for y in CNNIC_INTERNET_USERS if y <= w.cfg.last_year],
            "InternetUsers": [str(v) for y, v in CNNIC_INTERNET_USERS.items() if y <= w.cfg.last_year]}),
    }
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False, encoding="utf-8", lineterminator="\n")
        files[name] = {"file": f"{name}.csv", "encoding": "utf-8", "description_rows": 0, "rows": len(df)}
    return files


def truth(w) -> dict:
    """The ``endogeneity`` slot of ``_truth.json``."""
    if not hasattr(w, "endog"):
        return {}
    e = w.endog
    er: EndogeneityRates = w.endogeneity_rates
    cities = w.cities
    treated = cities["first_wave"].to_numpy() > 0
    u = e["confounder"]
    return {
        "rates": asdict(er),
        "beta_key": float(w.rates.beta_key),
        "description": (
            "Pilot cities are drawn per wave with probability ∝ exp(size_selection*size + "
            "instrument_selection*e_c + confounder_selection*U_c); e_c = z(mean(z(log robot density "
            "2009), z(log Bartik exposure 2009))) drives the instruments; U_c ~ N(0,1) is unobserved "
            "and adds confounder_trend*U*_c*path(year) to the key-tech log-rate (path: "
            "confounder_path_by_year), U*_c its part "
            "orthogonal to the instruments (see confounder_outcome_definition; biases OLS up, "
            "instruments valid in sample). Firms in cities not yet treated get "
            "spill_beta*exp(-d/spill_decay_km), d = km to the nearest treated city that year. "
            "Treated firms' effect is beta_key + agglomeration_beta*z(LQ 2009 of secondary-sector "
            "employment), z clipped to [-2, 2]."),
        "confounder_path_by_year": {str(y): float(v) for y, v in
                                    zip(e["years"], confounder_path(er, e["years"]))},
        "corr_confounder_exposure": float(np.corrcoef(u, e["exposure"])[0, 1]),
        "mean_confounder_pilot_cities": float(u[treated].mean()) if treated.any() else None,
        "mean_confounder_other_cities": float(u[~treated].mean()) if (~treated).any() else None,
        "mean_exposure_pilot_cities": float(e["exposure"][treated].mean()) if treated.any() else None,
        "mean_exposure_other_cities": float(e["exposure"][~treated].mean()) if (~treated).any() else None,
        "mean_spillover_log_rate_untreated_firm_years": e.get("spill_mean_untreated"),
        "corr_confounder_outcome_selection": e.get("corr_confounder_outcome_selection"),
        "confounder_outcome_definition": (
            "with orthogonal_confounder the outcome uses U*_c = standardised residual of U_c on "
            "province dummies, size, log Bartik 2009, log robot density 2009, exposure and IV2's "
            "hypothetical-wave dummies, weighted by firm-years 2010-2019 (cities[].confounder_outcome); "
            "key log-rate += confounder_trend*U*_c*path(year), path in confounder_path_by_year"),
        "cities": [
            {"city_code": str(code), "confounder_selection": float(u[i]),
             "confounder_outcome": float(e["confounder_outcome"][i]) if "confounder_outcome" in e else float(u[i]),
             "exposure": float(e["exposure"][i]),
             "agglomeration_z": float(e["agglomeration_z"][i]) if "agglomeration_z" in e else None,
             "hypothetical_first_treated_year": int(e["hypothetical_first_treated_year"][i])
             if "hypothetical_first_treated_year" in e else None}
            for i, code in enumerate(cities["city_code"].to_numpy())],
        "ifr_industries": [r[0] for r in IFR_INDUSTRIES],
        "base_year": BASE_YEAR,
    }


PLUGIN = Plugin(
    name="endogeneity", tables=TABLES, stages=(("cities", "endogeneity inputs", plant_selection),),
    key_log_shift=key_log_shift, write_tables=write_tables, truth=truth,
)
