"""Reliability: the bad-input corpus, deterministic builds and safe (interruptible) rebuilds.

Bad inputs (``tests/bad_inputs/<case>/``, see its README): each case is the minimal raw folder of
``conftest.py`` with the case's files laid over it, and an ``expected.yml`` saying what must happen:

* ``stage: validate`` — validation must fail, nothing may land, and the error must name the file,
  the row and column where they apply, and the offending value;
* ``stage: warehouse`` — the folder passes validation (warnings at most) and the case's rows must
  show up in ``marts.rpt_quarantine`` / ``marts.rpt_patent_reconciliation`` with a reason. All
  warehouse cases are laid over ONE folder and built once per module (they touch disjoint files).

A case with ``xfail:`` documents a gap in ingest that is not fixed yet; it is a strict xfail, so the
fix makes it fail until the marker is removed.

Determinism and safe rebuilds build tiny synthetic data (``keytech.synth``) into temporary files.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml

from conftest import MINIMAL_RAW, write_raw
from keytech.build import BuildOptions, build_warehouse
from keytech.ingest import ValidationFailed, ingest, validate
from keytech.warehouse import PUBLIC_MARTS, mart_fingerprint

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
# `make test` (pytest-xdist): the tests of each of these module fixtures are a unit of work of their
# own, so the two workers can run them at once (tests/python/conftest.py, units_of_work)
XDIST_SPLIT_FIXTURES = ("tiny_built", "bad_warehouse")
MINIMAL_ENCODINGS = {"city_yearbook.csv": "gbk"}  # as the minimal_raw fixture writes it


# ------------------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    name: str
    folder: Path
    spec: dict

    @property
    def stage(self) -> str:
        return self.spec["stage"]

    @property
    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.name != "expected.yml")

    @property
    def expectations(self) -> list[dict]:
        expect = self.spec.get("expect") or []
        return expect if isinstance(expect, list) else [expect]


def _load_cases() -> list[Case]:
    cases = []
    for folder in sorted(p for p in CORPUS.iterdir() if p.is_dir()):
        spec = yaml.safe_load((folder / "expected.yml").read_text(encoding="utf-8"))
        cases.append(Case(folder.name, folder, spec))
    return cases


CASES = _load_cases()
VALIDATE_CASES = [c for c in CASES if c.stage == "validate"]
WAREHOUSE_CASES = [c for c in CASES if c.stage == "warehouse"]


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=" ".join(case.spec["xfail"].split()))] if case.spec.get("xfail") else []
    return pytest.param(case, id=case.name, marks=marks)


def compose(folder: Path, cases: list[Case]) -> Path:
    """The minimal raw folder with the cases' files laid over it (and their ``remove`` files gone)."""
    write_raw(folder, encodings=MINIMAL_ENCODINGS)
    for case in cases:
        for name in case.spec.get("remove", []):
            (folder / name).unlink()
        for path in case.files:
            shutil.copyfile(path, folder / path.name)
    return folder


def test_corpus_is_well_formed_and_documented():
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert CASES
    for case in CASES:
        assert case.stage in ("validate", "warehouse"), case.name
        assert case.spec.get("description"), case.name
        assert case.files, f"{case.name}: no files"
        assert f"`{case.name}`" in readme, f"{case.name} is not described in tests/bad_inputs/README.md"
        if case.stage == "validate":
            assert case.expectations, f"{case.name}: a validate case needs `expect`"
        else:
            assert case.spec.get("quarantine") or case.spec.get("lands") or case.spec.get("reconciliation"), case.name
    # warehouse cases share one build, so they must not overwrite each other's files
    seen: dict[str, str] = {}
    for case in WAREHOUSE_CASES:
        for path in case.files:
            assert path.name not in seen, f"{case.name} and {seen[path.name]} both replace {path.name}"
            seen[path.name] = case.name


