"""Incremental refresh (`keytech build --incremental`) gives exactly the marts of a full rebuild.

Scenario on tiny synthetic data: a warehouse built from the patents of 2005-2021 is refreshed with
one more year of extracts (the 2022 rows appended to patents.csv), then with a corrected vintage
(IPC strings changed, rows deleted so that later rows move up, duplicates and an unlisted stock code
added, one firm dropped from firm_info). After each refresh the warehouse must equal a full rebuild
of the same raw folder: the patent marts and intermediates row for row and bit for bit (and their
mart fingerprint), every other mart row for row with doubles at single precision (see _columns:
sums of doubles are not bit-reproducible between any two builds). The refresh must also really be
incremental: only the changed patents carry the new batch id. Plus fast checks of the refresh
planner (no dbt)."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from keytech import build as build_module
from keytech.build import BuildOptions, build_warehouse, plan_refresh, read_build_state
from keytech.synth import generate
from keytech.warehouse import PUBLIC_MARTS, mart_fingerprint

SPLIT_YEAR = 2021  # the first warehouse has applications up to this year; the refresh adds the next
# The marts the incremental patent models feed directly; compared bit for bit.
PATENT_MARTS = ("fct_patents", "fct_patent_ipc_codes", "rpt_patent_reconciliation", "rpt_ipc_coverage",
                "rpt_quarantine")


# ------------------------------------------------------------------------------------ raw folders
def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _copy_raw(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("_truth.json"))
    return target


def _corrected_patents(header: list[str], rows: list[list[str]]) -> list[list[str]]:
    """A corrected vintage: IPC strings changed (to key-tech, junk, empty), five rows deleted near the
    end (the rows after them move up), a repeated row, a conflicting repeat and an unlisted stock
    code. (Rows deleted early in a file renumber every later row; the refresh is still exact but
    then reprocesses those patents, since _source_row is part of their output.)"""
    ipc, scode, cited = header.index("IPC"), header.index("Scode"), header.index("CitedTimes")
    out = [list(r) for r in rows]
    for i in range(7, len(out), 97):
        out[i][ipc] = "H04L 27/26 (2006.01);G06N3/08"
    for i in range(11, len(out), 101):
        out[i][ipc] = "XYZ;??"
    for i in range(13, len(out), 211):
        out[i][ipc] = ""
    out[17][scode] = "999999"
    repeat, conflicting = list(out[40]), list(out[41])
    conflicting[cited] = str(int(conflicting[cited] or 0) + 5)
    del out[len(out) - 300:len(out) - 295]
    return out + [repeat, conflicting]


@pytest.fixture(scope="module")
def raws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("incremental")
    full = root / "synth"
    generate("tiny", 11, full, progress=False)
    header, rows = _read_csv(full / "patents.csv")
    date = header.index("ApplyDate")
    early = [r for r in rows if int(r[date][:4]) <= SPLIT_YEAR]
    late = [r for r in rows if int(r[date][:4]) > SPLIT_YEAR]
    assert early and late

    first = _copy_raw(full, root / "raw_first")
    _write_csv(first / "patents.csv", header, early)
    added = _copy_raw(full, root / "raw_added")
    _write_csv(added / "patents.csv", header, early + late)  # the new year's extract appended

    corrected = _copy_raw(added, root / "raw_corrected")
    _write_csv(corrected / "patents.csv", header, _corrected_patents(header, early + late))
    # firm_info: drop one firm with patents (its patents become unmatched_firm); keep the
    # vendor description rows under the header.
    firm_header, firm_rows = _read_csv(corrected / "firm_info.csv")
    description, data = firm_rows[:2], firm_rows[2:]
    listed = {r[0].zfill(6) for r in data}
    scode = header.index("Scode")
    counts = Counter(r[scode].zfill(6) for r in late if r[scode].zfill(6) in listed)
    dropped = min(counts, key=lambda code: (counts[code], code))  # the firm with fewest new patents
    kept_rows = [r for r in data if r[0].zfill(6) != dropped]
    assert len(kept_rows) < len(data)
    _write_csv(corrected / "firm_info.csv", firm_header, description + kept_rows)
    return {"root": root, "first": first, "added": added, "corrected": corrected}


def _warehouse(root: Path, name: str) -> Path:
    """``<root>/<name>/warehouse.duckdb``: every warehouse of this test has the usual file name (its
    landing folder ``landing`` beside it, see _build), so dbt reuses the project parse saved by any
    default build of the run (keytech.build.run_dbt keys it by the file name): other file names cost
    a full parse each (≈ 4 s of CPU, issue 17)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "warehouse.duckdb"


