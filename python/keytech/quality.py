"""`keytech check`: Great Expectations suites on the marts, saved as JSON, HTML and a warehouse row.

dbt's own tests (keys, relationships, accepted values, timing, reconciliation) run inside
`dbt build`; these suites add what dbt tests express poorly: value ranges, null fractions and
distributions. GX 1.x has no working DuckDB SQL data source, so each mart is read into pandas
(read-only) and validated as a whole-dataframe batch in an ephemeral context.

Every run appends a row to ``results.check_runs`` (check_run_id, checked_at, passed,
data_fingerprint, details_json); the estimation layer refuses to run when the latest row failed or
was computed on other marts.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import sys
import threading
import uuid
from pathlib import Path

from keytech import paths
from keytech.inputs import empty_supplied_columns
from keytech.warehouse import connect, mart_fingerprint, table_exists
from keytech.yaml_files import load_yaml

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

_gx_import: threading.Thread | None = None


def start_importing_great_expectations() -> None:
    """Import Great Expectations in a background thread, so its ≈ 2 s of imports overlap other work.

    ``keytech build`` calls this before it waits for dbt, ``run_checks`` before it reads the marts:
    ``_run_suites``' own ``import great_expectations`` then finds the module loaded, or waits for the
    thread to finish it (the import lock), and an import error surfaces there, unchanged. pandas (which
    GX imports too) is imported here first, in the calling thread, so the two threads never import the
    same module at once (nor pyarrow, which ``_read_frame`` uses). Idempotent; a no-op once GX is loaded."""
    global _gx_import
    if "great_expectations" in sys.modules or _gx_import is not None:
        return
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    def load() -> None:
        try:
            import great_expectations  # noqa: F401
        except BaseException:  # noqa: BLE001 - the checks' own import reports it
            pass

    # not a daemon: a process that ends before the checks (a failed dbt build) waits for the import to
    # finish (≤ 2 s) instead of being torn down in the middle of it at interpreter shutdown
    _gx_import = threading.Thread(target=load, name="import-great-expectations", daemon=False)
    _gx_import.start()



class _PanelEndYear:
    """Marks the panel-window bound in ``SUITES``: ``suites_for(end_year)`` puts the warehouse's last
    panel year there (dbt var ``panel_end_year``: 2022 by default, 2024 for the xl scale)."""

    def __repr__(self) -> str:
        return "PANEL_END_YEAR"


PANEL_END_YEAR = _PanelEndYear()

# Suites as data: mart -> list of (expectation class name, keyword arguments); run them through
# ``suites_for`` (it fills in PANEL_END_YEAR).
SUITES: dict[str, list[tuple[str, dict]]] = {
    "rpt_analysis_panel": [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["stkcd", "year"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "year", "min_value": 2010, "max_value": 2019}),
        ("ExpectColumnValuesToBeInSet", {"column": "policy", "value_set": [0, 1]}),
        ("ExpectColumnValuesToBeInSet", {"column": "ifdome", "value_set": [0, 1]}),
        ("ExpectColumnMeanToBeBetween", {"column": "policy", "min_value": 0.02, "max_value": 0.98}),
        ("ExpectColumnValuesToBeBetween", {"column": "apply_inv_zl", "min_value": 0}),
        ("ExpectColumnValuesToBeBetween", {"column": "apply_inv_nozl", "min_value": 0}),
        ("ExpectColumnMeanToBeBetween", {"column": "ln_apply_inv_zl", "min_value": 0.0, "max_value": 6.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "roa", "min_value": -1.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "kd", "min_value": 0.0, "max_value": 2.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "lnage", "min_value": 0.0, "max_value": 5.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "ki", "min_value": 0.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "saleshare", "min_value": 0.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeBetween", {"column": "infor", "min_value": 0.0, "max_value": 20000.0}),
        *[
            ("ExpectColumnValuesToNotBeNull", {"column": column})
            for column in ("stkcd", "year", "city_code", "province_code", "industry_code", "policy",
                           "apply_inv_zl", "ln_apply_inv_zl")
        ],
        # missing controls stay NULL in the panel (each spec drops its own incomplete rows);
        # the paper loses ~1.7% of rows to firm and ~4.8% to city controls, so most are present
        *[
            ("ExpectColumnValuesToNotBeNull", {"column": column, "mostly": 0.8})
            for column in ("roa", "lnage", "ki", "ifdome", "ln_size", "kd", "ln_meangdp", "infor",
                           "ln_finsgov", "ln_fdi")
        ],
    ],
    "fct_firm_years": [
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["stkcd", "year"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "year", "min_value": 2008, "max_value": PANEL_END_YEAR}),
        ("ExpectColumnValuesToNotBeNull", {"column": "city_code", "mostly": 0.95}),
        ("ExpectColumnValuesToNotBeNull", {"column": "size", "mostly": 0.9}),
        ("ExpectColumnValuesToBeBetween", {"column": "kd", "min_value": 0.0, "max_value": 5.0, "mostly": 0.99}),
    ],
    "fct_patents": [
        ("ExpectColumnValuesToBeUnique", {"column": "patent_id"}),
        ("ExpectColumnValuesToBeInSet", {"column": "patent_type", "value_set": ["invention", "utility_model", "design"]}),
        ("ExpectColumnValuesToBeBetween", {"column": "application_year", "min_value": 2008, "max_value": PANEL_END_YEAR}),
        ("ExpectColumnValuesToBeBetween", {"column": "citations", "min_value": 0}),
        ("ExpectColumnMeanToBeBetween", {"column": "is_invention", "min_value": 0.05, "max_value": 0.95}),
    ],
    "fct_patent_ipc_codes": [
        ("ExpectColumnValuesToBeInSet", {"column": "match_level",
                                         "value_set": ["exact", "main_group", "subclass", "class", "supplement", "none"]}),
        ("ExpectColumnValuesToMatchRegex", {"column": "ipc_code", "regex": r"^[A-H]\d{2}[A-Z](\d{1,4}/\d{2,6})?$"}),
        ("ExpectColumnValuesToNotBeNull", {"column": "ipc_code"}),
    ],
    "dim_cities": [
        ("ExpectColumnValuesToBeUnique", {"column": "city_code"}),
        ("ExpectColumnValuesToBeBetween", {"column": "longitude", "min_value": 73, "max_value": 136}),
        ("ExpectColumnValuesToBeBetween", {"column": "latitude", "min_value": 18, "max_value": 54}),
        ("ExpectColumnValuesToBeBetween", {"column": "first_treated_year", "min_value": 2016, "max_value": 2019}),
    ],
    "rpt_endogeneity_panel": [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["stkcd", "year"]}),
        ("ExpectColumnValuesToBeInSet", {"column": "policy", "value_set": [0, 1]}),
        *[("ExpectColumnValuesToNotBeNull", {"column": column}) for column in ("stkcd", "year", "city_code", "policy")],
    ],
    "fct_firm_year_mechanisms": [
        ("ExpectTableRowCountToBeBetween", {"min_value": 1}),
        ("ExpectCompoundColumnsToBeUnique", {"column_list": ["stkcd", "year"]}),
        *[("ExpectColumnValuesToNotBeNull", {"column": column}) for column in ("stkcd", "year")],
    ],
    "dim_firms": [
        ("ExpectColumnValuesToBeUnique", {"column": "stkcd"}),
        ("ExpectColumnValuesToMatchRegex", {"column": "stkcd", "regex": r"^\d{6}$"}),
    ],
}


def panel_end_year(con) -> int:
    """The last panel year of the warehouse: the dbt var ``panel_end_year`` its build was given
    (``build_meta.build_state``; set for the xl synthetic scale, 2024), else dbt_project.yml's."""
    if table_exists(con, "build_meta", "build_state"):
        row = con.execute("select state from build_meta.build_state").fetchone()
        value = json.loads(row[0]).get("vars", {}).get("panel_end_year") if row else None
        if value is not None:
            return int(value)
    project = load_yaml((paths.project_root() / "dbt_project.yml").read_text(encoding="utf-8"))
    return int(project["vars"]["panel_end_year"])


