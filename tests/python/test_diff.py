"""Issue 12 §4: `keytech diff` on two builds that differ by a known set of rows, and on two runs."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from conftest import MINIMAL_RAW, copy_warehouse, write_raw
from keytech.build import BuildOptions, build_warehouse, previous_warehouse_path
from keytech.diff import diff_builds, diff_runs, render_html, render_markdown


@pytest.fixture(scope="module")
def two_builds(minimal_warehouse, tmp_path_factory) -> dict:
    root = Path(tmp_path_factory.mktemp("diff"))
    # the old build: MINIMAL_RAW built with the default options (the shared build, copied here)
    db = copy_warehouse(minimal_warehouse, root)
    files = dict(MINIMAL_RAW)
    # known changes: one patent more, one firm-year's total assets changed
    files["patents.csv"] += "000001,CN201610000009.1,2016-05-01,实用新型,A47J27/00,甲公司,,0\n"
    files["balance_sheet.csv"] = files["balance_sheet.csv"].replace("1100000000", "1200000000")
    raw_new = write_raw(root / "raw_new", files, encodings={"city_yearbook.csv": "gbk"})
    build_warehouse(BuildOptions(raw_dir=raw_new, landing_dir=root / "landing", warehouse=db, quiet=True))
    return {"root": root, "db": db}


@pytest.mark.slow
def test_build_diff_reports_the_known_rows(two_builds, monkeypatch, capsys):
    db = two_builds["db"]
    old = previous_warehouse_path(db)
    assert old.is_file()  # the swap kept the replaced build
    result = diff_builds(old, db)
    marts = {m["mart"]: m for m in result["marts"]}
    patents = marts["fct_patents"]
    assert (patents["added"], patents["removed"], patents["changed"]) == (1, 0, 0)
    assert patents["added_examples"] == ["000001:CN201610000009"]
    firm_years = marts["fct_firm_years"]
    assert (firm_years["added"], firm_years["removed"]) == (0, 0)
    assert "000001/2016" in firm_years["changed_examples"]
    assert firm_years["column_changes"]["size"] == 1
    assert marts["dim_cities"]["added"] == marts["dim_cities"]["changed"] == 0
    assert result["funnel"] and result["funnel"][0]["old_firm_years"] == result["funnel"][0]["new_firm_years"]
    assert "| fct_patents | patent_id |" in render_markdown(result) and "<table>" in render_html(result)

    from keytech.cli import main

    monkeypatch.setenv("KEYTECH_DB", str(db))
    monkeypatch.setenv("KEYTECH_OUTPUT_DIR", str(two_builds["root"] / "output"))
    assert main(["diff"]) == 0
    assert "000001:CN201610000009" in capsys.readouterr().out
    assert (two_builds["root"] / "output" / "diff" / "diff.html").is_file()
    with duckdb.connect(str(db), read_only=True) as con:
        stored = dict(con.execute("select object, added from results.diffs where kind = 'builds'").fetchall())
    assert stored["fct_patents"] == 1


def _runs_warehouse(path: Path) -> None:
    from keytech.estimation.orchestration import store

    con = duckdb.connect(str(path))
    con.execute("create schema results")
    con.execute(store.RUNS_DDL)
    con.execute(store.ESTIMATES_DDL)
    for run in ("A", "B"):
        con.execute("insert into results.runs values (?, now(), now(), 'fp', 'v', '{}')", [run])
    rows = [  # run, spec, term, estimate, se, p, nobs
        ("A", "table3_col1", "policy", 0.20, 0.05, 0.001, 1000), ("B", "table3_col1", "policy", 0.21, 0.05, 0.001, 1010),
        ("A", "table3_col2", "policy", 0.10, 0.04, 0.01, 1000), ("B", "table3_col2", "policy", -0.02, 0.04, 0.6, 1000),
        ("A", "table3_col3", "policy", 0.08, 0.05, 0.11, 900), ("B", "table3_col3", "policy", 0.09, 0.04, 0.03, 900),
        ("A", "event_study", "lead2", 0.01, 0.02, 0.6, 900),
    ]
    for run, spec, term, est, se, p, n in rows:
        con.execute("insert into results.estimates (run_id, spec_id, term, estimate, std_error, p_value, nobs) "
                    "values (?, ?, ?, ?, ?, ?, ?)", [run, spec, term, est, se, p, n])
    con.close()


def test_run_diff_flags_sign_and_significance_changes(tmp_path: Path, monkeypatch, capsys):
    db = tmp_path / "w.duckdb"
    _runs_warehouse(db)
    specs = {s["spec_id"]: s for s in diff_runs("A", "B", db)["specs"]}
    assert specs["table3_col1"]["nobs_b"] == 1010 and not specs["table3_col1"]["sign_change"]
    assert specs["table3_col2"]["sign_change"] and specs["table3_col2"]["significance_change"]
    assert specs["table3_col3"]["significance_change"] and not specs["table3_col3"]["sign_change"]
    assert specs["event_study"]["only_in"] == "a"
    with pytest.raises(ValueError, match="no run 'C'"):
        diff_runs("A", "C", db)

    from keytech.cli import main

    monkeypatch.setenv("KEYTECH_DB", str(db))
    monkeypatch.setenv("KEYTECH_OUTPUT_DIR", str(tmp_path / "out"))
    assert main(["diff", "--runs", "A", "B"]) == 0
    out = capsys.readouterr().out
    assert "SIGN CHANGE" in out and "SIGNIFICANCE CHANGE (5%)" in out
    with duckdb.connect(str(db), read_only=True) as con:
        flagged = con.execute("select object from results.diffs where kind = 'runs' and changed = 1 "
                              "order by 1").fetchall()
    assert flagged == [("table3_col2:policy",), ("table3_col3:policy",)]
    assert (tmp_path / "out" / "diff" / "diff.md").read_text(encoding="utf-8").startswith("# keytech diff: runs")


def test_build_diff_attaches_warehouses_whose_path_has_a_quote(tmp_path: Path):
    """The warehouse paths reach DuckDB's ATTACH as quoted literals (keytech.sql_literals.sql_string): a folder
    named with an apostrophe is compared, not a SQL syntax error."""
    folder = tmp_path / "Zhang's builds"
    folder.mkdir()
    for name, rows in (("old", 1), ("new", 2)):
        with duckdb.connect(str(folder / f"{name}.duckdb")) as con:
            con.execute("create schema marts")
            con.execute(f"create table marts.dim_firms as select lpad(range::varchar, 6, '0') as stkcd "
                        f"from range({rows})")
    result = diff_builds(folder / "old.duckdb", folder / "new.duckdb", marts=("dim_firms",))
    [mart] = result["marts"]
    assert (mart["old_rows"], mart["new_rows"], mart["added"], mart["removed"]) == (1, 2, 1, 0)
    assert mart["added_examples"] == ["000001"]
