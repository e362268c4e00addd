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
from keytech.marts import public_marts

# the marts declared `access: public` in models/marts/**/*.yml (keytech/marts.py): every mart a spec
# reads is among them, so the fingerprint and the estimation gate cover all estimation inputs
PUBLIC_MARTS = public_marts()


class WarehouseMissing(RuntimeError):
    """The warehouse file does not exist or lacks the marts."""


class WarehouseUnreadable(RuntimeError):
    """The warehouse file exists but cannot be opened: locked by another process, corrupt, or not a
    DuckDB database. The message says which and what to do."""


def explain_open_error(path: Path, exc: BaseException) -> str:
    """A message for a DuckDB error raised while opening ``path``."""
    text = str(exc)
    if "lock" in text.lower():
        holder = ""
        import re

        pid = re.search(r"PID (\d+)", text)
        if pid:
            holder = f" (process {pid.group(1)})"
        return (f"The warehouse {path} is in use by another process{holder} that is writing it "
                "(a build, `keytech check` or `keytech estimate`). Wait for it to finish and run the "
                "command again.")
    if "not a valid DuckDB database" in text or "Could not read enough bytes" in text or \
            "corrupt" in text.lower() or "checksum" in text.lower() or "Serialization" in text:
        return (f"{path} is not a readable KeyTech warehouse ({text.splitlines()[0]}): it is empty, cut short, "
                "corrupt or not a DuckDB file. Move it away (e.g. `mv` it to a .broken name) and run "
                "`keytech build`; or point KEYTECH_DB at the right file.")
    return f"Cannot open the warehouse {path}: {text.splitlines()[0] if text else type(exc).__name__}"


def open_error(path: str | Path) -> str | None:
    """None when ``path`` opens read-only, else the reason (see explain_open_error)."""
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error as exc:
        return explain_open_error(Path(path), exc)
    return None


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
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise WarehouseUnreadable(explain_open_error(path, exc)) from exc
    try:
        yield con
    finally:
        con.close()


class UnsafeQuery(ValueError):
    """``keytech sql`` got something other than one read-only statement."""


READ_ONLY_STATEMENTS = ("SELECT", "EXPLAIN")  # DESCRIBE, SHOW, SUMMARIZE, WITH, FROM, VALUES parse as SELECT


def check_read_only_query(sql: str) -> str:
    """Return ``sql`` when it is exactly one SELECT/WITH/EXPLAIN/DESCRIBE/SHOW statement, decided by
    DuckDB's own parser (``duckdb.extract_statements``), not by patterns; raise UnsafeQuery otherwise.
    EXPLAIN is allowed only around a SELECT (EXPLAIN ANALYZE runs its statement)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UnsafeQuery(f"The query does not parse: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise UnsafeQuery(f"Give exactly one statement (got {len(statements)}): `keytech sql` runs a single "
                          "SELECT, WITH, EXPLAIN, DESCRIBE or SHOW.")
    kind = statements[0].type.name
    if kind not in READ_ONLY_STATEMENTS:
        raise UnsafeQuery(f"`keytech sql` only reads: a {kind} statement is not allowed (allowed: SELECT, WITH, "
                          "EXPLAIN, DESCRIBE, SHOW). Change the warehouse with `keytech build`.")
    if kind == "EXPLAIN":
        import re

        inner = re.sub(r"^\s*explain\s+(analyze\s+)?", "", sql.strip(), flags=re.I)
        if inner == sql.strip():
            raise UnsafeQuery("EXPLAIN must start the query (no leading comment).")
        check_read_only_query(inner)
    return sql


@contextmanager
def connect_query_only(db_path: str | Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection that also cannot touch any other file: no ATTACH, COPY, reading or
    writing files, installing or loading extensions (``enable_external_access = false``, locked)."""
    with connect(db_path, read_only=True) as con:
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
        yield con


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
