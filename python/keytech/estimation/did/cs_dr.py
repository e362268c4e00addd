"""Callaway & Sant'Anna (2021) with covariates: doubly robust group-time ATTs (Sant'Anna & Zhao 2020),
analytic influence-function standard errors (clustered) and a uniform band for the event-time
aggregation (issue 14 item 4; estimator ``staggered_cs_dr``, spec ``robust_staggered_drcs``).

Group-time ATT(g, t) (R ``did::att_gt`` with ``est_method = "dr"``, panel data): for the 2x2 of
cohort g (first treated year) against the control group, between the base period b and t
(``base_period = "varying"``: b = t - 1 for pre-periods, b = g - 1 for post-periods), with
dY = Y_t - Y_b and covariates X (intercept + ``covariates``) measured in the earlier of the two
periods, ``drdid_panel``:

* propensity score p(X): logit of D = 1{G = g} on X (Newton–Raphson, as ``glm``), capped at
  1 - 1e-6; controls with p >= 0.995 get weight 0 (DRDID's trimming);
* outcome regression m(X): OLS of dY on X among the controls;
* ATT = mean_w1(dY - m) - mean_w0(dY - m), w1 = D, w0 = p (1 - D) / (1 - p);
* influence function psi_i including the estimation effect of the logit and the OLS (the DRDID
  formula), scaled to all n units as in ``att_gt`` (psi_i * n / n_gt; zero for units outside
  the 2x2).

``base_period = "universal"`` (option ``base_period``; spec ``robust_staggered_drcs_event``): b = g - 1
for every t, as did/csdid; the pre-period cells are deviations from the reference t = g - 1 (ATT 0,
zero influence function), which makes event time -1 the common reference Honest DiD needs. The
covariance of the event-time estimates is S'S / n^2 from the cluster sums S of their influence
functions (``vcov_from_if``; diagnostics ``event_time_vcov``); option ``honest_did`` runs
Rambachan & Roth (2023) on e in ``honest_did_window`` (default [-5, 3]) with it.

Controls: ``nevertreated`` (G = 0) or ``notyettreated`` (G = 0 or G > max(t, b), G != g). Units
treated in or before the first period are dropped; cohorts first treated after the last period
count as never treated. Unbalanced panels: each 2x2 uses the units observed in both of its periods
(``did`` would balance the panel first; on a balanced panel the two coincide).

Aggregations (``did::aggte``): ``simple`` (post cells weighted by P(G = g)) and ``dynamic``
(event time e = t - g, cells weighted by P(G = g) within e; the overall dynamic ATT is the mean
over e >= 0), each with the influence function of the estimated weights (``wif``).
Standard errors: sqrt(mean(psi^2) / n) without clustering (``did``'s analytic SE); clustered:
sqrt(sum_c (sum_{i in c} psi_i)^2) / n (unit = its own cluster gives the former exactly).
Uniform band for the event-time estimates: sup-t critical value from a multiplier bootstrap of
the clustered influence functions (Rademacher weights per cluster, ``draws``, seeded):
the (1 - alpha) quantile of max_e |sum_c v_c psi_ce / n| / se_e.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

PS_CAP = 1 - 1e-6
PS_TRIM = 0.995


def _logit(D: np.ndarray, X: np.ndarray, tol: float = 1e-12, maxiter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients, inverse of X' W X) of a logit by Newton–Raphson (glm's IRLS solution)."""
    b = np.zeros(X.shape[1])
    for _ in range(maxiter):
        p = 1 / (1 + np.exp(-(X @ b)))
        W = p * (1 - p)
        H = X.T @ (X * W[:, None])
        step = np.linalg.solve(H, X.T @ (D - p))
        b = b + step
        if np.max(np.abs(step)) < tol:
            break
    p = 1 / (1 + np.exp(-(X @ b)))
    H = X.T @ (X * (p * (1 - p))[:, None])
    return b, np.linalg.inv(H)


