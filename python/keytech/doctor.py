"""`keytech doctor`: is this machine, raw folder and warehouse ready, and what should I do next?

Checks, in pipeline order, each giving ok / warn / fail with a one-line fix:

1. environment — Python ≥ 3.11; installed versions of the pinned dependencies against
   ``requirements.lock``; dbt-core within ``>=1.9,<1.12``; the ``dbt`` executable beside Python.
2. raw folder — exists; satisfies the input contract (``keytech.ingest.validate``: every problem
   listed, the first few shown); synthetic or licensed (``_truth.json``).
3. landing — ``_manifest.json`` exists and was landed from the same raw files (sha256), and matches
   what the warehouse was built from (``build_meta.build_state``): a later build that landed other
   data and then failed or was killed leaves them different.
4. warehouse — the file exists, opens read-only (else why: locked, corrupt, not a warehouse), holds
   every public mart with rows; no build is running on it, and no leftovers of a killed or failed
   build lie beside it (``.building``, its WAL, ``.rejected``, an unfinished ``.wal``).
5. checks — the latest ``results.check_runs`` row passed and was computed on the current marts
   (same fingerprint).
6. estimation — a run exists on the current marts; the report exists.

The exit code is 0 when nothing failed (warnings allowed) and 1 otherwise; the last line says what
to run next.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from keytech import paths
from keytech.synthetic import is_synthetic

PACKAGES = ("dbt-core", "dbt-duckdb", "duckdb", "pandas", "pyarrow", "numpy", "scipy", "pyfixest",
            "great_expectations", "statsmodels", "matplotlib", "PyYAML")
DBT_RANGE = ((1, 9), (1, 12))


@dataclass
class Finding:
    area: str
    status: str  # ok | warn | fail
    message: str
    fix: str = ""

    def render(self) -> str:
        mark = {"ok": "  ok  ", "warn": " warn ", "fail": " FAIL "}[self.status]
        text = f"[{mark}] {self.area:12} {self.message}"
        if self.fix and self.status != "ok":
            text += f"\n{'':22}→ {self.fix}"
        return text


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _lock_pins(root: Path) -> dict[str, str]:
    lock = root / "requirements.lock"
    pins: dict[str, str] = {}
    if lock.is_file():
        for line in lock.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[_norm(name.split("[")[0])] = version.strip()
    return pins


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_environment(root: Path) -> list[Finding]:
    out: list[Finding] = []
    py = sys.version_info
    out.append(Finding("python", "ok" if py >= (3, 11) else "fail", f"Python {py.major}.{py.minor}.{py.micro} ({sys.executable})",
                       "use Python 3.11 or newer: `make venv` builds .venv from requirements.lock"))
    pins = _lock_pins(root)
    mismatched, missing = [], []
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        pinned = pins.get(_norm(package))
        if pinned and pinned != versions[package]:
            mismatched.append(f"{package} {versions[package]} (lock {pinned})")
    if missing:
        out.append(Finding("packages", "fail", "missing: " + ", ".join(missing),
                           "install the pinned dependencies: `make venv` (or pip install -r requirements.lock)"))
    shown = ", ".join(f"{p} {versions[p]}" for p in ("dbt-core", "dbt-duckdb", "duckdb", "pandas", "pyfixest") if p in versions)
    if mismatched:
        out.append(Finding("packages", "warn", "differ from requirements.lock: " + "; ".join(mismatched),
                           "reinstall the pins: `.venv/bin/pip install -r requirements.lock`"))
    elif not missing:
        out.append(Finding("packages", "ok", f"{len(versions)} pinned packages match requirements.lock ({shown})"))
    dbt_version = versions.get("dbt-core")
    if dbt_version:
        ok = DBT_RANGE[0] <= _version_tuple(dbt_version)[:2] < DBT_RANGE[1]
        out.append(Finding("dbt", "ok" if ok else "fail", f"dbt-core {dbt_version} (needs >=1.9,<1.12)",
                           "install a supported dbt-core: pip install 'dbt-core>=1.9,<1.12'"))
    from keytech.build import dbt_executable

    exe = dbt_executable()
    exists = Path(exe).exists() if exe != "dbt" else bool(__import__("shutil").which("dbt"))
    out.append(Finding("dbt", "ok" if exists else "fail", f"dbt executable: {exe}",
                       "dbt is installed with the package: `make venv`"))
    out.append(check_digits())
    return out


def check_digits() -> Finding:
    """The settings the estimates' last digits depend on (keytech/__init__.py): one demeaner and
    one BLAS thread, and OpenBLAS's Haswell kernels on an AVX2 CPU. Warns when they differ, e.g.
    a user's OPENBLAS_CORETYPE or numpy imported before keytech in a notebook."""
    import keytech

    settings = keytech.thread_settings()
    pinned_core = keytech.pinned_openblas_core()
    shown = (f"demeaner/BLAS threads {settings['demeaner'] or 'default'}/{settings['blas'] or 'default'}, "
             f"BLAS kernels {settings['blas_core'] or 'not loaded yet'}")
    differs = []
    if settings["demeaner"] != "1":
        differs.append(f"RAYON_NUM_THREADS={settings['demeaner']}")
    if settings["blas"] != "1":
        differs.append(f"OPENBLAS_NUM_THREADS={settings['blas']}")
    if pinned_core and settings["blas_core"] not in (None, pinned_core):
        differs.append(f"OpenBLAS runs its {settings['blas_core']} kernels, not {pinned_core}")
    if differs:
        return Finding("digits", "warn", f"{shown}: estimates may differ from other machines in the last digits ("
                       + "; ".join(differs) + ")",
                       "unset RAYON_NUM_THREADS, OPENBLAS_NUM_THREADS and OPENBLAS_CORETYPE (keytech sets them), "
                       "and in Python import keytech before numpy")
    where = "the same digits as every x86-64 machine with AVX2" if pinned_core else \
        "no AVX2 (or not x86-64 Linux): OpenBLAS's own kernels, the last digits may differ from AVX2 machines"
    return Finding("digits", "ok", f"{shown} ({where})")


