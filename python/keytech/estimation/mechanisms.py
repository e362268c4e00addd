"""Mechanisms, heterogeneity and extensions (Tables 5, 6, 7, the heterogeneity splits and the
SEI-field outcomes): the median-split estimator and the publication tables.

Specs (``specs.yml``, section "Mechanisms") read ``marts.rpt_analysis_panel`` with
``marts.fct_firm_year_mechanisms`` left-joined by (stkcd, year) (``extra_marts``).

**Median split** (estimator ``ols_split``; options ``split_by``, ``group``; both may be lists,
e.g. ``split_by: [visit_count, similarity_ipc4], group: [high, high]`` for one cell of a joint
split, each variable split at its own median over the same rows): the split variable's
median is taken over the spec's complete-case rows (outcome, regressors, fixed effects, cluster
variable and the split variable all present). ``high`` = above the median, ``low`` = at or below
it. When ties at the median make that split more unbalanced than "at or above" vs "below" (e.g. a
city-industry HHI that equals 1 for most firm-years), the tied rows go to ``high`` instead; the
rule used and the group sizes are recorded in the diagnostics. Each group is then estimated with
the column-5 specification (fixed effects, controls, city clustering) by
:func:`keytech.estimation.estimators.fit_ols`.

**Between-group p-value** (option ``permutation: {draws, seed, permute_by}`` on the ``high``
spec): :func:`keytech.estimation.permutation.permutation_test` of ``b_high − b_low``, reshuffling
group membership; stored in the diagnostics (``permutation``, with the draws used as ``n_draws``)
of the ``high`` spec. ``RunContext.permutation_draws`` (``keytech estimate --permutation-draws``)
replaces ``draws`` in every spec.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.base import NOT_ESTIMABLE_TERM, SpecResult
from keytech.estimation.registry import Registry, Spec

DEFAULT_DRAWS = 200


def median_split(x: pd.Series) -> tuple[pd.Series, dict[str, Any]]:
    """(labels, info): labels 1.0 (high) / 0.0 (low) / NaN (missing). See the module docstring."""
    v = pd.to_numeric(x, errors="coerce")
    med = float(v.median())
    above = v > med
    at_or_above = v >= med
    n = int(v.notna().sum())
    imbalance = abs(int(above.sum()) - n / 2)
    imbalance_ties_high = abs(int(at_or_above.sum()) - n / 2)
    rule = "above median = high"
    high = above
    if imbalance_ties_high < imbalance:
        rule = "at or above median = high (ties at the median)"
        high = at_or_above
    labels = high.astype(float).where(v.notna())
    return labels, {"median": med, "rule": rule, "n_high": int((labels == 1).sum()), "n_low": int((labels == 0).sum())}


def fit_split(spec: Spec, df: pd.DataFrame, ctx) -> SpecResult:
    from keytech.estimation.estimators import fit_ols, prepare_spec_data
    from keytech.estimation.permutation import fe_ols_coefficient, permutation_test

    o = spec.options
    # one split variable, or several (options split_by: [a, b], group: [high, low]): the cell of
    # the joint split, each variable split at its own median over the same complete-case rows
    bys = list(o["split_by"]) if isinstance(o["split_by"], (list, tuple)) else [o["split_by"]]
    groups = list(o["group"]) if isinstance(o["group"], (list, tuple)) else [o["group"]]
    if len(bys) != len(groups):
        raise ValueError(f"{spec.id}: options.split_by and options.group need the same length")
    for by, group in zip(bys, groups):
        if group not in ("low", "high"):
            raise ValueError(f"{spec.id}: options.group must be 'low' or 'high'")
        if by not in df.columns:
            raise KeyError(f"{spec.id}: split variable {by!r} is not in the panel (extra_marts: {list(spec.extra_marts)})")
    data = prepare_spec_data(spec, df)
    cluster = list(spec.vcov.cluster) if spec.vcov.kind == "cluster" else []
    needed = list(dict.fromkeys([spec.outcome, *spec.regressors, *spec.fixed_effects, *cluster, *bys]))
    elig = data.dropna(subset=needed)
    if elig.empty:
        raise ValueError(f"{spec.id}: no complete rows with {', '.join(bys)} (is the optional input table supplied?)")
    keep = np.ones(len(elig), dtype=bool)
    infos = []
    for by, group in zip(bys, groups):
        labels, info = median_split(elig[by])
        is_high = (labels == 1).to_numpy()
        keep &= is_high if group == "high" else ~is_high
        infos.append({"by": by, "group": group, **info})
    sub = elig.loc[keep]
    plain = dataclasses.replace(spec, sample_query="", split=None)
    res = fit_ols(plain, sub, ctx)
    res.sample = res.sample + "".join(
        f"; {i['by']} {i['group']} half ({i['rule']}, median {i['median']:.6g})" for i in infos)
    if len(bys) == 1:
        by, group, info = bys[0], groups[0], infos[0]
        res.diagnostics["split"] = infos[0]
    else:
        res.diagnostics["split"] = {"cells": infos, "n_cell": int(keep.sum()), "n_eligible": int(len(elig))}
        return res  # the between-group permutation test is defined for a single split
    perm = o.get("permutation")
    if perm and group == "high":
        draws = int(perm.get("draws", DEFAULT_DRAWS)) if isinstance(perm, dict) else DEFAULT_DRAWS
        if ctx.permutation_draws is not None:
            draws = int(ctx.permutation_draws)
        seed = int(perm.get("seed", ctx.seed)) if isinstance(perm, dict) else ctx.seed
        permute_by = perm.get("permute_by") if isinstance(perm, dict) else None
        coef_fn = fe_ols_coefficient(spec.outcome, list(spec.regressors), spec.fixed_effects,
                                     drop_singletons=spec.fixef_rm == "singleton")
        test = permutation_test(elig, is_high, coef_fn, draws=draws, seed=seed, permute_by=permute_by)
        test["statistic"] = f"b_high − b_low of {spec.treatment} (point estimates, FE absorbed, singletons dropped)"
        res.diagnostics["permutation"] = test
    return res


# --------------------------------------------------------------------------- tables


HET_MODERATORS = (
    ("fc", "FC index", "low = less constrained"),
    ("ww", "WW index", "low = less constrained"),
    ("hhi", "City–industry HHI", "high = more concentrated"),
    ("rdsub", "R&D subsidy amount", ""),
    ("patsub", "Patent subsidy amount", ""),
    ("visit", "Annual-report mentions of 参访", ""),
    ("standard", "Annual-report mentions of 标准化", ""),
)


def _row(est: pd.DataFrame, spec_id: str, term: str) -> dict[str, Any] | None:
    from keytech.estimation.report import _main_row

    return _main_row(est, spec_id, term)


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


def _column_table(est: pd.DataFrame, reg: Registry, ids: list[str], title: str, outcome_labels: list[str],
                  sample_labels: list[str] | None, synthetic: bool, notes: list[str],
                  extra_terms: list[tuple[str, str]] = (), perm_row: bool = False):
    from keytech.estimation.report import SYNTHETIC_NOTE, Row, Table, _stars_to_p, fmt_coef, fmt_n, fmt_r2, fmt_se

    specs = [_spec(reg, i) for i in ids]
    rows_main = [_row(est, i, s.treatment) if s else None for i, s in zip(ids, specs)]
    rows = [Row("Dependent variable", outcome_labels)]
    if sample_labels:
        rows.append(Row("Sample", sample_labels))
    rows += [Row("Policy", [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in rows_main], "coef"),
             Row("", [fmt_se(r and r["std_error"]) for r in rows_main], "se")]
    for term, label in extra_terms:
        tr = [_row(est, i, term) for i in ids]
        rows.append(Row(label, [fmt_coef(r and r["estimate"], r and r["p_value"]) for r in tr], "coef"))
        rows.append(Row("", [fmt_se(r and r["std_error"]) for r in tr], "se"))
    rows.append(Row("", [], "rule"))
    if perm_row:
        rows.append(Row("Empirical p (high − low)", [_perm_cell(r) for r in rows_main]))
    rows.append(Row("Controls / FE / SE", ["col. 5" if s else "" for s in specs]))
    rows.append(Row("N", [fmt_n(r and r["nobs"]) for r in rows_main]))
    rows.append(Row("Adj. R²", [fmt_r2(r and r["adj_r2"]) for r in rows_main]))
    rows.append(Row("", [], "rule"))
    rows.append(Row("Paper: Policy", [fmt_coef(s.paper.coef, _stars_to_p(s.paper.stars)) if s and s.paper and s.paper.coef is not None else "" for s in specs], "coef"))
    rows.append(Row("", [fmt_se(s.paper.se) if s and s.paper else "" for s in specs], "se"))
    rows.append(Row("Paper: N", [fmt_n(s.paper.nobs) if s and s.paper else "" for s in specs]))
    rows.append(Row("Paper: Adj. R²", [fmt_r2(s.paper.adj_r2) if s and s.paper else "" for s in specs]))
    base_notes = ["Column-5 specification: firm, industry×year and province×year FE, firm and city controls, "
                  "SE clustered by city in parentheses; * p<0.10, ** p<0.05, *** p<0.01."]
    all_notes = ([SYNTHETIC_NOTE] if synthetic else []) + base_notes + notes
    return Table(title, [s.label if s else i for i, s in zip(ids, specs)], rows, all_notes)


def table5_model(est, reg, synthetic):
    ids = [f"table5_col{i}" for i in range(1, 6)]
    return _column_table(
        est, reg, ids, "Table 5. Mechanism: knowledge spillover (technology similarity, joint applications)",
        ["ln(1+Apply_inv_zl)"] * 4 + ["ln(1+Apply_inv_zl_joint)"],
        ["IPC4 sim. low", "IPC4 sim. high", "IPC3 sim. low", "IPC3 sim. high", "full"], synthetic,
        ["Technology similarity: city-year mean of the Jaffe cosine similarity between listed firms' "
         "pre-existing IPC subclass (IPC4) / class (IPC3) patent distributions (marts.fct_city_year_similarity); "
         "split at the median of the estimation sample.",
         "Empirical p: one-sided permutation p-value of b(high) − b(low), group membership reshuffled "
         "(keytech.estimation.permutation); paper: 0.051 (IPC4), 0.073 (IPC3)."],
        perm_row=True)


def table6_model(est, reg, synthetic):
    ids = [f"table6_col{i}" for i in range(1, 7)]
    return _column_table(
        est, reg, ids, "Table 6. Mechanism: market exploration (uncertainty and sales)",
        ["Volatility_pre", "Volatility_current", "Volatility_post", "ln(Sale)", "Saleshare", "ln(1+Apply_inv_zl)"],
        None, synthetic,
        ["Volatility: sd of inventory-adjusted output growth over t−2..t (pre), t−1..t+1 (current), "
         "t..t+2 (post), after Mao & Wang (2023); column (6) adds Policy×ln(Sale) and ln(Sale)."],
        extra_terms=[("policy_x_ln_sale", "Policy × ln(Sale)"), ("ln_sale", "ln(Sale)")])


def table7_model(est, reg, synthetic):
    ids = [f"table7_col{i}" for i in range(1, 5)]
    return _column_table(
        est, reg, ids, "Table 7. Extension: technology width",
        ["Width1", "Width2", "Width3", "Width4"], None, synthetic,
        ["Levels, as the paper's columns (ln(1+x) versions: specs table7_ln_col1..4). Width1: key-tech SEI "
         "sub-fields applied in the year; Width2: key-tech IPC4 codes in the firm's key-tech pool up to t "
         "that were not in it up to t−3; Width3: 1 − Σ s² over sub-fields (firm-years with key-tech "
         "applications); Width4: key-tech applications outside the pool held up to last year."])


def fields_model(est, reg, synthetic):
    ids = [s.id for s in reg.specs if s.group == "field"]
    names = {}
    try:
        from keytech import paths

        seeds = pd.read_csv(paths.seeds_dir() / "sei_industries.csv", dtype=str)
        names = dict(zip(seeds["sei_industry_code"], seeds["sei_industry_name"]))
    except Exception:
        pass
    labels = [names.get(i.split("_")[-1], i) for i in ids]
    t = _column_table(est, reg, ids, "Extension: key-tech applications by SEI industry", labels, None, synthetic,
                      ["Dependent variable: ln(1 + key-tech invention applications mapped to the SEI top-level "
                       "industry) (a patent counts in every industry of its key-tech codes)."])
    return t


def heterogeneity_model(est, reg, synthetic):
    from keytech.estimation.report import SYNTHETIC_NOTE, Row, Table, fmt_coef, fmt_n, fmt_se

    headers = ["Key: low", "Key: high", "Key: p(high−low)", "Non-key: low", "Non-key: high", "Non-key: p(high−low)"]
    rows = []
    not_estimable = False
    for code, label, hint in HET_MODERATORS:
        cells_c, cells_s, cells_n = [], [], []
        for outcome in ("key", "nonkey"):
            for g in ("low", "high"):
                sid = f"het_{code}_{g}_{outcome}"
                s = _spec(reg, sid)
                r = _row(est, sid, s.treatment) if s else None
                if r is None and _row(est, sid, NOT_ESTIMABLE_TERM) is not None:
                    not_estimable = True
                    cells_c.append("n.e.")
                    cells_s.append("")
                    cells_n.append("")
                    continue
                cells_c.append(fmt_coef(r and r["estimate"], r and r["p_value"]))
                cells_s.append(fmt_se(r and r["std_error"]))
                cells_n.append(fmt_n(r and r["nobs"]))
            high = _row(est, f"het_{code}_high_{outcome}", "policy")
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
    from keytech.estimation.report import write_tables

    have = set(est["spec_id"]) if len(est) else set()
    written: list[Path] = []
    for name, group, fn in (("table5", "table5", table5_model), ("table6", "table6", table6_model),
                            ("table7", "table7", table7_model), ("heterogeneity", "het", heterogeneity_model),
                            ("fields", "field", fields_model)):
        ids = [s.id for s in reg.specs if s.group == group]
        if ids and have & set(ids):
            written += write_tables(name, [fn(est, reg, synthetic)], out_dir, footer)
    return written
