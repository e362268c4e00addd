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