def check_raw(raw: Path) -> tuple[list[Finding], bool]:
    from keytech.ingest import ValidationFailed, validate

    if not raw.is_dir():
        return [Finding("raw folder", "fail", f"{raw} does not exist",
                        "make synthetic data (`keytech synth --scale small`) or point KEYTECH_RAW_DIR at your files "
                        "(see docs/input-contract.md)")], False
    try:
        problems, reports = validate(raw)
    except ValidationFailed as exc:
        errors = [p for p in exc.problems if p.severity == "error"]
        shown = "\n".join(f"{'':22}  {p.render()}" for p in errors[:6])
        more = f"\n{'':22}  … and {len(errors) - 6} more" if len(errors) > 6 else ""
        return [Finding("raw folder", "fail", f"{raw} breaks the input contract ({len(errors)} problem(s)):\n{shown}{more}",
                        "fix the files or map headers in column_mapping.yml (docs/input-contract.md), then "
                        f"`keytech validate --raw-dir {raw}`")], False
    except Exception as exc:  # unreadable folder etc.
        return [Finding("raw folder", "fail", f"{raw} could not be validated: {exc}", "see `keytech validate -v`")], False
    kind = "synthetic (_truth.json present)" if is_synthetic(raw) else "licensed/own data"
    rows = sum(r.data_rows for r in reports)
    warnings = [p for p in problems if p.severity != "error"]
    note = f" ({len(warnings)} data warning(s) the build handles, listed by `keytech validate`)" if warnings else ""
    return [Finding("raw folder", "ok", f"{raw}: {len(reports)} tables, {rows:,} rows satisfy the contract; {kind}{note}")], True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_landing(raw: Path, landing: Path) -> list[Finding]:
    manifest_path = landing / "_manifest.json"
    if not manifest_path.is_file():
        return [Finding("landing", "warn", f"no landing manifest at {manifest_path}", "run `keytech build`")]
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    changed = []
    for table, entry in manifest.get("tables", {}).items():
        files = entry.get("files") or ([{"name": entry["file"], "sha256": entry.get("sha256")}]
                                       if entry.get("file") else [])
        if not files:  # an optional table landed absent: changed only if a file for it appeared
            if any((raw / f"{table}{suffix}").is_file() for suffix in (".csv", ".parquet")):
                changed.append(f"{table} (now supplied)")
            continue
        for item in files:
            source = raw / item["name"]
            if not source.is_file() or (item.get("sha256") and _sha256(source) != item["sha256"]):
                changed.append(item["name"])
    if Path(manifest.get("raw_dir", raw)).resolve() != raw.resolve():
        return [Finding("landing", "warn", f"landed from {manifest.get('raw_dir')}, not {raw}", "run `keytech build` to land this raw folder")]
    if changed:
        return [Finding("landing", "warn", "raw files changed since they were landed: " + ", ".join(changed),
                        "run `keytech build` to rebuild from the current files")]
    return [Finding("landing", "ok", f"{landing}: {len(manifest.get('tables', {}))} tables landed from the current raw files")]


