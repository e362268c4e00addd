"""Limits on silent shares: how much of a landed table a build may quarantine, merge or fail to parse.

Every row the models set aside is listed with a reason (``marts.rpt_quarantine``,
``marts.rpt_patent_reconciliation``), but nothing bounded *how many*: a yearbook with county names,
a pilot list with district names or a patent file whose IPC column is broken built "successfully"
with a fraction of the data. ``keytech build`` therefore compares these shares, on the new file and
before the swap, with the limits below; over a limit the build fails with the counts and examples
and the previous warehouse stays. ``keytech build --limit NAME=VALUE`` raises (or lowers) one.

Defaults come from what the paper's data look like (a handful of junk IPC strings, a few repeated
applications, every pilot project located in a prefecture-level city):

=============================== ======= ===========================================================
name                            default share of …
=============================== ======= ===========================================================
``unparseable_ipc_share``        0.01   invention rows (first occurrences) without a parseable IPC
``duplicate_application_share``  0.02   landed patent rows merged into an earlier row (same firm
                                        and application number)
``unmatched_pilot_rows``         0      pilot-list rows whose city matches no prefecture (a count)
``unknown_firm_city_share``      0.01   firm_info rows whose city matches no prefecture
``quarantined_share``            0.05   rows of any other landed table in ``marts.rpt_quarantine``
=============================== ======= ===========================================================
"""

from __future__ import annotations

from pathlib import Path

import duckdb

DEFAULT_LIMITS: dict[str, float] = {
    "unparseable_ipc_share": 0.01,
    "duplicate_application_share": 0.02,
    "unmatched_pilot_rows": 0,
    "unknown_firm_city_share": 0.01,
    "quarantined_share": 0.05,
}
EXAMPLES = 5
# tables whose quarantine share has its own limit (patents: see the two patent limits)
_OWN_LIMIT = {"pilot_list", "patents"}


def _examples(con: duckdb.DuckDBPyConnection, where: str, params: list) -> list[str]:
    rows = con.execute(
        "select _source_file, _source_row, column_name, value from marts.rpt_quarantine "
        f"where {where} order by _source_file, _source_row limit {EXAMPLES}", params).fetchall()
    return [f"{f} row {r} {c}={v!r}" for f, r, c, v in rows]


def measure(con: duckdb.DuckDBPyConnection, manifest: dict) -> list[dict]:
    """Every measured share: {'name', 'table', 'count', 'of', 'value', 'examples'}."""
    out: list[dict] = []
    landed = {t: e.get("data_rows", 0) for t, e in manifest.get("tables", {}).items()}
    if "patents" in landed:
        inventions, unparseable = con.execute(
            "select count(*) filter (where patent_type = 'invention' and disposition <> 'merged_duplicate'), "
            "count(*) filter (where disposition = 'unparseable_ipc') "
            "from intermediate.int_patents_dispositioned").fetchone()
        out.append({"name": "unparseable_ipc_share", "table": "patents", "count": unparseable, "of": inventions,
                    "value": unparseable / inventions if inventions else 0.0,
                    "examples": _examples(con, "source_table = 'patents' and rejection_code in "
                                               "('missing_ipc', 'no_parseable_ipc')", [])})
        (merged,) = con.execute("select count(*) from intermediate.int_patents_dispositioned "
                                "where disposition = 'merged_duplicate'").fetchone()
        examples = [f"{f} row {r} ApplyNo={a!r}" for f, r, a in con.execute(
            "select _source_file, _source_row, application_number from intermediate.int_patents_dispositioned "
            f"where disposition = 'merged_duplicate' order by _source_row limit {EXAMPLES}").fetchall()]
        out.append({"name": "duplicate_application_share", "table": "patents", "count": merged,
                    "of": landed["patents"], "value": merged / landed["patents"] if landed["patents"] else 0.0,
                    "examples": examples})
    per_table = dict(con.execute(
        "select source_table, count(distinct (_source_file, _source_row)) from marts.rpt_quarantine "
        "group by 1").fetchall())
    if "pilot_list" in landed:
        (unmatched,) = con.execute("select count(distinct _source_row) from marts.rpt_quarantine "
                                   "where source_table = 'pilot_list' and rejection_code = 'unknown_city'").fetchone()
        out.append({"name": "unmatched_pilot_rows", "table": "pilot_list", "count": unmatched,
                    "of": landed["pilot_list"], "value": unmatched,
                    "examples": _examples(con, "source_table = 'pilot_list' and rejection_code = 'unknown_city'", [])})
    if landed.get("firm_info"):
        (unknown,) = con.execute("select count(distinct _source_row) from marts.rpt_quarantine "
                                 "where source_table = 'firm_info' and rejection_code = 'unknown_city'").fetchone()
        out.append({"name": "unknown_firm_city_share", "table": "firm_info", "count": unknown,
                    "of": landed["firm_info"], "value": unknown / landed["firm_info"],
                    "examples": _examples(con, "source_table = 'firm_info' and rejection_code = 'unknown_city'", [])})
    for table, count in sorted(per_table.items()):
        if table in _OWN_LIMIT or not landed.get(table):
            continue
        out.append({"name": "quarantined_share", "table": table, "count": count, "of": landed[table],
                    "value": count / landed[table],
                    "examples": _examples(con, "source_table = ?", [table])})
    return out


def check_limits(warehouse: str | Path, manifest: dict, overrides: dict | None = None) -> dict:
    """Measure the shares in ``warehouse`` (read-only) and compare them with the limits.
    Returns {'limits', 'measured', 'violations'}; a violation is one readable line."""
    limits = {**DEFAULT_LIMITS, **(overrides or {})}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        measured = measure(con, manifest)
    finally:
        con.close()
    violations = []
    for m in measured:
        limit = limits[m["name"]]
        if m["value"] > limit:
            shown = (f"{m['count']:,} rows" if m["name"] == "unmatched_pilot_rows"
                     else f"{m['count']:,} of {m['of']:,} rows ({m['value']:.1%})")
            violations.append(
                f"limit {m['name']} exceeded in {m['table']}: {shown} > {limit:g}; e.g. "
                f"{'; '.join(m['examples']) or 'see marts.rpt_quarantine'}")
    return {"limits": limits, "measured": measured, "violations": violations}
