"""The paper's published numbers (``seeds/paper_published_numbers.csv``) next to this run's.

The seed holds one row per (paper table, column, term): the coefficient, standard error, stars,
N and adjusted R² that Pi & Luo publish, plus Table 4's IV diagnostics and Table 5's between-group
p-values as extra "terms". Each row names the spec id (``python/keytech/specs.yml``) that reproduces
it; the report looks the spec up in the run's ``results.estimates`` and shows "not run" where it
is absent.

Term matching is deliberately forgiving, because estimators name their terms: an exact term name
wins; for the main regressor the registry's ``treatment`` is used; otherwise terms are compared as
sets of word tokens (``policy_x_ln_sale`` matches ``policy:ln_sale``). Diagnostics such as
``kp_rk_lm`` are looked up in the spec's ``diagnostics_json`` under a few common spellings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from keytech import paths
from keytech.estimation.core.results import ERROR_TERM, NO_ESTIMATE_TERMS

SEED_FILE = "paper_published_numbers.csv"

TABLE_TITLES = {
    "table3": "Table 3. Baseline: pilots and key-technology innovation (Eq. 1)",
    "table4": "Table 4. Endogeneity: interactive fixed effects, two instruments, PSM",
    "table5": "Table 5. Knowledge spillover: technology similarity and joint applications",
    "table6": "Table 6. Market exploration: uncertainty, sales and market share",
    "table7": "Table 7. Technology width",
}

# Diagnostic "terms" of the seed → keys an estimator may use in diagnostics_json.
DIAGNOSTIC_ALIASES: dict[str, tuple[str, ...]] = {
    "kp_rk_lm": ("kp_rk_lm", "kp_lm", "kleibergen_paap_lm", "kleibergen_paap_rk_lm", "rk_lm", "kp_rk_lm_stat"),
    "kp_rk_wald_f": ("kp_rk_wald_f", "kp_wald_f", "kp_f", "kleibergen_paap_wald_f", "kleibergen_paap_rk_wald_f", "rk_wald_f", "kp_rk_f"),
    "stock_yogo_15": ("stock_yogo_15", "stock_yogo_critical_value", "stock_yogo", "stock_yogo_15pct", "sy_15", "stock_yogo_cv"),
    "first_stage_f": ("first_stage_f", "first_stage_fstat", "f_first_stage", "fs_f", "first_stage_F"),
    "p_difference": ("p_difference", "p_diff", "p_empirical_difference", "empirical_p", "p_between", "between_group_p",
                     "p_value_difference", "permutation_p", "p_empirical"),
}
DIAGNOSTIC_TERMS = frozenset(DIAGNOSTIC_ALIASES)


def load_published(seeds_dir: Path | None = None) -> pd.DataFrame:
    """The seed as a DataFrame (numeric columns as floats, stars as nullable int)."""
    path = (seeds_dir or paths.seeds_dir()) / SEED_FILE
    frame = pd.read_csv(path, dtype={"paper_table": str, "paper_column": str, "spec_id": str, "term": str, "description": str})
    for column in ("estimate", "std_error", "p_value", "adj_r2"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("stars", "nobs"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame


def _tokens(name: str) -> frozenset[str]:
    return frozenset(t for t in re.split(r"[^a-z0-9]+", name.lower()) if t and t not in ("x", "times"))


def _none(value: Any) -> Any:
    try:
        return None if value is None or pd.isna(value) else value
    except (TypeError, ValueError):
        return value


@dataclass
class Cell:
    """One number of this run for a (spec, term); ``status`` is ok, not_run, no_term, error or not_estimable."""

    status: str
    estimate: float | None = None
    std_error: float | None = None
    p_value: float | None = None
    nobs: int | None = None
    adj_r2: float | None = None
    term: str | None = None
    message: str = ""


def match_term(wanted: str, available: list[str], treatment: str | None = None) -> str | None:
    if wanted in available:
        return wanted
    lower = {a.lower(): a for a in available}
    if wanted.lower() in lower:
        return lower[wanted.lower()]
    if wanted in ("policy",) and treatment and treatment in available:
        return treatment
    want = _tokens(wanted)
    same = [a for a in available if _tokens(a) == want]
    if len(same) == 1:
        return same[0]
    if wanted.startswith("iv"):  # first stage: an instrument term containing iv1 / iv2
        hits = [a for a in available if wanted in a.lower()]
        if len(hits) == 1:
            return hits[0]
    return None


def _find_diagnostic(diag: Any, aliases: tuple[str, ...]) -> tuple[float | None, float | None]:
    """(value, p-value) of a diagnostic stored under any alias, searched recursively."""
    wanted = {a.lower() for a in aliases}
    stack = [diag]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            for key, value in node.items():
                if str(key).lower() in wanted:
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        p = None
                        for pk in (f"{key}_p", f"{key}_p_value", f"{key}_pvalue"):
                            if isinstance(node.get(pk), (int, float)):
                                p = float(node[pk])
                        return float(value), p
                    if isinstance(value, dict):
                        v = next((value[k] for k in ("stat", "statistic", "value", "F", "f", "estimate") if isinstance(value.get(k), (int, float))), None)
                        p = next((value[k] for k in ("p_value", "p", "pvalue") if isinstance(value.get(k), (int, float))), None)
                        if v is not None:
                            return float(v), (float(p) if p is not None else None)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(n for n in node if isinstance(n, (dict, list)))
    return None, None


def run_cell(est: pd.DataFrame, spec_id: str, term: str, treatment: str | None = None) -> Cell:
    """This run's number for the seed row (spec_id, term)."""
    sub = est.loc[est["spec_id"] == spec_id] if not est.empty else est
    if sub.empty:
        return Cell("not_run")
    no_estimate = next((t for t in NO_ESTIMATE_TERMS if t in set(sub["term"])), None)
    if no_estimate:
        row = sub.loc[sub["term"] == no_estimate].iloc[0]
        msg = ""
        if _none(row.get("diagnostics_json")):
            msg = json.loads(row["diagnostics_json"]).get("error", "")
        return Cell("error" if no_estimate == ERROR_TERM else "not_estimable", message=msg)
    nobs = _none(sub["nobs"].iloc[0])
    adj = _none(sub["adj_r2"].iloc[0])
    if term in DIAGNOSTIC_TERMS:
        for _, row in sub.iterrows():
            diag = json.loads(row["diagnostics_json"]) if _none(row.get("diagnostics_json")) else {}
            value, p = _find_diagnostic(diag, DIAGNOSTIC_ALIASES[term])
            if value is not None:
                return Cell("ok", value, None, p, term=term)
        hit = match_term(term, list(sub["term"]))
        if hit is None:
            hits = [t for t in sub["term"] if any(a in t.lower() for a in DIAGNOSTIC_ALIASES[term])]
            hit = hits[0] if hits else None
        if hit is not None:
            row = sub.loc[sub["term"] == hit].iloc[0]
            return Cell("ok", _none(row["estimate"]), None, _none(row["p_value"]), term=hit)
        return Cell("no_term", message=f"{spec_id} stores no {term}")
    hit = match_term(term, list(sub["term"]), treatment)
    if hit is None:
        return Cell("no_term", nobs=nobs, adj_r2=adj, message=f"{spec_id} has no term like {term!r}")
    row = sub.loc[sub["term"] == hit].iloc[0]
    return Cell("ok", _none(row["estimate"]), _none(row["std_error"]), _none(row["p_value"]),
                None if nobs is None else int(nobs), adj, term=hit)


def comparison(est: pd.DataFrame, published: pd.DataFrame, treatments: dict[str, str] | None = None) -> pd.DataFrame:
    """Seed rows with this run's cell beside each (columns run_*)."""
    treatments = treatments or {}
    records = []
    for row in published.itertuples(index=False):
        cell = run_cell(est, row.spec_id, row.term, treatments.get(row.spec_id))
        records.append({
            **row._asdict(),
            "run_status": cell.status, "run_term": cell.term, "run_estimate": cell.estimate,
            "run_std_error": cell.std_error, "run_p_value": cell.p_value, "run_nobs": cell.nobs,
            "run_adj_r2": cell.adj_r2, "run_message": cell.message,
        })
    return pd.DataFrame.from_records(records)
