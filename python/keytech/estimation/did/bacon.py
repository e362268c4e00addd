""":func:`bacon_decomposition` — Goodman-Bacon (2021, J. Econometrics) decomposition of the firm+year
  TWFE coefficient of ``policy`` on a balanced panel into 2x2 DiDs and their weights (Theorem 1);
  timing from ``policy`` itself, units whose treatment switches off excluded (not defined there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core.fitting import RunContext, adj_r2, fe_desc, fit_model, terms_from_fit
from keytech.estimation.core.panel import prepare_spec_data, sample_description
from keytech.estimation.core.results import SpecResult, TermEstimate
from keytech.estimation.did.common import absorbing_units, balanced_subpanel
from keytech.estimation.orchestration.registry import Spec


def bacon_decomposition(
    df: pd.DataFrame,
    outcome: str,
    treatment: str = "policy",
    unit: str = "stkcd",
    time: str = "year",
) -> dict[str, Any]:
    """Goodman-Bacon decomposition of ``y ~ treatment | unit + time`` on a balanced panel.

    The timing groups come from ``treatment`` itself (a unit's first period with treatment 1; never
    1 = never treated), so the decomposed coefficient is the one of the same regression on the same
    rows. The decomposition needs an absorbing treatment (0…0 1…1 within each unit): a unit whose
    treatment switches off raises ``ValueError`` (callers drop them first, see
    :func:`absorbing_units`). Units treated in every period ("always treated") are their own group
    with D̄ = 1 and act like never treated in comparisons (controls whose treatment does not change).
    """
    years = np.sort(df[time].unique())
    T = len(years)
    counts = df.groupby(unit)[time].nunique()
    if (counts != T).any():
        raise ValueError("bacon_decomposition needs a balanced panel")
    ok = absorbing_units(df, treatment, unit, time)
    if not ok.all():
        raise ValueError(f"bacon_decomposition needs an absorbing {treatment}; {int((~ok).sum())} unit(s) switch off "
                         f"(e.g. {list(ok.index[~ok][:3])})")
    on = df.loc[df[treatment].astype(float) == 1]
    group = on.groupby(unit)[time].min().reindex(counts.index).astype(float).fillna(np.inf)
    y = df[outcome].to_numpy(float)
    g_obs = df[unit].map(group).to_numpy(float)
    t_obs = df[time].to_numpy()
    D = (t_obs >= g_obs).astype(float)
    # double demeaning (balanced) -> FWL residual of D on unit and time FE
    dfD = pd.DataFrame({"u": df[unit].to_numpy(), "t": t_obs, "D": D, "y": y})
    Dt = dfD["D"] - dfD.groupby("u")["D"].transform("mean") - dfD.groupby("t")["D"].transform("mean") + D.mean()
    yt = dfD["y"] - dfD.groupby("u")["y"].transform("mean") - dfD.groupby("t")["y"].transform("mean") + y.mean()
    VD = float(np.mean(Dt**2))
    beta_twfe = float((Dt @ yt) / (Dt @ Dt))

    units_by_group = group.groupby(group).size()
    N = units_by_group.sum()
    share = (units_by_group / N).to_dict()
    dbar = {g: float(np.mean(years >= g)) for g in units_by_group.index}  # inf -> 0, <=first -> 1
    ybar = pd.DataFrame({"g": g_obs, "t": t_obs, "y": y}).groupby(["g", "t"])["y"].mean()

    def mean_y(g: float, mask: np.ndarray) -> float:
        return float(ybar.loc[g].loc[years[mask]].mean())

    comps: list[dict[str, Any]] = []
    timing = sorted(g for g in units_by_group.index if 0 < dbar[g] < 1)
    untreated_like = [g for g in units_by_group.index if dbar[g] in (0.0, 1.0)]
    for k in timing:
        pre, post = years < k, years >= k
        for u in untreated_like:
            nk, nu = share[k], share[u]
            nku = nk / (nk + nu)
            s = (nk + nu) ** 2 * nku * (1 - nku) * dbar[k] * (1 - dbar[k]) / VD
            est = (mean_y(k, post) - mean_y(k, pre)) - (mean_y(u, post) - mean_y(u, pre))
            kind = "treated_vs_never" if dbar[u] == 0 else "treated_vs_always"
            comps.append({"type": kind, "treated": k, "control": u, "estimate": est, "weight": s})
    for i, k in enumerate(timing):  # k earlier, l later
        for l in timing[i + 1 :]:
            nk, nl = share[k], share[l]
            nkl = nk / (nk + nl)
            Dk, Dl = dbar[k], dbar[l]
            pre, mid, post = years < k, (years >= k) & (years < l), years >= l
            s_early = ((nk + nl) * (1 - Dl)) ** 2 * nkl * (1 - nkl) * ((Dk - Dl) / (1 - Dl)) * ((1 - Dk) / (1 - Dl)) / VD
            est_early = (mean_y(k, mid) - mean_y(k, pre)) - (mean_y(l, mid) - mean_y(l, pre))
            comps.append({"type": "early_vs_later", "treated": k, "control": l, "estimate": est_early, "weight": s_early})
            s_late = ((nk + nl) * Dk) ** 2 * nkl * (1 - nkl) * (Dl / Dk) * ((Dk - Dl) / Dk) / VD
            est_late = (mean_y(l, post) - mean_y(l, mid)) - (mean_y(k, post) - mean_y(k, mid))
            comps.append({"type": "later_vs_earlier", "treated": l, "control": k, "estimate": est_late, "weight": s_late})
    table = pd.DataFrame(comps)
    summary = {}
    if len(table):
        for kind, g in table.groupby("type"):
            wsum = g["weight"].sum()
            summary[kind] = {"weight": float(wsum), "estimate": float((g["weight"] * g["estimate"]).sum() / wsum) if wsum else float("nan")}
    decomposed = float((table["weight"] * table["estimate"]).sum()) if len(table) else float("nan")
    return {
        "beta_twfe": beta_twfe,
        "beta_decomposed": decomposed,
        "weight_total": float(table["weight"].sum()) if len(table) else 0.0,
        "by_type": summary,
        "comparisons": table,
        "n_units": int(N),
        "n_periods": int(T),
        "VD": VD,
    }


def fit_bacon(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    """Goodman-Bacon decomposition of the firm+year TWFE coefficient of ``spec.treatment``.

    Sample (the same for the decomposition and the reported TWFE term): complete cases of the
    outcome and treatment, the balanced sub-panel (firms observed in every year), minus firms whose
    treatment is not absorbing (movers whose ``policy`` switches off when they leave a pilot city;
    the decomposition is not defined for them). Timing groups come from ``policy`` itself, so a
    mover entering a pilot city is treated from its first ``policy = 1`` year, as in TWFE."""
    data = prepare_spec_data(spec, df).dropna(subset=[spec.outcome, spec.treatment])
    bal = balanced_subpanel(data, spec.outcome)
    absorbing = absorbing_units(bal, spec.treatment)
    n_switch = int((~absorbing).sum())
    bal = bal[bal["stkcd"].map(absorbing)]
    res = bacon_decomposition(bal, spec.outcome, spec.treatment)
    # TWFE on the same sample with the spec's variance, for the reported SE
    fit, msgs, _ = fit_model("ols", spec, bal, [spec.treatment], fe=("stkcd", "year"))
    terms = terms_from_fit(fit, names=[spec.treatment])
    for kind, v in res["by_type"].items():
        terms.append(TermEstimate(f"bacon:{kind}", v["estimate"], diagnostics={"weight": v["weight"]}))
    comps = res.pop("comparisons")
    b_fit = float(fit.coef()[spec.treatment])
    diag = res | {
        "comparisons": comps.to_dict(orient="records"),
        "beta_twfe_pyfixest": b_fit,
        "sum_check_abs_diff": abs(res["beta_decomposed"] - b_fit),
        "firms_dropped_non_absorbing": n_switch,
        "rows_used_by_pyfixest": int(fit._N),
        "note": f"balanced sub-panel, firm+year FE, no controls (the decomposition is exact only there); timing "
        f"from {spec.treatment} itself; {n_switch} firm(s) whose {spec.treatment} switches off (movers leaving a "
        "pilot city) dropped from both the decomposition and the reported TWFE term",
    }
    if int(fit._N) != len(bal):
        diag["warning_sample"] = "pyfixest dropped rows (singletons) from the balanced sub-panel; the sum check is on different samples"
    if msgs:
        diag["warnings"] = msgs
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=int(fit._N),
        adj_r2=adj_r2(fit),
        fixed_effects=fe_desc(spec, ctx, ("stkcd", "year")),
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, len(bal), int(fit._N), f"balanced sub-panel of {res['n_units']} firms x "
                                  f"{res['n_periods']} years, {n_switch} non-absorbing firm(s) dropped"),
        main_term=spec.treatment,
        diagnostics=diag,
    )
