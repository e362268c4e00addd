"""`keytech build`: raw folder → landing → dbt build → data checks, with a safe swap.

dbt builds into a fresh file beside the warehouse (``<warehouse>.building``). Only when every model
and dbt test passes is the new file swapped in with an atomic rename, after the ``results`` schema
(estimation runs and check runs) has been carried over from the previous warehouse. A build that
fails or is killed halfway leaves the previous warehouse untouched and usable. dbt's target/ and
logs/ belong to the warehouse being built (``paths.dbt_artifacts_dir``: the project root for the
default ``data/warehouse.duckdb``, ``<warehouse>.dbt/`` beside any other), so builds of different
warehouses at the same time do not overwrite each other's run results, manifest or log. On Linux
dbt is started with a parent-death signal: killing the ``keytech build`` process (even with
SIGKILL, and without its process group) stops dbt too.

Incremental refresh (``BuildOptions(incremental=True)``, ``keytech build --incremental``): every
complete build records in ``build_meta.build_state`` what it was built from — the landing manifest
(raw file sha256, header mapping, row count per table), the dbt vars and a fingerprint of the code
(models, macros, seeds, dbt tests, ingest and contract, dbt/DuckDB versions). An incremental build
compares the new landing manifest with that record:

* code, vars or versions differ, or there is no record → a full build (the safe path);
* no table changed → nothing is rebuilt, the warehouse is left as it is;
* some tables changed → the warehouse is copied to ``<warehouse>.building`` and ``dbt build`` runs
  only on what depends on the changed tables (``--select source:<source>.<table>+``, their dbt
  tests included). The heavy patent models are dbt ``incremental`` models that reprocess only the
  patents whose landed rows changed (see docs/performance.md, "Incremental refresh"); the rest of
  the selection is rebuilt from the landed files as usual. The copy is then swapped in exactly
  like a full build, so a failed refresh also leaves the previous warehouse untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import duckdb
import yaml

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
    # FC index construction (dbt var fc_index_method): "rank_composite" or "sa" (Hadlock & Pierce)
    fc_index_method: str = "rank_composite"
    select: str | None = None
    quiet: bool = False
    # Refresh the previous warehouse when only landed data changed (see the module docstring);
    # falls back to a full build whenever that would not be safe.
    incremental: bool = False
    # Another edition of the SEI–IPC concordance (same shape as seeds/sei_ipc_concordance.csv);
    # None uses the versioned seed. Recorded in the landing manifest ('concordance').
    concordance: Path | None = None


STATE_SCHEMA = "build_meta"
STATE_TABLE = f"{STATE_SCHEMA}.build_state"
# What the code fingerprint covers, relative to the project root (files with these suffixes).
CODE_PATHS = ("dbt_project.yml", "profiles.yml", "packages.yml", "package-lock.yml", "models", "macros",
              "seeds", "snapshots", "tests/data_tests", "tests/generic",
              "python/keytech/ingest.py", "python/keytech/contract.py", "python/keytech/contract.yml")
CODE_SUFFIXES = (".sql", ".yml", ".yaml", ".csv", ".py", ".json")


def dbt_executable() -> str:
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else "dbt"


def dbt_vars(options: BuildOptions) -> dict:
    out = {
        "landing_dir": str(options.landing_dir),
        "ipc_matching": options.ipc_matching,
        "use_ipc_supplement": options.use_ipc_supplement,
        "fc_index_method": options.fc_index_method,
    }
    if options.concordance is not None:
        out["concordance_path"] = str(options.landing_dir / CONCORDANCE_LANDED)
    return out


CONCORDANCE_LANDED = "sei_ipc_concordance_edition.csv"


def land_concordance(options: BuildOptions) -> dict:
    """Which SEI–IPC concordance edition the build uses: the versioned seed, or the file given
    with ``--concordance`` (checked for the seed's shape, copied into the landing area)."""
    import csv

    if options.concordance is None:
        seed = paths.project_root() / "seeds" / "sei_ipc_concordance.csv"
        return {"edition": "seeds/sei_ipc_concordance.csv (CNIPA 2021, versioned seed)",
                "sha256": hashlib.sha256(seed.read_bytes()).hexdigest()}
    source = Path(options.concordance)
    if not source.is_file():
        raise FileNotFoundError(f"--concordance {source}: no such file")
    with open(source, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        rows = list(reader)
    if header[:2] != ["ipc_code", "sei_rule_id"]:
        raise ValueError(f"--concordance {source}: the header must start with ipc_code,sei_rule_id "
                         f"(the shape of seeds/sei_ipc_concordance.csv), not {','.join(header)}")
    bad = [i + 2 for i, row in enumerate(rows) if len(row) < 2 or not row[1].strip().isdigit()]
    if bad:
        raise ValueError(f"--concordance {source}: sei_rule_id is not a whole number at line(s) "
                         f"{', '.join(map(str, bad[:5]))}")
    options.landing_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, options.landing_dir / CONCORDANCE_LANDED)
    return {"edition": str(source.resolve()), "rows": len(rows),
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}


def _parent_death_signal():
    """A ``preexec_fn`` (Linux) that has the kernel send SIGTERM to dbt when the Python process
    that started it dies — also on SIGKILL, which Python cannot intercept — so a killed
    ``keytech build`` does not leave dbt writing ``<warehouse>.building``. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: no imports in the child
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def run_dbt(args: list[str], warehouse: Path, options: BuildOptions, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run dbt against ``warehouse`` (the file dbt writes, e.g. ``<warehouse>.building``); its
    target/ (unless ``args`` name one) and logs/ go to ``paths.dbt_artifacts_dir(options.warehouse)``."""
    root = paths.project_root()
    artifacts = paths.dbt_artifacts_dir(options.warehouse)
    env = dict(os.environ)
    env["KEYTECH_DB"] = str(warehouse)
    env["KEYTECH_LANDING_DIR"] = str(options.landing_dir)
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    command = [
        dbt_executable(), *args,
        "--profiles-dir", str(root), "--project-dir", str(root),
        *([] if "--target-path" in args else ["--target-path", str(artifacts / "target")]),
        "--log-path", str(artifacts / "logs"),
        "--vars", json.dumps(dbt_vars(options)),
    ]
    return subprocess.run(command, cwd=root, env=env, text=True, capture_output=quiet,
                          preexec_fn=_parent_death_signal())


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


# ---------------------------------------------------------------------------- incremental state
def code_fingerprint(root: Path | None = None) -> str:
    """sha256 over everything besides the landed data that decides the warehouse's content."""
    root = root or paths.project_root()
    digest = hashlib.sha256()
    for name in ("dbt-core", "dbt-duckdb", "duckdb"):
        try:
            digest.update(f"{name}=={metadata.version(name)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name} missing\n".encode())
    for entry in CODE_PATHS:
        path = root / entry
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and file.suffix in CODE_SUFFIXES:
                digest.update(str(file.relative_to(root)).encode() + b"\0")
                digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def build_state(manifest: dict, options: BuildOptions) -> dict:
    """What a complete build was made from: landed tables, dbt vars, code fingerprint."""
    return {
        "code_fingerprint": code_fingerprint(),
        "vars": dbt_vars(options),
        "tables": manifest["tables"],
        "concordance": manifest.get("concordance"),
    }


def read_build_state(warehouse: Path) -> dict | None:
    """The state recorded in a warehouse by its last complete build, or None."""
    if not warehouse.is_file():
        return None
    try:
        con = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.Error:
        return None
    try:
        row = con.execute(f"select state from {STATE_TABLE}").fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return json.loads(row[0]) if row else None


def write_build_state(warehouse: Path, state: dict) -> None:
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(f"create schema if not exists {STATE_SCHEMA}")
        con.execute(f"create or replace table {STATE_TABLE} (built_at timestamp, state varchar)")
        con.execute(f"insert into {STATE_TABLE} values (current_timestamp, ?)", [json.dumps(state, sort_keys=True)])
    finally:
        con.close()


def source_selectors(root: Path | None = None) -> dict[str, str]:
    """Contract table → dbt selector of its source (``source:<source>.<table>``), from the models'
    source files."""
    root = root or paths.project_root()
    selectors: dict[str, str] = {}
    for file in sorted((root / "models").rglob("*.yml")):
        document = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for source in document.get("sources") or []:
            for table in source.get("tables") or []:
                selectors[table["name"]] = f"source:{source['name']}.{table['name']}"
    return selectors


def plan_refresh(previous: dict | None, current: dict, warehouse: Path) -> dict:
    """Decide how to refresh: {'mode': 'full'|'incremental'|'unchanged', 'reason', 'changed_tables',
    'select'}."""
    def full(reason: str) -> dict:
        return {"mode": "full", "reason": reason, "changed_tables": sorted(current["tables"]), "select": None}

    if previous is None:
        return full("no previous build state in the warehouse")
    if warehouse.with_name(warehouse.name + ".wal").exists():
        return full("the previous warehouse has an unfinished write-ahead log")
    if previous.get("code_fingerprint") != current["code_fingerprint"]:
        return full("models, seeds, macros, the contract or tool versions changed since the last build")
    if previous.get("vars") != current["vars"]:
        return full("build options (dbt vars) changed since the last build")
    if previous.get("concordance") != current.get("concordance"):
        return full("the SEI-IPC concordance edition changed since the last build")
    before, after = previous.get("tables") or {}, current["tables"]
    if set(before) != set(after):
        return full("the set of contract tables changed")
    changed = sorted(t for t in after if before[t] != after[t])
    if not changed:
        return {"mode": "unchanged", "reason": "no landed table changed since the last build",
                "changed_tables": [], "select": None}
    selectors = source_selectors()
    select = sorted({selectors[t] + "+" for t in changed if t in selectors})
    if not select:
        return {"mode": "unchanged", "reason": f"changed table(s) {', '.join(changed)} feed no model",
                "changed_tables": changed, "select": None}
    return {"mode": "incremental", "reason": f"changed table(s): {', '.join(changed)}",
            "changed_tables": changed, "select": " ".join(select)}


# ------------------------------------------------------------------------------------------ build
def previous_warehouse_path(warehouse: Path) -> Path:
    """Where a complete build keeps the warehouse it replaced (`keytech diff`'s default OLD)."""
    warehouse = Path(warehouse)
    return warehouse.with_name(warehouse.stem + ".previous" + warehouse.suffix)


def build_warehouse(options: BuildOptions) -> dict:
    """Validate + land the raw folder, then `dbt build` into a new file and swap it in.

    With ``options.incremental`` the previous warehouse is refreshed instead when only landed data
    changed (see the module docstring). The result says which: ``mode`` is 'full', 'incremental' or
    'unchanged', with ``reason`` and ``changed_tables``."""
    if options.incremental and options.select:
        raise ValueError("an incremental build refreshes everything downstream of the changed tables; "
                         "it cannot be combined with --select")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    manifest = ingest(options.raw_dir, options.landing_dir)
    manifest["concordance"] = land_concordance(options)
    (options.landing_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False),
                                                        encoding="utf-8")
    timings["validate_and_land"] = time.perf_counter() - start

    target = options.warehouse
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    for leftover in (building, building.with_name(building.name + ".wal")):
        leftover.unlink(missing_ok=True)

    state = build_state(manifest, options)
    if options.incremental:
        plan = plan_refresh(read_build_state(target), state, target)
    else:
        plan = {"mode": "full", "reason": "full build requested", "changed_tables": sorted(state["tables"]),
                "select": None}
    outcome = {"manifest": manifest, "timings": timings, "warehouse": str(target), **plan}
    if plan["mode"] == "unchanged":
        timings["dbt_build"] = 0.0
        return outcome

    start = time.perf_counter()
    if plan["mode"] == "incremental":
        shutil.copyfile(target, building)
        timings["copy_warehouse"] = time.perf_counter() - start
        start = time.perf_counter()
        args = ["build", "--select", plan["select"]]
    else:
        args = ["build"] + (["--select", options.select] if options.select else [])
    completed = run_dbt(args, building, options, quiet=options.quiet)
    timings["dbt_build"] = time.perf_counter() - start
    if completed.returncode != 0:
        artifacts = paths.dbt_artifacts_dir(options.warehouse)
        failed = _failed_nodes(artifacts)
        detail = "\n  ".join(failed) if failed else (completed.stdout or "")[-2000:]
        raise BuildFailed(
            "dbt build failed; the previous warehouse was left untouched.\n  "
            f"{detail}\n"
            f"The partial build is at {building} for inspection; dbt's log is {artifacts / 'logs' / 'dbt.log'} "
            f"and {artifacts / 'target' / 'run_results.json'}. Run `keytech doctor` for hints."
        )
    if not options.select:  # only a complete build can be refreshed incrementally later
        write_build_state(building, state)
    carry_over_results(target, building)
    if target.is_file():  # keep the build being replaced for `keytech diff` (a hard link: no copy)
        previous = previous_warehouse_path(target)
        previous.unlink(missing_ok=True)
        try:
            os.link(target, previous)
        except OSError:
            shutil.copyfile(target, previous)
    os.replace(building, target)
    return outcome
