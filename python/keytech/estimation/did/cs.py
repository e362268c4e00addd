""":func:`fit_cs` — Callaway & Sant'Anna (2021) group-time ATTs (not-yet-treated controls, no
  covariates), simple and event-time aggregations, city cluster-bootstrap SE.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.core.panel import prepare_spec_data, sample_description
from keytech.estimation.core.results import SpecResult, term_from_normal
from keytech.estimation.did.common import absorbing_units
from keytech.estimation.orchestration.registry import Spec


def _cs_prepare(
    df: pd.DataFrame, outcome: str, cohort: str, unit: str, time: str, cluster: str, treatment: str | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, list[Any], dict[str, int]]:
    """Wide outcome matrix (units x years), cohort and cluster code per unit, for :func:`cs_group_time`.

    Cohort: with ``treatment`` (the estimators pass ``policy``), a unit's first period with
    treatment 1 — the timing rule of every estimator (a firm-year is treated when its current city
    is a pilot city; unit-level estimators take the first such year); units whose treatment switches
    off (movers leaving a pilot city) are dropped and counted. Without it, the max of ``cohort``
    over the unit's rows (the earlier rule, kept for direct calls)."""
    sub = df.dropna(subset=[outcome, cluster])
    if sub.duplicated([unit, time]).any():
        raise ValueError(f"cs_group_time needs one row per ({unit}, {time})")
    years = np.sort(sub[time].unique())
    n_switch = 0
    if treatment is not None:
        ok = absorbing_units(df.dropna(subset=[treatment]), treatment, unit, time)
        n_switch = int((~ok).sum())
        sub = sub[sub[unit].map(ok).fillna(False).astype(bool)]
        on = df.loc[df[treatment].astype(float) == 1]
        G = on.groupby(unit)[time].min().reindex(sub[unit].unique()).astype(float).fillna(0.0)
    else:
        G = pd.to_numeric(sub.groupby(unit)[cohort].max(), errors="coerce").astype(float).fillna(0.0)
    info = {
        "units_cohort_after_window_as_never": int((G > years[-1]).sum()),
        "units_always_treated_dropped": int(((G > 0) & (G <= years[0])).sum()),
        "units_non_absorbing_dropped": n_switch,
    }
    G = G.where(G <= years[-1], 0.0)  # first treated after the last year: never treated in the window
    G = G[(G == 0) | (G > years[0])]  # treated in the first year: no pre-period, dropped (as did)
    sub = sub[sub[unit].isin(G.index)]
    Y = sub.pivot(index=unit, columns=time, values=outcome).reindex(index=G.index, columns=years)
    cl = sub.groupby(unit)[cluster].first().reindex(G.index)  # a firm's city: its first observed one
    codes, uniques = pd.factorize(cl)
    info["n_units"] = int(len(G))
    info["n_obs"] = int(len(sub))
    info["n_clusters"] = int(len(uniques))
    return Y, G.to_numpy(float), codes, years, list(uniques), info


