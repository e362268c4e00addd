"""Stage 4b: the CSMAR financial statements (balance sheet, income statement, cash flow)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from keytech.synth.columns import frame, names
from keytech.synth.common import fmt, stage_rng
from keytech.synth.config import FIRST_YEAR
from keytech.synth.world import World


def plant_financials(w: World) -> None:
    rng = stage_rng(w.seed, 5)
    firms, fy = w.firms, w.fy
    n = len(firms)
    f = fy["firm"].to_numpy()
    t = fy["year"].to_numpy() - FIRST_YEAR
    nrow = len(fy)
    a0 = np.exp(rng.normal(math.log(1.8e9), 1.1, n))  # ~3e9 mid-panel
    growth = rng.normal(0.08, 0.05, n)
    assets = a0[f] * np.exp(growth[f] * t + rng.normal(0, 0.08, nrow))
    lev = np.clip(rng.beta(4, 5, n)[f] * 0.8 + 0.1 + rng.normal(0, 0.03, nrow), 0.05, 0.95)
    turnover = np.clip(rng.uniform(0.3, 1.2, n)[f] * np.exp(rng.normal(0, 0.1, nrow)), 0.05, 3)
    revenue = assets * turnover
    margin = rng.normal(0.06, 0.03, n)[f] + rng.normal(0, 0.04, nrow)
    profit = revenue * margin
    inv_share = rng.uniform(0.05, 0.25, n)[f] * np.exp(rng.normal(0, 0.15, nrow))
    inventory = assets * inv_share
    fixed = assets * np.clip(rng.uniform(0.08, 0.4, n)[f] + rng.normal(0, 0.02, nrow), 0.01, 0.8)
    ltdebt = assets * np.where(rng.random(n)[f] < 0.25, 0.0, rng.uniform(0.0, 0.15, n)[f])
    total_rev = revenue * np.where(rng.random(nrow) < 0.8, 1.0, 1 + rng.uniform(0, 0.03, nrow))
    ocf = revenue * (margin + rng.normal(0.04, 0.06, nrow))
    capex = assets * np.clip(rng.normal(0.05, 0.02, nrow), 0.002, None)
    # C003006000 = interest paid + cash dividends; CashDividends = the dividend part alone (zero in
    # loss years), so WW's dividend dummy (cash dividends > 0) varies while C003006000 > 0 always
    cash_dividends = np.maximum(profit, 0) * rng.uniform(0, 0.4, nrow)
    dividends = np.maximum(0, assets * lev * 0.03 + cash_dividends)
    fin = {
        "A001000000": assets, "A002000000": assets * lev, "A001123000": inventory, "A001212000": fixed,
        "A002201000": ltdebt, "B001101000": revenue, "B001100000": total_rev, "B002000000": profit,
        "C001000000": ocf, "C002006000": capex, "C003006000": dividends, "CashDividends": cash_dividends,
    }
    # missing values in consolidated statements for a few firm-years
    n_miss = max(3, int(round(0.01 * nrow)))
    miss_rows = np.sort(rng.choice(nrow, n_miss, replace=False))
    miss_cols = rng.choice(["A001000000", "A002000000", "B001101000", "B002000000", "C001000000"], n_miss)
    cons = {k: v.copy() for k, v in fin.items()}
    for r, col in zip(miss_rows, miss_cols):
        cons[col][r] = np.nan
    parent_factor = rng.uniform(0.3, 0.9, n)[f]
    stk = firms["stkcd"].to_numpy()
    accper = np.array([f"{y}-12-31" for y in fy["year"].to_numpy()], dtype=object)
    w.statements = {}
    w.stripped_codes = {}
    for table in ("balance_sheet", "income_statement", "cash_flow"):
        cols = [c for c in names(table) if c not in ("Stkcd", "Accper", "Typrep")]  # the values
        # stock codes without leading zeros for some firms (per file)
        strip_firm = (rng.random(n) < 0.3) & np.array([s.startswith("0") for s in stk])
        code = np.where(strip_firm, [str(int(s)) for s in stk], stk)[f]
        a = {"Stkcd": code, "Accper": accper, "Typrep": np.full(nrow, "A", dtype=object)}
        b = {"Stkcd": code, "Accper": accper, "Typrep": np.full(nrow, "B", dtype=object)}
        for col in cols:
            a[col] = fmt(cons[col])
            pb = fin[col] * parent_factor
            if col != "A001000000":
                pb = np.where(rng.random(nrow) < 0.02, np.nan, pb)
            b[col] = fmt(pb)
        da, db = frame(table, a), frame(table, b)
        # interleave A and B rows per firm-year (CSMAR order)
        df = pd.concat([da, db], ignore_index=True)
        order = np.argsort(np.r_[np.arange(nrow) * 2, np.arange(nrow) * 2 + 1], kind="stable")
        w.statements[table] = df.iloc[order].reset_index(drop=True)
        w.stripped_codes[table] = int(2 * strip_firm[f].sum())
    fy["missing_fin"] = False
    fy.loc[miss_rows, "missing_fin"] = True
    # which firm controls the empty item removes: assets -> roa, ki, size, kd; liabilities -> kd;
    # revenue -> ki (and sale); profit -> roa; operating cash flow -> none
    fy["missing_firm_control"] = fy["missing_ownership"].to_numpy().copy()
    fy.loc[miss_rows[miss_cols != "C001000000"], "missing_firm_control"] = True
    fy["missing_assets"] = False
    fy.loc[miss_rows[miss_cols == "A001000000"], "missing_assets"] = True
    w.fin_missing = {"firm_years_with_missing_consolidated_values": int(n_miss)}

