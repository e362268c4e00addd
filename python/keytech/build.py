"""`keytech build`: raw folder → landing → dbt build → data checks, with a safe swap.

dbt builds into a fresh file beside the warehouse (``<warehouse>.building``); the dbt unit tests,
which test SQL logic rather than data, are left out of it (``DATA_BUILD_EXCLUDE``; ``make test``
runs them). Only when every model and dbt data test passes — and, when asked
(``BuildOptions.checks``, on for ``keytech build`` unless ``--skip-checks``), the Great
Expectations checks and the limits on silent shares (``keytech.limits``) pass on that new file —
is it swapped in with an atomic rename, after the ``results`` schema (estimation runs and check
runs) has been carried over from the previous warehouse. A build that fails or is killed halfway
leaves the previous warehouse byte-identical and usable; a build whose checks or limits fail is
kept as ``<warehouse>.rejected`` for inspection.

Isolation: each warehouse owns its landing area (``paths.landing_dir(warehouse)``), one build per
warehouse runs at a time (an OS lock on ``<warehouse>.lock``, and on ``<landing>.lock`` for the
landing folder; a second build waits ``lock_wait`` seconds, then exits naming the holder), and
leftovers (``.building``, its WAL) are removed only while holding that lock. Staging models are
tables, so a finished warehouse is self-contained: nothing in it reads the landing Parquet at query
time, and a later (failed) build that re-lands cannot change what it answers.

``select`` (``keytech build --select``) builds on a copy of the current warehouse, like an
incremental refresh, so unselected models keep their tables; a selection that matches no node is
refused and the warehouse is left as it was. dbt's target/ and
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

import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import duckdb

from keytech import paths
from keytech.ingest import ingest
from keytech.sql_literals import sql_identifier, sql_string
from keytech.yaml_files import load_yaml


class BuildFailed(RuntimeError):
    """dbt failed; the message says which nodes and where to look."""

    code = 1


class BuildLocked(BuildFailed):
    """Another build holds the lock of this warehouse (or of its landing folder)."""


class ChecksFailed(BuildFailed):
    """The new warehouse was built but its data checks or limits failed; it was not swapped in."""


class BadOptions(BuildFailed, ValueError):
    """Build options that cannot be combined."""


class NothingSelected(BuildFailed):
    """``--select`` matched no model, seed or test."""


@dataclass
class BuildOptions:
    raw_dir: Path
    landing_dir: Path
    warehouse: Path
    ipc_matching: str = "hierarchical"
    use_ipc_supplement: bool = True
    # FC index construction (dbt var fc_index_method): "rank_composite" or "sa" (Hadlock & Pierce)
    fc_index_method: str = "rank_composite"
    # Reading of the paper's 退市标识 filter (dbt var delisting_flag_rule, macros/analysis_panel.sql)
    delisting_flag_rule: str = "delisted_or_star_st"
    select: str | None = None
    quiet: bool = False
    # Refresh the previous warehouse when only landed data changed (see the module docstring);
    # falls back to a full build whenever that would not be safe.
    incremental: bool = False
    # Run the Great Expectations checks (keytech.quality) on the new file before the swap.
    checks: bool = False
    # Limits on silent shares (keytech.limits): None = not enforced; {} = the documented defaults;
    # {name: value} overrides individual limits.
    limits: dict | None = None
    # Seconds to wait for another build of the same warehouse to finish (0: exit at once).
    lock_wait: float = 0.0
    # Where GX writes latest.{json,html} (default output/checks).
    checks_out: Path | None = None
    # Another edition of the SEI–IPC concordance (same shape as seeds/sei_ipc_concordance.csv);
    # None uses the versioned seed. Recorded in the landing manifest ('concordance').
    concordance: Path | None = None
    # Last panel year (dbt var panel_end_year); None: dbt_project.yml's (2022). The xl synthetic scale
    # runs to 2024 (issue 17; keytech.bench builds it with 2024). The GX checks read it back from
    # the build state.
    panel_end_year: int | None = None


# dbt unit tests (models/**/_*__unit_tests.yml) test the SQL logic on hand-made rows, not the
# data: they give the same answer on every build, so data builds leave them out (issue 17: 16
# nodes, about a fifth of dbt's summed node time on a tiny build) and `make test` runs them
# (tests/python/test_dbt_unit_tests.py: `dbt test --select test_type:unit` on a built warehouse).
DATA_BUILD_EXCLUDE = ("--exclude-resource-type", "unit_test")

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
        "delisting_flag_rule": options.delisting_flag_rule,
    }
    if options.panel_end_year is not None:
        out["panel_end_year"] = int(options.panel_end_year)
    if options.concordance is not None:
        out["concordance_path"] = str(options.landing_dir / CONCORDANCE_LANDED)
    return out


CONCORDANCE_LANDED = "sei_ipc_concordance_edition.csv"


def vendor_labels(landing_dir: Path) -> dict[str, dict[str, str]]:
    """{table: {contract column: vendor label}} from the landing manifest (the ``[DES]`` description
    file of a CSMAR download, or the Chinese label row under the field codes); {} before the first
    ingest. Passed to dbt as JSON in the env var ``KEYTECH_VENDOR_LABELS`` (``run_dbt``): each
    staging model carries its table's labels as ``meta.vendor_labels`` (macro vendor_labels), so
    they show in the dbt docs. Not part of the build state's vars: labels change only with the
    landed files, which the state covers."""
    try:
        manifest = json.loads((Path(landing_dir) / "_manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    tables = manifest.get("tables") or {}
    return {name: dict(entry["labels"]) for name, entry in sorted(tables.items())
            if isinstance(entry, dict) and entry.get("labels")}


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


def _absolute(path: str | Path, root: Path) -> Path:
    """``path`` as dbt saw it before runs moved out of the project root: relative to ``root``."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def partial_parse_key(building_name: str, cli_vars: dict) -> str:
    """Which shared partial-parse state fits a dbt run: dbt reuses a saved parse only when the
    ``--vars`` and the profile (its attach path included) are the ones it was saved with."""
    text = json.dumps({"db": building_name, "vars": cli_vars}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _copy_atomically(source: Path, target: Path) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    except OSError:  # a cache: never fail a build over it
        partial.unlink(missing_ok=True)


def _landing_for_dbt(landing: Path, folder: Path) -> str:
    """The landing folder as dbt's sources read it: relative to ``folder`` (dbt's working folder)
    when it lies inside it — ``landing`` for the usual layout, the same text for every warehouse,
    so the source definitions that read it need no re-parse — else absolute."""
    try:
        return str(landing.relative_to(folder))
    except ValueError:
        return str(landing)


def run_dbt(args: list[str], warehouse: Path, options: BuildOptions, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run dbt against ``warehouse`` (the file dbt writes, e.g. ``<warehouse>.building``); its
    target/ (unless ``args`` name one) and logs/ go to ``paths.dbt_artifacts_dir(options.warehouse)``.

    Partial parsing (issue 17): dbt re-parses the whole project (~10 s) whenever its ``--vars`` or
    its profile differ from the saved parse (``partial_parse.msgpack``), and the profile's attach
    path is the file being built. So everything that differs between warehouses reaches dbt
    another way: dbt runs in the folder of ``warehouse`` with ``KEYTECH_DB`` set to its bare file
    name (the same ``warehouse.duckdb.building`` for most builds), the landing folder as the env
    var ``KEYTECH_LANDING_DIR`` (relative to that folder when inside it: ``landing`` for most
    builds) and the vendor labels as ``KEYTECH_VENDOR_LABELS`` (dbt tracks env vars per file and
    re-parses only the files that read them: the source definitions and the staging models).
    ``--vars`` keeps only the build options. A warehouse's first build starts from
    the last parse saved by any build with the same options (``<root>/target/partial_parse/``);
    dbt itself checks that the saved parse fits (versions, vars, profile, file checksums) and
    parses in full when it does not. A run whose ``args`` name a ``--target-path`` (``keytech
    docs``) starts from and saves to the same store (its key: the file it opens, e.g.
    ``warehouse.duckdb``, and the vars), so only the first ``keytech docs`` of a warehouse name
    parses in full. DuckDB's spill folder (``.tmp`` of the working folder) is
    then beside the warehouse, not in the project root.

    Logging (issue 17): dbt's debug file log (every SQL statement, connection and BEGIN/COMMIT of
    every node: ~10,000 lines for a tiny build; ~15% of a tiny build's CPU with both logs off), so
    the file log (``logs/dbt.log``) is written at ``info`` (each node's start, result and time, the parse
    decision, warnings, errors) and, when ``quiet`` (dbt's output is captured and shown only on a
    failure), the console at ``warn``; a verbose run keeps dbt's console default (``info``: the
    progress per node). They are dbt's own env vars, set only when absent:
    ``DBT_LOG_LEVEL_FILE=debug keytech build`` gives the full debug log back, ``DBT_LOG_LEVEL``
    the console. Failed nodes are read from ``run_results.json``, not from the log."""
    root = paths.project_root()
    artifacts = paths.dbt_artifacts_dir(options.warehouse)
    # dbt's target folder: the one ``args`` name (keytech docs), else the warehouse's own
    named_target = "--target-path" in args
    target_path = Path(args[args.index("--target-path") + 1]) if named_target else artifacts / "target"
    database = _absolute(warehouse, root)
    cli_vars = {k: v for k, v in dbt_vars(options).items() if k != "landing_dir"}
    env = dict(os.environ)
    env["KEYTECH_DB"] = database.name
    env["KEYTECH_LANDING_DIR"] = _landing_for_dbt(_absolute(options.landing_dir, root), database.parent)
    env["KEYTECH_VENDOR_LABELS"] = json.dumps(vendor_labels(options.landing_dir), sort_keys=True,
                                              ensure_ascii=False)
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("DBT_LOG_LEVEL_FILE", "info")
    if quiet:
        env.setdefault("DBT_LOG_LEVEL", "warn")
    command = [
        dbt_executable(), *args,
        "--profiles-dir", str(root), "--project-dir", str(root),
        *([] if named_target else ["--target-path", str(target_path)]),
        "--log-path", str(artifacts / "logs"),
        "--vars", json.dumps(cli_vars),
    ]
    shared = root / "target" / "partial_parse" / f"{partial_parse_key(database.name, cli_vars)}.msgpack"
    own = target_path / "partial_parse.msgpack"
    if not own.is_file() and shared.is_file():
        _copy_atomically(shared, own)
    completed = subprocess.run(command, cwd=database.parent, env=env, text=True, capture_output=quiet,
                               preexec_fn=_parent_death_signal())
    if own.is_file() and completed.returncode == 0:
        _copy_atomically(own, shared)
    return completed


def _run_results(root: Path) -> list[dict] | None:
    results = root / "target" / "run_results.json"
    if not results.is_file():
        return None
    try:
        return json.loads(results.read_text(encoding="utf-8")).get("results", [])
    except (OSError, ValueError):
        return None


def _failed_nodes(root: Path, database: Path | None = None) -> list[str]:
    """Every failed node with dbt's whole message (never cut: the cause is often at the end, e.g.
    "No space left on device"). With ``database`` (the file dbt built), each failed data test is
    followed by its first failing rows (``_failing_rows``): a merged test such as column_checks
    (macros/tests) returns one row per broken (column, rule), so the message names the model, the
    column and the rule."""
    lines = []
    for r in _run_results(root) or []:
        if r.get("status") not in ("error", "fail"):
            continue
        lines.append(f"{r['unique_id']}: {r['status']} — {(r.get('message') or '').strip()}")
        if database is not None and r.get("status") == "fail" and r.get("compiled_code"):
            lines += [f"    {row}" for row in _failing_rows(r["compiled_code"], database)]
    return lines


def _failing_rows(sql: str, database: Path, limit: int = 20) -> list[str]:
    """The first ``limit`` rows a failed dbt test returns, as ``column=value, …`` lines (a merged
    column_checks test returns one row per broken rule: 20 covers a model's rules), run on
    ``database`` the way dbt ran it (attached as ``warehouse``; relative landing paths from its
    folder). A helper of the error message: any problem running it yields a note, never an error."""
    database = Path(database).resolve()
    try:
        con = duckdb.connect()
        try:
            con.execute(f"set file_search_path = {sql_string(database.parent)}")
            con.execute(f"attach {sql_string(database)} as warehouse (read_only)")
            cursor = con.execute(f"select * from ({sql}) as failing limit {limit + 1}")
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        finally:
            con.close()
    except Exception as exc:  # noqa: BLE001 - the dbt message above already says what failed
        return [f"(could not list the failing rows: {str(exc).splitlines()[0][:200]})"]
    out = [", ".join(f"{n}={v!r}" for n, v in zip(names, row)) for row in rows[:limit]]
    if len(rows) > limit:
        out.append("… (more rows: run the test's compiled_code from run_results.json on the file)")
    return out


def carry_over_results(old: Path, new: Path) -> int:
    """Copy the ``results`` schema of the previous warehouse into the new one. Returns tables copied."""
    if not old.is_file():
        return 0
    con = duckdb.connect(str(new))
    try:
        con.execute(f"attach {sql_string(old)} as previous (read_only)")
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
            t = sql_identifier(table)
            con.execute(f"create or replace table results.{t} as select * from previous.results.{t}")
        con.execute("detach previous")
        return len(tables)
    finally:
        con.close()


# ------------------------------------------------------------------------------------------ lock
def lock_holder(lock_file: Path) -> dict | None:
    """Who holds ``lock_file`` ({'pid', 'host', 'started_at', 'command'}), or None when it is free."""
    if not lock_file.is_file():
        return None
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(lock_file.read_text(encoding="utf-8") or "{}") or {"pid": "?"}
            except (OSError, ValueError):
                return {"pid": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _describe_holder(holder: dict) -> str:
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
            f"{holder.get('started_at', '?')} UTC ({holder.get('command', '?')})")


@contextmanager
def file_lock(lock_file: Path, what: str, wait: float = 0.0):
    """Hold an exclusive OS lock (flock) on ``lock_file`` for the block. The kernel releases it when
    the process dies, so a killed build never leaves a stale lock. The file is kept (removing a lock
    file races with the next locker); it records the holder for the message of a second build."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise BuildFailed(f"Cannot create the lock file {lock_file} ({exc.strerror}): the folder "
                          f"{lock_file.parent} must be writable to build {what}.") from exc
    try:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = lock_holder(lock_file) or {}
                    raise BuildLocked(
                        f"Another build is using {what}: {_describe_holder(holder)}; lock {lock_file}. "
                        "Wait for it to finish (or pass --wait SECONDS), or build another warehouse "
                        "(KEYTECH_DB). Nothing was changed.") from None
                time.sleep(0.2)
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                  "command": " ".join(sys.argv[:3]) or "python"}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield record
    finally:
        os.close(fd)  # releases the lock


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
        document = load_yaml(file.read_text(encoding="utf-8")) or {}
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
def leftovers(warehouse: Path) -> list[Path]:
    """Files a killed or failed build of ``warehouse`` left behind (for ``keytech doctor``)."""
    building = paths.building_path(warehouse)
    candidates = [building, building.with_name(building.name + ".wal"), paths.rejected_path(warehouse),
                  warehouse.with_name(warehouse.name + ".wal")]
    return [p for p in candidates if p.exists()]


