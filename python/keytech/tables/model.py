"""The table model every publication table is built as (rows of formatted cells, notes), the
lookup of a spec's stored estimate in ``results.estimates``, and the table's words (title, notes)
from the ``tables:`` block of ``specs.yml``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from keytech.estimation.orchestration.registry import Spec, TableSpec
from keytech.synthetic import SYNTHETIC_NOTE


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


def fill(text: str, **values: Any) -> str:
    """``text`` with each ``{name}`` of ``values`` replaced by ``str(value)``; other braces stay
    literal (notes such as Table 4's ``{·}`` are not format strings)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


def table_notes(ts: TableSpec, synthetic: bool, not_estimable: bool = False, **values: Any) -> list[str]:
    """A table's notes from its ``tables:`` entry: the synthetic-data note first when ``synthetic``,
    then ``notes``, then ``synthetic_notes`` (synthetic only), then ``not_estimable_notes`` (when a
    cell is n.e.); ``values`` fill the placeholders."""
    notes = ([SYNTHETIC_NOTE] if synthetic else []) + list(ts.notes)
    notes += list(ts.synthetic_notes) if synthetic else []
    notes += list(ts.not_estimable_notes) if not_estimable else []
    return [fill(n, **values) for n in notes]


def fixed_headers(ts: TableSpec, n: int) -> list[str]:
    """The ``headers`` of a table whose columns are not specs; there must be exactly ``n``."""
    if len(ts.headers) != n:
        raise ValueError(f"tables.{ts.id}.headers in specs.yml: {n} column headers needed, {len(ts.headers)} given")
    return list(ts.headers)