def suites_for(end_year: int) -> dict:
    """``SUITES`` with ``PANEL_END_YEAR`` (the panel-window bound of ``fct_firm_years.year`` and
    ``fct_patents.application_year``) set to ``end_year``; the sample-window bounds (2019) stay."""
    return {mart: [(name, {key: end_year if value is PANEL_END_YEAR else value for key, value in kwargs.items()})
                   for name, kwargs in expectations]
            for mart, expectations in SUITES.items()}


def _run_suites(frames: dict, suites: dict) -> dict:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX hashes every pandas batch under HASH_THRESHOLD bytes for a batch marker
    # (pandas_data_fingerprint) that nothing here reads: 1-2 s for the patent marts at paper scale.
    # The checks' fingerprint is warehouse.mart_fingerprint, computed in DuckDB.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress-bar config is cosmetic
        pass
    source = context.data_sources.add_pandas("marts")
    outcome: dict = {}
    for mart, expectations in suites.items():
        frame = frames[mart]
        asset = source.add_dataframe_asset(name=mart)
        batch = asset.add_batch_definition_whole_dataframe(f"{mart}_all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{mart}_suite"))
        for name, kwargs in expectations:
            suite.add_expectation(getattr(gx.expectations, name)(**kwargs))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{mart}_validation", data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame})
        outcome[mart] = {
            "success": bool(result.success),
            "rows": int(len(frame)),
            "expectations": [
                {
                    "type": r.expectation_config.type,
                    "kwargs": {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"},
                    "success": bool(r.success),
                    "observed_value": _jsonable(r.result.get("observed_value")),
                    "unexpected_count": r.result.get("unexpected_count"),
                    "unexpected_percent": r.result.get("unexpected_percent"),
                    "partial_unexpected_list": _jsonable(r.result.get("partial_unexpected_list", [])[:5]),
                }
                for r in result.results
            ],
        }
    return outcome


def _supplied_inputs_suite(empty_columns: list[dict]) -> dict:
    """A supplied optional table must fill the mart columns it exists for (contract ``enables``):
    an entirely NULL column means its rows matched nothing (keytech/inputs.py). Computed in SQL,
    reported in the same shape as a GX suite."""
    expectations = [
        {"type": "supplied_table_fills_mart_column",
         "kwargs": {"table": e["table"], "column": f"{e['mart']}.{e['column']}"},
         "success": False,
         "observed_value": f"{e['table']} landed {e['rows']} row(s) but marts.{e['mart']}.{e['column']} is "
                           f"entirely NULL (specs {', '.join(s + '*' if s.endswith('_') else s for s in e['specs'])} "
                           "would have nothing to split on): check its keys (stock code, report date, "
                           "report type A) match the firm-years",
         "unexpected_count": None, "unexpected_percent": None, "partial_unexpected_list": []}
        for e in empty_columns
    ]
    return {"success": not expectations, "rows": 0, "expectations": expectations}


def _suite_columns(mart: str) -> str:
    """Only the columns a suite looks at are read: marts such as fct_patent_ipc_codes are wide."""
    columns: list[str] = []
    for _, kwargs in SUITES[mart]:
        for column in [kwargs.get("column"), *kwargs.get("column_list", [])]:
            if column and column not in columns:
                columns.append(column)
    return ", ".join(f'"{c}"' for c in columns) if columns else "1 as one"


def _read_frame(con, sql: str):
    """The query's rows as the pandas frame DuckDB's ``.df()`` gives, with the text columns read
    through Arrow: ``.df()`` makes a Python object per string, which pandas then copies into Arrow
    strings (1.2 s for the 2.6 M codes of fct_patent_ipc_codes at paper scale, 0.1 s this way).
    The rows come from one query as an Arrow table; its text columns become pandas' Arrow-backed
    ``str`` columns (the dtype ``.df()`` ends with), the other columns go through ``.df()`` of an
    in-memory DuckDB (order-preserving), so dates, decimals and nullable integers get exactly
    ``.df()``'s dtypes and the suites see the same frame."""
    import duckdb
    import pandas as pd
    import pyarrow as pa

    with con.cursor() as cursor:  # its own result: ``con`` may hold an unfinished one
        table = cursor.sql(sql).to_arrow_table()
    text = [f.name for f in table.schema
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type)]
    other = [name for name in table.column_names if name not in text]
    parts = []
    if text:
        parts.append(table.select(text).to_pandas())
    if other:
        with duckdb.connect() as local:
            parts.append(local.from_arrow(table.select(other)).df())
    if not parts:
        return pd.DataFrame(index=range(table.num_rows))
    return pd.concat(parts, axis=1)[table.column_names]


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _dbt_test_summary(db_path: str | Path | None = None, dbt_artifacts: str | Path | None = None) -> dict:
    root = Path(dbt_artifacts) if dbt_artifacts is not None else paths.dbt_artifacts_dir(db_path)
    results = root / "target" / "run_results.json"
    if not results.is_file():
        return {"available": False}
    data = json.loads(results.read_text(encoding="utf-8"))
    tests = [r for r in data.get("results", []) if r["unique_id"].startswith("test.")]
    statuses: dict[str, int] = {}
    for r in tests:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"available": True, "tests": len(tests), "statuses": statuses,
            "generated_at": data.get("metadata", {}).get("generated_at")}


