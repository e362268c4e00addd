"""`keytech report`: the replication report, one self-contained HTML page.

``build_report()`` reads the warehouse (read-only), the landing manifest, the latest check run and
the latest estimation run, and writes ``<output>/report/index.html``: inline CSS, figures as inline
SVG, no external resources, so the file can be mailed or opened offline. Sections (element ids in
:data:`SECTION_IDS`) degrade gracefully: a missing estimation run or check run is stated, not fatal.

The paper's published numbers come from ``seeds/paper_published_numbers.csv`` (see
``keytech.report.paper``); a table is rendered for every paper table in that seed, with "not run"
for the specifications the latest run (and earlier runs on the same data) did not estimate.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd

from keytech import paths
from keytech.estimation.core.results import ERROR_TERM, NO_ESTIMATE_TERMS
from keytech.report import collect, figures, paper
from keytech.report.inference import inference_section
from keytech.report.page import (
    coef_html, esc, figure, fmt_int, fmt_num, fmt_r2, is_missing, kv, page, pretty_json, section,
    stars_from_count, stars_from_p, status, table,
)

SECTION_IDS = (
    "provenance", "pipeline", "funnel", "descriptives", "paper-tables", "publication-tables", "other-specs",
    "event-study", "placebo", "inference", "rollout", "patents-by-field", "quality",
)
NAV = [
    ("provenance", "Provenance"), ("pipeline", "Pipeline"), ("funnel", "Sample funnel"),
    ("descriptives", "Descriptives"), ("paper-tables", "Paper vs this run"),
    ("publication-tables", "Tables in the paper's layout"), ("other-specs", "Other specifications"),
    ("event-study", "Event study"), ("placebo", "Placebo"), ("inference", "Inference beyond the peers"),
    ("rollout", "Pilot rollout"),
    ("patents-by-field", "Patents by SEI field"), ("quality", "Data quality"),
]


def build_report(db_path: str | Path | None = None, out_dir: str | Path | None = None,
                 raw_dir: str | Path | None = None, landing_dir: str | Path | None = None,
                 run_id: str | None = None) -> Path:
    """Write ``<out_dir>/index.html`` (default ``<output>/report``) and return its path."""
    from keytech.warehouse import connect

    db = Path(db_path) if db_path else paths.warehouse_path()
    raw = Path(raw_dir) if raw_dir else paths.raw_dir()
    landing = Path(landing_dir) if landing_dir else paths.landing_dir()
    output = paths.output_dir()
    target_dir = Path(out_dir) if out_dir else output / "report"

    with connect(db) as con:
        data: dict[str, Any] = {
            "counts": collect.mart_counts(con),
            "schemas": collect.schema_counts(con),
            "funnel": collect.funnel(con),
            "descriptives": collect.descriptives(con),
            "cities": collect.cities(con),
            "waves": collect.pilot_waves(con),
            "patents": collect.patents(con),
            "check": collect.check_run(con, output),
            "fingerprint": collect.fingerprint(con),
            "ww_dividend_sources": collect.ww_dividend_sources(con),
        }
    data["estimation"] = collect.estimation(db, run_id)
    data["truth"] = collect.truth(raw)
    data["manifest"] = collect.landing_manifest(landing)
    data["lineage"] = collect.lineage(paths.dbt_artifacts_dir(db))
    data["published"] = paper.load_published()
    data["db"], data["raw"], data["landing"] = db, raw, landing

    html_text = render(data)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(target)
    return target


# ------------------------------------------------------------------------------------ sections


def render(data: dict[str, Any]) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    est_bundle = data["estimation"]
    run = est_bundle[2] if est_bundle else None
    subtitle = (f"Pi &amp; Luo, <em>Spillovers of Intelligent Manufacturing Pilot Demonstration and Key Technology "
                f"Innovation</em> — this warehouse's replication. Generated {esc(now)}"
                + (f" from estimation run <code>{esc(run['run_id'])}</code>." if run else "."))
    sections = [
        provenance_section(data, now),
        pipeline_section(data),
        funnel_section(data),
        descriptives_section(data),
        paper_tables_section(data),
        publication_tables_section(data),
        other_specs_section(data),
        event_study_section(data),
        placebo_section(data),
        inference_section(data),
        rollout_section(data),
        patents_section(data),
        quality_section(data),
    ]
    return page("KeyTech Panel — replication report", subtitle, banner(data), NAV, sections)


def banner(data: dict[str, Any]) -> str:
    truth = data["truth"]
    if truth is None:
        return ""
    rates = (truth or {}).get("rates", {})
    planted = ""
    if "beta_key" in rates:
        planted = (f" The generator planted a key-technology effect of {rates['beta_key']} "
                   f"(non-key {rates.get('beta_nonkey', 'n/a')}) on the log application rate.")
    scale, seed = (truth or {}).get("scale"), (truth or {}).get("seed")
    made_with = f" (scale {esc(scale)}, seed {esc(seed)})" if scale else ""
    return (
        "<div class='banner' id='synthetic-banner' role='note'><strong>Synthetic data.</strong> "
        f"This report was computed on data made by <code>keytech synth</code>{made_with} "
        f"— <code>{esc(data['raw'])}/_truth.json</code> exists. The numbers demonstrate the pipeline; they are "
        f"<strong>not findings</strong> about Chinese firms.{esc(planted)}</div>"
    )


def provenance_section(data: dict[str, Any], now: str) -> str:
    est_bundle = data["estimation"]
    fp_now = data["fingerprint"]
    if not est_bundle:
        body = ("<p>No estimation run in <code>results.runs</code> yet: run <code>keytech estimate</code>, "
                "then <code>keytech report</code> again.</p>")
    else:
        est, source, run, runs = est_bundle
        try:
            params = json.loads(run.get("parameters_json") or "{}")
        except ValueError:
            params = {"raw": run.get("parameters_json")}
        match = ("ok", "matches the current marts") if fp_now and run["data_fingerprint"] == fp_now else \
            ("warn", f"differs from the current marts ({fp_now or 'unknown'}): re-run `keytech estimate`")
        started, finished = pd.Timestamp(run["started_at"]), pd.Timestamp(run["finished_at"])
        items = [
            ("Run id", f"<code>{esc(run['run_id'])}</code> (latest of {len(runs)} run(s) in results.runs)"),
            ("Started / finished", f"{esc(started)} → {esc(finished)} UTC ({(finished - started).total_seconds():.1f} s)"),
            ("Data fingerprint", f"<code>{esc(run['data_fingerprint'])}</code> {status(match[0], match[1])}"),
            ("Code version", f"<code>{esc(run['code_version'])}</code>"),
            ("Specifications", f"{est['spec_id'].nunique()} with stored estimates"),
        ]
        if params.get("skipped"):
            items.append(("Skipped specifications", "<ul id='skipped-specs'>" + "".join(
                f"<li><code>{esc(spec)}</code>: {esc(reason)}</li>" for spec, reason in params["skipped"].items())
                + "</ul>"))
        if params.get("not_estimable"):
            items.append(("Not estimable on this data", "<ul id='not-estimable-specs'>" + "".join(
                f"<li><code>{esc(spec)}</code>: {esc(reason)}</li>" for spec, reason in params["not_estimable"].items())
                + "</ul>"))
        if params.get("failures"):
            items.append(("Failed specifications", "<ul id='failed-specs'>" + "".join(
                f"<li><code>{esc(spec)}</code>: {esc(error)}</li>" for spec, error in params["failures"].items())
                + "</ul>"))
        older = sorted({r for s, r in source.items() if r != run["run_id"]})
        if older:
            items.append(("Filled from earlier runs", "specs not in this run come from run(s) on the same data: "
                          + ", ".join(f"<code>{esc(r)}</code>" for r in older)))
        param_rows = [[("txt", f"<code>{esc(k)}</code>"), ("txt", esc(pretty_json(v) if isinstance(v, (dict, list)) else v))]
                      for k, v in sorted(params.items())]
        body = kv(items) + "<h3>Parameters</h3>" + table(["parameter", "value"], param_rows, table_id="run-parameters")
    body += "<h3>This page</h3>" + kv([
        ("Generated", esc(now)),
        ("Warehouse", f"<code>{esc(data['db'])}</code>"),
        ("Raw folder", f"<code>{esc(data['raw'])}</code>"),
        ("Current marts fingerprint", f"<code>{esc(fp_now or 'unknown')}</code>"),
    ])
    return section("provenance", "Run provenance", body)


def pipeline_section(data: dict[str, Any]) -> str:
    manifest = data["manifest"]
    counts = data["counts"]
    lineage = data["lineage"] or {}
    raw_items = ""
    if manifest:
        for name, t in manifest.get("tables", {}).items():
            raw_items += f"<li><span>{esc(t.get('file', name))}</span><span>{fmt_int(t.get('data_rows'))}</span></li>"
    else:
        raw_items = "<li><span class='muted'>no landing manifest</span><span></span></li>"
    layers = "".join(f"<li><span>{esc(s)}</span><span>{n} tables/views</span></li>"
                     for s, n in data["schemas"].items() if s in ("seeds", "staging", "intermediate", "marts", "results"))
    marts = "".join(f"<li><span>{esc(m)}</span><span>{fmt_int(n) if n is not None else '—'}</span></li>"
                    for m, n in counts.items())
    check = data["check"]
    est = data["estimation"]
    down = (f"<li><span>data checks</span><span>{'passed' if check and check.get('passed') else ('FAILED' if check else 'not run')}</span></li>"
            f"<li><span>estimation runs</span><span>{len(est[3]) if est else 0}</span></li>"
            f"<li><span>specs in latest</span><span>{est[0]['spec_id'].nunique() if est else 0}</span></li>"
            "<li><span>this report</span><span>index.html</span></li>")
    diagram = (
        "<div class='pipeline' id='pipeline-diagram'>"
        f"<div class='stage'><h4>Raw files → landing (rows)</h4><ul>{raw_items}</ul></div><div class='arrow'>→</div>"
        f"<div class='stage'><h4>dbt layers (DuckDB schemas)</h4><ul>{layers}</ul></div><div class='arrow'>→</div>"
        f"<div class='stage'><h4>Marts (rows)</h4><ul>{marts}</ul></div><div class='arrow'>→</div>"
        f"<div class='stage'><h4>Checks → estimation → report</h4><ul>{down}</ul></div></div>"
    )
    body = diagram
    if lineage:
        rows = [[("txt", f"<code>marts.{esc(m)}</code>"), ("txt", ", ".join(esc(s) for s in srcs if not s.startswith('seed:'))),
                 ("txt", ", ".join(esc(s[5:]) for s in srcs if s.startswith('seed:')))]
                for m, srcs in sorted(lineage.items())]
        body += "<h3>Lineage: which sources feed each mart</h3>" + table(
            ["mart", "source tables (landing)", "seeds"], rows, table_id="lineage-table")
        body += "<p class='notes'>From dbt's manifest (<code>target/manifest.json</code>); the full graph is in the dbt docs (<code>make docs</code>).</p>"
    if manifest and manifest.get("concordance"):
        edition = manifest["concordance"]
        body += (f"<p id='concordance-edition'>SEI–IPC concordance edition: <code>{esc(edition.get('edition'))}</code> "
                 f"(sha256 <code>{esc(str(edition.get('sha256'))[:12])}</code>).</p>")
    if manifest and manifest.get("warnings"):
        body += "<h3>Warnings while landing</h3><ul class='small'>" + "".join(f"<li>{esc(w)}</li>" for w in manifest["warnings"][:20]) + "</ul>"
    return section("pipeline", "Pipeline at a glance", body)


def funnel_section(data: dict[str, Any]) -> str:
    frame = data["funnel"]
    if frame is None or frame.empty:
        return section("funnel", "Sample funnel", "<p class='muted'>marts.rpt_sample_funnel is missing.</p>")
    rows = [[("num", str(int(r.step_order))), ("txt", f"<code>{esc(r.step)}</code>" + (f" <span class='muted'>({esc(r.filter_level)})</span>" if getattr(r, "filter_level", None) else "")), ("txt", esc(r.description)),
             ("num", fmt_int(r.firms_dropped)), ("num", fmt_int(r.firm_years_dropped)),
             ("num", fmt_int(r.firms_kept)), ("num", fmt_int(r.firm_years_kept))]
            for r in frame.itertuples()]
    body = table(["#", "step", "what", "firms dropped", "firm-years dropped", "firms kept", "firm-years kept"], rows,
                 table_id="funnel-table", classes=["num", "txt", "txt", "num", "num", "num", "num"])
    body += figure(figures.funnel(frame), "Firm-years remaining after each filter of the paper (marts.rpt_sample_funnel).",
                   "funnel-figure", "")
    return section("funnel", "Sample funnel (paper's filters, 2010–2019)", body)


def descriptives_section(data: dict[str, Any]) -> str:
    from keytech.export import VARIABLE_LABELS

    frame = data["descriptives"]
    if frame is None:
        return section("descriptives", "Descriptive statistics", "<p class='muted'>marts.rpt_analysis_panel is missing.</p>")
    rows = [[("txt", f"<code>{esc(r.variable)}</code>"), ("txt", esc(VARIABLE_LABELS.get(r.variable, ""))),
             ("num", fmt_int(r.n)), ("num", fmt_num(r.mean)), ("num", fmt_num(r.sd)), ("num", fmt_num(r.min)), ("num", fmt_num(r.max))]
            for r in frame.itertuples()]
    body = table(["variable", "meaning", "N", "mean", "SD", "min", "max"], rows, table_id="descriptives-table",
                 classes=["txt", "txt", "num", "num", "num", "num", "num"])
    body += "<p class='notes'>Every numeric column of <code>marts.rpt_analysis_panel</code>; controls are winsorised at 1%/99%. Definitions: <code>docs/variables.md</code>.</p>"
    return section("descriptives", "Descriptive statistics (analysis panel)", body)


def _treatments() -> dict[str, str]:
    try:
        from keytech.estimation.orchestration.registry import load_registry

        return {s.id: s.treatment for s in load_registry().specs}
    except Exception:
        return {}


def paper_tables_section(data: dict[str, Any]) -> str:
    published = data["published"]
    est = data["estimation"][0] if data["estimation"] else pd.DataFrame(columns=["spec_id", "term"])
    comp = paper.comparison(est, published, _treatments())
    parts = ["<p>Each row: the paper's published number beside this run's, for the specification id that "
             "reproduces it (<code>python/keytech/specs.yml</code>). Standard errors in parentheses; "
             "* p&lt;0.10, ** p&lt;0.05, *** p&lt;0.01 (paper's stars as published). Diagnostics in grey.</p>"]
    for table_name, group in comp.groupby("paper_table", sort=True):
        rows, classes = [], []
        last_col = None
        for r in group.itertuples(index=False):
            diag = r.term in paper.DIAGNOSTIC_TERMS
            first = r.paper_column != last_col
            last_col = r.paper_column
            if diag:
                p_pub = f" [{r.p_value:.4f}]" if not is_missing(r.p_value) else ""
                p_run = f" [{r.run_p_value:.4f}]" if not is_missing(r.run_p_value) else ""
                published_cell = f"{fmt_num(r.estimate, 3)}{p_pub}" if r.term != "p_difference" else fmt_num(r.estimate, 3)
                run_cell = (f"{fmt_num(r.run_estimate, 3)}{p_run}" if r.run_status == "ok" else "")
            else:
                published_cell = coef_html(r.estimate, r.std_error, stars_from_count(r.stars))
                run_cell = coef_html(r.run_estimate, r.run_std_error, stars_from_p(r.run_p_value)) if r.run_status == "ok" else ""
            st = status(r.run_status) if r.run_status != "ok" else status("ok", "estimated")
            if r.run_status in ("error", "not_estimable") and r.run_message:
                st = f"<span title='{esc(r.run_message)}'>{status(r.run_status)}</span>"
            rows.append([
                ("txt", esc(r.paper_column) if first else ""),
                ("txt", esc(r.description)),
                ("txt", f"<code>{esc(r.term)}</code>" + (f" <span class='muted small'>→ {esc(r.run_term)}</span>" if not is_missing(r.run_term) and r.run_term != r.term else "")),
                ("num", published_cell), ("num", run_cell),
                ("num", "" if diag else fmt_int(r.nobs)), ("num", "" if diag else fmt_int(r.run_nobs)),
                ("num", "" if diag else fmt_r2(r.adj_r2)), ("num", "" if diag else fmt_r2(r.run_adj_r2)),
                ("txt", (f"<code>{esc(r.spec_id)}</code> " if first or diag else "") + st),
            ])
            classes.append(("diag " if diag else "") + ("group" if first else ""))
        ran = int((group.loc[~group["term"].isin(paper.DIAGNOSTIC_TERMS), "run_status"] == "ok").sum())
        total = int((~group["term"].isin(paper.DIAGNOSTIC_TERMS)).sum())
        title = paper.TABLE_TITLES.get(table_name, table_name)
        parts.append(f"<h3 id='paper-{esc(table_name)}-title'>{esc(title)} <span class='muted small'>({ran}/{total} estimates in this run)</span></h3>")
        parts.append("<div class='scroll'>" + table(
            ["col", "specification", "term", "paper", "this run", "N paper", "N run", "adj. R² paper", "adj. R² run", "spec / status"],
            rows, table_id=f"paper-{table_name}",
            classes=["txt", "txt", "txt", "num", "num", "num", "num", "num", "num", "txt"], row_classes=classes) + "</div>")
    if data["truth"] is not None:
        parts.append("<p class='notes'>Synthetic data: the run's numbers are compared with the paper only to show the "
                     "layout; agreement is neither expected nor meaningful. Ns are small at the tiny/small scales.</p>")
    return section("paper-tables", "Paper tables: published vs this run", "\n".join(parts))


def _main_term(spec, terms: list[str]) -> str | None:
    candidates = []
    if spec is not None:
        if spec.estimator in ("staggered_sunab", "staggered_did2s"):
            candidates.append("att")
        if spec.estimator == "event_study":
            candidates.append("rel_time=0")
        candidates.append(spec.treatment)
    candidates += ["policy", "att"]
    for c in candidates:
        if c in terms:
            return c
    others = [t for t in terms if t not in ("Intercept", "(Intercept)")]
    return others[0] if others else None


def publication_tables_section(data: dict[str, Any]) -> str:
    """Tables 3–7 and the heterogeneity table as the paper lays them out (one column per paper
    column, diagnostics rows, the paper's numbers below) — the same models that write
    ``output/tables/*.{md,tex,html}`` (keytech.tables)."""
    title = "Tables in the paper's layout"
    if not data["estimation"]:
        return section("publication-tables", title, "<p class='muted'>No estimation run yet: <code>keytech estimate</code>.</p>")
    from keytech.estimation.orchestration.registry import load_registry
    from keytech.tables import mechanisms
    from keytech.tables.baseline import table3_model
    from keytech.tables.endogeneity import psm_balance_model, table4_model
    from keytech.tables.render import to_html

    est, reg, synthetic = data["estimation"][0], load_registry(), data["truth"] is not None
    builders = (table3_model, table4_model, psm_balance_model, mechanisms.table5_model, mechanisms.table6_model,
                mechanisms.table7_model, mechanisms.heterogeneity_model)
    parts = ["<p>The publication tables of this run (also written to <code>output/tables/</code> as Markdown, "
             "LaTeX and HTML by <code>keytech estimate</code>). Specifications not in the run show empty cells.</p>"]
    for build in builders:
        try:
            model = build(est, reg, synthetic)
        except Exception as exc:  # a table that cannot be laid out must not take the report down
            parts.append(f"<p class='muted'>{esc(build.__name__)}: not available ({esc(type(exc).__name__)}: {esc(str(exc))[:200]})</p>")
            continue
        if model is not None:
            parts.append("<div class='scroll'>" + to_html(model) + "</div>")
    sources = data.get("ww_dividend_sources")
    if sources:
        names = {"cash_dividends": "cash dividends (CashDividends, the paper's definition)",
                 "dividends_interest_paid": "fallback C003006000 > 0 (dividends plus interest paid)",
                 "missing": "neither supplied (dummy 0)"}
        parts.append("<p id='ww-dividend-source' class='notes'>WW index (het_ww_*): dividend dummy from "
                     + "; ".join(f"{names.get(k, esc(k))}: {fmt_int(n)} firm-years" for k, n in sources.items())
                     + " (<code>fct_firm_year_mechanisms.ww_dividend_source</code>).</p>")
    return section("publication-tables", title, "\n".join(parts))


def other_specs_section(data: dict[str, Any]) -> str:
    if not data["estimation"]:
        return section("other-specs", "Other specifications in this run", "<p class='muted'>No estimation run yet.</p>")
    est = data["estimation"][0]
    covered = set(data["published"]["spec_id"])
    try:
        from keytech.estimation.orchestration.registry import load_registry

        registry = {s.id: s for s in load_registry().specs}
    except Exception:
        registry = {}
    order = {sid: i for i, sid in enumerate(registry)}
    spec_ids = sorted((s for s in est["spec_id"].unique() if s not in covered), key=lambda s: (order.get(s.split("@")[0], 10**6), s))
    rows = []
    for sid in spec_ids:
        sub = est.loc[est["spec_id"] == sid]
        spec = registry.get(sid.split("@")[0])
        terms = list(sub["term"])
        no_estimate = next((t for t in NO_ESTIMATE_TERMS if t in terms), None)
        if no_estimate:
            diag = sub.loc[sub["term"] == no_estimate, "diagnostics_json"].iloc[0]
            msg = json.loads(diag).get("error", "") if isinstance(diag, str) and diag else ""
            kind = "error" if no_estimate == ERROR_TERM else "not_estimable"
            rows.append([("txt", f"<code>{esc(sid)}</code>"), ("txt", esc(spec.description if spec else "")), ("txt", ""),
                         ("num", ""), ("num", ""), ("num", ""), ("txt", status(kind) + f" <span class='small muted'>{esc(msg[:240])}</span>")])
            continue
        term = _main_term(spec, terms)
        r = sub.loc[sub["term"] == term].iloc[0] if term else sub.iloc[0]
        extra = ", ".join(
            f"{esc(t)} = {fmt_num(v, 3)}" for t, v in zip(sub["term"], sub["estimate"])
            if (":" in t) and not is_missing(v))
        rows.append([("txt", f"<code>{esc(sid)}</code>"), ("txt", esc(spec.description if spec else "")),
                     ("txt", f"<code>{esc(term)}</code>"),
                     ("num", coef_html(r["estimate"], r["std_error"], stars_from_p(r["p_value"]))),
                     ("num", fmt_int(r["nobs"])), ("num", fmt_r2(r["adj_r2"])),
                     ("txt", f"<span class='small'>{extra}</span>")])
    body = ("<p>Every other specification with stored estimates (robustness, staggered-DID diagnostics, placebo, "
            "and any spec without published numbers). The main term is shown; extra statistics stored as terms "
            "follow.</p>")
    body += "<div class='scroll'>" + table(["spec id", "description", "term", "estimate (SE)", "N", "adj. R²", "notes"], rows,
                                           table_id="other-specs-table",
                                           classes=["txt", "txt", "txt", "num", "num", "num", "txt"]) + "</div>"
    return section("other-specs", "Other specifications in this run", body)


def event_study_section(data: dict[str, Any]) -> str:
    if not data["estimation"]:
        return section("event-study", "Event study (Eq. 2)", "<p class='muted'>No estimation run yet.</p>")
    est = data["estimation"][0]
    svg = figures.event_study(est)
    sub = est.loc[(est["spec_id"] == "event_study") & est["term"].str.startswith("rel_time=")]
    body = figure(svg, "Relative-time coefficients k = −5..3 (k < −5 binned into −5, k = −1 omitted) with 95% "
                  "confidence intervals; firm and year FE, full controls, SE clustered by city. Squares: Sun–Abraham "
                  "interaction-weighted estimates, where estimated.", "event-study-figure",
                  "The event study (spec event_study) is not in this run: `keytech estimate --only event_study`.")
    if not sub.empty:
        sub = sub.assign(k=sub["term"].str.split("=").str[1].astype(int)).sort_values("k")
        rows = [[("num", str(r.k)), ("num", "0 (reference)" if is_missing(r.std_error) else coef_html(r.estimate, r.std_error, stars_from_p(r.p_value))),
                 ("num", f"[{fmt_num(r.ci_low)}, {fmt_num(r.ci_high)}]" if not is_missing(r.ci_low) else "")]
                for r in sub.itertuples()]
        main = sub.loc[sub["term"] == "rel_time=0", "diagnostics_json"]
        pre = {}
        if not main.empty and isinstance(main.iloc[0], str) and main.iloc[0]:
            pre = json.loads(main.iloc[0]).get("pretrend_test", {})
        body += table(["k", "estimate (SE)", "95% CI"], rows, table_id="event-study-table", classes=["num", "num", "num"])
        if pre:
            body += f"<p>Joint test of the pre-period coefficients (k = −5..−2): " + ", ".join(
                f"{esc(k)} = {fmt_num(v, 3)}" for k, v in pre.items() if isinstance(v, (int, float))) + ".</p>"
    return section("event-study", "Event study (Eq. 2)", body)


def placebo_section(data: dict[str, Any]) -> str:
    if not data["estimation"]:
        return section("placebo", "Placebo distribution", "<p class='muted'>No estimation run yet.</p>")
    est = data["estimation"][0]
    sub = est.loc[(est["spec_id"] == "placebo") & (est["term"] == "policy")]
    svg, info = None, {}
    if not sub.empty and isinstance(sub["diagnostics_json"].iloc[0], str):
        info = json.loads(sub["diagnostics_json"].iloc[0])
        if info.get("draws"):
            svg = figures.placebo(info["draws"], float(info.get("real_beta", sub["estimate"].iloc[0])), info.get("p_empirical"))
    body = figure(svg, "Coefficients of Policy when the pilot cities and their timing are drawn at random (real number "
                  "of newly treated cities per year), column (5) refitted for each draw. Red: the actual estimate.",
                  "placebo-figure", "The placebo (spec placebo) is not in this run: `keytech estimate --only placebo`.")
    if info:
        body += kv([(k, esc(fmt_num(v, 4) if isinstance(v, float) else v)) for k, v in info.items()
                    if k in ("n_draws", "seed", "real_beta", "p_empirical", "p_empirical_t", "n_draws_as_extreme", "n_cities")])
    return section("placebo", "Placebo distribution", body)


def rollout_section(data: dict[str, Any]) -> str:
    cities = data["cities"]
    if cities is None:
        return section("rollout", "Pilot rollout", "<p class='muted'>marts.dim_cities is missing.</p>")
    svg = figures.rollout(cities, data["waves"])
    body = figure(svg, "Left: cities whose first pilot came in each wave (this data) beside Table 1 of the paper. "
                  "Right: prefecture city seats (grey) and pilot cities coloured by first wave.", "rollout-figure", "No pilot cities.")
    pilots = cities.dropna(subset=["first_pilot_wave"])
    per_wave = pilots.groupby("first_pilot_wave").agg(cities=("city_code", "count"), units=("n_pilot_units", "sum"),
                                                     treated_from=("first_treated_year", "min"))
    waves = data["waves"].set_index("wave") if data["waves"] is not None else None
    rows = []
    for wave, r in per_wave.iterrows():
        w = int(wave)
        pw = waves.loc[w] if waves is not None and w in waves.index else None
        rows.append([("num", str(w)), ("num", fmt_int(r["cities"])), ("num", fmt_int(pw["new_pilot_cities"]) if pw is not None else ""),
                     ("num", fmt_int(r["units"])), ("num", fmt_int(pw["pilot_units"]) if pw is not None else ""),
                     ("num", "" if is_missing(r["treated_from"]) else str(int(r["treated_from"])))])
    body += table(["wave", "new cities (data)", "new cities (paper)", "units in those cities (data)", "units (paper, all)",
                   "Policy = 1 from"], rows, table_id="rollout-table", classes=["num"] * 6)
    return section("rollout", "Pilot rollout (marts.dim_cities)", body)


def patents_section(data: dict[str, Any]) -> str:
    bundle = data["patents"]
    if bundle is None:
        return section("patents-by-field", "Key vs non-key applications", "<p class='muted'>marts.fct_patents is missing.</p>")
    by_year, by_field, names = bundle
    svg = figures.patents_by_field(by_year, by_field, names)
    body = figure(svg, "Invention applications of the sample firms by application year (marts.fct_patents): key technology "
                  "= any IPC code in the CNIPA 2021 SEI concordance; right, key-tech applications per SEI field "
                  "(a patent can count in several fields).", "patents-figure", "No patents.")
    merged = by_year.merge(by_field, on="application_year", how="left")
    sei_cols = [c for c in by_field.columns if c.startswith("sei_")]
    headers = ["year", "key", "non-key", "key share"] + [f"{c[4:]} {figures.SEI_ENGLISH.get(int(c[4:]), names.get(int(c[4:]), ''))}" for c in sei_cols]
    rows = []
    for r in merged.itertuples(index=False):
        total = (r.key or 0) + (r.non_key or 0)
        share = f"{r.key / total:.1%}" if total else ""
        rows.append([("num", str(int(r.application_year))), ("num", fmt_int(r.key)), ("num", fmt_int(r.non_key)), ("num", share)]
                    + [("num", fmt_int(getattr(r, c))) for c in sei_cols])
    body += "<div class='scroll'>" + table(headers, rows, table_id="patents-table", classes=["num"] * len(headers)) + "</div>"
    return section("patents-by-field", "Key vs non-key applications by SEI field", body)


def quality_section(data: dict[str, Any]) -> str:
    check = data["check"]
    if not check:
        return section("quality", "Data quality", "<p class='muted'>No check run recorded: run <code>keytech check</code>.</p>")
    fp_now = data["fingerprint"]
    same = fp_now is not None and check.get("data_fingerprint") == fp_now
    verdict = status("ok", "all checks passed") if check.get("passed") else status("fail", "checks FAILED")
    items = [
        ("Latest check run", f"<code>{esc(check.get('check_run_id'))}</code> at {esc(check.get('checked_at'))} UTC {verdict}"),
        ("Checked marts", f"<code>{esc(check.get('data_fingerprint'))}</code> " +
         (status("ok", "same as the current marts") if same else status("warn", "not the current marts: run `keytech check`"))),
    ]
    dbt = check.get("dbt_tests") or {}
    if dbt.get("available"):
        items.append(("dbt tests (last build)", esc(f"{dbt.get('tests')} tests: " + ", ".join(f"{k} {v}" for k, v in (dbt.get('statuses') or {}).items()))))
    if check.get("latest_json"):
        items.append(("Report file", f"<code>{esc(check['latest_json'])}</code>" +
                      ("" if check.get("latest_json_matches") else " " + status("warn", "holds a different check run"))))
    rows, failed = [], []
    for mart, suite in (check.get("suites") or {}).items():
        exps = suite.get("expectations", [])
        ok = sum(1 for e in exps if e.get("success"))
        rows.append([("txt", f"<code>marts.{esc(mart)}</code>"), ("num", fmt_int(suite.get("rows"))),
                     ("num", f"{ok}/{len(exps)}"), ("txt", status("ok", "pass") if suite.get("success") else status("fail"))])
        failed += [(mart, e) for e in exps if not e.get("success")]
    body = kv(items) + table(["mart", "rows", "expectations passed", "suite"], rows, table_id="quality-table",
                             classes=["txt", "num", "num", "txt"])
    if failed:
        frows = [[("txt", f"<code>{esc(m)}</code>"), ("txt", esc(e.get("type"))), ("txt", f"<code>{esc(json.dumps(e.get('kwargs'), ensure_ascii=False))}</code>"),
                  ("txt", esc(e.get("observed_value"))), ("num", fmt_int(e.get("unexpected_count")))] for m, e in failed]
        body += "<h3>Failed expectations</h3>" + table(["mart", "expectation", "arguments", "observed", "unexpected"], frows,
                                                      table_id="quality-failures")
    body += "<p class='notes'>Great Expectations suites (<code>python/keytech/quality.py</code>) on the marts; relational tests run inside <code>dbt build</code>. Full report: <code>output/checks/latest.html</code>.</p>"
    return section("quality", "Data quality", body)
