"""Publication tables for Table 4 (endogeneity) in the paper's layout, the PSM balance table and
the spillover / competing-explanation checks, rebuilt from ``results.estimates``.

Table 4 columns: (1) IFE, (2) first stage IV1, (3) 2SLS IV1, (4) first stage IV2, (5) 2SLS IV2,
(6) PSM with matching weights, (7) PSM common support. Rows: Policy (and the instrument in the
first-stage columns), SE, controls and FE, N, then the diagnostics rows of the paper: KP rk LM
statistic [p-value], KP rk Wald F {Stock–Yogo 15% critical value}, first-stage F; then the
paper's published numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from keytech.estimation.orchestration.registry import Registry
from keytech.tables.format import fmt_coef, fmt_n, fmt_r2, fmt_se, stars_to_p
from keytech.tables.model import Row, Table, fill, fixed_headers, main_row, table_notes
from keytech.tables.render import write_tables


def _f(x, digits=3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def table4_model(est: pd.DataFrame, reg: Registry, synthetic: bool) -> Table:
    specs = [s for s in reg.specs if s.table == "table4"]
    rows_main, rows_inst = [], []
    for s in specs:
        rows_main.append(main_row(est, s.id, s.treatment))
        inst = s.options.get("instruments", [None])[0] if s.estimator == "iv" and s.options.get("stage") == "first" else None
        rows_inst.append((inst, main_row(est, s.id, inst) if inst else None))
    rows = [
        Row("Policy", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in rows_main], "coef"),
        Row("", [fmt_se(r and r["std_error"]) for r in rows_main], "se"),
    ]
    for label, name in (("IV1", "iv1"), ("IV2", "iv2")):
        cells = [fmt_coef(r["estimate"], r["p_value"]) if (i == name and r) else "" for i, r in rows_inst]
        ses = [fmt_se(r["std_error"]) if (i == name and r) else "" for i, r in rows_inst]
        if any(cells):
            rows += [Row(label, cells, "coef"), Row("", ses, "se")]
    rows.append(Row("", [], "rule"))
    rows.append(Row("Method", [{"ife": "IFE", "iv": "First stage" if s.options.get("stage") == "first" else "2SLS",
                                "psm": "PSM-DID"}.get(s.estimator, s.estimator) for s in specs]))
    rows.append(Row("Controls", ["Yes" if s.controls else "No" for s in specs]))
    rows.append(Row("Firm, industry×year, province×year FE", ["Yes" if set(s.fixed_effects) >= {"stkcd", "ind_year", "prov_year"} else "No" for s in specs]))
    rows.append(Row("SE", [s.vcov.describe() for s in specs]))
    anyrow = [r or ir for r, (_, ir) in zip(rows_main, rows_inst)]
    rows.append(Row("N", [fmt_n(r and r["nobs"]) for r in anyrow]))
    rows.append(Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in anyrow]))
    diag = [((r or {}).get("diagnostics") or {}) for r in anyrow]
    second = [s.estimator == "iv" and s.options.get("stage") != "first" for s in specs]
    rows.append(Row("KP rk LM [p]", [f"{_f(d.get('kp_rk_lm'))} [{_f(d.get('kp_rk_lm_p'), 4)}]" if sec and d.get("kp_rk_lm") is not None else "" for d, sec in zip(diag, second)]))
    rows.append(Row("KP rk Wald F {SY 15%}", [f"{_f(d.get('kp_rk_wald_f'))} {{{_f(d.get('stock_yogo_15pct'), 2)}}}" if sec and d.get("kp_rk_wald_f") is not None else "" for d, sec in zip(diag, second)]))
    rows.append(Row("First-stage F", [_f(d.get("first_stage_F"), 2) if sec and d.get("first_stage_F") is not None else "" for d, sec in zip(diag, second)]))
    rows.append(Row("Factors (IFE)", [(str(d.get("n_factors")) + (" (= r_max)" if d.get("ic_at_r_max") else ""))
                                      if s.estimator == "ife" and d else "" for s, d in zip(specs, diag)]))
    rows.append(Row("IFE β for r = 0, 1, …", [" / ".join(f"{b:.3f}" for b in (d.get("beta_path_over_r") or {}).values())
                                             if s.estimator == "ife" and d else "" for s, d in zip(specs, diag)]))
    rows.append(Row("Matched treated / controls used", [f"{d.get('n_treated_matched')} / {d.get('n_controls_used')}" if s.estimator == "psm" and d else "" for s, d in zip(specs, diag)]))
    # N of the PSM columns as a share of column (5)'s N, beside the paper's (9,008 and 9,344 of 20,607)
    n5 = next((r["nobs"] for s, r in zip(specs, anyrow) if s.id == "table4_col5" and r and r.get("nobs")), None)
    paper5 = next((s.paper.nobs for s in specs if s.id == "table4_col5" and s.paper), None)
    rows.append(Row("N / N of (5): run · paper", [
        (f"{100 * r['nobs'] / n5:.0f}%" if (r and r.get("nobs") and n5) else "–")
        + (f" · {100 * s.paper.nobs / paper5:.0f}%" if (s.paper and s.paper.nobs and paper5) else "")
        if s.estimator == "psm" else "" for s, r in zip(specs, anyrow)]))
    rows.append(Row("", [], "rule"))
    rows.append(Row("Paper: Policy / IV", [fmt_coef(s.paper.coef, stars_to_p(s.paper.stars)) if s.paper else "" for s in specs], "coef"))
    rows.append(Row("", [fmt_se(s.paper.se) if s.paper else "" for s in specs], "se"))
    rows.append(Row("Paper: N", [fmt_n(s.paper.nobs) if s.paper else "" for s in specs]))
    ts = reg.table("table4")
    for label, values in ts.paper_rows:
        rows.append(Row(label, [values.get(s.id, "") for s in specs]))
    return Table(ts.title, [s.label for s in specs], rows, table_notes(ts, synthetic))


def psm_balance_model(est: pd.DataFrame, reg: Registry, synthetic: bool) -> Table | None:
    spec = next((s for s in reg.specs if s.estimator == "psm"), None)
    r = main_row(est, spec.id, spec.treatment) if spec else None
    bal = (r or {}).get("diagnostics", {}).get("balance") if r else None
    if not bal:
        return None
    rows = []
    for b in bal:
        rows.append(Row(b["covariate"], [_f(b["mean_treated_before"]), _f(b["mean_control_before"]), _f(b["std_diff_before"], 1),
                                         _f(b["mean_treated_after"]), _f(b["mean_control_after"]), _f(b["std_diff_after"], 1)]))
    d = r["diagnostics"]
    ts = reg.table("table4_psm_balance")
    return Table(ts.title, fixed_headers(ts, 6), rows,
                 table_notes(ts, synthetic, **{k: d.get(k) for k in ("n_treated_matched", "n_treated", "n_controls_used", "caliper_sd")}))


def spillover_models(est: pd.DataFrame, reg: Registry, synthetic: bool) -> list[Table]:
    specs = [s for s in reg.specs if s.table == "spillover"]
    panels: dict[str, list] = {}
    for s in specs:
        panels.setdefault(s.table_panel or "Other", []).append(s)
    tables = []
    for panel, ss in panels.items():
        main = [main_row(est, s.id, s.treatment) for s in ss]
        pol = [(main_row(est, s.id, "policy") if s.treatment != "policy" else None) for s in ss]
        rows = [
            Row("Main term", [s.treatment for s in ss]),
            Row("Estimate", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in main], "coef"),
            Row("", [fmt_se(r and r["std_error"]) for r in main], "se"),
        ]
        if any(pol):
            rows += [Row("Policy", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in pol], "coef"),
                     Row("", [fmt_se(r and r["std_error"]) for r in pol], "se")]
        for s, r in zip(ss, main):
            d = (r or {}).get("diagnostics") or {}
            for b in d.get("bands", []):
                rows.append(Row(f"  band {b['lo_km']:g}–{b['hi_km']:g} km ({s.label})",
                                [fmt_coef(b["coef"], b["p"]) if x is s else "" for x in ss], "coef"))
        notes_cells = []
        for s, r in zip(ss, main):
            d = (r or {}).get("diagnostics") or {}
            if "critical_distance_km" in d:
                cd = d["critical_distance_km"]
                notes_cells.append(f"critical distance {cd:g} km" if cd is not None else "no significant nearest band")
            elif "threshold_km" in d:
                notes_cells.append(f"{d['side']} < {d['threshold_km']:.0f} km" if d["side"] == "near" else f"far ≥ {d['threshold_km']:.0f} km")
            elif "not_identified" in d:
                notes_cells.append("not identified")
            else:
                notes_cells.append(s.sample_query or "")
        rows += [Row("", [], "rule"), Row("Note", notes_cells),
                 Row("FE", [(r["fixed_effects"] if r else s.fixed_effects_name) for s, r in zip(ss, main)]),
                 Row("N", [fmt_n(r and r["nobs"]) for r in main]),
                 Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in main])]
        ts = reg.table("spillover")
        tables.append(Table(fill(ts.title, panel=panel), [s.label for s in ss], rows,
                            table_notes(ts, synthetic, spec_ids=", ".join(s.id for s in ss))))
    return tables


def render(est: pd.DataFrame, reg: Registry, synthetic: bool, out_dir: Path, footer: str = "") -> list[Path]:
    """table4.*, table4_psm_balance.*, spillover.* (md, tex, html) under ``out_dir``."""
    written: list[Path] = []
    if not any(s.table == "table4" for s in reg.specs):
        return written
    if est["spec_id"].isin([s.id for s in reg.specs if s.table == "table4"]).any():
        written += write_tables("table4", [table4_model(est, reg, synthetic)], out_dir, footer)
        bal = psm_balance_model(est, reg, synthetic)
        if bal is not None:
            written += write_tables("table4_psm_balance", [bal], out_dir, footer)
    if est["spec_id"].isin([s.id for s in reg.specs if s.table == "spillover"]).any():
        written += write_tables("spillover", spillover_models(est, reg, synthetic), out_dir, footer)
    return written