def drdid_panel(dy: np.ndarray, D: np.ndarray, X: np.ndarray) -> tuple[float, np.ndarray]:
    """Sant'Anna & Zhao (2020) doubly robust DiD for panel data (DRDID::drdid_panel, unit weights 1):
    (ATT, influence function of the n units of the 2x2)."""
    n = len(dy)
    b, Hinv = _logit(D, X)
    ps = np.minimum(1 / (1 + np.exp(-(X @ b))), PS_CAP)
    trim = np.where(D == 0, ps < PS_TRIM, True).astype(float)
    Xc, dyc = X[D == 0], dy[D == 0]
    beta = np.linalg.lstsq(Xc, dyc, rcond=None)[0]
    out = X @ beta
    w1 = trim * D
    w0 = trim * ps * (1 - D) / (1 - ps)
    r = dy - out
    eta1 = np.mean(w1 * r) / np.mean(w1)
    eta0 = np.mean(w0 * r) / np.mean(w0)
    att = eta1 - eta0
    wols = 1 - D
    XpX_inv = np.linalg.inv((X * wols[:, None]).T @ X / n)
    lin_ols = (wols * r)[:, None] * X @ XpX_inv
    lin_ps = ((D - ps)[:, None] * X) @ (Hinv * n)
    inf_treat = (w1 * r - w1 * eta1 - lin_ols @ np.mean(w1[:, None] * X, axis=0)) / np.mean(w1)
    M2 = np.mean((w0 * (r - eta0))[:, None] * X, axis=0)
    M3 = np.mean(w0[:, None] * X, axis=0)
    inf_cont = (w0 * r - w0 * eta0 + lin_ps @ M2 - lin_ols @ M3) / np.mean(w0)
    return float(att), inf_treat - inf_cont


def group_time(
    df: pd.DataFrame, y: str, t: str, unit: str, g: str, covariates: list[str] | tuple[str, ...] = (),
    control: str = "nevertreated", base_period: str = "varying",
) -> dict[str, Any]:
    """All ATT(g, t) cells with their (n x cells) influence-function matrix (rows: ``units``).

    ``base_period``: ``varying`` (b = t - 1 before treatment, g - 1 after) or ``universal``
    (b = g - 1 for every t, as did/csdid's ``base_period = "universal"``: pre-period cells are
    E[Y_t - Y_{g-1} | G = g] minus the controls' change, and the cell t = g - 1 is the reference,
    ATT 0 with a zero influence function, ``reference = True``)."""
    if control not in ("nevertreated", "notyettreated"):
        raise ValueError(f"control group must be 'nevertreated' or 'notyettreated', not {control!r}")
    if base_period not in ("varying", "universal"):
        raise ValueError(f"base_period must be 'varying' or 'universal', not {base_period!r}")
    universal = base_period == "universal"
    d = df[[unit, t, g, y, *covariates]].copy()
    d[g] = pd.to_numeric(d[g], errors="coerce").fillna(0.0)
    tlist = np.sort(d[t].unique())
    d.loc[d[g] > tlist[-1], g] = 0.0  # treated after the window: never treated within it
    first = d.groupby(unit)[g].first()
    always = first.index[(first > 0) & (first <= tlist[0])]
    d = d.loc[~d[unit].isin(always)]
    d = d.dropna(subset=[y, *covariates])
    units = np.sort(d[unit].unique())
    n = len(units)
    G_unit = d.groupby(unit)[g].first().reindex(units).to_numpy()
    wide_y = d.pivot(index=unit, columns=t, values=y).reindex(units)
    wide_x = {c: d.pivot(index=unit, columns=t, values=c).reindex(units) for c in covariates}
    glist = np.sort(np.unique(G_unit[G_unit > 0]))
    cells, inf = [], []
    for gg in glist:
        for tt in (tlist if universal else tlist[1:]):
            post = tt >= gg
            if post or universal:
                prior = tlist[tlist < gg]
                if len(prior) == 0:
                    continue
                base = prior[-1]
            else:
                base = tlist[tlist < tt][-1]
            if tt == base:  # universal base: the reference cell itself
                cells.append({"g": float(gg), "t": float(tt), "base": float(base), "e": int(tt - gg), "post": False,
                              "att": 0.0, "n_treated": int((G_unit == gg).sum()), "n_control": 0, "reference": True})
                inf.append(np.zeros(n))
                continue
            if control == "nevertreated":
                ctrl = G_unit == 0
            else:
                ctrl = (G_unit == 0) | ((G_unit > max(tt, base)) & (G_unit != gg))
            treat = G_unit == gg
            y1, y0 = wide_y[tt].to_numpy(), wide_y[base].to_numpy()
            early = min(tt, base)
            X = np.column_stack([np.ones(n), *[wide_x[c][early].to_numpy() for c in covariates]])
            use = (treat | ctrl) & np.isfinite(y1) & np.isfinite(y0) & np.all(np.isfinite(X), axis=1)
            n1 = int(use.sum())
            if treat[use].sum() == 0 or ctrl[use].sum() == 0:
                continue
            att, psi = drdid_panel((y1 - y0)[use], treat[use].astype(float), X[use])
            col = np.zeros(n)
            col[use] = psi * n / n1
            cells.append({"g": float(gg), "t": float(tt), "base": float(base), "e": int(tt - gg), "post": bool(post),
                          "att": att, "n_treated": int(treat[use].sum()), "n_control": int((ctrl & use).sum()),
                          "reference": False})
            inf.append(col)
    pg = {float(gg): float(np.mean(G_unit == gg)) for gg in glist}
    return {"cells": pd.DataFrame(cells), "inf": np.column_stack(inf) if inf else np.zeros((n, 0)), "units": units,
            "G": G_unit, "pg": pg, "n": n, "n_obs": int(len(d)), "always_treated_dropped": int(len(always))}