def cs_group_time(
    df: pd.DataFrame,
    outcome: str,
    cohort: str = "first_treated_year",
    unit: str = "stkcd",
    time: str = "year",
    cluster: str = "city_code",
    treatment: str | None = None,
) -> dict[str, Any]:
    """Callaway & Sant'Anna (2021) unconditional group-time ATTs with not-yet-treated controls.

    ``G`` is a unit's first treated period (``cohort``; NaN/0 = never treated; first treated after
    the last period = never treated in the window; treated already in the first period = dropped).
    For each cohort ``g`` and period ``t`` (from the second period on) with base period ``b``
    (``g - 1`` for ``t >= g``, the universal base of post-periods; the previous period for
    ``t < g``, the "varying" base of pre-periods -- the did package's default)::

        ATT(g, t) = mean(Y_t - Y_b | G = g) - mean(Y_t - Y_b | C),
        C = {G = 0} or {G > max(t, b), G != g}      (did's not-yet-treated rule; b < t, so G > t)

    where both means are over units observed (outcome non-missing) in both ``t`` and ``b``. Cells
    with no treated or no control unit are skipped. Returns the cell table and, per cell, the
    cluster-level sums the bootstrap re-weights (``ST``/``NT`` treated sum of ΔY / count, ``SC``/``NC``
    controls, ``NG`` cohort size) as (clusters x cells) arrays.
    """
    Y, G, codes, years, clusters, info = _cs_prepare(df, outcome, cohort, unit, time, cluster, treatment)
    C = len(clusters)
    Yv = Y.to_numpy(float)
    col = {y: j for j, y in enumerate(years)}
    ng_by_cohort = {g: np.bincount(codes[G == g], minlength=C).astype(float) for g in np.unique(G[G > 0])}
    cells: list[dict[str, Any]] = []
    ST, NT, SC, NC, NG = [], [], [], [], []
    for g in sorted(ng_by_cohort):
        for j in range(1, len(years)):
            t = years[j]
            b = g - 1 if t >= g else years[j - 1]
            if b not in col:
                continue
            dy = Yv[:, j] - Yv[:, col[b]]
            obs = np.isfinite(dy)
            tr = obs & (G == g)
            ct = obs & ((G == 0) | ((G > max(t, b)) & (G != g)))
            if not tr.any() or not ct.any():
                continue
            st = np.bincount(codes[tr], weights=dy[tr], minlength=C)
            nt = np.bincount(codes[tr], minlength=C).astype(float)
            sc = np.bincount(codes[ct], weights=dy[ct], minlength=C)
            nc = np.bincount(codes[ct], minlength=C).astype(float)
            att = float(dy[tr].mean() - dy[ct].mean())
            cells.append({
                "g": int(g), "t": int(t), "e": int(t - g), "base": int(b), "post": bool(t >= g), "att": att,
                "n_treated": int(tr.sum()), "n_control": int(ct.sum()), "cohort_size": int((G == g).sum()),
            })
            for acc, v in ((ST, st), (NT, nt), (SC, sc), (NC, nc), (NG, ng_by_cohort[g])):
                acc.append(v)

    def stack(a: list[np.ndarray]) -> np.ndarray:
        return np.column_stack(a) if a else np.zeros((C, 0))

    return {
        "cells": pd.DataFrame(cells, columns=["g", "t", "e", "base", "post", "att", "n_treated", "n_control", "cohort_size"]),
        "ST": stack(ST), "NT": stack(NT), "SC": stack(SC), "NC": stack(NC), "NG": stack(NG),
        "clusters": clusters, "years": [int(y) for y in years], **info,
    }


def _cs_aggregate(att: np.ndarray, w: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """Weighted mean of the selected cells along the last axis; NaN cells (empty in a bootstrap
    draw) are left out and the remaining weights renormalised."""
    a = np.where(sel, att, np.nan)
    ok = np.isfinite(a)
    ww = np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(ok, a, 0.0) * ww).sum(axis=-1) / ww.sum(axis=-1)


def cs_estimate(gt: dict[str, Any], draws: int, seed: int) -> dict[str, Any]:
    """Aggregations of :func:`cs_group_time` and their cluster-bootstrap standard errors.

    * simple: post-treatment cells (t >= g) averaged with weights equal to the cohort size
      (CS's "simple" aggregation: each treated cohort-period counts as often as the cohort is large);
    * dynamic: for each event time e = t - g, the cells with that e averaged with cohort-size weights.

    Bootstrap: ``draws`` nonparametric resamples of clusters (cities) with replacement
    (``numpy.random.default_rng(seed)``); each draw recomputes every ATT(g, t) and aggregate on the
    resampled clusters (a resampled city enters as many times as it is drawn).
    """
    cells = gt["cells"]
    K = len(cells)
    if K == 0 or not cells["post"].any():
        raise ValueError("no post-treatment cohort x period cells with treated and control firms")
    C = gt["ST"].shape[0]
    rng = np.random.default_rng(seed)
    M = rng.multinomial(C, np.full(C, 1.0 / C), size=draws).astype(float)  # (B, C) city multiplicities
    with np.errstate(invalid="ignore", divide="ignore"):
        att_b = M @ gt["ST"] / (M @ gt["NT"]) - M @ gt["SC"] / (M @ gt["NC"])
    w_b = M @ gt["NG"]
    att = cells["att"].to_numpy(float)
    w = gt["NG"].sum(axis=0)
    e = cells["e"].to_numpy()
    post = cells["post"].to_numpy(bool)

    def agg(sel: np.ndarray) -> dict[str, Any]:
        est = float(_cs_aggregate(att, w, sel))
        boot = _cs_aggregate(att_b, w_b, sel[None, :])
        ok = np.isfinite(boot)
        se = float(np.std(boot[ok], ddof=1)) if ok.sum() > 1 else float("nan")
        return {"estimate": est, "se": se, "n_cells": int(sel.sum()), "n_draws_used": int(ok.sum())}

    with np.errstate(invalid="ignore"):
        cell_se = np.nanstd(att_b, axis=0, ddof=1)
    return {
        "simple": agg(post),
        "dynamic": {int(k): agg(e == k) for k in np.unique(e)},
        "cell_se": cell_se,
    }