def test_minimal_folder_is_clean(tmp_path: Path):
    """The control: without a case laid over it the folder passes, so each failure below is the case's."""
    problems, _ = validate(compose(tmp_path / "raw", []))
    assert not [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------- validation-stage cases
def _row_mentioned(problem, rendered: str, row: int) -> bool:
    return row in problem.rows or re.search(rf"\b(rows?|lines?)\b\D{{0,4}}{row}\b", rendered, re.I) is not None


def _matches(problem, expected: dict) -> list[str]:
    """Why ``problem`` does not meet ``expected`` (empty list: it does)."""
    rendered = problem.render()
    why = []
    if problem.severity != expected["severity"]:
        why.append(f"severity {problem.severity}")
    if problem.file != expected["file"]:
        why.append(f"file {problem.file}")
    column = expected.get("column")
    if column and problem.column != column and column not in rendered:
        why.append(f"column {column} not named")
    if "row" in expected and not _row_mentioned(problem, rendered, expected["row"]):
        why.append(f"row {expected['row']} not named")
    if "rows" in expected and problem.rows[: len(expected["rows"])] != expected["rows"]:
        why.append(f"rows {problem.rows}")
    if "values" in expected and [str(v) for v in problem.values] != [str(v) for v in expected["values"]]:
        why.append(f"values {problem.values}")
    if "message" in expected and not re.search(expected["message"], rendered):
        why.append(f"message does not match {expected['message']!r}")
    return why


def _assert_reported(problems: list, expected: dict, full_text: str) -> None:
    candidates = [p for p in problems if p.file == expected["file"]]
    verdicts = {p.render(): _matches(p, expected) for p in candidates}
    assert any(not why for why in verdicts.values()), (
        f"no problem matches {expected}; problems for {expected['file']}: {verdicts or 'none'}\n{full_text}")
    # what the user reads (the exception text) names the file, the row and the values
    assert expected["file"] in full_text
    for row in expected.get("rows", []):
        assert str(row) in full_text
    for value in expected.get("values", []):
        assert repr(str(value)) in full_text
    if "not_in_message" in expected:
        assert expected["not_in_message"] not in full_text
    if "max_problems_for_file" in expected:
        errors = [p for p in candidates if p.severity == "error"]
        assert len(errors) <= expected["max_problems_for_file"], [p.render() for p in errors]


@pytest.mark.parametrize("case", [_param(c) for c in VALIDATE_CASES])
def test_bad_input_is_rejected_with_a_clear_error(case: Case, tmp_path: Path):
    raw = compose(tmp_path / "raw", [case])
    landing = tmp_path / "landing"
    with pytest.raises(ValidationFailed) as caught:
        ingest(raw, landing)
    # never a partial landing: a failed ingest writes nothing
    assert not landing.exists() or not list(landing.iterdir())
    full_text = str(caught.value)
    for expected in case.expectations:
        _assert_reported(caught.value.problems, expected, full_text)
    assert "docs/input-contract.md" in full_text  # and says where to read up


def test_truncation_beyond_the_sniffing_sample_names_the_line(tmp_path: Path):
    """A large file cut mid-record: the cut is far past the rows DuckDB samples to sniff the dialect."""
    raw = compose(tmp_path / "raw", [])
    lines = (MINIMAL_RAW["patents.csv"] + "".join(
        f"600001,CN2016{i:08d}.1,2016-01-01,发明,G06F17/30,乙公司,,1\n" for i in range(30_000))).splitlines(keepends=True)
    lines[-1] = ",".join(lines[-1].split(",")[:4])  # the copy stopped after PatentType: IPC onwards is gone
    last_line = len(lines)  # header = line 1
    (raw / "patents.csv").write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        validate(raw)
    _assert_reported(caught.value.problems, {
        "severity": "error", "file": "patents.csv", "row": last_line,
        "message": r"(?i)truncat|cut|fields"}, str(caught.value))


# ---------------------------------------------------------------------- warehouse-stage cases
@pytest.fixture(scope="module")
def bad_warehouse(tmp_path_factory) -> dict:
    """All warehouse-stage cases laid over one minimal folder, validated and built once."""
    root = tmp_path_factory.mktemp("bad_warehouse")
    raw = compose(root / "raw", WAREHOUSE_CASES)
    problems, reports = validate(raw)
    outcome = build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing",
                                           warehouse=root / "warehouse.duckdb", quiet=True))
    return {"raw": raw, "landing": root / "landing", "db": Path(outcome["warehouse"]),
            "problems": problems, "manifest": outcome["manifest"]}


def _query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


@pytest.mark.slow
@pytest.mark.parametrize("case", [_param(c) for c in WAREHOUSE_CASES])
def test_bad_input_reaches_the_warehouse_with_a_reason(case: Case, bad_warehouse: dict):
    db = bad_warehouse["db"]
    for expected in case.expectations:  # warnings at validation (errors would have stopped the build)
        _assert_reported(bad_warehouse["problems"], expected, "\n".join(p.render() for p in bad_warehouse["problems"]))
    if "lands" in case.spec:
        table, rows = case.spec["lands"]["table"], case.spec["lands"]["rows"]
        assert bad_warehouse["manifest"]["tables"][table]["data_rows"] == rows
        landed = duckdb.sql(f"select * from read_parquet('{bad_warehouse['landing'] / (table + '.parquet')}')")
        assert len(landed.fetchall()) == rows
        extra = bad_warehouse["manifest"]["tables"][table]["extra_columns"]
        assert extra and not set(extra) & set(landed.columns), "extra columns must be reported and left out"
    for expected in case.spec.get("quarantine", []):
        found = _query(db, "select column_name, value, rejection_code, reason from marts.rpt_quarantine "
                           "where _source_file = ? and _source_row = ?", [expected["file"], expected["row"]])
        assert found, f"{expected['file']} row {expected['row']} is not in marts.rpt_quarantine"
        if "value" in expected:
            found = [r for r in found if r[1] == str(expected["value"])]
            assert found, f"no quarantine row of {expected['file']}:{expected['row']} with value {expected['value']!r}"
        for column_name, value, code, reason in found:
            assert column_name and code and reason and reason.strip(), (column_name, value, code, reason)
    for expected in case.spec.get("reconciliation", []):
        (raw_rows,) = _query(db, "select coalesce(sum(raw_rows), 0) from marts.rpt_patent_reconciliation "
                                 "where disposition = ?", [expected["disposition"]])[0]
        assert raw_rows == expected["raw_rows"], expected
        reasons = _query(db, "select reason from marts.rpt_patent_reconciliation where disposition = ?",
                         [expected["disposition"]])
        assert all(r and r.strip() for (r,) in reasons)
    for expected in case.spec.get("kept_patents", []):
        assert _query(db, "select count(*) from marts.fct_patents where patent_id = ?", [expected["patent_id"]]) == [(1,)]
        codes = _query(db, "select ipc_code from marts.fct_patent_ipc_codes where patent_id = ? order by ipc_position",
                       [expected["patent_id"]])
        assert [c for (c,) in codes] == expected["ipc_codes"]


