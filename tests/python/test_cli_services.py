"""The services behind `keytech summary` and `keytech docs` (issue 13: no SQL or dbt calls in
cli.py), on a hand-made warehouse and a stubbed dbt, without a build."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb


def _tiny_warehouse(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        con.execute("create table marts.rpt_sample_funnel as select * from (values "
                    "(2, 'pilot_firms', 3, 20, 4), (1, 'all_firm_years', 4, 24, 0)) "
                    "t(step_order, step, firms_kept, firm_years_kept, firm_years_dropped)")
        for name, rows in (("dim_firms", 4), ("dim_cities", 2), ("fct_patent_ipc_codes", 9),
                           ("fct_firm_years", 24), ("rpt_analysis_panel", 20)):
            con.execute(f"create table marts.{name} as select range as id from range({rows})")
        # 4 invention applications, 1 key technology → 25.0 %; a utility model does not count
        con.execute("create table marts.fct_patents as select * from (values (true, true), (true, false), "
                    "(true, false), (true, false), (false, true)) t(is_invention, is_key_tech)")
        con.execute("create table marts.rpt_patent_reconciliation as select * from (values "
                    "('kept', 1200), ('merged_duplicate', 3), ('kept', 34)) t(disposition, raw_rows)")


def test_summary_reads_the_marts_and_prints_them(tmp_path: Path, monkeypatch, capsys):
    from keytech.cli import main
    from keytech.warehouse_summary import render_summary, summarise_warehouse

    db = tmp_path / "w.duckdb"
    _tiny_warehouse(db)
    summary = summarise_warehouse(db)
    assert [row[1] for row in summary.funnel] == ["all_firm_years", "pilot_firms"]  # by step_order
    assert summary.mart_rows == {"dim_firms": 4, "dim_cities": 2, "fct_patents": 5, "fct_patent_ipc_codes": 9,
                                 "fct_firm_years": 24, "rpt_analysis_panel": 20}
    assert summary.key_tech_share == 0.25
    assert summary.patent_dispositions == [("kept", 1234), ("merged_duplicate", 3)]
    text = render_summary(summary)
    assert "  all_firm_years                                   4          24         0" in text
    assert "\n  marts.fct_patents" + " " * 25 + "5\n" in text  # name padded to 26, count to 10
    assert "Key-technology share of invention applications: 25.0%" in text
    assert "Raw patent rows by disposition: kept 1,234, merged_duplicate 3" in text

    monkeypatch.setenv("KEYTECH_DB", str(db))
    monkeypatch.setenv("KEYTECH_RAW_DIR", str(tmp_path / "raw"))  # no _truth.json: not synthetic
    assert main(["summary"]) == 0
    assert capsys.readouterr().out == text + "\n"


def test_docs_failure_names_dbt_output_and_exits_1(tmp_path: Path, monkeypatch, capsys):
    import keytech.build
    from keytech.cli import main

    calls = []

    def failing_dbt(args, warehouse, options, quiet=False):
        calls.append((args, warehouse))
        return subprocess.CompletedProcess(args, 2, stdout="Compilation Error in model x\n", stderr="")

    monkeypatch.setattr(keytech.build, "run_dbt", failing_dbt)
    monkeypatch.setenv("KEYTECH_DB", str(tmp_path / "absent.duckdb"))
    assert main(["docs", "--out", str(tmp_path / "site")]) == 1
    err = capsys.readouterr().err
    assert "dbt docs generate failed." in err and "Compilation Error in model x" in err and "keytech -v docs" in err
    (args, warehouse), = calls
    assert "--empty-catalog" in args and warehouse != tmp_path / "absent.duckdb"  # never the real warehouse
    assert not (tmp_path / "absent.duckdb").exists()