def _wif(keep: np.ndarray, cells: pd.DataFrame, G: np.ndarray, pg_cell: np.ndarray) -> np.ndarray:
    """did's ``wif``: influence function of the weights pg_k / sum(pg) over the kept cells (n x k)."""
    gk = cells["g"].to_numpy()[keep]
    pk = pg_cell[keep]
    ind = (G[:, None] == gk[None, :]).astype(float)
    if1 = (ind - pk[None, :]) / pk.sum()
    if2 = np.sum(ind - pk[None, :], axis=1)[:, None] * (pk / pk.sum() ** 2)[None, :]
    return if1 - if2


def _aggregate(gt: dict[str, Any], keep: np.ndarray) -> tuple[float, np.ndarray]:
    cells, inf = gt["cells"], gt["inf"]
    pg_cell = cells["g"].map(gt["pg"]).to_numpy()
    w = pg_cell[keep] / pg_cell[keep].sum()
    att = cells["att"].to_numpy()[keep]
    est = float(w @ att)
    psi = inf[:, keep] @ w + _wif(keep, cells, gt["G"], pg_cell) @ att
    return est, psi


def aggregate(gt: dict[str, Any]) -> dict[str, Any]:
    """simple and dynamic aggregations with their influence functions (n-vectors)."""
    cells = gt["cells"]
    out: dict[str, Any] = {}
    post = cells["post"].to_numpy()
    out["simple"] = _aggregate(gt, np.flatnonzero(post))
    dyn = {}
    for e in sorted(cells["e"].unique()):
        dyn[int(e)] = _aggregate(gt, np.flatnonzero(cells["e"].to_numpy() == e))
    out["dynamic"] = dyn
    post_e = [e for e in dyn if e >= 0]
    if post_e:
        out["dynamic_overall"] = (float(np.mean([dyn[e][0] for e in post_e])), np.mean([dyn[e][1] for e in post_e], axis=0))
    return out


def se_from_if(psi: np.ndarray, n: int, cluster_codes: np.ndarray | None = None) -> float:
    """sqrt(mean(psi^2)/n) (did's analytic SE), or the cluster sum version."""
    if cluster_codes is None:
        return float(np.sqrt(np.mean(psi**2) / n))
    s = np.bincount(cluster_codes, weights=psi)
    return float(np.sqrt(np.sum(s**2)) / n)


def vcov_from_if(Psi: np.ndarray, n: int, cluster_codes: np.ndarray | None = None) -> np.ndarray:
    """Covariance matrix of the estimates whose influence functions are the columns of ``Psi`` (n x K):
    Psi' Psi / n^2 (did's analytic covariance), or with the cluster sums S (C x K): S' S / n^2.
    Its diagonal is :func:`se_from_if` squared."""
    if cluster_codes is None:
        return Psi.T @ Psi / n**2
    S = np.column_stack([np.bincount(cluster_codes, weights=Psi[:, k], minlength=int(cluster_codes.max()) + 1)
                         for k in range(Psi.shape[1])])
    return S.T @ S / n**2


