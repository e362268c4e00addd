"""Tables 5, 6, 7, the heterogeneity splits and the SEI-field outcomes, rebuilt from
``results.estimates``. Which specs make which table, in which column order and under which
header, comes from ``specs.yml`` (each spec's ``table``, ``label`` and ``group``), so a new
``table5_col6`` spec renders as the sixth column of Table 5 without a change here; titles, notes,
optional rows and the heterogeneity table's moderators come from its ``tables:`` block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from keytech.estimation.core.results import NOT_ESTIMABLE_TERM
from keytech.estimation.orchestration.registry import Registry, Spec, TableSpec
from keytech.tables.format import fmt_coef, fmt_n, fmt_r2, fmt_se, stars_to_p
from keytech.tables.model import Row, Table, fixed_headers, main_row, table_notes
from keytech.tables.render import write_tables


def _spec(reg: Registry, spec_id: str) -> Spec | None:
    try:
        return reg.get(spec_id)
    except Exception:
        return None


def _perm_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return ""
    p = (r.get("diagnostics") or {}).get("permutation")
    if not p:
        return ""
    return f"{p['p_one_sided']:.3f}"


# The "Dependent variable" row of Tables 5–7: the paper's name of a spec's outcome (an outcome not
# listed shows its column name), and the "Sample" row of Table 5: the split variable's short name.
OUTCOME_LABELS = {
    "ln_apply_inv_zl": "ln(1+Apply_inv_zl)",
    "ln_apply_inv_zl_joint": "ln(1+Apply_inv_zl_joint)",
    "volatility_pre": "Volatility_pre",
    "volatility_current": "Volatility_current",
    "volatility_post": "Volatility_post",
    "ln_sale": "ln(Sale)",
    "saleshare": "Saleshare",
    "width1": "Width1",
    "width2": "Width2",
    "width3": "Width3",
    "width4": "Width4",
}
SPLIT_LABELS = {"similarity_ipc4": "IPC4 sim.", "similarity_ipc3": "IPC3 sim."}


def table_specs(reg: Registry, table: str) -> list[Spec]:
    """The columns of publication table ``table``: the specs whose ``table:`` in ``specs.yml`` names
    it, in registry order (their ``label`` is the column header)."""
    return [s for s in reg.specs if s.table == table]


def outcome_label(spec: Spec) -> str:
    return OUTCOME_LABELS.get(spec.outcome, spec.outcome)


def sample_label(spec: Spec) -> str:
    """``full``, or the median-split half of an ``ols_split`` spec (``IPC4 sim. low``)."""
    bys, groups = spec.options.get("split_by"), spec.options.get("group")
    if not bys:
        return "full"
    bys = list(bys) if isinstance(bys, (list, tuple)) else [bys]
    groups = list(groups) if isinstance(groups, (list, tuple)) else [groups]
    return " × ".join(f"{SPLIT_LABELS.get(b, b)} {g}" for b, g in zip(bys, groups))


def _column_table(est: pd.DataFrame, specs: list[Spec], ts: TableSpec, synthetic: bool,
                  outcome_labels: list[str] | None = None):
    """A table whose columns are ``specs``; title, notes and the optional rows from ``ts`` (its
    ``tables:`` entry)."""
    ids = [s.id for s in specs]
    rows_main = [main_row(est, s.id, s.treatment) for s in specs]
    rows = [Row("Dependent variable", outcome_labels or [outcome_label(s) for s in specs])]
    if ts.sample_row:
        rows.append(Row("Sample", [sample_label(s) for s in specs]))
    rows += [Row("Policy", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in rows_main], "coef"),
             Row("", [fmt_se(r and r["std_error"]) for r in rows_main], "se")]
    for term, label in ts.extra_terms:
        tr = [main_row(est, i, term) for i in ids]
        rows.append(Row(label, [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in tr], "coef"))
        rows.append(Row("", [fmt_se(r and r["std_error"]) for r in tr], "se"))
    rows.append(Row("", [], "rule"))
    if ts.permutation_row:
        rows.append(Row("Empirical p (high − low)", [_perm_cell(r) for r in rows_main]))
    rows.append(Row("Controls / FE / SE", ["col. 5" for s in specs]))
    rows.append(Row("N", [fmt_n(r and r["nobs"]) for r in rows_main]))
    rows.append(Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in rows_main]))
    rows.append(Row("", [], "rule"))
    rows.append(Row("Paper: Policy", [fmt_coef(s.paper.coef, stars_to_p(s.paper.stars)) if s.paper and s.paper.coef is not None else "" for s in specs], "coef"))
    rows.append(Row("", [fmt_se(s.paper.se) if s.paper else "" for s in specs], "se"))
    rows.append(Row("Paper: N", [fmt_n(s.paper.nobs) if s.paper else "" for s in specs]))
    rows.append(Row("Paper: Adj. R²", [fmt_r2(s.paper.adj_r2) if s.paper else "" for s in specs]))
    return Table(ts.title, [s.label for s in specs], rows, table_notes(ts, synthetic))


def table5_model(est, reg, synthetic):
    return _column_table(est, table_specs(reg, "table5"), reg.table("table5"), synthetic)


def table6_model(est, reg, synthetic):
    return _column_table(est, table_specs(reg, "table6"), reg.table("table6"), synthetic)


def table7_model(est, reg, synthetic):
    return _column_table(est, table_specs(reg, "table7"), reg.table("table7"), synthetic)


def fields_model(est, reg, synthetic):
    specs = [s for s in reg.specs if s.group == "field"]
    names = {}
    try:
        from keytech import paths

        seeds = pd.read_csv(paths.seeds_dir() / "sei_industries.csv", dtype=str)
        names = dict(zip(seeds["sei_industry_code"], seeds["sei_industry_name"]))
    except Exception:
        pass
    labels = [names.get(s.id.split("_")[-1], s.id) for s in specs]
    return _column_table(est, specs, reg.table("fields"), synthetic, outcome_labels=labels)


def heterogeneity_model(est, reg, synthetic):
    """One row block per moderator of ``tables.heterogeneity.moderators`` in ``specs.yml`` (its
    specs ``het_<code>_<low|high>_<key|nonkey>``)."""
    ts = reg.table("heterogeneity")
    headers = fixed_headers(ts, 6)
    rows = []
    not_estimable = False
    for m in ts.moderators:
        code, label, hint = m.code, m.label, m.hint
        cells_c, cells_s, cells_n = [], [], []
        for outcome in ("key", "nonkey"):
            for g in ("low", "high"):
                sid = m.spec_id(g, outcome)
                s = _spec(reg, sid)
                r = main_row(est, sid, s.treatment) if s else None
                if r is None and main_row(est, sid, NOT_ESTIMABLE_TERM) is not None:
                    not_estimable = True
                    cells_c.append("n.e.")
                    cells_s.append("")
                    cells_n.append("")
                    continue
                cells_c.append(fmt_coef(r and r["estimate"], r and r["p_value"]))
                cells_s.append(fmt_se(r and r["std_error"]))
                cells_n.append(fmt_n(r and r["nobs"]))
            high = main_row(est, m.spec_id("high", outcome), "policy")
            cells_c.append(_perm_cell(high))
            cells_s.append("")
            cells_n.append("")
        rows.append(Row(f"{label}" + (f" ({hint})" if hint else ""), cells_c, "coef"))
        rows.append(Row("", cells_s, "se"))
        rows.append(Row("N", cells_n))
        rows.append(Row("", [], "rule"))
    return Table(ts.title, headers, rows, table_notes(ts, synthetic, not_estimable=not_estimable))


def render_tables(est: pd.DataFrame, reg: Registry, synthetic: bool, out_dir: Path, footer: str = "") -> list[Path]:
    """table5/table6/table7/heterogeneity/fields (md, tex, html) for the specs present in ``reg``."""

    have = set(est["spec_id"]) if len(est) else set()
    written: list[Path] = []
    for name, group, fn in (("table5", "table5", table5_model), ("table6", "table6", table6_model),
                            ("table7", "table7", table7_model), ("heterogeneity", "het", heterogeneity_model),
                            ("fields", "field", fields_model)):
        ids = [s.id for s in reg.specs if s.group == group]
        if ids and have & set(ids):
            written += write_tables(name, [fn(est, reg, synthetic)], out_dir, footer)
    return written