def _build(raw: Path, warehouse: Path, incremental: bool) -> dict:
    landing = warehouse.parent / "landing"
    return build_warehouse(BuildOptions(raw_dir=raw, landing_dir=landing, warehouse=warehouse,
                                        quiet=True, incremental=incremental))


# ------------------------------------------------------------------------------------ comparison
def _columns(con: duckdb.DuckDBPyConnection, table: str, exact: bool, exclude: tuple[str, ...] = ()) -> str:
    """Select list of a table of catalog b. Unless exact, double columns are compared at single
    precision: sums of doubles in DuckDB depend on the order rows arrive in (parallel aggregation,
    tables written without preserve_insertion_order), so two full builds of the same data can
    already differ in the last bit of a sum (seen in rpt_endogeneity_panel, and in saleshare of
    fct_firm_years: sale / sum(sale) over industry-year)."""
    schema, name = table.split(".")
    parts = []
    for column, dtype in con.execute(
            "select column_name, data_type from information_schema.columns where table_catalog = 'b' "
            "and table_schema = ? and table_name = ? order by ordinal_position", [schema, name]).fetchall():
        if column in exclude:
            continue
        quoted = '"' + column + '"'
        parts.append(f"cast({quoted} as float)" if dtype == "DOUBLE" and not exact else quoted)
    return ", ".join(parts)


def _differences(refreshed: Path, rebuilt: Path) -> list[str]:
    """Tables that differ between the two warehouses, compared as multisets of rows: the patent marts
    and intermediates exactly (int_patents_dispositioned without the batch id, which records when a
    row was built), every other mart with doubles at single precision (see _columns)."""
    con = duckdb.connect()
    try:
        con.execute(f"attach '{refreshed}' as a (read_only)")
        con.execute(f"attach '{rebuilt}' as b (read_only)")
        marts = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_catalog = 'b' "
            "and table_schema = 'marts' order by 1").fetchall()]
        tables = [(f"marts.{t}", _columns(con, f"marts.{t}", exact=t in PATENT_MARTS)) for t in marts] + [
            ("intermediate.int_patents_dispositioned",
             _columns(con, "intermediate.int_patents_dispositioned", exact=True, exclude=("_batch_id",))),
            ("intermediate.int_patent_ipc_tokens_parsed", "*"),
            ("intermediate.int_ipc_codes_matched", "*"),
        ]
        assert set(PUBLIC_MARTS) <= set(marts) and set(PATENT_MARTS) <= set(marts)
        differing = []
        for table, columns in tables:
            only_a, only_b = con.execute(
                f"select (select count(*) from (select {columns} from a.{table} "
                f"except all select {columns} from b.{table})), "
                f"(select count(*) from (select {columns} from b.{table} "
                f"except all select {columns} from a.{table}))").fetchone()
            if only_a or only_b:
                differing.append(f"{table}: {only_a} row(s) only in the refresh, {only_b} only in the rebuild")
        return differing
    finally:
        con.close()


def _fingerprint(warehouse: Path) -> str:
    """keytech.warehouse.mart_fingerprint of the patent marts (exact, no doubles summed)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return mart_fingerprint(con, PATENT_MARTS)
    finally:
        con.close()


def _batches(warehouse: Path) -> dict[str, int]:
    """Rows of int_patents_dispositioned by batch id (the dbt invocation that wrote them)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return dict(con.execute("select _batch_id, count(*) from intermediate.int_patents_dispositioned "
                                "group by 1").fetchall())
    finally:
        con.close()


def _assert_partial(before: dict[str, int], after: dict[str, int]) -> None:
    """The refresh wrote exactly one new batch, and it holds a small part of the landed rows."""
    new = set(after) - set(before)
    assert len(new) == 1
    assert len(after) >= 2, "the refresh rewrote every patent row"
    assert after[new.pop()] < 0.25 * sum(after.values()), "the refresh reprocessed too many patents"