def check_landing_state(landing: Path, db: Path) -> list[Finding]:
    """Does the landing area hold what the warehouse was built from?"""
    from keytech.build import read_build_state

    manifest_path = landing / "_manifest.json"
    state = read_build_state(db) if db.is_file() else None
    if not manifest_path.is_file() or state is None:
        return []
    try:
        landed = json.loads(manifest_path.read_text(encoding="utf-8")).get("tables", {})
    except (OSError, ValueError):
        return [Finding("landing", "warn", f"{manifest_path} is unreadable", "run `keytech build`")]
    built = state.get("tables") or {}
    differ = sorted(t for t in set(landed) | set(built)
                    if (landed.get(t) or {}).get("sha256") != (built.get(t) or {}).get("sha256"))
    if differ:
        return [Finding("landing", "warn", f"the landing at {landing} does not match what {db.name} was built from "
                        f"(tables {', '.join(differ)}): a later build landed other data and did not finish",
                        "run `keytech build` (the warehouse itself is self-contained and still answers for its "
                        "own build)")]
    return [Finding("landing", "ok", "the landing matches the warehouse's last complete build")]


def check_leftovers(db: Path) -> list[Finding]:
    """A running build (lock held) or files a killed/failed build left beside the warehouse."""
    from keytech.build import leftovers, lock_holder

    holder = lock_holder(paths.lock_path(db))
    if holder:
        return [Finding("build", "warn", f"a build of {db.name} is running: process {holder.get('pid')} on "
                        f"{holder.get('host')}, started {holder.get('started_at')} UTC",
                        "wait for it to finish, then run `keytech doctor` again")]
    found = leftovers(db)
    if not found:
        return [Finding("build", "ok", "no build running and no leftovers of killed or failed builds")]
    names = ", ".join(f"{p.name} ({p.stat().st_size:,} bytes)" for p in found)
    rejected = paths.rejected_path(db)
    hint = (f"{rejected.name} is a build whose checks failed, kept for inspection; " if rejected in found else "")
    return [Finding("build", "warn", f"leftovers of a killed or failed build beside {db.name}: {names}",
                    hint + "the next `keytech build` removes .building files; delete the others with `rm` "
                    "once inspected")]