def uniform_critical_value(Psi: np.ndarray, se: np.ndarray, n: int, cluster_codes: np.ndarray,
                           draws: int, seed: int, alpha: float = 0.05) -> float:
    """sup-t critical value by a Rademacher multiplier bootstrap of the cluster sums of ``Psi`` (n x K)."""
    S = np.column_stack([np.bincount(cluster_codes, weights=Psi[:, k]) for k in range(Psi.shape[1])])  # C x K
    rng = np.random.default_rng(seed)
    V = rng.choice([-1.0, 1.0], size=(draws, S.shape[0]))
    T = np.abs(V @ S / n) / se[None, :]
    return float(np.quantile(T.max(axis=1), 1 - alpha))


# --------------------------------------------------------------------------- registry estimator


def fit_cs_dr(spec, df: pd.DataFrame, ctx):
    """Spec estimator ``staggered_cs_dr``: options ``covariates`` (panel columns, measured in the
    earlier period of each 2x2), ``control_group`` (notyettreated | nevertreated), ``band_draws``
    (multiplier-bootstrap draws of the uniform band), ``base_period`` (varying | universal),
    ``honest_did`` / ``honest_did_window`` (universal base only). Main term = simple ATT; ``rel_time=e`` terms =
    event-time aggregation with pointwise CIs (ci_low/ci_high) and the uniform band in the diagnostics."""
    from keytech.estimation.core import panel as pnl
    from keytech.estimation.core.results import SpecResult, TermEstimate, term_from_normal
    from keytech.estimation.core.panel import prepare_spec_data, sample_description

    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError(f"{spec.id}: needs one cluster variable (vcov: {{cluster: var}})")
    o = spec.options
    covs = list(o.get("covariates", []))
    control = str(o.get("control_group", "notyettreated"))
    base_period = str(o.get("base_period", "varying"))
    draws = int(o.get("band_draws", 999))
    alpha = 0.05
    cl = spec.vcov.cluster[0]
    data = prepare_spec_data(spec, df)
    gt = group_time(data, spec.outcome, "year", "stkcd", "first_treated_year", covs, control, base_period)
    if gt["cells"].empty:
        raise ValueError(f"{spec.id}: no estimable ATT(g,t) cells")
    n = gt["n"]
    unit_cluster = data.groupby("stkcd")[cl].first().reindex(gt["units"]).astype(str).to_numpy()
    codes = np.unique(unit_cluster, return_inverse=True)[1]
    agg = aggregate(gt)
    est, psi = agg["simple"]
    terms = [term_from_normal(spec.treatment, est, se_from_if(psi, n, codes), se_unclustered=se_from_if(psi, n))]
    ref_e = sorted({int(e) for e in gt["cells"].loc[gt["cells"]["reference"], "e"]})  # universal base: e = -1
    es = sorted(e for e in agg["dynamic"] if e not in ref_e)
    Psi = np.column_stack([agg["dynamic"][e][1] for e in es])
    se_e = np.array([se_from_if(Psi[:, k], n, codes) for k in range(len(es))])
    crit = uniform_critical_value(Psi, se_e, n, codes, draws, int(ctx.seed), alpha)
    band = {}
    for k, e in enumerate(es):
        terms += [TermEstimate(pnl.event_term_label(r), 0.0, diagnostics={"reference_period": True})
                  for r in ref_e if r < e and (k == 0 or r > es[k - 1])]  # the reference term, in event-time order
        a = agg["dynamic"][e][0]
        terms.append(term_from_normal(pnl.event_term_label(e), a, se_e[k], se_unclustered=se_from_if(Psi[:, k], n),
                                      uniform_band=[a - crit * se_e[k], a + crit * se_e[k]]))
        band[str(e)] = [a - crit * se_e[k], a + crit * se_e[k]]
    terms += [TermEstimate(pnl.event_term_label(r), 0.0, diagnostics={"reference_period": True})
              for r in ref_e if r > es[-1]]
    if "dynamic_overall" in agg:
        a, p = agg["dynamic_overall"]
        terms.append(term_from_normal("att_dynamic", a, se_from_if(p, n, codes), se_unclustered=se_from_if(p, n)))
    cells = gt["cells"].assign(se=[se_from_if(gt["inf"][:, j], n, codes) for j in range(gt["inf"].shape[1])])
    diag = {
        "cells": cells.to_dict(orient="records"),
        "covariates": covs,
        "control_group": control,
        "base_period": ("universal (g-1 for every t; reference e = -1)" if base_period == "universal"
                        else "varying (t-1 pre, g-1 post)"),
        "estimator": "doubly robust (Sant'Anna & Zhao 2020, DRDID::drdid_panel): logit propensity score + OLS outcome regression",
        "uniform_band": {"critical_value": crit, "pointwise_critical_value": float(stats.norm.ppf(1 - alpha / 2)),
                         "draws": draws, "seed": int(ctx.seed), "bounds": band,
                         "method": "sup-t, Rademacher multiplier bootstrap of the cluster sums of the influence functions"},
        "n_units": n, "n_clusters": int(codes.max() + 1), "units_always_treated_dropped": gt["always_treated_dropped"],
        "se": f"analytic influence function, clustered by {cl}",
    }
    if base_period == "universal":  # covariance of the event-time estimates (cluster sums of their IFs)
        V = vcov_from_if(Psi, n, codes)
        diag["event_time_vcov"] = {"event_times": es, "matrix": V.tolist()}
    if o.get("honest_did"):  # Rambachan & Roth (2023); rows go to results.honest_did
        diag["honest_did"] = honest_did_for_cs(agg, es, Psi, n, codes, base_period, o)
    return SpecResult(
        spec_id=spec.id, terms=terms, nobs=gt["n_obs"], adj_r2=None,
        fixed_effects="Firm + Year (implicit in the 2x2 DiDs)", vcov=f"influence function, cluster {cl}",
        sample=sample_description(spec, gt["n_obs"], gt["n_obs"], f"{n} firms, {len(cells)} ATT(g,t) cells"),
        main_term=spec.treatment, diagnostics=diag,
    )