# ------------------------------------------------------------------------------------------ tests
@pytest.mark.slow
def test_incremental_refresh_equals_full_rebuild(raws, monkeypatch):
    # The code fingerprint is tested below; pinned here so that an edit elsewhere in the working
    # tree during this test does not turn the refreshes into full builds.
    monkeypatch.setattr(build_module, "code_fingerprint", lambda root=None: "pinned-for-this-test")
    root = raws["root"]
    warehouse = _warehouse(root, "refreshed")

    first = _build(raws["first"], warehouse, incremental=True)
    assert first["mode"] == "full"  # no previous warehouse: the safe path
    assert read_build_state(warehouse) is not None

    # 1. One more year of extracts.
    before = _batches(warehouse)
    added = _build(raws["added"], warehouse, incremental=True)
    assert added["mode"] == "incremental", added["reason"]
    assert added["changed_tables"] == ["patents"]
    assert added["select"] == "source:cnrds.patents+"
    rebuilt = _warehouse(root, "rebuilt_added")
    _build(raws["added"], rebuilt, incremental=False)
    assert _differences(warehouse, rebuilt) == []
    assert _fingerprint(warehouse) == _fingerprint(rebuilt)
    _assert_partial(before=before, after=_batches(warehouse))

    # 2. A corrected vintage of patents and firm_info.
    before = _batches(warehouse)
    corrected = _build(raws["corrected"], warehouse, incremental=True)
    assert corrected["mode"] == "incremental", corrected["reason"]
    assert corrected["changed_tables"] == ["firm_info", "patents"]
    rebuilt = _warehouse(root, "rebuilt_corrected")
    _build(raws["corrected"], rebuilt, incremental=False)
    assert _differences(warehouse, rebuilt) == []
    assert _fingerprint(warehouse) == _fingerprint(rebuilt)
    _assert_partial(before=before, after=_batches(warehouse))

    # 3. Nothing changed: nothing is rebuilt and the warehouse stays as it is.
    before = warehouse.stat().st_mtime_ns
    again = _build(raws["corrected"], warehouse, incremental=True)
    assert again["mode"] == "unchanged"
    assert warehouse.stat().st_mtime_ns == before


# --------------------------------------------------------------------------- planner (no dbt run)
def _state(**tables) -> dict:
    return {"code_fingerprint": "code", "vars": {"ipc_matching": "hierarchical"},
            "tables": {name: {"sha256": sha} for name, sha in tables.items()}}


def test_plan_refresh_falls_back_to_a_full_build_when_unsafe(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    current = _state(patents="a", firm_info="b")
    assert plan_refresh(None, current, warehouse)["mode"] == "full"
    assert plan_refresh({**current, "code_fingerprint": "other"}, current, warehouse)["mode"] == "full"
    assert plan_refresh({**current, "vars": {"ipc_matching": "strict"}}, current, warehouse)["mode"] == "full"
    assert plan_refresh(_state(patents="a"), current, warehouse)["mode"] == "full"
    warehouse.with_name(warehouse.name + ".wal").write_bytes(b"")
    assert plan_refresh(_state(patents="old", firm_info="b"), current, warehouse)["mode"] == "full"


def test_plan_refresh_selects_what_the_changed_tables_feed(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    current = _state(patents="new", firm_info="b", pilot_list="c")
    plan = plan_refresh(_state(patents="old", firm_info="b", pilot_list="c"), current, warehouse)
    assert plan["mode"] == "incremental"
    assert plan["changed_tables"] == ["patents"]
    assert plan["select"] == "source:cnrds.patents+"
    plan = plan_refresh(_state(patents="old", firm_info="b", pilot_list="old"), current, warehouse)
    assert plan["select"] == "source:cnrds.patents+ source:miit.pilot_list+"
    assert plan_refresh(current, current, warehouse)["mode"] == "unchanged"


def test_code_fingerprint_covers_models(tmp_path):
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "models" / "a.sql").write_text("select 1")
    before = build_module.code_fingerprint(root)
    (root / "models" / "a.sql").write_text("select 2")
    assert build_module.code_fingerprint(root) != before


def test_incremental_cannot_be_combined_with_select(tmp_path):
    with pytest.raises(ValueError, match="--select"):
        build_warehouse(BuildOptions(raw_dir=tmp_path, landing_dir=tmp_path / "landing",
                                     warehouse=tmp_path / "w.duckdb", select="fct_patents", incremental=True))