def _remove_leftovers(building: Path) -> None:
    """Only called while holding the warehouse's lock: a ``.building`` that exists then belongs to a
    build of this warehouse that died, never to a running one."""
    for leftover in (building, building.with_name(building.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _drop_build_state(warehouse: Path) -> None:
    """A partial (--select) build no longer matches the recorded state: the next --incremental
    build must be a full one."""
    con = duckdb.connect(str(warehouse))
    try:
        con.execute(f"drop table if exists {STATE_TABLE}")
    finally:
        con.close()


def previous_warehouse_path(warehouse: Path) -> Path:
    """Where a complete build keeps the warehouse it replaced (`keytech diff`'s default OLD)."""
    warehouse = Path(warehouse)
    return warehouse.with_name(warehouse.stem + ".previous" + warehouse.suffix)


def build_warehouse(options: BuildOptions) -> dict:
    """Validate + land the raw folder, then `dbt build` into a new file, check it and swap it in.

    With ``options.incremental`` the previous warehouse is refreshed instead when only landed data
    changed (see the module docstring). The result says which: ``mode`` is 'full', 'incremental',
    'select' or 'unchanged', with ``reason`` and ``changed_tables``; ``checks`` holds the GX record
    and ``limits`` the limit report when they ran."""
    if options.incremental and options.select:
        raise BadOptions("an incremental build refreshes everything downstream of the changed tables; "
                          "it cannot be combined with --select")
    target = Path(options.warehouse)
    if options.select and not target.is_file():
        raise BuildFailed(f"--select rebuilds part of an existing warehouse, and there is none at {target}. "
                          "Run a full `keytech build` first.")
    if target.is_file():
        from keytech.warehouse import open_error

        problem = open_error(target)
        if problem:  # its results could not be carried over, and a swap would pull it from under its user
            raise BuildFailed(problem + " Nothing was built.")
    landing = Path(options.landing_dir)
    with file_lock(paths.lock_path(target), f"the warehouse {target}", options.lock_wait), \
            file_lock(landing.with_name(landing.name + ".lock"), f"the landing folder {landing}", options.lock_wait):
        return _build_locked(options, target)


def _build_locked(options: BuildOptions, target: Path) -> dict:
    timings: dict[str, float] = {}
    building = paths.building_path(target)
    _remove_leftovers(building)
    start = time.perf_counter()
    manifest = ingest(options.raw_dir, options.landing_dir)
    manifest["concordance"] = land_concordance(options)
    (options.landing_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False),
                                                        encoding="utf-8")
    timings["validate_and_land"] = time.perf_counter() - start

    target.parent.mkdir(parents=True, exist_ok=True)
    state = build_state(manifest, options)
    if options.incremental:
        plan = plan_refresh(read_build_state(target), state, target)
    elif options.select:
        plan = {"mode": "select", "reason": f"--select {options.select} on a copy of the warehouse",
                "changed_tables": [], "select": options.select}
    else:
        plan = {"mode": "full", "reason": "full build requested", "changed_tables": sorted(state["tables"]),
                "select": None}
    outcome = {"manifest": manifest, "timings": timings, "warehouse": str(target), **plan}
    if plan["mode"] == "unchanged":
        timings["dbt_build"] = 0.0
        return outcome

    start = time.perf_counter()
    if plan["mode"] in ("incremental", "select"):
        shutil.copyfile(target, building)
        timings["copy_warehouse"] = time.perf_counter() - start
        start = time.perf_counter()
        args = ["build", "--select", plan["select"], *DATA_BUILD_EXCLUDE]
    else:
        args = ["build", *DATA_BUILD_EXCLUDE]
    artifacts = paths.dbt_artifacts_dir(target)
    (artifacts / "target" / "run_results.json").unlink(missing_ok=True)
    if options.checks:  # the checks' library loads while this process only waits for dbt
        from keytech.quality import start_importing_great_expectations

        start_importing_great_expectations()
    completed = run_dbt(args, building, options, quiet=options.quiet)
    timings["dbt_build"] = time.perf_counter() - start
    if completed.returncode != 0:
        failed = _failed_nodes(artifacts, building)
        output = (completed.stdout or "") + (completed.stderr or "")
        detail = "\n  ".join(failed) if failed else (output[-4000:] or f"dbt exited with code {completed.returncode}")
        raise BuildFailed(
            "dbt build failed; the previous warehouse was left untouched.\n  "
            f"{detail}\n"
            f"The partial build is at {building} for inspection; dbt's log is {artifacts / 'logs' / 'dbt.log'} "
            f"and {artifacts / 'target' / 'run_results.json'}. Run `keytech doctor` for hints."
        )
    if plan["mode"] == "select" and not (_run_results(artifacts) or []):
        building.unlink(missing_ok=True)
        raise NothingSelected(
            f"--select {options.select!r} matches no model, seed or test, so nothing was built; the "
            f"warehouse {target} was left as it was. Selectors look like 'rpt_analysis_panel', "
            "'marts.panel.rpt_analysis_panel+' (the model and everything downstream) or "
            "'source:cnrds.patents+'; list them with `dbt ls` (see docs/architecture.md).")
    if plan["mode"] == "select":
        _drop_build_state(building)
    else:  # only a complete build can be refreshed incrementally later
        write_build_state(building, state)
    carry_over_results(target, building)
    rejected = paths.rejected_path(target)
    problems: list[str] = []
    if options.limits is not None:
        from keytech.limits import check_limits

        outcome["limits"] = check_limits(building, manifest, options.limits)
        problems += outcome["limits"]["violations"]
    if options.checks:
        from keytech.quality import failures, run_checks

        start = time.perf_counter()
        record = run_checks(building, out_dir=options.checks_out, dbt_artifacts=artifacts)
        timings["checks"] = time.perf_counter() - start
        outcome["checks"] = record
        if not record["passed"]:
            problems += [f"data check failed: {line}" for line in failures(record)]
            problems.append(f"(check report: {record['html_path']})")
    if problems:
        rejected.unlink(missing_ok=True)
        os.replace(building, rejected)
        raise ChecksFailed(
            f"The new build of {target} failed its checks, so it was NOT swapped in: the previous "
            "warehouse is unchanged.\n  " + "\n  ".join(problems) +
            f"\nThe rejected build is at {rejected} for inspection "
            f"(`KEYTECH_DB={rejected} keytech sql \"select …\"`). Fix the data, or raise a limit with "
            "`keytech build --limit NAME=VALUE` if the share is expected, and build again.")
    if target.is_file():  # keep the build being replaced for `keytech diff` (a hard link: no copy)
        previous = previous_warehouse_path(target)
        previous.unlink(missing_ok=True)
        try:
            os.link(target, previous)
        except OSError:
            shutil.copyfile(target, previous)
    os.replace(building, target)
    rejected.unlink(missing_ok=True)
    return outcome
