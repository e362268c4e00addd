"""Table 3 (baseline), the robustness panels and the event-study table, rebuilt from
``results.estimates``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from keytech.estimation.orchestration.registry import Registry, Spec, load_registry
from keytech.tables.format import fmt_coef, fmt_n, fmt_r2, fmt_se, stars_to_p
from keytech.tables.model import Row, Table, fill, fixed_headers, main_row, main_term, nan_to_none, table_notes


FE_ROWS = (("Firm FE", "stkcd"), ("Year FE", "year"), ("Industry×year FE", "ind_year"), ("Province×year FE", "prov_year"))


def table3_model(est: pd.DataFrame, reg: Registry, synthetic: bool) -> Table:
    specs = [s for s in reg.specs if s.table == "table3"]
    headers = [s.label for s in specs]
    rows_main = [main_row(est, s.id, s.treatment) for s in specs]
    coef = Row("Policy", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in rows_main], "coef")
    se = Row("", [fmt_se(r and r["std_error"]) for r in rows_main], "se")
    rows = [coef, se, Row("", [], "rule")]
    rows.append(Row("Firm controls", ["Yes" if s.has_controls("firm") else "No" for s in specs]))
    rows.append(Row("City controls", ["Yes" if s.has_controls("city") else "No" for s in specs]))
    for label, fe in FE_ROWS:
        rows.append(Row(label, ["Yes" if fe in s.fixed_effects else "No" for s in specs]))
    rows.append(Row("SE", [s.vcov.describe() for s in specs]))
    rows.append(Row("N", [fmt_n(r and r["nobs"]) for r in rows_main]))
    rows.append(Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in rows_main]))
    rows.append(Row("", [], "rule"))
    rows.append(Row("Paper: Policy", [fmt_coef(s.paper.coef, stars_to_p(s.paper.stars)) if s.paper else "" for s in specs], "coef"))
    rows.append(Row("", [fmt_se(s.paper.se) if s.paper else "" for s in specs], "se"))
    rows.append(Row("Paper: N", [fmt_n(s.paper.nobs) if s.paper else "" for s in specs]))
    rows.append(Row("Paper: Adj. R²", [fmt_r2(s.paper.adj_r2) if s.paper else "" for s in specs]))
    ts = reg.table("table3")
    return Table(ts.title, headers, rows, table_notes(ts, synthetic))


def _extra_note(spec: Spec, r: dict[str, Any] | None, est: pd.DataFrame) -> str:
    if r is None:
        return ""
    d = r["diagnostics"]
    if spec.estimator == "negbin" and "theta" in d:
        note = f"θ={d['theta']:.3g}" + (" (Poisson limit)" if d.get("theta_at_poisson_bound") else "")
        if d.get("planted_beta_key") is not None:
            note += f"; planted β={d['planted_beta_key']:g}"
        return note + ("" if d.get("converged", True) else "; NOT converged")
    if spec.estimator == "poisson":
        return "PPML" + (f"; planted β={d['planted_beta_key']:g}" if d.get("planted_beta_key") is not None else "")
    if spec.estimator == "staggered_dcdh" and "share_negative" in d:
        return f"neg. w: {100 * d['share_negative']:.1f}% (Σ {d['sum_negative']:.3f})"
    if spec.estimator == "staggered_bacon" and "by_type" in d:
        forb = d["by_type"].get("later_vs_earlier", {}).get("weight", 0.0)
        return f"late-vs-early w={forb:.3f}"
    if spec.estimator == "placebo" and "p_empirical" in d:
        return f"p_emp=(1+{d.get('n_draws_as_extreme', '?')})/(1+{d['n_draws']})={d['p_empirical']:.3f}"
    if spec.estimator == "staggered_did2s":
        n = d.get("treated_obs_dropped_unidentified", d.get("treated_obs_dropped_unidentified_fe"))
        return f"imputation; {n} treated obs w/o estimable Y(0) dropped" if n else "imputation"
    if spec.estimator == "staggered_cs" and "n_cells_post" in d:
        return f"not-yet-treated; {d['n_cells_post']} post ATT(g,t); boot B={d.get('bootstrap', {}).get('draws', '?')}"
    if spec.estimator == "wild_bootstrap" and "wild_bootstrap" in d:
        return "; ".join(f"WCR {k}: p={v['p_value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"
                         for k, v in d["wild_bootstrap"].items())
    if spec.estimator == "staggered_cs_dr" and "uniform_band" in d:
        return f"DR, covariates {'+'.join(d.get('covariates') or []) or 'none'}; uniform band c={d['uniform_band']['critical_value']:.2f}"
    if spec.estimator == "etwfe_poisson" and "pct_effect" in d:
        return f"ETWFE: {d['pct_effect']:+.1f}% (SE {d['pct_se']:.1f}) on the count"
    if spec.estimator == "staggered_imputation" and "pretrend_test" in d:
        return f"BJS conservative SE; pre-trend p={d['pretrend_test'].get('p_value', float('nan')):.3f}"
    if spec.id == "robust_anticipation":
        lead = main_row(est, spec.id, "lead1")
        if lead:
            return f"lead1={fmt_coef(lead['estimate'], lead['p_value'])}"
    return ""


def robustness_models(est: pd.DataFrame, reg: Registry, synthetic: bool) -> list[Table]:
    specs = [s for s in reg.specs if s.table == "robustness"]
    panels: dict[str, list[Spec]] = {}
    for s in specs:
        panels.setdefault(s.table_panel or "Other", []).append(s)
    tables = []
    for panel, ss in panels.items():
        rows_main = [main_row(est, s.id, main_term(s)) for s in ss]
        label = "Policy / ATT" if any(main_term(s) == "att" for s in ss) else "Policy"
        rows = [
            Row(label, [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in rows_main], "coef"),
            Row("", [fmt_se(r and r["std_error"]) for r in rows_main], "se"),
            Row("", [], "rule"),
            Row("Outcome", [s.outcome for s in ss]),
            Row("Estimator", [s.estimator for s in ss]),
            Row("Controls", ["+".join(s.control_sets) or "none" for s in ss]),
            Row("FE", [(r["fixed_effects"] if r else s.fixed_effects_name) for s, r in zip(ss, rows_main)]),
            Row("SE", [s.vcov.describe() for s in ss]),
            Row("N", [fmt_n(r and r["nobs"]) for r in rows_main]),
            Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in rows_main]),
            Row("Note", [_extra_note(s, r, est) for s, r in zip(ss, rows_main)]),
        ]
        ts = reg.table("robustness")
        tables.append(Table(fill(ts.title, panel=panel), [s.label for s in ss], rows,
                            table_notes(ts, synthetic, spec_ids=", ".join(s.id for s in ss))))
    return tables


def event_study_model(est: pd.DataFrame, spec_id: str = "event_study", synthetic: bool = False,
                      reg: Registry | None = None) -> Table | None:
    sub = est.loc[(est["spec_id"] == spec_id) & est["term"].str.startswith("rel_time=")]
    if sub.empty:
        return None
    sub = sub.assign(k=sub["term"].str.split("=").str[1].astype(int)).sort_values("k")
    rows = []
    for _, r in sub.iterrows():
        se = nan_to_none(r["std_error"])
        rows.append(Row(f"k = {r['k']}", [fmt_coef(r["estimate"], nan_to_none(r["p_value"])) + (" (ref.)" if se is None else "")], "coef"))
        rows.append(Row("", [fmt_se(se)], "se"))
    main = main_row(est, spec_id, "rel_time=0")
    pre = (main or {}).get("diagnostics", {}).get("pretrend_test", {})
    rows.append(Row("", [], "rule"))
    rows.append(Row("Pre-period joint test (k=-5..-2)", [f"F={pre.get('F', float('nan')):.3f}, p={pre.get('p_value', float('nan')):.3f}" if pre else ""]))
    rows.append(Row("N", [fmt_n(main and main["nobs"])]))
    ts = (reg or load_registry()).table("event_study")
    return Table(ts.title, fixed_headers(ts, 1), rows, table_notes(ts, synthetic))
