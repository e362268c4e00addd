""":func:`fit_sunab` — Sun & Abraham (2021) interaction-weighted event-study/ATT estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, fit_model, fit_result, formula
from keytech.estimation.core.panel import prepare_spec_data
from keytech.estimation.core.results import SpecResult, TermEstimate, term_from_normal
from keytech.estimation.orchestration.registry import Spec


def sunab_dummies(data: pd.DataFrame, kmin: int, kmax: int, base: int) -> tuple[pd.DataFrame, dict[str, tuple[int, int]]]:
    """Cohort x binned relative-time dummies (never treated: all zero)."""
    cohort = data["first_treated_year"]
    rel = np.clip(data["rel_time"], kmin, kmax)
    cols: dict[str, np.ndarray] = {}
    cells: dict[str, tuple[int, int]] = {}
    for c in sorted(cohort.dropna().unique()):
        for k in range(kmin, kmax + 1):
            if k == base:
                continue
            v = ((cohort == c) & (rel == k)).to_numpy(float)
            if v.sum() == 0:
                continue
            name = f"sa_c{int(c)}_{pnl.event_dummy_name(k)}"
            cols[name] = v
            cells[name] = (int(c), k)
    return pd.DataFrame(cols, index=data.index), cells


def fit_sunab(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    o = spec.options
    kmin, kmax, base = int(o.get("k_min", -5)), int(o.get("k_max", 3)), int(o.get("base", -1))
    data = prepare_spec_data(spec, df)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    data = data.dropna(subset=[spec.outcome, *spec.extra_regressors, *spec.controls, *spec.fixed_effects, *cl])
    Dm, cells = sunab_dummies(data, kmin, kmax, base)
    data = pd.concat([data, Dm], axis=1)
    rhs = [*Dm.columns, *spec.extra_regressors, *spec.controls]
    fit, msgs, _ = fit_model("ols", spec, data, rhs)
    names = list(fit._coefnames)
    b = pd.Series(np.asarray(fit._beta_hat), index=names)
    V = pd.DataFrame(np.asarray(fit._vcov), index=names, columns=names)
    G = int(np.min(fit._G)) if spec.vcov.kind == "cluster" else None
    dfree = (G - 1) if G else float(fit._N - fit._df_k)
    # cell sizes on the estimation sample (fit._data: rows pyfixest used, singletons removed)
    used = fit._data
    n_cell = {name: float(used[name].sum()) for name in cells}
    present = [n for n in cells if n in b.index]
    dropped = [n for n in cells if n not in b.index]

    def aggregate(sel: list[str]) -> tuple[float, float] | None:
        sel = [n for n in sel if n in present and n_cell[n] > 0]
        if not sel:
            return None
        w = np.array([n_cell[n] for n in sel])
        w = w / w.sum()
        est = float(w @ b[sel].to_numpy())
        se = float(np.sqrt(w @ V.loc[sel, sel].to_numpy() @ w))
        return est, se

    terms: list[TermEstimate] = []
    att = aggregate([n for n, (c, k) in cells.items() if k >= 0])
    if att is None:
        raise ValueError("no post-treatment cohort x period cells in the sample")
    terms.append(term_from_normal("att", att[0], att[1], df=dfree))
    per_k = {}
    for k in range(kmin, kmax + 1):
        if k == base:
            terms.append(TermEstimate(pnl.event_term_label(k), 0.0, diagnostics={"reference_period": True}))
            continue
        agg = aggregate([n for n, (c, kk) in cells.items() if kk == k])
        if agg is not None:
            terms.append(term_from_normal(pnl.event_term_label(k), agg[0], agg[1], df=dfree))
            per_k[k] = agg[0]
    diag: dict[str, Any] = {
        "cells": {n: {"cohort": c, "k": k, "n": n_cell[n], "coef": float(b[n]) if n in b.index else None} for n, (c, k) in cells.items()},
        "weights": "per period: cohort shares of the period's treated observations; ATT: post cells weighted by their number of observations",
        "control_group": "never treated (and not-yet-binned leads via the cohort x period dummies)",
        "dropped_cells_collinear": dropped,
        "formula": formula(spec.outcome, ["<cohort x rel_time dummies>", *spec.extra_regressors, *spec.controls], spec.fixed_effects),
    }
    if msgs:
        diag["warnings"] = msgs
    if o.get("honest_did"):  # Rambachan & Roth (2023) on the per-period aggregates; rows to results.honest_did
        from keytech.estimation.inference.honest_did import sensitivity_for_spec

        wk = {}  # k -> aggregation weights over the cohort x period coefficients
        for k in per_k:
            sel = [n for n, (c, kk) in cells.items() if kk == k and n in present and n_cell[n] > 0]
            w = np.array([n_cell[n] for n in sel])
            wk[k] = pd.Series(w / w.sum(), index=sel)
        cov = {(k, j): float(wk[k].to_numpy() @ V.loc[wk[k].index, wk[j].index].to_numpy() @ wk[j].to_numpy())
               for k in wk for j in wk}
        diag["honest_did"] = sensitivity_for_spec(per_k, cov, base, o["honest_did"])
    return fit_result(spec, ctx, fit, terms, len(data), diag, main_term="att")
