"""Small hand-made panels shared by test modules (imported as ``from _panels import ...``)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def firm_year_cells(rng: np.random.Generator, n_firms: int) -> pd.DataFrame:
    """An unbalanced firm-year frame with firm, industry×year and province×year cells: spells of
    1-10 years in 2010-2019 (so subsamples have singletons and miss levels); every 9th firm moves
    province after its third year and every 13th changes industry after its fourth (so the cells'
    blocks are not one per industry or province). Columns stkcd, year, ind, prov, ind_year,
    prov_year; draws from ``rng`` in a fixed order, so a caller continues with the same stream."""
    rows = []
    for f in range(n_firms):
        start = int(rng.integers(2010, 2019))
        length = int(rng.integers(1, 11))
        ind, prov = int(rng.integers(0, 8)), int(rng.integers(0, 6))
        for year in range(start, min(start + length, 2020)):
            if year > start + 2 and f % 9 == 0:
                prov = (prov + 1) % 6
            if year > start + 3 and f % 13 == 0:
                ind = (ind + 1) % 8
            rows.append((f"{f:03d}", year, ind, prov))
    df = pd.DataFrame(rows, columns=["stkcd", "year", "ind", "prov"])
    df["ind_year"] = df["ind"].astype(str) + "_" + df["year"].astype(str)
    df["prov_year"] = df["prov"].astype(str) + "_" + df["year"].astype(str)
    return df


def cities_in_provinces_panel(seed: int, n_firms: int = 90, n_cities: int = 15, cities_per_province: int = 3,
                              n_industries: int = 4, years: range = range(2010, 2016)) -> pd.DataFrame:
    """Firms in cities, industry × year and province × year cells that cut across the city
    clusters (provinces hold ``cities_per_province`` cities; an industry spans provinces);
    unbalanced years (each firm-year kept with probability 0.85). Columns stkcd, city_code,
    province, industry, year, ind_year, prov_year, a staggered ``policy`` by city, controls x1, x2
    (standard normal) and ``y`` = 0.3 policy + x1 + noise + a firm effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_firms):
        city = f % n_cities
        prov, ind = city // cities_per_province, rng.integers(0, n_industries)
        for yr in years:
            if rng.random() < 0.85:
                rows.append((f, city, prov, ind, yr))
    df = pd.DataFrame(rows, columns=["stkcd", "city_code", "province", "industry", "year"])
    df["ind_year"] = df["industry"] * 100 + df["year"]
    df["prov_year"] = df["province"] * 100 + df["year"]
    n = len(df)
    df["policy"] = ((df["city_code"] % 2 == 0) & (df["year"] >= 2012 + df["city_code"] % 3)).astype(float)
    df[["x1", "x2"]] = rng.normal(size=(n, 2))
    df["y"] = 0.3 * df["policy"] + df["x1"] + rng.normal(size=n) + (df["stkcd"] % 7) * 0.2
    return df
