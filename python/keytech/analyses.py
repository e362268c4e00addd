"""Run the example analyses in ``analysis/`` (dbt analyses) directly on the warehouse.

dbt analyses use ``{{ ref('model') }}``; :func:`render` replaces each ref with the relation it
names in the warehouse (``marts.fct_patents``, ``seeds.pilot_waves``, ...), looked up in the
information schema, so ``keytech sql analysis/pilot_coverage_by_wave.sql`` works without a
``dbt compile``. Only plain refs are supported (no other Jinja); ``dbt compile`` renders the full
language.
"""

from __future__ import annotations

import re
from pathlib import Path

REF = re.compile(r"\{\{\s*ref\(\s*['\"]([A-Za-z0-9_]+)['\"]\s*\)\s*\}\}")
SCHEMA_ORDER = ("marts", "seeds", "intermediate", "staging", "results")


class AnalysisError(ValueError):
    """The analysis uses Jinja beyond ref() or names a relation the warehouse lacks."""


def render(sql: str, con) -> str:
    tables: dict[str, list[str]] = {}
    for schema, name in con.execute("select table_schema, table_name from information_schema.tables").fetchall():
        tables.setdefault(name, []).append(schema)

    def relation(match: re.Match) -> str:
        name = match.group(1)
        schemas = tables.get(name)
        if not schemas:
            raise AnalysisError(f"ref('{name}'): no table or view named {name} in the warehouse; run `keytech build`.")
        schema = min(schemas, key=lambda s: SCHEMA_ORDER.index(s) if s in SCHEMA_ORDER else len(SCHEMA_ORDER))
        return f'{schema}."{name}"'

    out = REF.sub(relation, sql)
    if "{{" in out or "{%" in out:
        raise AnalysisError("the analysis uses Jinja other than ref(); render it with `dbt compile` instead.")
    return out


def read_query(text_or_path: str, con) -> str:
    """A query given inline, or a .sql file (rendered when it holds refs)."""
    path = Path(text_or_path)
    if text_or_path.strip().lower().endswith(".sql") and "\n" not in text_or_path and path.is_file():
        return render(path.read_text(encoding="utf-8"), con)
    return render(text_or_path, con) if REF.search(text_or_path) else text_or_path
