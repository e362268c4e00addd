"""Publication tables (Markdown, LaTeX, HTML), figures, and the "this run vs paper" rendering.

Everything is rebuilt from ``results.estimates`` — tables and figures can be regenerated for any
stored run without re-estimating.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation import store
from keytech.estimation.base import stars
from keytech.estimation.registry import Registry, Spec, load_registry

SYNTHETIC_NOTE = (
    "Note: the bundled data is synthetic; these numbers demonstrate the pipeline and are not findings."
)


# --------------------------------------------------------------------------- table model


@dataclass
class Row:
    label: str
    cells: list[str]
    kind: str = "text"  # coef | se | text | rule


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def fmt_coef(est: float | None, p: float | None, digits: int = 4) -> str:
    if est is None or (isinstance(est, float) and not np.isfinite(est)):
        return ""
    return f"{est:.{digits}f}{stars(p)}"


def fmt_se(se: float | None, digits: int = 4) -> str:
    if se is None or (isinstance(se, float) and not np.isfinite(se)):
        return ""
    return f"({se:.{digits}f})"


def fmt_n(n: Any) -> str:
    if n is None or (isinstance(n, float) and not np.isfinite(n)):
        return ""
    return f"{int(n):,}"


def fmt_r2(r: Any) -> str:
    if r is None or (isinstance(r, float) and not np.isfinite(r)):
        return ""
    return f"{float(r):.3f}"


def _nan_to_none(v: Any) -> Any:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def _main_row(est: pd.DataFrame, spec_id: str, term: str) -> dict[str, Any] | None:
    sub = est.loc[(est["spec_id"] == spec_id) & (est["term"] == term)]
    if sub.empty:
        return None
    row = {k: _nan_to_none(v) for k, v in sub.iloc[0].to_dict().items()}
    row["diagnostics"] = json.loads(row["diagnostics_json"]) if row.get("diagnostics_json") else {}
    return row


def _main_term(spec: Spec) -> str:
    if spec.estimator in ("staggered_sunab", "staggered_did2s"):
        return "att"
    if spec.estimator == "event_study":
        return "rel_time=0"
    return spec.treatment


# --------------------------------------------------------------------------- Table 3


FE_ROWS = (("Firm FE", "stkcd"), ("Year FE", "year"), ("Industry×year FE", "ind_year"), ("Province×year FE", "prov_year"))


def table3_model(est: pd.DataFrame, reg: Registry, synthetic: bool) -> Table:
    specs = [s for s in reg.specs if s.table == "table3"]
    headers = [s.label for s in specs]
    rows_main = [_main_row(est, s.id, s.treatment) for s in specs]
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
    rows.append(Row("Paper: Policy", [fmt_coef(s.paper.coef, _stars_to_p(s.paper.stars)) if s.paper else "" for s in specs], "coef"))
    rows.append(Row("", [fmt_se(s.paper.se) if s.paper else "" for s in specs], "se"))
    rows.append(Row("Paper: N", [fmt_n(s.paper.nobs) if s.paper else "" for s in specs]))
    rows.append(Row("Paper: Adj. R²", [fmt_r2(s.paper.adj_r2) if s.paper else "" for s in specs]))
    notes = [
        "Dependent variable: ln(1 + key-technology invention applications). Standard errors in "
        "parentheses; * p<0.10, ** p<0.05, *** p<0.01.",
        "Singleton fixed-effect groups are dropped (pyfixest fixef_rm='singleton', as reghdfe), and "
        "missing controls are dropped listwise per column, so N differs across columns and from the paper.",
    ]
    if synthetic:
        notes.insert(0, SYNTHETIC_NOTE)
    return Table("Table 3. Baseline: intelligent-manufacturing pilots and key-technology innovation", headers, rows, notes)


def _stars_to_p(n: int | None) -> float | None:
    return {3: 0.001, 2: 0.02, 1: 0.07, 0: 0.5}.get(n) if n is not None else None


# --------------------------------------------------------------------------- robustness


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
        lead = _main_row(est, spec.id, "lead1")
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
        rows_main = [_main_row(est, s.id, _main_term(s)) for s in ss]
        label = "Policy / ATT" if any(_main_term(s) == "att" for s in ss) else "Policy"
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
        notes = ["Standard errors in parentheses; * p<0.10, ** p<0.05, *** p<0.01. Spec ids: " + ", ".join(s.id for s in ss) + "."]
        if synthetic:
            notes.insert(0, SYNTHETIC_NOTE)
        tables.append(Table(f"Robustness — {panel}", [s.label for s in ss], rows, notes))
    return tables


def event_study_model(est: pd.DataFrame, spec_id: str = "event_study", synthetic: bool = False) -> Table | None:
    sub = est.loc[(est["spec_id"] == spec_id) & est["term"].str.startswith("rel_time=")]
    if sub.empty:
        return None
    sub = sub.assign(k=sub["term"].str.split("=").str[1].astype(int)).sort_values("k")
    rows = []
    for _, r in sub.iterrows():
        se = _nan_to_none(r["std_error"])
        rows.append(Row(f"k = {r['k']}", [fmt_coef(r["estimate"], _nan_to_none(r["p_value"])) + (" (ref.)" if se is None else "")], "coef"))
        rows.append(Row("", [fmt_se(se)], "se"))
    main = _main_row(est, spec_id, "rel_time=0")
    pre = (main or {}).get("diagnostics", {}).get("pretrend_test", {})
    rows.append(Row("", [], "rule"))
    rows.append(Row("Pre-period joint test (k=-5..-2)", [f"F={pre.get('F', float('nan')):.3f}, p={pre.get('p_value', float('nan')):.3f}" if pre else ""]))
    rows.append(Row("N", [fmt_n(main and main["nobs"])]))
    notes = ["Eq. 2: k<-5 binned into -5, base k=-1, firm and year FE, full controls, SE clustered by city."]
    if synthetic:
        notes.insert(0, SYNTHETIC_NOTE)
    return Table("Event study (Eq. 2)", ["ln(1+Apply_inv_zl)"], rows, notes)


# --------------------------------------------------------------------------- renderers


def to_markdown(t: Table, level: int = 2) -> str:
    ncol = len(t.headers)
    out = [f"{'#' * level} {t.title}", "", "| | " + " | ".join(t.headers) + " |", "|---|" + "---:|" * ncol]
    for r in t.rows:
        if r.kind == "rule":
            continue
        cells = r.cells + [""] * (ncol - len(r.cells))
        out.append(f"| {r.label} | " + " | ".join(cells) + " |")
    out.append("")
    out += [f"_{n}_  " for n in t.notes]
    return "\n".join(out) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(s: str) -> str:
    s = "".join(_TEX.get(c, c) for c in s)
    return s.replace("×", r"$\times$").replace("²", r"$^2$").replace("θ", r"$\theta$").replace("Σ", r"$\Sigma$").replace("—", "---").replace("–", "--")


def _tex_cell(c: str) -> str:
    m = re.match(r"^(.*?)(\*{1,3})$", c)
    if m:
        return f"{tex_escape(m.group(1))}$^{{{m.group(2)}}}$"
    return tex_escape(c)


def to_latex(t: Table) -> str:
    ncol = len(t.headers)
    out = [
        r"\begin{table}[htbp]\centering",
        rf"\caption{{{tex_escape(t.title)}}}",
        r"\begin{tabular}{l" + "c" * ncol + "}",
        r"\toprule",
        " & " + " & ".join(tex_escape(h) for h in t.headers) + r" \\",
        r"\midrule",
    ]
    for r in t.rows:
        if r.kind == "rule":
            out.append(r"\midrule")
            continue
        cells = r.cells + [""] * (ncol - len(r.cells))
        cells = [_tex_cell(c) for c in cells]
        out.append(tex_escape(r.label) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if t.notes:
        out.append(r"\par\smallskip\begin{minipage}{0.95\linewidth}\footnotesize " + r" \\ ".join(tex_escape(n) for n in t.notes) + r"\end{minipage}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def to_html(t: Table) -> str:
    ncol = len(t.headers)
    out = [f"<table class='keytech-table'>", f"<caption>{html.escape(t.title)}</caption>", "<thead><tr><th></th>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.headers) + "</tr></thead>", "<tbody>"]
    for r in t.rows:
        if r.kind == "rule":
            out.append(f"<tr class='rule'><td colspan='{ncol + 1}'></td></tr>")
            continue
        cells = r.cells + [""] * (ncol - len(r.cells))
        out.append(f"<tr class='{r.kind}'><th scope='row'>{html.escape(r.label)}</th>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody>")
    if t.notes:
        out.append(f"<tfoot><tr><td colspan='{ncol + 1}'>" + "<br>".join(html.escape(n) for n in t.notes) + "</td></tr></tfoot>")
    out.append("</table>")
    return "\n".join(out) + "\n"


_CSS = (
    "<style>body{font-family:system-ui,sans-serif;margin:2em}table.keytech-table{border-collapse:collapse;margin:1.5em 0}"
    "caption{font-weight:600;text-align:left;padding-bottom:.4em}th,td{padding:.15em .7em;text-align:center}"
    "th[scope=row]{text-align:left;font-weight:normal}thead th{border-top:2px solid #000;border-bottom:1px solid #000}"
    "tr.se td{color:#444}tr.rule td{border-top:1px solid #999;padding:0}tfoot td{text-align:left;font-size:.85em;border-top:2px solid #000}</style>"
)


def _html_page(title: str, tables: list[Table]) -> str:
    body = "\n".join(to_html(t) for t in tables)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_CSS}</head><body>\n{body}</body></html>\n"


def write_tables(name: str, tables: list[Table], out_dir: Path, footer: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = "\n".join(to_markdown(t) for t in tables) + (f"\n{footer}\n" if footer else "")
    tex = "\n".join(to_latex(t) for t in tables) + (f"% {footer}\n" if footer else "")
    page = _html_page(tables[0].title if tables else name, tables)
    paths = []
    for ext, text in (("md", md), ("tex", tex), ("html", page)):
        p = out_dir / f"{name}.{ext}"
        p.write_text(text, encoding="utf-8")
        paths.append(p)
    return paths


# --------------------------------------------------------------------------- figures


def plot_event_study(est: pd.DataFrame, out_dir: Path, synthetic: bool, spec_id: str = "event_study", overlay: str | None = "robust_staggered_sunab") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = est.loc[(est["spec_id"] == spec_id) & est["term"].str.startswith("rel_time=")]
    if sub.empty:
        return []
    sub = sub.assign(k=sub["term"].str.split("=").str[1].astype(int)).sort_values("k")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lo = (sub["estimate"] - sub["ci_low"]).fillna(0)
    hi = (sub["ci_high"] - sub["estimate"]).fillna(0)
    es_fe = sub["fixed_effects"].iloc[0] if "fixed_effects" in sub else ""
    ax.errorbar(sub["k"], sub["estimate"], yerr=[lo, hi], fmt="o-", color="#1f4e79", capsize=3, label=f"TWFE event study, {es_fe} FE (95% CI)")
    ov = est.loc[(est["spec_id"] == overlay) & est["term"].str.startswith("rel_time=")] if overlay else pd.DataFrame()
    if not ov.empty:
        ov = ov.assign(k=ov["term"].str.split("=").str[1].astype(int)).sort_values("k")
        ov_fe = ov["fixed_effects"].iloc[0] if "fixed_effects" in ov else ""
        ax.plot(ov["k"] + 0.12, ov["estimate"], "s--", color="#c55a11", alpha=0.8, label=f"Sun–Abraham IW ({ov_fe} FE; {overlay})")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(-0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Years relative to treatment (k; k=-1 is the reference, k<-5 binned)")
    ax.set_ylabel("Effect on ln(1+key-tech applications)")
    main = _main_row(est, spec_id, "rel_time=0")
    pre = (main or {}).get("diagnostics", {}).get("pretrend_test", {})
    title = "Event study (Eq. 2)"
    if pre:
        title += f" — pre-period joint test p = {pre.get('p_value', float('nan')):.3f}"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    if synthetic:
        fig.text(0.01, 0.01, SYNTHETIC_NOTE, fontsize=7, color="#a00")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out_dir, "event_study")


def plot_placebo(est: pd.DataFrame, out_dir: Path, synthetic: bool, spec_id: str = "placebo") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = _main_row(est, spec_id, "policy")
    if not main or not main["diagnostics"].get("draws"):
        return []
    d = main["diagnostics"]
    draws = np.asarray(d["draws"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.hist(draws, bins=40, color="#8faadc", edgecolor="white", label=f"{len(draws)} placebo draws")
    ax.axvline(d["real_beta"], color="#c00000", lw=2, label=f"actual estimate {d['real_beta']:.4f}")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("Placebo coefficient of Policy (column 5 specification)")
    ax.set_ylabel("Draws")
    n_ext = d.get("n_draws_as_extreme", int(round(d["p_empirical"] * len(draws))))
    ax.set_title(f"Placebo: random pilot cities and timing — empirical p = {d['p_empirical']:.3f} ({n_ext}/{len(draws)} draws as extreme)", fontsize=10)
    ax.legend(fontsize=8)
    if synthetic:
        fig.text(0.01, 0.01, SYNTHETIC_NOTE, fontsize=7, color="#a00")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out_dir, "placebo")


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=150)
        paths.append(p)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------- entry points


def _synthetic_default(run: dict[str, Any] | None) -> bool:
    if run and run.get("parameters_json"):
        try:
            params = json.loads(run["parameters_json"])
            if "synthetic" in params:
                return bool(params["synthetic"])
        except (TypeError, ValueError):
            pass
    return truth_file_exists()


def truth_file_exists() -> bool:
    try:
        from keytech import paths

        return (paths.raw_dir() / "_truth.json").is_file()
    except Exception:
        return False


def _output_dir(out_dir: str | Path | None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    from keytech import paths

    return paths.output_dir()


def render_tables(
    run_id: str | None = None,
    db_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    synthetic: bool | None = None,
    registry: Registry | None = None,
) -> list[Path]:
    """Write table3.*, robustness.*, event_study.* (md, tex, html) under ``<output>/tables`` and the
    event-study and placebo figures (png, svg) under ``<output>/figures`` for a stored run."""
    reg = registry or load_registry()
    est, source, run = store.estimates_for_display(db_path, run_id)
    syn = _synthetic_default(run) if synthetic is None else synthetic
    base = _output_dir(out_dir)
    runs_used = sorted(set(source.values()))
    footer = f"Estimates from run(s) {', '.join(runs_used)} (data fingerprint {run['data_fingerprint']})."
    written: list[Path] = []
    if any(s.table == "table3" for s in reg.specs):
        written += write_tables("table3", [table3_model(est, reg, syn)], base / "tables", footer)
    rob = robustness_models(est, reg, syn)
    if rob:
        written += write_tables("robustness", rob, base / "tables", footer)
    es = event_study_model(est, synthetic=syn)
    if es is not None:
        written += write_tables("event_study", [es], base / "tables", footer)
    from keytech.estimation.mechanisms import render_tables as render_mechanism_tables

    written += render_mechanism_tables(est, reg, syn, base / "tables", footer)
    from keytech.estimation.table4 import render as render_table4

    written += render_table4(est, reg, syn, base / "tables", footer)
    written += plot_event_study(est, base / "figures", syn)
    written += plot_placebo(est, base / "figures", syn)
    return written


def table3_vs_paper(run_id: str | None = None, db_path: str | Path | None = None, synthetic: bool | None = None, registry: Registry | None = None) -> str:
    """Plain-text Table 3: this run next to the paper's published numbers."""
    reg = registry or load_registry()
    est, source, run = store.estimates_for_display(db_path, run_id)
    syn = _synthetic_default(run) if synthetic is None else synthetic
    specs = [s for s in reg.specs if s.table == "table3"]
    head = f"{'col':<5}{'this run: Policy (SE)':>26}{'paper: Policy (SE)':>26}{'N run':>9}{'N paper':>9}{'adjR2 run':>11}{'paper':>7}"
    lines = ["Table 3 — ln(1+key-tech invention applications) on Policy: this run vs Pi & Luo", head, "-" * len(head)]
    for s in specs:
        r = _main_row(est, s.id, s.treatment)
        mine = f"{fmt_coef(r['estimate'], r['p_value'])} {fmt_se(r['std_error'])}" if r else "not estimated"
        p = s.paper
        theirs = f"{fmt_coef(p.coef, _stars_to_p(p.stars))} {fmt_se(p.se)}" if p else ""
        lines.append(
            f"{s.label:<5}{mine:>26}{theirs:>26}{fmt_n(r and r['nobs']):>9}{fmt_n(p and p.nobs):>9}"
            f"{fmt_r2(r and r['adj_r2']):>11}{fmt_r2(p and p.adj_r2):>7}"
        )
    lines.append("FE/SE: (1) none, iid; (2)-(4) firm+year, iid; (5) firm+industry×year+province×year, cluster city. * p<.1 ** p<.05 *** p<.01")
    lines.append(f"run {run['run_id']} · data fingerprint {run['data_fingerprint']}")
    if syn:
        lines.append(SYNTHETIC_NOTE)
    return "\n".join(lines)
