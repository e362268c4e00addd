"""Warehouse access: connections, mart reads and data fingerprints.

Readers open the DuckDB file with ``read_only=True``; only the results store and the check recorder
write, and they write to the ``results`` schema only.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
import pandas as pd

from keytech import paths

PUBLIC_MARTS = (
    "dim_firms",
    "dim_cities",
    "fct_patents",
    "fct_patent_ipc_codes",
    "fct_firm_years",
    "rpt_analysis_panel",
    "rpt_analysis_panel_window2022",
    "rpt_sample_funnel",
    "rpt_patent_reconciliation",
)


class WarehouseMissing(RuntimeError):
    """The warehouse file does not exist or lacks the marts."""


def _resolve(db_path: str | Path | None) -> Path:
    return Path(db_path) if db_path is not None else paths.warehouse_path()


@contextmanager
def connect(db_path: str | Path | None = None, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse. Read-only unless asked; raises a readable error when it is missing."""
    path = _resolve(db_path)
    if read_only and not path.is_file():
        raise WarehouseMissing(
            f"No warehouse at {path}. Build it first: `keytech build` "
            "(or `keytech synth --scale tiny` then `keytech build` for synthetic data)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path), read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    query = "select count(*) from information_schema.tables where table_schema = ? and table_name = ?"
    return con.execute(query, [schema, table]).fetchone()[0] > 0


def read_mart(name: str, db_path: str | Path | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one mart (``marts.<name>``) into pandas, read-only."""
    with connect(db_path) as con:
        if not table_exists(con, "marts", name):
            raise WarehouseMissing(f"marts.{name} is not in the warehouse; run `keytech build`.")
        select = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        return con.execute(f"select {select} from marts.{name}").df()


def mart_fingerprint(con: duckdb.DuckDBPyConnection, marts: tuple[str, ...] = PUBLIC_MARTS) -> str:
    """A content hash of the public marts: equal marts give equal fingerprints, whatever the row
    order. Each table contributes its column list and an order-independent sum of row hashes."""
    digest = hashlib.sha256()
    for name in marts:
        if not table_exists(con, "marts", name):
            digest.update(f"{name}:missing".encode())
            continue
        columns = [
            row[0]
            for row in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'marts' and table_name = ? order by ordinal_position",
                [name],
            ).fetchall()
        ]
        count, total = con.execute(
            f"select count(*), coalesce(sum(hash(t)::hugeint), 0) from marts.{name} as t"
        ).fetchone()
        digest.update(f"{name}:{','.join(columns)}:{count}:{total}".encode())
    return digest.hexdigest()[:16]