def honest_did_input(agg: dict[str, Any], es: list[int], Psi: np.ndarray, n: int, cluster_codes: np.ndarray,
                     window: tuple[int, int] = (-5, 3)) -> tuple[dict[int, float], dict[tuple[int, int], float]]:
    """Event-time estimates ``{e: ATT_e}`` and their covariances ``{(e, e'): cov}`` (clustered IF
    covariance, :func:`vcov_from_if`) for Honest DiD, event times e in ``window`` except the reference."""
    keep = [k for k, e in enumerate(es) if window[0] <= e <= window[1]]
    V = vcov_from_if(Psi[:, keep], n, cluster_codes)
    ek = [es[k] for k in keep]
    coef = {e: float(agg["dynamic"][e][0]) for e in ek}
    return coef, {(a, b): float(V[i, j]) for i, a in enumerate(ek) for j, b in enumerate(ek)}


def honest_did_for_cs(agg, es, Psi, n, cluster_codes, base_period: str, o: dict[str, Any]) -> dict[str, Any]:
    """Rambachan & Roth (2023) sensitivity of the event-time aggregation (option ``honest_did``;
    ``honest_did_window``: event times used, default [-5, 3] as the event study). Needs the universal
    base: the varying base's pre-period terms are not relative to the common reference e = -1."""
    from keytech.estimation.inference.honest_did import sensitivity_for_spec

    if base_period != "universal":
        return {"reference_period": -1, "error": "Honest DiD needs base_period: universal (the varying base's "
                "pre-period estimates are period-to-period changes, not deviations from e = -1)"}
    lo, hi = (int(x) for x in o.get("honest_did_window", (-5, 3)))
    coef, cov = honest_did_input(agg, es, Psi, n, cluster_codes, (lo, hi))
    out = sensitivity_for_spec(coef, cov, -1, o["honest_did"])
    out["window"] = [lo, hi]
    return out
