"""`keytech build`: raw folder → landing → dbt build → data checks, with a safe swap.

dbt builds into a fresh file beside the warehouse (``<warehouse>.building``). Only when every model
and dbt test passes is the new file swapped in with an atomic rename, after the ``results`` schema
(estimation runs and check runs) has been carried over from the previous warehouse. A build that
fails or is killed halfway leaves the previous warehouse untouched and usable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from keytech import paths
from keytech.ingest import ingest


class BuildFailed(RuntimeError):
    """dbt failed; the message says which nodes and where to look."""


@dataclass
class BuildOptions:
    raw_dir: Path
    landing_dir: Path
    warehouse: Path
    ipc_matching: str = "hierarchical"
    use_ipc_supplement: bool = True
    select: str | None = None
    quiet: bool = False


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_vars(options: BuildOptions) -> dict:
    return {
        "landing_dir": str(options.landing_dir),
        "ipc_matching": options.ipc_matching,
        "use_ipc_supplement": options.use_ipc_supplement,
    }


def run_dbt(args: list[str], warehouse: Path, options: BuildOptions, quiet: bool = False) -> subprocess.CompletedProcess:
    root = paths.project_root()
    env = dict(os.environ)
    env["KEYTECH_DB"] = str(warehouse)
    env["KEYTECH_LANDING_DIR"] = str(options.landing_dir)
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    command = [
        dbt_executable(), *args,
        "--profiles-dir", str(root), "--project-dir", str(root),
        "--vars", json.dumps(dbt_vars(options)),
    ]
    return subprocess.run(command, cwd=root, env=env, text=True, capture_output=quiet)


def _failed_nodes(root: Path) -> list[str]:
    results = root / "target" / "run_results.json"
    if not results.is_file():
        return []
    data = json.loads(results.read_text(encoding="utf-8"))
    return [
        f"{r['unique_id']}: {r['status']} — {(r.get('message') or '').strip()[:200]}"
        for r in data.get("results", [])
        if r.get("status") in ("error", "fail")
    ]


def carry_over_results(old: Path, new: Path) -> int:
    """Copy the ``results`` schema of the previous warehouse into the new one. Returns tables copied."""
    if not old.is_file():
        return 0
    con = duckdb.connect(str(new))
    try:
        con.execute(f"attach '{old}' as previous (read_only)")
        tables = [
            row[0]
            for row in con.execute(
                "select table_name from information_schema.tables "
                "where table_catalog = 'previous' and table_schema = 'results'"
            ).fetchall()
        ]
        if tables:
            con.execute("create schema if not exists results")
        for table in tables:
            con.execute(f"create or replace table results.{table} as select * from previous.results.{table}")
        con.execute("detach previous")
        return len(tables)
    finally:
        con.close()


def build_warehouse(options: BuildOptions) -> dict:
    """Validate + land the raw folder, then `dbt build` into a new file and swap it in."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    manifest = ingest(options.raw_dir, options.landing_dir)
    timings["validate_and_land"] = time.perf_counter() - start

    target = options.warehouse
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    for leftover in (building, building.with_name(building.name + ".wal")):
        leftover.unlink(missing_ok=True)

    start = time.perf_counter()
    args = ["build"] + (["--select", options.select] if options.select else [])
    completed = run_dbt(args, building, options, quiet=options.quiet)
    timings["dbt_build"] = time.perf_counter() - start
    if completed.returncode != 0:
        failed = _failed_nodes(paths.project_root())
        detail = "\n  ".join(failed) if failed else (completed.stdout or "")[-2000:]
        raise BuildFailed(
            "dbt build failed; the previous warehouse was left untouched.\n  "
            f"{detail}\n"
            f"The partial build is at {building} for inspection; dbt's log is logs/dbt.log and "
            "target/run_results.json. Run `keytech doctor` for hints."
        )
    carry_over_results(target, building)
    os.replace(building, target)
    return {"manifest": manifest, "timings": timings, "warehouse": str(target)}
