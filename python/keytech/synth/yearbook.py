"""Stage 5: the China City Statistical Yearbook extract."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keytech.synth.columns import frame, labels
from keytech.synth.common import fmt, stage_rng
from keytech.synth.vocab import OLD_NAMES
from keytech.synth.world import World


def plant_yearbook(w: World) -> None:
    rng = stage_rng(w.seed, 6)
    cities = w.cities
    nc = len(cities)
    size = cities["size"].to_numpy()
    ny = len(w.cfg.years)
    t = np.arange(ny)
    # common growth path (no city-specific trend tied to treatment)
    growth = np.cumsum(np.r_[0, np.linspace(0.10, 0.05, ny - 1)])
    gdppc0 = np.clip(np.exp(10.45 + 0.35 * size + rng.normal(0, 0.25, nc)), 12_000, 85_000)
    gdppc = gdppc0[:, None] * np.exp(growth[None, :] + rng.normal(0, 0.03, (nc, ny)))
    pop0 = np.clip(np.exp(5.8 + 0.55 * size + rng.normal(0, 0.3, nc)), 100, 3000)
    pop = pop0[:, None] * np.exp(0.004 * t[None, :] + rng.normal(0, 0.005, (nc, ny)))
    pen = (0.06 + 0.022 * t)[None, :] * np.exp(0.15 * size + rng.normal(0, 0.1, nc))[:, None]
    internet = pop * np.clip(pen, 0.01, 0.45)
    budget = gdppc * pop * np.clip(rng.normal(0.12, 0.03, nc), 0.05, 0.3)[:, None]
    fdi = np.exp(9.0 + 0.9 * size + rng.normal(0, 0.7, nc))[:, None] * np.exp(
        rng.normal(0.03, 0.08, (nc, ny)).cumsum(axis=1))
    fdi[rng.random(nc) < 0.05, :] = 0.0  # some cities report no FDI
    ind_emp = pop * np.clip(rng.normal(0.05, 0.02, nc), 0.01, 0.2)[:, None] * np.exp(rng.normal(0, 0.03, (nc, ny)))
    tot_emp = ind_emp * np.clip(rng.normal(2.4, 0.4, nc), 1.5, 4)[:, None]
    names = np.repeat(cities["print_yearbook"].to_numpy().astype(object), ny)
    years = np.tile(w.cfg.years, nc)
    city_idx = np.repeat(np.arange(nc), ny)
    cname = cities["city_name"].to_numpy()
    old_rows = 0
    for new_name, (olds, last) in OLD_NAMES.items():
        m = (cname[city_idx] == new_name) & (years <= last)
        names[m] = olds[0]
        old_rows += int(m.sum())
    values = {
        "GdpPerCapita": (gdppc.ravel(), 0), "Population": (pop.ravel(), 2),
        "InternetUsers": (internet.ravel(), 2), "BudgetExpenditure": (budget.ravel(), 0),
        "FdiUsed": (fdi.ravel(), 0), "IndustrialEmployment": (ind_emp.ravel(), 2),
        "TotalEmployment": (tot_emp.ravel(), 2),
    }
    n = nc * ny
    n_miss = max(4, int(round(0.004 * n * len(values))))
    cell_r = rng.integers(0, n, n_miss)
    cell_c = rng.integers(0, len(values), n_miss)
    # planted city-control missingness: one of the five series behind Meangdp, Infor, Finsgov, FDI
    n_ctrl = int(round(w.rates.p_missing_city_control * n))
    ctrl_r = rng.choice(n, n_ctrl, replace=False)
    ctrl_c = rng.integers(0, 5, n_ctrl)  # GdpPerCapita, Population, InternetUsers, Budget, Fdi
    cell_r = np.r_[cell_r, ctrl_r]
    cell_c = np.r_[cell_c, ctrl_c]
    raw = {k: v.copy() for k, (v, _) in values.items()}
    keys = list(values)
    for r, cidx in zip(cell_r, cell_c):
        raw[keys[cidx]][r] = np.nan
    out = {"CityName": names, "Year": years.astype(str).astype(object)}
    for k in keys:
        out[k] = fmt(raw[k], values[k][1])
    # printed with the Chinese headers (the contract's first aliases)
    w.yearbook = frame("city_yearbook", out).set_axis(labels("city_yearbook"), axis=1)
    w.yearbook_true = pd.DataFrame({"city": city_idx, "year": years, **{k: v for k, (v, _) in values.items()}})
    missing_ctrl = np.zeros(n, bool)
    for r, cidx in zip(cell_r, cell_c):
        if keys[cidx] in ("GdpPerCapita", "Population", "InternetUsers", "BudgetExpenditure", "FdiUsed"):
            missing_ctrl[r] = True
    w.yearbook_missing_ctrl = missing_ctrl.reshape(nc, ny)
    w.yearbook_mess = {"missing_cells": int(len(set(zip(cell_r.tolist(), cell_c.tolist())))),
                       "old_city_name_rows": old_rows}

