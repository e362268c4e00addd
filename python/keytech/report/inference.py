"""Report section "Inference beyond the peers" (issue 14): the wild cluster bootstrap of Table 3
column (5) and the province-clustered spec, the multiple-testing adjusted p-values of the families
a reader scans, the doubly robust Callaway–Sant'Anna event study with its uniform band, and the
extended TWFE Poisson effect in percent next to Table 3."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from keytech.report.page import coef_html, esc, fmt_int, fmt_num, is_missing, section, stars_from_p, table

SECTION_ID = "inference"
TITLE = "Inference beyond the peers"


def _diag(row: pd.Series) -> dict[str, Any]:
    d = row.get("diagnostics_json")
    return json.loads(d) if isinstance(d, str) and d else {}


def _p(v: Any) -> str:
    return "" if is_missing(v) else f"{float(v):.4f}"


def wcr_table(est: pd.DataFrame) -> str:
    rows = []
    for sid in ("robust_wcr_city", "robust_wcr_province"):
        sub = est.loc[est["spec_id"] == sid]
        main = sub.loc[sub["term"] == "policy"]
        if main.empty:
            continue
        r = main.iloc[0]
        d = _diag(r)
        boot = d.get("wild_bootstrap", {})
        term_d = d.get("term", {})
        cells = [("txt", f"<code>{esc(sid)}</code>"), ("num", coef_html(r["estimate"], r["std_error"])),
                 ("num", fmt_int(d.get("n_clusters"))),
                 ("num", _p(term_d.get("analytic_p_value")))]
        for kind in ("rademacher", "webb"):
            b = boot.get(kind)
            cells.append(("num", f"{_p(b['p_value'])}<br><span class='small'>[{fmt_num(b['ci'][0])}, {fmt_num(b['ci'][1])}]</span>"
                          if b else ""))
        rows.append(cells)
    if not rows:
        return "<p class='muted'>The wild bootstrap specs are not in this run: <code>keytech estimate --only wcr</code>.</p>"
    return table(["spec", "Policy (CRV1 SE)", "clusters", "analytic p", "WCR Rademacher p [95% CI]", "WCR Webb p [95% CI]"],
                 rows, table_id="wcr-table", classes=["txt", "num", "num", "num", "num", "num"])


def adjusted_table(est: pd.DataFrame) -> str:
    sub = est.loc[est["spec_id"].str.startswith("mt_")]
    if sub.empty:
        return "<p class='muted'>The multiple-testing families are not in this run: <code>keytech estimate --only mt</code>.</p>"
    rows = []
    for r in sub.itertuples():
        d = json.loads(r.diagnostics_json) if isinstance(r.diagnostics_json, str) and r.diagnostics_json else {}
        if isinstance(d.get("term"), dict):  # the family's main (first) member: spec diagnostics + its own
            d = d["term"]
        rows.append([("txt", f"<code>{esc(r.spec_id)}</code>"), ("txt", f"<code>{esc(r.term)}</code>"),
                     ("num", coef_html(r.estimate, r.std_error, stars_from_p(d.get("raw_p_value")))),
                     ("num", _p(d.get("raw_p_value"))), ("num", _p(d.get("holm_p_value"))),
                     ("num", _p(d.get("raw_bootstrap_p_value"))), ("num", _p(r.p_value))])
    return table(["family", "member spec", "Policy (SE)", "raw p", "Holm p", "bootstrap p", "Romano–Wolf p"], rows,
                 table_id="adjusted-pvalues-table", classes=["txt", "txt", "num", "num", "num", "num", "num"])


def cs_dr_table(est: pd.DataFrame) -> str:
    sub = est.loc[est["spec_id"] == "robust_staggered_drcs"]
    if sub.empty:
        return "<p class='muted'>The doubly robust Callaway–Sant'Anna spec is not in this run: <code>keytech estimate --only robust_staggered_drcs</code>.</p>"
    main = sub.loc[sub["term"] == "policy"]
    d = _diag(main.iloc[0]) if not main.empty else {}
    band = d.get("uniform_band", {})
    ev = sub.loc[sub["term"].str.startswith("rel_time=")]
    ev = ev.assign(k=ev["term"].str.split("=").str[1].astype(int)).sort_values("k")
    rows = []
    for r in ev.itertuples():
        ub = (band.get("bounds") or {}).get(str(r.k))
        rows.append([("num", str(r.k)), ("num", coef_html(r.estimate, r.std_error, stars_from_p(r.p_value))),
                     ("num", f"[{fmt_num(r.ci_low)}, {fmt_num(r.ci_high)}]"),
                     ("num", f"[{fmt_num(ub[0])}, {fmt_num(ub[1])}]" if ub else "")])
    for name, label in (("policy", "simple ATT"), ("att_dynamic", "mean of e ≥ 0")):
        m = sub.loc[sub["term"] == name]
        if not m.empty:
            r = m.iloc[0]
            rows.append([("num", label), ("num", coef_html(r["estimate"], r["std_error"], stars_from_p(r["p_value"]))),
                         ("num", f"[{fmt_num(r['ci_low'])}, {fmt_num(r['ci_high'])}]"), ("num", "")])
    crit = band.get("critical_value")
    note = (f"<p class='small'>Covariates {esc(', '.join(d.get('covariates', [])) or 'none')} (earlier period of each 2×2), "
            f"{esc(d.get('control_group', ''))} controls; SE: {esc(d.get('se', ''))}. Uniform band: sup-t critical value "
            f"{fmt_num(crit, 3)} vs {fmt_num(band.get('pointwise_critical_value'), 3)} pointwise "
            f"({esc(band.get('draws', ''))} multiplier draws, seed {esc(band.get('seed', ''))}).</p>")
    return table(["event time", "ATT (SE)", "95% pointwise", "95% uniform band"], rows, table_id="cs-dr-table",
                 classes=["num", "num", "num", "num"]) + note


def etwfe_table(est: pd.DataFrame) -> str:
    """Extended TWFE Poisson next to Table 3 column (5) and the plain FE-Poisson."""
    rows = []
    for sid, term, label in (("table3_col5", "policy", "Table 3 (5): OLS on ln(1+y), log points"),
                             ("robust_poisson", "policy", "FE Poisson on the count (single Policy)"),
                             ("robust_etwfe_poisson", "policy", "ETWFE Poisson: cohort×year effects, mean (log points)"),
                             ("robust_etwfe_poisson", "att_pct", "ETWFE Poisson: effect in % on the count")):
        m = est.loc[(est["spec_id"] == sid) & (est["term"] == term)]
        if m.empty:
            continue
        r = m.iloc[0]
        rows.append([("txt", esc(label)), ("txt", f"<code>{esc(sid)}</code>"),
                     ("num", coef_html(r["estimate"], r["std_error"], stars_from_p(r["p_value"]))),
                     ("num", f"[{fmt_num(r['ci_low'])}, {fmt_num(r['ci_high'])}]"), ("num", fmt_int(r["nobs"]))])
    if not any(c[1][1].endswith("robust_etwfe_poisson</code>") for c in rows):
        return "<p class='muted'>The ETWFE Poisson spec is not in this run: <code>keytech estimate --only robust_etwfe_poisson</code>.</p>"
    return table(["estimate", "spec", "coefficient (SE)", "95% CI", "N"], rows, table_id="etwfe-table",
                 classes=["txt", "txt", "num", "num", "num"])


HONEST_DID_SPECS = (("event_study", "Event study (Eq. 2)"), ("robust_staggered_sunab", "Sun–Abraham"),
                    ("robust_staggered_drcs_event", "Callaway–Sant'Anna doubly robust, universal base"))


def honest_did_block(data: dict[str, Any]) -> str:
    """Rambachan & Roth (2023) sensitivity: breakdown values, the sets per M / M̄, and the figure."""
    from keytech.estimation.orchestration.store import read_honest_did
    from keytech.report import figures

    bundle = data.get("estimation")
    try:
        rows = read_honest_did(data.get("db"), bundle[1]) if bundle else pd.DataFrame()
    except Exception as exc:  # an old warehouse without the table reads as empty; others are shown
        return f"<p class='muted'>Honest DiD rows could not be read: {esc(str(exc))}</p>"
    if rows.empty:
        return ("<p class='muted'>No Honest DiD rows in this run: <code>keytech estimate --only event_study</code> "
                "(specs with option <code>honest_did</code>).</p>")
    parts = []
    for sid, label in HONEST_DID_SPECS:
        r = rows.loc[rows["spec_id"] == sid]
        if r.empty:
            continue
        body = []
        for target, tlabel in (("first", "k = 0"), ("average", "mean of post periods")):
            t = r.loc[r["target"] == target]
            orig = t.loc[t["restriction"] == "original"]
            cells = [esc(tlabel),
                     "" if orig.empty else f"[{fmt_num(orig['ci_low'].iloc[0], 4)}, {fmt_num(orig['ci_high'].iloc[0], 4)}]"]
            for restr in ("SD", "RM"):
                bd = t.loc[t["restriction"] == f"{restr}_breakdown"]
                v = None if bd.empty else bd["value"].iloc[0]
                cells.append("— (the set at 0 includes 0 already)" if is_missing(v) else fmt_num(v, 4))
            for restr in ("SD", "RM"):
                rr = t.loc[t["restriction"] == restr].sort_values("value")
                cells.append("<br>".join(f"{fmt_num(x.value, 3)}: [{fmt_num(x.ci_low, 4)}, {fmt_num(x.ci_high, 4)}]"
                                         for x in rr.itertuples()))
            body.append(list(zip(["txt", "num", "num", "num", "num", "num"], cells)))
        parts.append(f"<h4>{esc(label)} <code>{esc(sid)}</code></h4>" + table(
            ["target", "original 95% CI", "breakdown M (Δ^SD)", "breakdown M̄ (Δ^RM)", "FLCI by M", "C-LF set by M̄"],
            body, table_id=f"honest-did-{sid}", classes=["txt", "num", "num", "num", "num", "num"]))
        svg = figures.honest_did(rows, sid)
        if svg:
            parts.append(f"<figure class='figure'>{svg}<figcaption>Robust 95% confidence sets against M and M̄ "
                         f"({esc(label)}); grey: the ordinary CI under exact parallel trends; dashed: the breakdown "
                         "value.</figcaption></figure>")
    return "".join(parts)


def inference_section(data: dict[str, Any]) -> str:
    if not data.get("estimation"):
        return section(SECTION_ID, TITLE, "<p class='muted'>No estimation run yet.</p>")
    est = data["estimation"][0]
    body = ("<h3>Wild cluster bootstrap (restricted, WCR11)</h3>"
            "<p>Table 3 column (5) with city clusters and with province clusters: coefficient and CRV1 SE as in the "
            "spec; bootstrap p-value of Policy = 0 and the 95% confidence interval by test inversion, computed on the "
            "fixed-effect-demeaned design (no dummy matrices), seeded by the run.</p>" + wcr_table(est) +
            "<h3>Multiple-testing adjusted p-values</h3>"
            "<p>Each family (Table 5, 6, 7, the nine SEI fields, and the four splits of each heterogeneity moderator): "
            "raw analytic p-value, Holm's adjustment of it, the single-hypothesis wild-bootstrap p-value, and the "
            "Romano–Wolf step-down p-value from a joint wild cluster bootstrap with shared city weights.</p>"
            + adjusted_table(est) +
            "<h3>Callaway–Sant'Anna, doubly robust with covariates</h3>" + cs_dr_table(est) +
            "<h3>Extended TWFE Poisson (Wooldridge 2023) next to Table 3</h3>"
            "<p>The effect in percent on the count of key-technology invention applications, from a Poisson model with "
            "one effect per treated cohort and post year (firm and year FE, full controls, city clusters) — the "
            "answer to Chen &amp; Roth (2024) on ln(1+y) outcomes.</p>" + etwfe_table(est) +
            "<h3>Sensitivity to parallel trends (Rambachan &amp; Roth 2023)</h3>"
            "<p>Robust 95% confidence sets for the first post period (k = 0) and the mean of k = 0..3 when the "
            "post-period trend may deviate: by at most M in second differences (Δ^SD; fixed-length CI) or by at most "
            "M̄ times the largest pre-period first difference (Δ^RM; conditional least-favourable hybrid). The "
            "breakdown value is the largest M or M̄ at which the set still excludes 0 "
            "(<code>results.honest_did</code>; docs/inference.md).</p>" + honest_did_block(data))
    return section(SECTION_ID, TITLE, body)
