"""SQL literals for the few statements that take no parameters (ATTACH, COPY … TO, a file name
written into a landed table): one place for the quoting rules, imported by the build, the ingest,
the diff and the bench (before, ``ingest`` kept copies of its own because ``build`` imports it)."""

from __future__ import annotations

from pathlib import Path


def sql_string(value: str | Path) -> str:
    """``value`` as a SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier (double quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'