def check_warehouse(db: Path) -> tuple[list[Finding], dict]:
    from keytech.warehouse import PUBLIC_MARTS, connect, mart_fingerprint, table_exists

    from keytech.warehouse import open_error

    state: dict = {}
    if not db.is_file():
        return [Finding("warehouse", "fail", f"no warehouse at {db}", "run `keytech build`")], state
    problem = open_error(db)
    if problem:
        return [Finding("warehouse", "fail", f"{db} does not open", problem)], state
    try:
        with connect(db) as con:
            missing = [m for m in PUBLIC_MARTS if not table_exists(con, "marts", m)]
            if missing:
                return [Finding("warehouse", "fail", f"{db} lacks marts: {', '.join(missing)}", "run `keytech build`")], state
            rows = con.execute("select count(*) from marts.rpt_analysis_panel").fetchone()[0]
            state["fingerprint"] = mart_fingerprint(con)
            if table_exists(con, "results", "check_runs"):
                state["check"] = con.execute(
                    "select check_run_id, checked_at, passed, data_fingerprint from results.check_runs "
                    "order by checked_at desc limit 1").fetchone()
            if table_exists(con, "results", "runs"):
                state["run"] = con.execute(
                    "select run_id, started_at, data_fingerprint from results.runs order by started_at desc limit 1").fetchone()
    except Exception as exc:
        return [Finding("warehouse", "fail", f"cannot open {db} read-only: {exc}",
                        "another process may be writing it; wait, or rebuild with `keytech build`")], state
    status = "ok" if rows > 0 else "fail"
    return [Finding("warehouse", status, f"{db}: {len(PUBLIC_MARTS)} public marts, rpt_analysis_panel {rows:,} rows "
                    f"(fingerprint {state['fingerprint']})", "the analysis panel is empty: check the raw data and `keytech build`")], state


def check_results(state: dict, output: Path) -> list[Finding]:
    out: list[Finding] = []
    check = state.get("check")
    if not check:
        out.append(Finding("checks", "fail", "no data-check run recorded", "run `keytech check`"))
    else:
        check_id, checked_at, passed, fingerprint = check
        if not passed:
            out.append(Finding("checks", "fail", f"last check run {check_id} ({checked_at}) FAILED",
                               f"see {output / 'checks' / 'latest.html'}; fix the data and `keytech build`"))
        elif fingerprint != state.get("fingerprint"):
            out.append(Finding("checks", "fail", f"last check run {check_id} passed on other marts ({fingerprint})",
                               "run `keytech check` on the current marts"))
        else:
            out.append(Finding("checks", "ok", f"last check run {check_id} ({checked_at}) passed on the current marts"))
    run = state.get("run")
    if not run:
        out.append(Finding("estimation", "warn", "no estimation run yet", "run `keytech estimate`"))
    elif run[2] != state.get("fingerprint"):
        out.append(Finding("estimation", "warn", f"latest run {run[0]} was on other marts ({run[2]})", "run `keytech estimate` again"))
    else:
        out.append(Finding("estimation", "ok", f"latest run {run[0]} ({run[1]}) is on the current marts"))
    report = output / "report" / "index.html"
    if run:
        out.append(Finding("report", "ok" if report.is_file() else "warn",
                           f"{report}" + ("" if report.is_file() else " does not exist"), "run `keytech report`"))
    return out


def diagnose(raw_dir: str | Path | None = None, db_path: str | Path | None = None,
             landing_dir: str | Path | None = None, output_dir: str | Path | None = None) -> list[Finding]:
    """Run every check; later checks are skipped when an earlier stage is broken."""
    root = paths.project_root()
    raw = Path(raw_dir) if raw_dir else paths.raw_dir()
    db = Path(db_path) if db_path else paths.warehouse_path()
    landing = Path(landing_dir) if landing_dir else paths.landing_dir(db)
    output = Path(output_dir) if output_dir else paths.output_dir()
    findings = check_environment(root)
    raw_findings, raw_ok = check_raw(raw)
    findings += raw_findings
    if raw_ok:
        findings += check_landing(raw, landing)
    wh_findings, state = check_warehouse(db)
    findings += wh_findings
    findings += check_leftovers(db)
    if state.get("fingerprint"):
        findings += check_landing_state(landing, db)
    if state.get("fingerprint"):
        findings += check_results(state, output)
    return findings


def next_step(findings: list[Finding]) -> str:
    for level in ("fail", "warn"):
        for f in findings:
            if f.status == level and f.fix:
                return f"Next: {f.fix}"
    return "Next: everything is in place — open output/report/index.html, or `keytech estimate` / `keytech report` after changes."
