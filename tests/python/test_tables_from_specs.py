"""Tables 5–7 take their columns from ``specs.yml`` (issue 13): the specs whose ``table:`` names the
table, in registry order, headed by their ``label``; the "Dependent variable" and "Sample" rows come
from each spec's outcome and split options. A new ``table5_col6`` spec renders as a sixth column —
it did not when the ids were hard-coded — and the columns of the shipped registry are the ones the
hard-coded lists used to give (frozen below from those lists)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import yaml

from keytech import paths
from keytech.estimation.registry import parse_registry
from keytech.estimation.store import ESTIMATE_COLUMNS
from keytech.tables import mechanisms
from keytech.tables.render import to_markdown


def _raw() -> dict:
    return yaml.safe_load((Path(paths.__file__).parent / "specs.yml").read_text(encoding="utf-8"))


def _estimates(ids_and_values: dict[str, tuple[float, float, int]]) -> pd.DataFrame:
    rows = []
    for spec_id, (b, p, n) in ids_and_values.items():
        rows.append({c: None for c in ESTIMATE_COLUMNS} | {
            "run_id": "r", "spec_id": spec_id, "term": "policy", "estimate": b, "std_error": 0.01, "p_value": p,
            "nobs": n, "adj_r2": 0.5, "diagnostics_json": json.dumps({})})
    return pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)


def _cells(table, label: str) -> list[str]:
    return next(r.cells for r in table.rows if r.label == label)


def test_shipped_columns_equal_the_formerly_hard_coded_ones():
    reg = parse_registry(_raw())
    est = _estimates({})
    t5 = mechanisms.table5_model(est, reg, False)
    assert t5.headers == ["(1)", "(2)", "(3)", "(4)", "(5)"]
    assert _cells(t5, "Dependent variable") == ["ln(1+Apply_inv_zl)"] * 4 + ["ln(1+Apply_inv_zl_joint)"]
    assert _cells(t5, "Sample") == ["IPC4 sim. low", "IPC4 sim. high", "IPC3 sim. low", "IPC3 sim. high", "full"]
    t6 = mechanisms.table6_model(est, reg, False)
    assert t6.headers == ["(1)", "(2)", "(3)", "(4)", "(5)", "(6)"]
    assert _cells(t6, "Dependent variable") == ["Volatility_pre", "Volatility_current", "Volatility_post",
                                                "ln(Sale)", "Saleshare", "ln(1+Apply_inv_zl)"]
    assert not any(r.label == "Sample" for r in t6.rows)
    t7 = mechanisms.table7_model(est, reg, False)
    assert _cells(t7, "Dependent variable") == ["Width1", "Width2", "Width3", "Width4"]
    # the ln(1+x) versions share Table 7's group but are not its columns (no `table: table7`)
    assert t7.headers == ["(1)", "(2)", "(3)", "(4)"]


def test_a_new_table5_column_renders(tmp_path: Path):
    raw = _raw()
    col2 = next(s for s in raw["specs"] if s["id"] == "table5_col2")
    new = copy.deepcopy(col2)
    new.update(id="table5_col6", label="(6)", description="Table 5 (6) - test column",
               options={"split_by": "similarity_ipc3", "group": "high"})
    new.pop("paper", None)
    raw["specs"].insert(raw["specs"].index(next(s for s in raw["specs"] if s["id"] == "table5_col5")) + 1, new)
    reg = parse_registry(raw)
    est = _estimates({"table5_col1": (0.1111, 0.5, 900), "table5_col6": (0.2345, 0.03, 1234)})

    t5 = mechanisms.table5_model(est, reg, False)
    assert t5.headers == ["(1)", "(2)", "(3)", "(4)", "(5)", "(6)"]
    assert _cells(t5, "Policy") == ["0.1111", "", "", "", "", "0.2345**"]
    assert _cells(t5, "N") == ["900", "", "", "", "", "1,234"]
    assert _cells(t5, "Sample")[-1] == "IPC3 sim. high"
    assert _cells(t5, "Dependent variable")[-1] == "ln(1+Apply_inv_zl)"

    written = mechanisms.render_tables(est, reg, False, tmp_path)
    md = (tmp_path / "table5.md").read_text(encoding="utf-8")
    assert tmp_path / "table5.md" in written
    assert "| (6) |" in md and "0.2345**" in md and md == to_markdown(t5)
