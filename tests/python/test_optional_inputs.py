"""Issue 12 §2: required vs optional raw tables, stated per specification (contract ``enables``).

A tiny synthetic folder without ``cash_flow.csv``: validation passes with a warning, the build and
the checks pass, ``het_fc_*``/``het_ww_*`` are skipped (named with the table and what to add) and
listed in results.runs and the report, the other specs run; ``keytech estimate`` returns 1 when a
requested spec fails; ``keytech doctor`` raises no false "raw files changed" warning; a *supplied*
cash-flow file that matches no firm-year makes ``keytech check`` fail (its mart column is entirely
NULL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from keytech.build import BuildOptions, build_warehouse
from keytech.contract import load_contract
from keytech.inputs import enabled_by, skipped_specs
from keytech.quality import failures, run_checks

pytestmark = pytest.mark.slow

HET_CASH = ["het_fc_low_key", "het_fc_high_key", "het_fc_low_nonkey", "het_fc_high_nonkey",
            "het_ww_low_key", "het_ww_high_key", "het_ww_low_nonkey", "het_ww_high_nonkey"]


@pytest.fixture(scope="module")
def no_cash_flow(tmp_path_factory) -> dict:
    from keytech.synth import generate

    root = Path(tmp_path_factory.mktemp("no_cash_flow"))
    raw = root / "raw"
    generate("tiny", 20250101, raw, progress=False)
    (raw / "cash_flow.csv").unlink()
    db, landing, out = root / "warehouse.duckdb", root / "landing", root / "output"
    outcome = build_warehouse(BuildOptions(raw_dir=raw, landing_dir=landing, warehouse=db, quiet=True))
    record = run_checks(db, out / "checks")
    return {"root": root, "raw": raw, "db": db, "landing": landing, "out": out, "outcome": outcome,
            "check": record}


def _env(monkeypatch, built: dict) -> None:
    monkeypatch.setenv("KEYTECH_RAW_DIR", str(built["raw"]))
    monkeypatch.setenv("KEYTECH_LANDING_DIR", str(built["landing"]))
    monkeypatch.setenv("KEYTECH_DB", str(built["db"]))
    monkeypatch.setenv("KEYTECH_OUTPUT_DIR", str(built["out"]))


def test_contract_states_what_each_optional_table_enables():
    contract = load_contract()
    assert not contract["cash_flow"].required
    assert "het_fc_*" in enabled_by(contract["cash_flow"]) and "het_ww_*" in enabled_by(contract["cash_flow"])
    assert enabled_by(contract["patents"]) == "every specification (required)"
    assert "table4_col2" in enabled_by(contract["region_robot_density"])


def test_build_and_checks_pass_without_cash_flow(no_cash_flow):
    assert no_cash_flow["outcome"]["manifest"]["tables"]["cash_flow"]["format"] == "absent"
    assert no_cash_flow["check"]["passed"], failures(no_cash_flow["check"])
    with duckdb.connect(str(no_cash_flow["db"]), read_only=True) as con:
        filled = con.execute("select count(fc_index), count(ww_index), count(*) "
                             "from marts.fct_firm_year_mechanisms").fetchone()
        assert filled[0] == 0 and filled[1] == 0 and filled[2] > 0
        assert con.execute("select count(*) from marts.rpt_analysis_panel").fetchone()[0] > 0


def test_specs_needing_cash_flow_are_skipped_and_listed(no_cash_flow, monkeypatch, capsys):
    from keytech.cli import main

    _env(monkeypatch, no_cash_flow)
    with duckdb.connect(str(no_cash_flow["db"]), read_only=True) as con:
        skips = skipped_specs(HET_CASH + ["table3_col1", "het_hhi_low_key"], con)
    assert sorted(skips) == sorted(HET_CASH)
    assert skips["het_fc_low_key"].reason.startswith("het_fc_low_key needs cash_flow: add cash_flow.csv or a "
                                                     "CSMAR FS_Comscfd")

    code = main(["-q", "estimate", "--only", "table3_col1", "het_fc", "het_ww", "--placebo-draws", "5",
                 "--permutation-draws", "5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "het_fc_low_key SKIPPED: het_fc_low_key needs cash_flow" in err
    with duckdb.connect(str(no_cash_flow["db"]), read_only=True) as con:
        params = json.loads(con.execute("select parameters_json from results.runs order by started_at desc "
                                        "limit 1").fetchone()[0])
        ran = {r[0] for r in con.execute("select distinct spec_id from results.estimates").fetchall()}
    assert sorted(params["skipped"]) == sorted(HET_CASH) and params["failures"] == {}
    assert "table3_col1" in ran and not ran & set(HET_CASH)

    assert main(["-q", "report"]) == 0
    page = (no_cash_flow["out"] / "report" / "index.html").read_text(encoding="utf-8")
    assert "id='skipped-specs'" in page and "het_ww_high_key" in page


def test_estimate_exits_1_when_a_requested_spec_fails(no_cash_flow, monkeypatch, capsys):
    from keytech.cli import main
    from keytech.estimation.orchestration import schedule

    _env(monkeypatch, no_cash_flow)

    def broken(spec, df, ctx):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(schedule, "run_spec", broken)  # every spec runs through schedule.estimate_spec
    assert main(["-q", "estimate", "--only", "table3_col1"]) == 1
    assert "1 requested spec(s) failed: table3_col1" in capsys.readouterr().err


def test_doctor_gives_no_false_landing_warning(no_cash_flow):
    from keytech.doctor import check_landing

    findings = check_landing(no_cash_flow["raw"], no_cash_flow["landing"])
    assert [f.status for f in findings] == ["ok"], [f.render() for f in findings]
    # supplying the table later is a real change
    shutil.copy(no_cash_flow["raw"] / "income_statement.csv", no_cash_flow["root"] / "keep.csv")
    (no_cash_flow["raw"] / "cash_flow.csv").write_text("Stkcd,Accper,Typrep,C001000000\n", encoding="utf-8")
    try:
        findings = check_landing(no_cash_flow["raw"], no_cash_flow["landing"])
        assert findings[0].status == "warn" and "cash_flow (now supplied)" in findings[0].message
    finally:
        (no_cash_flow["raw"] / "cash_flow.csv").unlink()


def test_supplied_cash_flow_that_fills_nothing_fails_the_checks(no_cash_flow, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(no_cash_flow["raw"], raw)
    # a stand-in: parent-company statements only (Typrep B), so no consolidated row reaches the marts
    stkcds = duckdb.sql(f"select distinct Stkcd from read_csv('{raw / 'balance_sheet.csv'}', all_varchar=true) "
                        "where Stkcd ~ '^[0-9]+$' limit 20").fetchall()
    lines = ["Stkcd,Accper,Typrep,C001000000"] + [f"{s[0]},2015-12-31,B,100" for s in stkcds]
    (raw / "cash_flow.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=tmp_path / "landing", warehouse=db, quiet=True))
    record = run_checks(db, tmp_path / "checks")
    assert not record["passed"]
    lines = failures(record)
    assert any("supplied_table_fills_mart_column" in line and "fct_firm_year_mechanisms.ww_index" in line
               for line in lines), lines