def run_checks(db_path: str | Path | None = None, out_dir: str | Path | None = None,
               dbt_artifacts: str | Path | None = None) -> dict:
    """Validate the marts, write output/checks/latest.{json,html} and a results.check_runs row.

    ``keytech build`` runs this on the new file (``<warehouse>.building``) before the swap, with
    ``dbt_artifacts`` the folder of the warehouse's dbt run results."""
    start_importing_great_expectations()  # while the marts are read
    with connect(db_path) as con:
        missing = [m for m in SUITES if not table_exists(con, "marts", m)]
        if missing:
            raise RuntimeError(f"marts missing from the warehouse: {', '.join(missing)}; run `keytech build`.")
        frames = {m: _read_frame(con, f"select {_suite_columns(m)} from marts.{m}") for m in SUITES}
        fingerprint = mart_fingerprint(con)
        empty_columns = empty_supplied_columns(con)
        end_year = panel_end_year(con)
    suites = _run_suites(frames, suites_for(end_year))
    suites["supplied_inputs"] = _supplied_inputs_suite(empty_columns)
    dbt_tests = _dbt_test_summary(db_path, dbt_artifacts)
    passed = all(s["success"] for s in suites.values())
    record = {
        "check_run_id": uuid.uuid4().hex[:12],
        "checked_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
        "passed": passed,
        "data_fingerprint": fingerprint,
        "suites": suites,
        "dbt_tests": dbt_tests,
    }
    with connect(db_path, read_only=False) as con:
        con.execute("create schema if not exists results")
        con.execute(
            "create table if not exists results.check_runs (check_run_id varchar primary key, "
            "checked_at timestamp, passed boolean, data_fingerprint varchar, details_json varchar)"
        )
        con.execute(
            "insert into results.check_runs values (?, ?, ?, ?, ?)",
            [record["check_run_id"], record["checked_at"], passed, fingerprint, json.dumps(record)],
        )
    target = Path(out_dir) if out_dir else paths.output_dir() / "checks"
    target.mkdir(parents=True, exist_ok=True)
    (target / "latest.json").write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    (target / "latest.html").write_text(render_html(record), encoding="utf-8")
    record["json_path"] = str(target / "latest.json")
    record["html_path"] = str(target / "latest.html")
    return record


