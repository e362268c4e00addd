"""Which raw tables each specification needs: optional tables, skipped specs, empty mart columns.

The contract (``contract.yml``) marks a table that only some specifications read as
``required: false`` and lists under ``enables`` the spec ids (or id prefixes ending in ``_``) and
the mart columns it fills. From that:

* ``skipped_specs``: a spec is skipped — not failed — when a table it needs was not supplied to
  the build *and* the mart columns that table would fill are entirely NULL (with ``--fc-index sa``
  the FC index needs no cash flow, so ``het_fc_*`` then still run). The reason names the table and
  what to add.
* ``empty_supplied_columns``: the opposite failure — a table *was* supplied but a mart column it
  should fill is entirely NULL (e.g. a stand-in file that matches no firm-year). ``keytech check``
  fails on it.
* ``enabled_by``: per table, the spec groups it enables (printed by ``keytech validate``).

Which tables were supplied is read from the build state the build records in the warehouse
(``build_meta.build_state``: the landing manifest); without it every table counts as supplied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from keytech.contract import Table, load_contract


@dataclass(frozen=True)
class Skip:
    spec_id: str
    table: str
    reason: str


def supplied_tables(con) -> dict[str, int] | None:
    """{table: landed data rows} from the warehouse's build state, or None when not recorded."""
    try:
        row = con.execute("select state from build_meta.build_state").fetchone()
    except Exception:
        return None
    if not row:
        return None
    tables = (json.loads(row[0]) or {}).get("tables") or {}
    return {name: int(entry.get("data_rows") or 0) if entry.get("format") != "absent" else 0
            for name, entry in tables.items()}


def _column_filled(con, mart: str, column: str) -> bool | None:
    """True when the mart column holds a value, False when entirely NULL, None when absent."""
    try:
        return bool(con.execute(f'select count("{column}") > 0 from marts.{mart}').fetchone()[0])
    except Exception:
        return None


def skip_reason(spec_id: str, table: Table) -> str:
    supply = table.supply or f"{table.name}.csv"
    return f"{spec_id} needs {table.name}: add {supply} to the raw folder and run `keytech build`"


def skipped_specs(spec_ids: list[str], con, contract: dict[str, Table] | None = None) -> dict[str, Skip]:
    """The specs among ``spec_ids`` that cannot run because an optional table was not supplied."""
    supplied = supplied_tables(con)
    if supplied is None:
        return {}
    contract = contract or load_contract()
    filled: dict[tuple[str, str], bool | None] = {}
    out: dict[str, Skip] = {}
    for spec_id in spec_ids:
        for table in contract.values():
            if supplied.get(table.name, 0) > 0:
                continue
            for enables in table.enables:
                if not enables.covers(spec_id):
                    continue
                for column in enables.columns:
                    key = (enables.mart, column)
                    if key not in filled:
                        filled[key] = _column_filled(con, enables.mart, column)
                if all(filled[(enables.mart, c)] is False for c in enables.columns) and spec_id not in out:
                    out[spec_id] = Skip(spec_id, table.name, skip_reason(spec_id, table))
    return out


def empty_supplied_columns(con, contract: dict[str, Table] | None = None) -> list[dict]:
    """Mart columns that a supplied optional table should fill but that are entirely NULL."""
    supplied = supplied_tables(con)
    if supplied is None:
        return []
    contract = contract or load_contract()
    problems = []
    for table in contract.values():
        if supplied.get(table.name, 0) == 0:
            continue
        for enables in table.enables:
            for column in enables.columns:
                if _column_filled(con, enables.mart, column) is False:
                    problems.append({"table": table.name, "rows": supplied[table.name], "mart": enables.mart,
                                     "column": column, "specs": list(enables.specs)})
    return problems


def enabled_by(table: Table) -> str:
    """What a table enables, in words (``keytech validate``)."""
    if table.required:
        return "every specification (required)"
    if not table.enables:
        return "no specification yet (extension data)"
    names = []
    for enables in table.enables:
        for spec in enables.specs:
            label = spec + "*" if spec.endswith("_") else spec
            if label not in names:
                names.append(label)
    return ", ".join(names)