def fit_cs(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """Callaway & Sant'Anna (2021, J. Econometrics 225(2)) staggered DiD, unconditional.

    Design (spec ``robust_staggered_cs``):

    * group-time ATT(g, t) of :func:`cs_group_time` on the firm panel (unit ``stkcd``, time
      ``year``, cohort = the firm's first year with ``policy`` = 1 — the same timing as TWFE, Sun &
      Abraham and the event study, whose rows carry ``policy`` and ``rel_time`` of the firm's current
      city; firms whose policy switches off (movers leaving a pilot city) are dropped and counted;
      a firm's cluster is the city of its first observed row), outcome ``spec.outcome``, no covariates, not-yet-treated and
      never-treated firms as controls (did's rule: G = 0 or G > max(t, base), G != g); "varying"
      base period (t - 1) for pre-periods and the universal g - 1 for post-periods;
    * unbalanced panel: each 2x2 comparison uses the firms observed in both of its periods
      (the did package instead balances the whole panel or falls back to repeated cross-sections);
    * main term ``policy``: CS's "simple" aggregation, post cells weighted by cohort size
      (number of firms of the cohort in the sample);
    * ``rel_time=e`` terms: the dynamic (event-time) aggregation, cohort-size weights within e;
      number of cells per aggregate in each term's diagnostics;
    * standard errors: cluster bootstrap over the spec's cluster variable (city): ``options.bootstrap``
      resamples of cities with replacement (default 199), seeded with the run's ``RunContext.seed``,
      so a run is reproducible; SE = SD of the bootstrap draws, p-values and 95% CIs from the normal
      approximation with that SE.
    """
    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError("the Callaway-Sant'Anna bootstrap needs one cluster variable")
    cl = spec.vcov.cluster[0]
    draws = int(spec.options.get("bootstrap", 199))
    data = prepare_spec_data(spec, df)
    gt = cs_group_time(data, spec.outcome, cluster=cl, treatment=spec.treatment)
    res = cs_estimate(gt, draws, ctx.seed)
    s = res["simple"]
    terms = [term_from_normal(spec.treatment, s["estimate"], s["se"], n_cells=s["n_cells"], n_draws_used=s["n_draws_used"])]
    for e, a in res["dynamic"].items():
        terms.append(term_from_normal(pnl.event_term_label(e), a["estimate"], a["se"], n_cells=a["n_cells"], n_draws_used=a["n_draws_used"]))
    cells = gt["cells"].assign(se_boot=res["cell_se"])
    diag: dict[str, Any] = {
        "cells": cells.to_dict(orient="records"),
        "n_cells": int(len(cells)),
        "n_cells_post": int(cells["post"].sum()),
        "n_cells_by_event_time": {str(e): a["n_cells"] for e, a in res["dynamic"].items()},
        "cohorts": {str(int(g)): int(n) for g, n in cells.groupby("g")["cohort_size"].first().items()},
        "control_group": "not yet treated + never treated: G = 0 or G > max(t, base), G != g",
        "base_period": "varying (t-1) for pre-periods, universal (g-1) for post-periods",
        "aggregation": "simple: post cells weighted by cohort size; dynamic: cells with e = t - g weighted by cohort size",
        "panel": "unbalanced: each 2x2 uses firms observed in both periods",
        "bootstrap": {"kind": f"nonparametric cluster bootstrap over {cl}", "draws": draws, "seed": ctx.seed,
                      "se": "SD of draws; p-value and CI from the normal approximation"},
        "n_clusters": gt["n_clusters"],
        "n_units": gt["n_units"],
        "units_always_treated_dropped": gt["units_always_treated_dropped"],
        "units_cohort_after_window_as_never": gt["units_cohort_after_window_as_never"],
        "units_non_absorbing_dropped": gt["units_non_absorbing_dropped"],
        "timing_rule": f"cohort = the firm's first year with {spec.treatment} = 1 (as TWFE/SA/event study, which use the "
        f"firm-year's own {spec.treatment}/rel_time); firms whose {spec.treatment} switches off dropped; cluster = the "
        "city of the firm's first observed row",
    }
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=gt["n_obs"],
        adj_r2=None,
        fixed_effects="Firm + Year (implicit in the 2x2 DiDs)",
        vcov=f"cluster bootstrap({cl}), B={draws}",
        sample=sample_description(
            spec, gt["n_obs"], gt["n_obs"],
            f"{gt['n_units']} firms ({gt['units_always_treated_dropped']} always-treated dropped), {len(cells)} ATT(g,t) cells",
        ),
        main_term=spec.treatment,
        diagnostics=diag,
    )
