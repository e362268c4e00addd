"""Read everything the report shows, read-only, each piece independently.

Each collector returns plain data (dicts / DataFrames) or ``None`` when its source is absent, so a
partial warehouse (no estimation run yet, no check run, an older build) still gives a page that
says what is missing instead of failing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from keytech import paths
from keytech.marts import marts_with
from keytech.synthetic import truth_path
from keytech.warehouse import PUBLIC_MARTS, mart_fingerprint, table_exists

# marts declared `report: true` in models/marts/<area>/_marts__*.yml (keytech/marts.py), in declaration order
MARTS_SHOWN = marts_with("report")
NON_VARIABLES = ("stkcd", "city_code", "province_code", "industry_code")


def truth(raw_dir: Path) -> dict[str, Any] | None:
    path = truth_path(raw_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def landing_manifest(landing_dir: Path) -> dict[str, Any] | None:
    path = landing_dir / "_manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def mart_counts(con) -> dict[str, int | None]:
    """Row counts of every table in the marts schema (the public ones first; missing ones as None)."""
    present = [r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'marts' order by table_name").fetchall()]
    names = [m for m in MARTS_SHOWN if m in present or m in PUBLIC_MARTS] + [m for m in present if m not in MARTS_SHOWN]
    counts: dict[str, int | None] = {}
    for name in names:
        counts[name] = con.execute(f'select count(*) from marts."{name}"').fetchone()[0] if name in present else None
    return counts


def ww_dividend_sources(con) -> dict[str, int] | None:
    """Firm-years per input of the WW index's dividend dummy (fct_firm_year_mechanisms.ww_dividend_source:
    cash_dividends, the fallback dividends_interest_paid, or missing), among rows with a WW index."""
    try:
        rows = con.execute("select ww_dividend_source, count(*) from marts.fct_firm_year_mechanisms "
                           "where ww_index is not null group by 1 order by 1").fetchall()
    except Exception:  # an older build without the column, or no mechanisms mart
        return None
    return {str(k): int(n) for k, n in rows}


def schema_counts(con) -> dict[str, int]:
    rows = con.execute(
        "select table_schema, count(*) from information_schema.tables group by 1 order by 1").fetchall()
    return {schema: n for schema, n in rows}


def lineage(artifacts_dir: Path) -> dict[str, list[str]] | None:
    """mart name → source tables it depends on, from dbt's ``target/manifest.json`` of the build
    (``paths.dbt_artifacts_dir``; absent → None)."""
    path = artifacts_dir / "target" / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    parents = manifest.get("parent_map", {})
    out: dict[str, list[str]] = {}
    for uid, node in manifest.get("nodes", {}).items():
        if node.get("resource_type") != "model" or "marts" not in node.get("fqn", []):
            continue
        seen, stack, sources = set(), [uid], set()
        while stack:
            current = stack.pop()
            for parent in parents.get(current, []):
                if parent in seen:
                    continue
                seen.add(parent)
                if parent.startswith("source."):
                    sources.add(parent.split(".")[-1])
                elif parent.startswith("seed."):
                    sources.add("seed:" + parent.split(".")[-1])
                else:
                    stack.append(parent)
        out[node["name"]] = sorted(sources)
    return out


def funnel(con) -> pd.DataFrame | None:
    if not table_exists(con, "marts", "rpt_sample_funnel"):
        return None
    return con.execute("select * from marts.rpt_sample_funnel order by step_order").df()


def descriptives(con, mart: str = "rpt_analysis_panel") -> pd.DataFrame | None:
    """N, mean, SD, min, max of every numeric column of the mart, in column order."""
    if not table_exists(con, "marts", mart):
        return None
    columns = con.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'marts' and table_name = ? order by ordinal_position", [mart]).fetchall()
    numeric = [c for c, t in columns if c not in NON_VARIABLES and not t.upper().startswith(("VARCHAR", "DATE", "TIMESTAMP"))]
    if not numeric:
        return pd.DataFrame(columns=["variable", "n", "mean", "sd", "min", "max"])
    parts = [
        f"select '{c}' as variable, count(\"{c}\") as n, avg(\"{c}\"::double) as mean, "
        f"stddev_samp(\"{c}\"::double) as sd, min(\"{c}\"::double) as min, max(\"{c}\"::double) as max from marts.{mart}"
        for c in numeric
    ]
    frame = con.execute(" union all ".join(parts)).df()
    order = {c: i for i, c in enumerate(numeric)}
    return frame.sort_values("variable", key=lambda s: s.map(order)).reset_index(drop=True)


def cities(con) -> pd.DataFrame | None:
    if not table_exists(con, "marts", "dim_cities"):
        return None
    return con.execute(
        "select city_code, city_name, province_name, longitude, latitude, first_pilot_wave, "
        "first_treated_year, n_pilot_units from marts.dim_cities").df()


def pilot_waves(con) -> pd.DataFrame | None:
    if not table_exists(con, "seeds", "pilot_waves"):
        return None
    return con.execute("select wave, announcement_date, pilot_units, new_pilot_cities from seeds.pilot_waves order by wave").df()


def patents(con) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, str]] | None:
    if not table_exists(con, "marts", "fct_patents"):
        return None
    cols = {r[0] for r in con.execute(
        "select column_name from information_schema.columns where table_schema='marts' and table_name='fct_patents'").fetchall()}
    sei = [i for i in range(1, 10) if f"is_sei_{i}" in cols]
    by_year = con.execute(
        "select application_year, "
        "count(*) filter (where is_invention and is_key_tech) as key, "
        "count(*) filter (where is_invention and not is_key_tech) as non_key "
        "from marts.fct_patents where application_year is not null group by 1 order by 1").df()
    sums = ", ".join(f"count(*) filter (where is_sei_{i}) as sei_{i}" for i in sei) or "0 as none"
    by_field = con.execute(
        f"select application_year, {sums} from marts.fct_patents "
        "where application_year is not null and is_invention group by 1 order by 1").df()
    names: dict[int, str] = {i: f"SEI {i}" for i in sei}
    if table_exists(con, "seeds", "sei_industries"):
        for code, name in con.execute("select sei_industry_code, sei_industry_name from seeds.sei_industries").fetchall():
            if int(code) in names:
                names[int(code)] = name
    return by_year, by_field, names


def check_run(con, output_dir: Path) -> dict[str, Any] | None:
    record: dict[str, Any] | None = None
    if table_exists(con, "results", "check_runs"):
        row = con.execute(
            "select check_run_id, checked_at, passed, data_fingerprint, details_json from results.check_runs "
            "order by checked_at desc limit 1").fetchone()
        if row:
            record = json.loads(row[4]) if row[4] else {}
            record.update({"check_run_id": row[0], "checked_at": str(row[1]), "passed": bool(row[2]),
                           "data_fingerprint": row[3], "source": "results.check_runs"})
    latest = output_dir / "checks" / "latest.json"
    if latest.is_file():
        try:
            file_record = json.loads(latest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            file_record = None
        if file_record and record is None:
            record = {**file_record, "source": str(latest)}
        if record is not None:
            record["latest_json"] = str(latest)
            record["latest_json_matches"] = bool(file_record) and file_record.get("check_run_id") == record.get("check_run_id")
    return record


def fingerprint(con) -> str | None:
    try:
        return mart_fingerprint(con, PUBLIC_MARTS)
    except Exception:  # a half-built warehouse: provenance shows "unknown"
        return None


def estimation(db_path: Path, run_id: str | None = None):
    """(estimates, {spec: source run}, run record, all runs) or None when nothing was estimated."""
    from keytech.estimation.orchestration import store

    runs = store.read_runs(db_path)
    if runs.empty:
        return None
    est, source, run = store.estimates_for_display(db_path, run_id)
    return est, source, run, runs
