"""The table model every publication table is built as (rows of formatted cells, notes), and the
lookup of a spec's stored estimate in ``results.estimates``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from keytech.estimation.registry import Spec


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


def nan_to_none(v: Any) -> Any:
    if v is None:
        return None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def main_row(est: pd.DataFrame, spec_id: str, term: str) -> dict[str, Any] | None:
    sub = est.loc[(est["spec_id"] == spec_id) & (est["term"] == term)]
    if sub.empty:
        return None
    row = {k: nan_to_none(v) for k, v in sub.iloc[0].to_dict().items()}
    row["diagnostics"] = json.loads(row["diagnostics_json"]) if row.get("diagnostics_json") else {}
    return row


def main_term(spec: Spec) -> str:
    if spec.estimator in ("staggered_sunab", "staggered_did2s"):
        return "att"
    if spec.estimator == "event_study":
        return "rel_time=0"
    return spec.treatment
