"""tests/tools/evaluator_findings.py, which `make evaluate` runs on dbt-project-evaluator's
scratch warehouse: accepted findings pass, any other finding fails, and every accepted finding is
explained in docs/architecture.md (the evaluator itself needs local package copies; see there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("evaluator_findings", ROOT / "tests/tools/evaluator_findings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scratch(path: Path, extra_exposure_row: bool) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("create schema main_evaluator")
        con.execute("create table main_evaluator.fct_sources_without_freshness as "
                    "select 'csmar.firm_info' as resource_name")
        con.execute("create table main_evaluator.fct_exposures_dependent_on_private_models as "
                    "select 'replication_report' as exposure_name, 'pilot_waves' as parent_resource_name")
        if extra_exposure_row:  # an exposure on a protected mart: not accepted
            con.execute("insert into main_evaluator.fct_exposures_dependent_on_private_models "
                        "values ('estimation_layer', 'fct_city_year_exposures')")
        con.execute("create table main_evaluator.fct_missing_primary_key_tests as "
                    "select 'x' as resource_name where false")
        con.execute("create table main_evaluator.fct_test_coverage as select 100.0 as test_coverage_pct")


def test_accepted_findings_pass_and_others_fail(tmp_path: Path, capsys):
    tool = _tool()
    clean, dirty = tmp_path / "clean.duckdb", tmp_path / "dirty.duckdb"
    _scratch(clean, extra_exposure_row=False)
    _scratch(dirty, extra_exposure_row=True)
    assert tool.main(["x", str(clean)]) == 0
    assert "2 finding(s) in 2 of 3 checks; 2 accepted (docs/architecture.md), 0 open" in capsys.readouterr().out
    assert tool.main(["x", str(dirty)]) == 1
    out = capsys.readouterr().out
    assert "OPEN      fct_exposures_dependent_on_private_models: estimation_layer | fct_city_year_exposures" in out
    assert out.rstrip().endswith("1 open")


def test_every_accepted_finding_is_explained_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc[doc.index("**dbt-project-evaluator.**"):doc.index("**Incremental refresh.**")]
    for table, accepted in _tool().ACCEPTED.items():
        assert f"`{table}`" in section, table
        for resource in accepted:
            assert resource == "*" or resource in section, (table, resource)