def failures(record: dict) -> list[str]:
    lines = []
    for mart, suite in record["suites"].items():
        for e in suite["expectations"]:
            if not e["success"]:
                lines.append(f"marts.{mart}: {e['type']} {e['kwargs']} — observed {e['observed_value']}, "
                             f"unexpected {e['unexpected_count']} e.g. {e['partial_unexpected_list']}")
    return lines


def render_html(record: dict) -> str:
    rows = []
    for mart, suite in record["suites"].items():
        for e in suite["expectations"]:
            status = "pass" if e["success"] else "FAIL"
            rows.append(
                f"<tr class='{status.lower()}'><td>marts.{html.escape(mart)}</td><td>{html.escape(e['type'])}</td>"
                f"<td><code>{html.escape(json.dumps(e['kwargs'], ensure_ascii=False))}</code></td>"
                f"<td>{status}</td><td>{html.escape(str(e['observed_value']))}</td>"
                f"<td>{html.escape(str(e['unexpected_count']))}</td></tr>"
            )
    verdict = "All checks passed" if record["passed"] else "Some checks FAILED"
    dbt = record["dbt_tests"]
    dbt_line = (f"dbt tests in the last build: {dbt['tests']} ({dbt['statuses']})" if dbt.get("available")
                else "dbt test results not found (target/run_results.json)")
    return f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>KeyTech data checks</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}tr.fail{{background:#fdd}}</style>
<h1>Data checks — {verdict}</h1>
<p>Run {record['check_run_id']} at {record['checked_at']} UTC; marts fingerprint <code>{record['data_fingerprint']}</code>.
{html.escape(dbt_line)}.</p>
<table><tr><th>mart</th><th>expectation</th><th>arguments</th><th>status</th><th>observed</th><th>unexpected</th></tr>
{''.join(rows)}</table></html>"""