@pytest.mark.slow
def test_patent_reconciliation_adds_up_to_the_landed_rows(bad_warehouse: dict):
    raw_lines = (bad_warehouse["raw"] / "patents.csv").read_text(encoding="utf-8").strip("\n").count("\n")
    landed = len(duckdb.sql(f"select 1 from read_parquet('{bad_warehouse['landing'] / 'patents.parquet'}')").fetchall())
    assert landed == raw_lines == bad_warehouse["manifest"]["tables"]["patents"]["data_rows"]
    (total,) = _query(bad_warehouse["db"], "select sum(raw_rows) from marts.rpt_patent_reconciliation")[0]
    assert total == landed
    # and each landed row has exactly one disposition
    (rows, distinct) = _query(bad_warehouse["db"], "select count(*), count(distinct (_source_file, _source_row)) "
                                                    "from intermediate.int_patents_dispositioned")[0]
    assert rows == distinct == landed


# ------------------------------------------------------------------ determinism and safe rebuilds
def _marts(con: duckdb.DuckDBPyConnection) -> tuple[str, ...]:
    return tuple(r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_schema = 'marts' order by 1").fetchall())


def _fingerprints(db: Path) -> dict[str, str]:
    """keytech.warehouse.mart_fingerprint of the public marts, plus one per mart (every table in marts)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        prints = {"public": mart_fingerprint(con)}
        prints.update({name: mart_fingerprint(con, (name,)) for name in _marts(con)})
        return prints
    finally:
        con.close()


SIGNIFICANT_DIGITS = 10


def _rounded_fingerprints(db: Path) -> dict[str, tuple]:
    """Per mart: columns, row count and an order-independent hash of the rows with every floating
    column printed to 10 significant digits — equal unless the marts differ beyond float noise."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        prints = {}
        for name in _marts(con):
            columns = con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'marts' and table_name = ? order by ordinal_position", [name]).fetchall()
            select = ", ".join(
                f"printf('%.{SIGNIFICANT_DIGITS}g', \"{c}\")" if t in ("DOUBLE", "FLOAT") else f'"{c}"'
                for c, t in columns)
            count, total = con.execute(
                f"select count(*), coalesce(sum(hash(t)::hugeint), 0) from (select {select} from marts.{name}) as t"
            ).fetchone()
            prints[name] = (tuple(c for c, _ in columns), count, total)
        return prints
    finally:
        con.close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _differing(first: dict, second: dict) -> dict:
    return {k: (first.get(k), second.get(k)) for k in sorted(set(first) | set(second)) if first.get(k) != second.get(k)}


HOSTILE_DIR = "it's a {dir} 数据 '||(select 'X')||'"
HOSTILE_FILE = "x' || (select 'INJECTED') || '.csv"
HOSTILE_DB = "ware'house 仓库 {0}.duckdb"


def _keytech_executable() -> str:
    candidate = Path(sys.executable).with_name("keytech")
    assert candidate.exists(), f"{candidate} missing: is the package installed in this venv?"
    return str(candidate)


def _file_identity(path: Path) -> tuple:
    return _sha256(path), path.stat().st_ino, path.stat().st_mtime_ns


@pytest.fixture(scope="module")
def tiny_built(tmp_path_factory) -> dict:
    """Tiny synthetic data built into warehouse A."""
    from keytech.synth import generate

    # Every user-controlled name is hostile (safe SQL): the folder, the warehouse file and a mapped
    # raw file name hold apostrophes, spaces, Chinese, braces and a `'||…||'` injection attempt.
    root = tmp_path_factory.mktemp("tiny") / HOSTILE_DIR
    generate("tiny", 11, root / "raw", progress=False)
    (root / "raw" / "patents.csv").rename(root / "raw" / HOSTILE_FILE)
    (root / "raw" / "column_mapping.yml").write_text(
        yaml.safe_dump({"tables": {"patents": {"file": HOSTILE_FILE}}}, allow_unicode=True), encoding="utf-8")
    warehouse = root / "a" / HOSTILE_DB
    build_warehouse(BuildOptions(raw_dir=root / "raw", landing_dir=root / "a" / "landing",
                                 warehouse=warehouse, quiet=True))
    return {"root": root, "raw": root / "raw", "db": warehouse, "landing": root / "a" / "landing",
            "fingerprints": _fingerprints(warehouse), "rounded": _rounded_fingerprints(warehouse)}


@pytest.fixture(scope="module")
def killed_then_concurrent(tiny_built: dict, tmp_path_factory) -> dict:
    """Warehouse B starts as a copy of A (a previous build). A `keytech build` into B is killed
    (SIGKILL to its whole process group) while dbt runs. Then two `keytech build`s run at the same
    time (only KEYTECH_DB differs: each warehouse gets its own landing area): the next build of B
    from A's raw folder, and a build of another warehouse C from a raw folder with half the patent
    rows; meanwhile a third build of C is started (and must be refused). One dbt build thus serves
    as the build after a killed build, as one of two concurrent builds, and as the second build of
    the same inputs into a different file for the determinism tests. Records what the tests of
    ``interrupted`` and ``concurrent`` need."""
    from keytech import paths

    root = tiny_built["root"]
    db = root / "b" / "warehouse.duckdb"
    db.parent.mkdir()
    shutil.copyfile(tiny_built["db"], db)
    building = db.with_name(db.name + ".building")
    landing = db.parent / f"{db.name}.landing"  # paths.landing_dir(db) without KEYTECH_LANDING_DIR
    record: dict = {"db": db, "building": building, "landing": landing, "before": _file_identity(db)}
    env = dict(os.environ, **_env(db, tiny_built["raw"], root / "b" / "output"))
    env.pop("KEYTECH_LANDING_DIR", None)
    log_path = root / "b" / "killed-build.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([_keytech_executable(), "build"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: dbt dies with it
        try:
            deadline = time.monotonic() + 180
            while not building.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            record["building_seen"] = building.exists()
            if record["building_seen"]:
                time.sleep(1.0)  # let dbt get into the models
            record["alive_at_kill"] = process.poll() is None
            if record["alive_at_kill"]:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
    record["returncode"] = process.returncode
    record["log"] = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    record["group_gone"] = False
    for _ in range(100):
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            record["group_gone"] = True
            break
        time.sleep(0.1)
    record["after_kill"] = _file_identity(db)
    record["fingerprints_after_kill"] = _fingerprints(db)
    record["panel_rows_after_kill"] = _query(db, "select count(*) from marts.rpt_analysis_panel")[0][0]
    record["partial_left"] = building.exists()
    from keytech.doctor import check_leftovers

    record["doctor_after_kill"] = [(f.status, f.render()) for f in check_leftovers(db)]

    # the next build of B (discards the partial file, builds B and swaps it in), concurrently with C
    raw_b = root / "concurrent" / "raw_b"
    shutil.copytree(tiny_built["raw"], raw_b)
    lines = (raw_b / HOSTILE_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (raw_b / HOSTILE_FILE).write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    # Both files have the usual name (in different folders): dbt reuses the project parse saved by any
    # default build (keytech.build.run_dbt keys it by the file name; another name costs a full parse),
    # and two builds of the same name at once must not mix up anything keyed by the name alone.
    runs = {"a": (db, tiny_built["raw"]), "b": (root / "concurrent" / "b" / "warehouse.duckdb", raw_b)}
    procs = {}
    for name, (target, raw) in runs.items():
        run_env = dict(os.environ, **_env(target, raw, target.parent / "out"))
        run_env.pop("KEYTECH_LANDING_DIR", None)
        procs[name] = subprocess.Popen([_keytech_executable(), "build"], env=run_env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    lock_b = paths.lock_path(runs["b"][0])
    deadline = time.monotonic() + 60
    while not lock_b.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    third_env = dict(os.environ, **_env(runs["b"][0], tiny_built["raw"], root / "concurrent" / "b2" / "out"))
    third_env.pop("KEYTECH_LANDING_DIR", None)
    third = subprocess.run([_keytech_executable(), "build"], env=third_env, capture_output=True, text=True, timeout=300)
    results = {name: (p.wait(timeout=900), *p.communicate()) for name, p in procs.items()}
    assert landing.is_dir(), "the build after the kill did not land where paths.landing_dir says"
    record["partial_left_after_rebuild"] = building.exists()
    record["fingerprints"] = _fingerprints(db)
    record["rounded"] = _rounded_fingerprints(db)
    record["concurrent"] = {"runs": runs, "results": results, "third": third,
                            "raw_b_rows": len(lines[: len(lines) // 2]) - 1}
    return record


@pytest.fixture(scope="module")
def interrupted(killed_then_concurrent: dict) -> dict:
    """The killed build into B and the build after it (``killed_then_concurrent``)."""
    code, _, err = killed_then_concurrent["concurrent"]["results"]["a"]
    assert code == 0, f"the build after the killed build failed:\n{err[-3000:]}"
    return killed_then_concurrent


@pytest.mark.slow
def test_killed_build_leaves_the_previous_warehouse_intact(interrupted: dict, tiny_built: dict):
    assert interrupted["building_seen"], f"dbt never created the .building file:\n{interrupted['log']}"
    assert interrupted["alive_at_kill"], "the build finished before it could be killed; the test proves nothing"
    assert interrupted["returncode"] == -signal.SIGKILL
    assert interrupted["group_gone"], "processes of the killed build (dbt) are still alive"
    # the previous warehouse is byte for byte the same file, opens read-only and has its marts
    assert interrupted["after_kill"] == interrupted["before"]
    assert interrupted["fingerprints_after_kill"] == tiny_built["fingerprints"]
    assert interrupted["panel_rows_after_kill"] > 0


@pytest.mark.slow
def test_killing_only_the_python_parent_stops_dbt(tiny_built: dict, tmp_path):
    """SIGKILL to the `keytech build` process alone (not its group, as a user's `kill -9 PID` does):
    dbt gets the parent-death signal and exits, so nothing keeps writing `<warehouse>.building`.
    Verbose (`-v`), so that dbt writes to the log file rather than to a pipe of the parent (a dead
    reader would end it by SIGPIPE at its next write, hiding the problem)."""
    db = tmp_path / "warehouse.duckdb"
    building = db.with_name(db.name + ".building")
    env = dict(os.environ, KEYTECH_RAW_DIR=str(tiny_built["raw"]), KEYTECH_DB=str(db),
               KEYTECH_LANDING_DIR=str(tmp_path / "landing"), KEYTECH_OUTPUT_DIR=str(tmp_path / "output"),
               DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    with open(tmp_path / "build.log", "wb") as log:
        process = subprocess.Popen([_keytech_executable(), "-v", "build"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while not building.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # dbt has started; a tiny build still needs well over 4 s
            assert process.poll() is None, "the build finished before it could be killed; the test proves nothing"
            os.kill(process.pid, signal.SIGKILL)  # the parent only
            process.wait(timeout=60)
            gone = False
            for _ in range(40):  # 4 s: SIGTERM ends dbt at once; without it dbt would run on
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    gone = True
                    break
                time.sleep(0.1)
            assert gone, "dbt outlived the killed keytech build"
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_doctor_reports_the_leftovers_of_a_killed_build(interrupted: dict):
    assert interrupted["partial_left"], "the killed build left no .building: nothing for doctor to find"
    (status, text), = interrupted["doctor_after_kill"]
    assert status == "warn" and ".building" in text and "killed or failed build" in text, text


@pytest.mark.slow
def test_the_build_after_a_killed_build_succeeds(interrupted: dict):
    assert not interrupted["partial_left_after_rebuild"], "the partial .building file was not cleaned up"
    assert interrupted["fingerprints"]["public"]


@pytest.mark.slow
def test_same_inputs_give_the_same_marts(tiny_built: dict, interrupted: dict):
    """Two builds of the same raw folder into different files: same marts, same rows, same values
    (floating columns compared to 10 significant digits; bit-identity is the next test)."""
    a, b = tiny_built["rounded"], interrupted["rounded"]
    assert set(PUBLIC_MARTS) <= set(a)
    assert a == b, _differing(a, b)
    # the landing areas are identical (lineage columns included)
    for table in ("firm_info", "balance_sheet", "patents", "city_yearbook", "pilot_list"):
        rows = [duckdb.execute("select * from read_parquet(?) order by all", [str(landing / (table + ".parquet"))]).fetchall()
                for landing in (tiny_built["landing"], interrupted["landing"])]
        assert rows[0] == rows[1], table


@pytest.mark.slow
def test_same_inputs_give_identical_mart_fingerprints(tiny_built: dict, interrupted: dict):
    a, b = tiny_built["fingerprints"], interrupted["fingerprints"]
    assert a == b, _differing(a, b)


# ------------------------------------------------ isolation, checks before the swap, safe SQL, errors
def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """`keytech <args>` in this process with ``env`` set; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    from keytech.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, str(value))
        mp.delenv("KEYTECH_LANDING_DIR", raising=False) if "KEYTECH_LANDING_DIR" not in env else None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    return code, out.getvalue(), err.getvalue()


def _env(db: Path, raw: Path, output: Path) -> dict[str, str]:
    return {"KEYTECH_DB": str(db), "KEYTECH_RAW_DIR": str(raw), "KEYTECH_OUTPUT_DIR": str(output),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}


def _copy_warehouse(tiny_built: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / HOSTILE_DB
    shutil.copyfile(tiny_built["db"], db)
    return db


@pytest.mark.slow
def test_user_controlled_names_reach_sql_as_values(tiny_built: dict):
    """The build above ran in a folder, into a file and from a raw file whose names hold `'`, spaces,
    Chinese, braces and `'||(select …)||'`: the lineage column holds the file name verbatim."""
    files = _query(tiny_built["db"], "select distinct _source_file from marts.rpt_patent_reconciliation "
                                     "join intermediate.int_patents_dispositioned using (disposition)")
    assert files == [(HOSTILE_FILE,)]
    assert _query(tiny_built["db"], "select count(*) from marts.fct_patents")[0][0] > 0


@pytest.mark.slow
def test_built_warehouse_is_self_contained(tiny_built: dict, tmp_path: Path):
    """No view reads the landing Parquet: with the landing gone, every relation still answers."""
    db = _copy_warehouse(tiny_built, tmp_path)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("select count(*) from duckdb_views() where not internal and "
                           "(sql ilike '%read_parquet%' or sql ilike '%landing%')").fetchone()[0] == 0
        relations = con.execute("select schema_name, table_name from duckdb_tables() union all "
                                "select schema_name, view_name from duckdb_views() where not internal").fetchall()
        assert len(relations) > 20
        staging = [r for r in relations if r[0] == "staging"]
        assert staging and all(con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] >= 0 for s, t in staging)
        assert con.execute("select count(*) from staging.stg_cnrds__patents").fetchone()[0] > 0
    finally:
        con.close()


@pytest.fixture(scope="module")
def rejected(tiny_built: dict, tmp_path_factory) -> dict:
    """`keytech build` on a copy of warehouse A from raw data with a pilot row in an unknown city
    (over the limit unmatched_pilot_rows = 0) and a GX suite that cannot pass: both must stop the
    swap. One dbt build."""
    from keytech import quality

    root = tmp_path_factory.mktemp("rejected")
    raw = root / "raw"
    shutil.copytree(tiny_built["raw"], raw)
    lines = (raw / "pilot_list.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    header = lines[0].strip().split(",")
    last = lines[-1].rstrip("\n").split(",")
    last[header.index("Province")], last[header.index("City")] = "火星省", "火星市"
    lines[-1] = ",".join(last) + "\n"
    (raw / "pilot_list.csv").write_text("".join(lines), encoding="utf-8")
    db = _copy_warehouse(tiny_built, root / "w")
    before = _file_identity(db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(quality.SUITES, "rpt_analysis_panel", [
            *quality.SUITES["rpt_analysis_panel"], ("ExpectTableRowCountToBeBetween", {"min_value": 0, "max_value": 1})])
        code, out, err = _cli(["build"], _env(db, raw, root / "output"))
    return {"db": db, "before": before, "code": code, "out": out, "err": err, "after": _file_identity(db),
            "raw": raw}


@pytest.mark.slow
def test_failed_checks_and_limits_keep_the_previous_warehouse(rejected: dict):
    from keytech import paths

    assert rejected["code"] == 1, rejected["err"]
    assert rejected["after"] == rejected["before"], "the previous warehouse changed"
    err = rejected["err"]
    assert "NOT swapped in" in err
    assert "limit unmatched_pilot_rows exceeded in pilot_list: 1 rows" in err and "火星市" in err
    assert "expect_table_row_count_to_be_between" in err  # the GX suite failed too
    assert str(paths.rejected_path(rejected["db"])) in err
    assert paths.rejected_path(rejected["db"]).is_file()
    assert not paths.building_path(rejected["db"]).exists()


@pytest.mark.slow
def test_a_raised_limit_accepts_the_share(rejected: dict):
    """The limit check on the rejected file: over the default, within a raised limit."""
    import json

    from keytech import paths
    from keytech.limits import check_limits

    landing = paths.landing_dir(rejected["db"])
    manifest = json.loads((landing / "_manifest.json").read_text(encoding="utf-8"))
    rejected_db = paths.rejected_path(rejected["db"])
    assert [v for v in check_limits(rejected_db, manifest)["violations"] if "unmatched_pilot_rows" in v]
    report = check_limits(rejected_db, manifest, {"unmatched_pilot_rows": 1})
    assert report["violations"] == []
    measured = {(m["name"], m["table"]): m for m in report["measured"]}
    assert measured[("unmatched_pilot_rows", "pilot_list")]["count"] == 1
    # independent count: pilot rows of the landed file whose city is not in the warehouse's cities
    ((landed_rows,),) = duckdb.execute("select count(*) from read_parquet(?)", [str(landing / "pilot_list.parquet")]).fetchall()
    assert measured[("unmatched_pilot_rows", "pilot_list")]["of"] == landed_rows


@pytest.mark.slow
def test_cli_limit_option_is_checked(tiny_built: dict, tmp_path: Path):
    code, _, err = _cli(["build", "--limit", "no_such_limit=1"], _env(tmp_path / "w.duckdb", tiny_built["raw"], tmp_path))
    assert code == 2 and "unparseable_ipc_share" in err
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.slow
def test_empty_selection_leaves_the_warehouse_byte_identical(tiny_built: dict, tmp_path: Path):
    db = _copy_warehouse(tiny_built, tmp_path / "w")
    before = _file_identity(db)
    code, _, err = _cli(["build", "--select", "nonexistent_model"], _env(db, tiny_built["raw"], tmp_path / "out"))
    assert code == 1, err
    assert "matches no model" in err and "nonexistent_model" in err
    assert _file_identity(db) == before


@pytest.mark.slow
def test_select_example_of_the_help_builds_on_a_copy(tiny_built: dict, tmp_path: Path):
    """`keytech build --select marts.panel.rpt_analysis_panel+` (the help's example) rebuilds the panel on a
    copy of the warehouse; the result equals the clean build, checks included."""
    db = _copy_warehouse(tiny_built, tmp_path / "w")
    code, out, err = _cli(["build", "--select", "marts.panel.rpt_analysis_panel+"], _env(db, tiny_built["raw"], tmp_path / "out"))
    assert code == 0, err
    assert "all checks passed" in out
    assert _fingerprints(db) == tiny_built["fingerprints"]
    from keytech.build import read_build_state

    assert read_build_state(db) is None  # a partial build: the next --incremental build is a full one


@pytest.mark.slow
def test_select_without_a_warehouse_is_refused(tiny_built: dict, tmp_path: Path):
    code, _, err = _cli(["build", "--select", "rpt_analysis_panel"], _env(tmp_path / "none.duckdb", tiny_built["raw"], tmp_path))
    assert code == 1 and "Run a full `keytech build` first" in err


@pytest.mark.slow
def test_second_build_of_the_same_warehouse_exits_naming_the_holder(tiny_built: dict, tmp_path: Path):
    from keytech import paths
    from keytech.build import file_lock

    db = _copy_warehouse(tiny_built, tmp_path / "w")
    before = _file_identity(db)
    env = dict(os.environ, **_env(db, tiny_built["raw"], tmp_path / "out"))
    env.pop("KEYTECH_LANDING_DIR", None)
    with file_lock(paths.lock_path(db), "test"):
        # the running build's file: the second build must not clean it up
        paths.building_path(db).write_bytes(b"in progress")
        completed = subprocess.run([_keytech_executable(), "build"], env=env, capture_output=True, text=True, timeout=120)
        assert paths.building_path(db).read_bytes() == b"in progress"
        from keytech.doctor import check_leftovers

        (finding,) = check_leftovers(db)
        assert finding.status == "warn" and "is running" in finding.message and str(os.getpid()) in finding.message
    assert completed.returncode == 1, completed.stderr
    assert "Another build is using the warehouse" in completed.stderr
    assert f"process {os.getpid()}" in completed.stderr
    assert _file_identity(db) == before
    assert not paths.landing_dir(db).exists(), "the waiting build landed data"


@pytest.mark.slow
def test_doctor_reports_a_landing_that_does_not_match_the_warehouse(tiny_built: dict, tmp_path: Path):
    """A later build that landed other data and then failed: the landing no longer matches the
    warehouse's build state."""
    import json

    from keytech import paths
    from keytech.doctor import check_landing_state

    db = _copy_warehouse(tiny_built, tmp_path / "w")
    landing = paths.landing_dir(db)
    shutil.copytree(tiny_built["landing"], landing)
    (finding,) = check_landing_state(landing, db)
    assert finding.status == "ok", finding.render()
    manifest = json.loads((landing / "_manifest.json").read_text(encoding="utf-8"))
    manifest["tables"]["pilot_list"]["sha256"] = "0" * 64
    (landing / "_manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (finding,) = check_landing_state(landing, db)
    assert finding.status == "warn" and "does not match" in finding.message and "pilot_list" in finding.message


@pytest.fixture(scope="module")
def concurrent(killed_then_concurrent: dict) -> dict:
    """Two warehouses built at the same time from different raw folders (only KEYTECH_DB differs:
    each gets its own landing area), and a third build of the second warehouse started meanwhile
    (``killed_then_concurrent``: the first of the two is the build after the killed build)."""
    return killed_then_concurrent["concurrent"]


@pytest.mark.slow
def test_concurrent_builds_of_two_warehouses_keep_their_own_data(concurrent: dict, tiny_built: dict):
    for name, (code, out, err) in concurrent["results"].items():
        assert code == 0, f"{name}: {err}"
    db_a, db_b = concurrent["runs"]["a"][0], concurrent["runs"]["b"][0]
    assert _fingerprints(db_a) == tiny_built["fingerprints"]  # equals the clean build of its raw folder
    (landed_b,) = _query(db_b, "select sum(raw_rows) from marts.rpt_patent_reconciliation")[0]
    assert landed_b == concurrent["raw_b_rows"]
    (landed_a,) = _query(db_a, "select sum(raw_rows) from marts.rpt_patent_reconciliation")[0]
    assert landed_a > landed_b


@pytest.mark.slow
def test_concurrent_second_build_of_one_warehouse_is_refused(concurrent: dict):
    third = concurrent["third"]
    assert third.returncode == 1, third.stderr
    assert "Another build is using" in third.stderr and "process" in third.stderr


# -------------------------------------------------------------------------------- keytech sql
@pytest.mark.slow
@pytest.mark.parametrize("query, allowed", [
    ("select count(*) from marts.dim_firms", True),
    ("with a as (select 1 as x) select * from a", True),
    ("describe marts.dim_firms", True),
    ("show tables", True),
    ("explain select 1", True),
    ("copy (select 1) to '{out}/copied.csv'", False),
    ("attach '{db}' as rw (read_only false)", False),
    ("explain analyze copy (select 1) to '{out}/copied.csv'", False),
    ("select 1; delete from marts.dim_firms", False),
    ("delete from marts.dim_firms", False),
    ("install httpfs", False), ("load httpfs", False), ("pragma version", False), ("set threads = 1", False),
    ("select * from read_csv('{db}.csv')", False),
])
def test_keytech_sql_only_reads(query: str, allowed: bool, tiny_built: dict, tmp_path: Path):
    db = _copy_warehouse(tiny_built, tmp_path / "w")
    before = _file_identity(db)
    code, out, err = _cli(["sql", query.format(db=db, out=tmp_path)], {"KEYTECH_DB": str(db)})
    assert (code == 0) == allowed, (code, out, err)
    if not allowed:
        assert err.strip() and "Traceback" not in err
    assert not (tmp_path / "copied.csv").exists()
    assert _file_identity(db) == before


# ------------------------------------------------------------------------------ clean errors
@pytest.mark.parametrize("content, code, message", [
    (b"", 1, "not a readable KeyTech warehouse"),
    (os.urandom(5000), 1, "not a readable KeyTech warehouse"),
    (b"hello\n", 1, "not a readable KeyTech warehouse"),
    (None, 3, "lacks a table this command needs"),  # a valid but blank DuckDB file
], ids=["zero_bytes", "random", "text", "blank_duckdb"])
def test_a_broken_warehouse_gives_a_message(content, code: int, message: str, tmp_path: Path):
    db = tmp_path / "w.duckdb"
    if content is None:
        duckdb.connect(str(db)).close()
    else:
        db.write_bytes(content)
    commands = [["summary"], ["doctor"]] if content is None else [["summary"], ["sql", "select 1 from marts.dim_firms"]]
    for args in commands:
        got, out, err = _cli(args, {"KEYTECH_DB": str(db)})
        if args == ["doctor"]:  # doctor fails (1) on a blank warehouse, naming the missing marts
            assert got == 1 and "lacks marts" in out, (got, out)
            continue
        assert got == code and message in err and "Traceback" not in err, (args, got, err)


@pytest.mark.slow
def test_a_truncated_warehouse_gives_a_message_and_blocks_the_build(tiny_built: dict, tmp_path: Path):
    db = tmp_path / "w.duckdb"
    db.write_bytes(tiny_built["db"].read_bytes()[:300_000])
    before = _file_identity(db)
    code, _, err = _cli(["summary"], {"KEYTECH_DB": str(db)})
    assert code == 1 and "not a readable KeyTech warehouse" in err
    code, _, err = _cli(["build"], _env(db, tiny_built["raw"], tmp_path / "out"))
    assert code == 1 and "Move it away" in err and "Nothing was built" in err
    assert _file_identity(db) == before
    from keytech.doctor import check_warehouse

    (finding,), _ = check_warehouse(db)
    assert finding.status == "fail" and "does not open" in finding.message and "Move it away" in finding.fix


@pytest.mark.slow
def test_a_locked_warehouse_gives_a_message(tiny_built: dict, tmp_path: Path):
    db = _copy_warehouse(tiny_built, tmp_path / "w")
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('open', flush=True); time.sleep(120)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        completed = subprocess.run([_keytech_executable(), "summary"], env=dict(os.environ, KEYTECH_DB=str(db)),
                                   capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert completed.returncode == 1
    assert "in use by another process" in completed.stderr and f"process {holder.pid}" in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_unknown_run_id_gives_a_message(tiny_built: dict, tmp_path: Path):
    db = _copy_warehouse(tiny_built, tmp_path / "w")
    code, _, err = _cli(["report", "--run", "nope-123", "--out", str(tmp_path / "r")],
                        {"KEYTECH_DB": str(db), "KEYTECH_OUTPUT_DIR": str(tmp_path / "out")})
    assert code == 1 and "no run 'nope-123' in results.runs" in err and "select run_id" in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    ("tables:\n  patents:\n    file: 专利.csv\n".encode("gbk"), "not UTF-8"),
    (b"tables: [unclosed\n", "not valid YAML"),
    (b"- just\n- a list\n", "expected a mapping"),
    (b"tables:\n  patents: [a, b]\n", "each table entry must be a mapping"),
], ids=["gbk", "malformed", "list", "wrong_shape"])
def test_a_bad_column_mapping_gives_a_message(content: bytes, message: str, minimal_raw: Path):
    (minimal_raw / "column_mapping.yml").write_bytes(content)
    code, _, err = _cli(["validate", "--raw-dir", str(minimal_raw)], {})
    assert code == 1 and message in err and "column_mapping.yml" in err and "Traceback" not in err, err


# ------------------------------------------------------------------------- operational faults
def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); the disk-full/read-only tests need one")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


@pytest.mark.slow
def test_disk_full_keeps_the_previous_warehouse(tiny_built: dict, tmp_path: Path):
    """The warehouse lies on a tmpfs with room for the previous file and little more: the build runs
    out of space, says so, and the previous warehouse is byte-identical."""
    mount = tmp_path / "small"
    size = tiny_built["db"].stat().st_size + 3 * 1024 * 1024
    _mount_tmpfs(mount, str(size))
    try:
        db = mount / "w.duckdb"
        shutil.copyfile(tiny_built["db"], db)
        before = _file_identity(db)
        code, _, err = _cli(["build"], _env(db, tiny_built["raw"], tmp_path / "out"))
        assert code == 1, err
        assert "No space left on device" in err or "not enough space" in err.lower(), err[-3000:]
        # our message (dbt's own output, shown in full, may hold dbt's traceback of its logger)
        assert err.startswith("dbt build failed; the previous warehouse was left untouched"), err[:500]
        assert "keytech/build.py" not in err
        assert _file_identity(db) == before
    finally:
        _umount(mount)


@pytest.mark.slow
def test_read_only_folder_keeps_the_previous_warehouse(tiny_built: dict, tmp_path: Path):
    """The warehouse's folder is read-only (a read-only tmpfs: root ignores file modes): the build
    exits with a message naming the folder, and the warehouse still answers."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "64m")
    try:
        db = mount / "w.duckdb"
        shutil.copyfile(tiny_built["db"], db)
        before = _file_identity(db)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True, timeout=30)
        code, _, err = _cli(["build"], _env(db, tiny_built["raw"], tmp_path / "out"))
        assert code == 1 and "must be writable" in err and str(mount) in err, err
        assert _file_identity(db) == before
        code, out, err = _cli(["sql", "select count(*) as n from marts.rpt_analysis_panel"], {"KEYTECH_DB": str(db)})
        assert code == 0 and "n" in out, err
    finally:
        _umount(mount)
