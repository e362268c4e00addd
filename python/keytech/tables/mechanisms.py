"""Tables 5, 6, 7, the heterogeneity splits and the SEI-field outcomes, rebuilt from
``results.estimates``. Which specs make which table, in which column order and under which
header, comes from ``specs.yml`` (each spec's ``table``, ``label`` and ``group``), so a new
``table5_col6`` spec renders as the sixth column of Table 5 without a change here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from keytech.estimation.core.results import NOT_ESTIMABLE_TERM
from keytech.estimation.registry import Registry, Spec
from keytech.synthetic import SYNTHETIC_NOTE
from keytech.tables.format import fmt_coef, fmt_n, fmt_r2, fmt_se, stars_to_p
from keytech.tables.model import Row, Table, main_row
from keytech.tables.render import write_tables


HET_MODERATORS = (
    ("fc", "FC index", "low = less constrained"),
    ("ww", "WW index", "low = less constrained"),
    ("hhi", "City–industry HHI", "high = more concentrated"),
    ("rdsub", "R&D subsidy amount", ""),
    ("patsub", "Patent subsidy amount", ""),
    ("visit", "Annual-report mentions of 参访", ""),
    ("standard", "Annual-report mentions of 标准化", ""),
)


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


def _column_table(est: pd.DataFrame, specs: list[Spec], title: str, synthetic: bool, notes: list[str],
                  sample_row: bool = False, extra_terms: list[tuple[str, str]] = (), perm_row: bool = False,
                  outcome_labels: list[str] | None = None):
    ids = [s.id for s in specs]
    rows_main = [main_row(est, s.id, s.treatment) for s in specs]
    rows = [Row("Dependent variable", outcome_labels or [outcome_label(s) for s in specs])]
    if sample_row:
        rows.append(Row("Sample", [sample_label(s) for s in specs]))
    rows += [Row("Policy", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in rows_main], "coef"),
             Row("", [fmt_se(r and r["std_error"]) for r in rows_main], "se")]
    for term, label in extra_terms:
        tr = [main_row(est, i, term) for i in ids]
        rows.append(Row(label, [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in tr], "coef"))
        rows.append(Row("", [fmt_se(r and r["std_error"]) for r in tr], "se"))
    rows.append(Row("", [], "rule"))
    if perm_row:
        rows.append(Row("Empirical p (high − low)", [_perm_cell(r) for r in rows_main]))
    rows.append(Row("Controls / FE / SE", ["col. 5" for s in specs]))
    rows.append(Row("N", [fmt_n(r and r["nobs"]) for r in rows_main]))
    rows.append(Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in rows_main]))
    rows.append(Row("", [], "rule"))
    rows.append(Row("Paper: Policy", [fmt_coef(s.paper.coef, stars_to_p(s.paper.stars)) if s.paper and s.paper.coef is not None else "" for s in specs], "coef"))
    rows.append(Row("", [fmt_se(s.paper.se) if s.paper else "" for s in specs], "se"))
    rows.append(Row("Paper: N", [fmt_n(s.paper.nobs) if s.paper else "" for s in specs]))
    rows.append(Row("Paper: Adj. R²", [fmt_r2(s.paper.adj_r2) if s.paper else "" for s in specs]))
    base_notes = ["Column-5 specification: firm, industry×year and province×year FE, firm and city controls, "
                  "SE clustered by city in parentheses; * p<0.10, ** p<0.05, *** p<0.01."]
    all_notes = ([SYNTHETIC_NOTE] if synthetic else []) + base_notes + notes
    return Table(title, [s.label for s in specs], rows, all_notes)


def table5_model(est, reg, synthetic):
    return _column_table(
        est, table_specs(reg, "table5"), "Table 5. Mechanism: knowledge spillover (technology similarity, joint applications)",
        synthetic,
        ["Technology similarity: city-year mean of the Jaffe cosine similarity between listed firms' "
         "pre-existing IPC subclass (IPC4) / class (IPC3) patent distributions (marts.fct_city_year_similarity); "
         "split at the median of the estimation sample.",
         "Empirical p: one-sided permutation p-value of b(high) − b(low), group membership reshuffled "
         "(keytech.estimation.inference.permutation); paper: 0.051 (IPC4), 0.073 (IPC3)."],
        sample_row=True, perm_row=True)


def table6_model(est, reg, synthetic):
    return _column_table(
        est, table_specs(reg, "table6"), "Table 6. Mechanism: market exploration (uncertainty and sales)", synthetic,
        ["Volatility: sd of inventory-adjusted output growth over t−2..t (pre), t−1..t+1 (current), "
         "t..t+2 (post), after Mao & Wang (2023); column (6) adds Policy×ln(Sale) and ln(Sale)."],
        extra_terms=[("policy_x_ln_sale", "Policy × ln(Sale)"), ("ln_sale", "ln(Sale)")])


def table7_model(est, reg, synthetic):
    return _column_table(
        est, table_specs(reg, "table7"), "Table 7. Extension: technology width", synthetic,
        ["Levels, as the paper's columns (ln(1+x) versions: specs table7_ln_col1..4). Width1: key-tech SEI "
         "sub-fields applied in the year; Width2: key-tech IPC4 codes in the firm's key-tech pool up to t "
         "that were not in it up to t−3; Width3: 1 − Σ s² over sub-fields (firm-years with key-tech "
         "applications); Width4: key-tech applications outside the pool held up to last year."])


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
    t = _column_table(est, specs, "Extension: key-tech applications by SEI industry", synthetic,
                      ["Dependent variable: ln(1 + key-tech invention applications mapped to the SEI top-level "
                       "industry) (a patent counts in every industry of its key-tech codes)."], outcome_labels=labels)
    return t


def heterogeneity_model(est, reg, synthetic):

    headers = ["Key: low", "Key: high", "Key: p(high−low)", "Non-key: low", "Non-key: high", "Non-key: p(high−low)"]
    rows = []
    not_estimable = False
    for code, label, hint in HET_MODERATORS:
        cells_c, cells_s, cells_n = [], [], []
        for outcome in ("key", "nonkey"):
            for g in ("low", "high"):
                sid = f"het_{code}_{g}_{outcome}"
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
            high = main_row(est, f"het_{code}_high_{outcome}", "policy")
            cells_c.append(_perm_cell(high))
            cells_s.append("")
            cells_n.append("")
        rows.append(Row(f"{label}" + (f" ({hint})" if hint else ""), cells_c, "coef"))
        rows.append(Row("", cells_s, "se"))
        rows.append(Row("N", cells_n))
        rows.append(Row("", [], "rule"))
    notes = ([SYNTHETIC_NOTE] if synthetic else []) + [
        "Policy coefficient in the below/at-median (low) and above-median (high) halves of each moderator; "
        "key = ln(1+Apply_inv_zl), non-key = ln(1+Apply_inv_nozl); column-5 FE, controls, SE clustered by city; "
        "* p<0.10, ** p<0.05, *** p<0.01.",
        "p(high−low): one-sided permutation p-value of the difference, group membership reshuffled.",
        "FC index: mean within-year percentile rank of small size, young age, low payout, high leverage, low cash "
        "flow; WW index: Whited & Wu (2006); HHI: city × CSRC-division revenue Herfindahl; subsidies classified "
        "by seeds/subsidy_keywords.csv. The paper publishes no numbers for these splits.",
    ] + (["n.e.: not estimable on this sample: no more observations than parameters (regressors + fixed-effect "
          "levels) after singleton removal; the reason is stored in results.estimates (term '(not estimable)')."]
         if not_estimable else [])
    return Table("Heterogeneity: financing constraints, market concentration, subsidies, word frequencies", headers, rows, notes)


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
