"""Our merged dbt generic tests (macros/tests/column_checks.sql, primary_key.sql; issue 17) on a
hand-made fixture project: a model, a seed and a source table, each with planted violations, and a
clean model with the same rules; a second model (keyed) holds column_checks' row-set rules
(primary_key, unique_combination, relationships, expression_is_true, equal_row_count) with planted
violations, and the clean model the same rules. dbt runs the real macros; every rule fails on exactly the planted
rows (counts and example values worked out by hand below) and passes on clean data, and
`keytech build`'s message for a failed test (build._failed_nodes) names the column and the rule."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from keytech import paths
from keytech.build import _failed_nodes, dbt_executable

ROOT = paths.project_root()

RULES = """
      - primary_key:
          arguments:
            columns: [id]
      - column_checks:
          arguments:
            not_null: [code]
            unique: [code]
            accepted_values:
              - column: patent_type
                values: [invention, utility_model, design]
              - column: flag
                values: [0, 1]
                quote: false
            accepted_range:
              - column: year
                min_value: "{{ var('first_year') }}"
                max_value: 2022
              - column: citations
                min_value: 0
"""

# id 2 twice and one null id; code null once and 'a' twice; one unknown patent_type ('junk', the
# null is not a violation, as in dbt's accepted_values); flag 2 once; year 1999 and 2030 (null is
# fine); citations -1 once
BAD = """select * from (values
    (1, 'a', 'invention', 0, 2010, 5),
    (2, 'b', 'design', 1, 2010, 0),
    (2, null, 'junk', 2, 1999, -1),
    (null, 'a', null, null, null, null),
    (5, 'e', 'utility_model', 1, 2030, 3)
) as t(id, code, patent_type, flag, year, citations)"""

# k 1 twice and null twice; code 'a' twice and null twice (unique_combination groups nulls, as
# unique_combination_of_columns); (k, coalesce(flag, 0)) = (null, 1) twice; code 'x' not in codes;
# n -1 once; n 6 where flag = 1; flag 0 once and null once; 5 rows against codes' 3 (1 with code 'a')
KEYED = """select * from (values
    (1, 'a', 5, 0),
    (1, 'a', 6, 1),
    (null, 'x', -1, 1),
    (null, null, 2, 1),
    (4, null, 3, null)
) as t(k, code, n, flag)"""

CODES = "select * from (values ('a'), ('b'), ('c')) as t(code)"

MERGED = """
      - column_checks:
          name: merged_checks_{model}
          arguments:
            primary_key: [{key}]
            unique_combination: [[code], [{key}, "coalesce(flag, 0)"]]
            relationships:
              - {{column: code, to: "ref('codes')", field: code}}
            expression_is_true:
              - {{expression: "{positive} >= 0"}}
              - {{expression: "{bounded}", where_clause: "flag = 1"}}
              - {{expression: "{nonnull}"}}
            equal_row_count:
              - {{compare_model: "ref('codes')"}}
              - {{compare_model: "ref('codes')", compare_where: "code {where}"}}
"""

GOOD = """select * from (values
    (1, 'a', 'invention', 0, 2010, 5),
    (2, 'b', null, null, null, null),
    (3, 'c', 'design', 1, 2022, 0)
) as t(id, code, patent_type, flag, year, citations)"""

SCHEMA = f"""version: 2
models:
  - name: bad
    data_tests:{RULES}
  - name: good
    data_tests:{RULES}{MERGED.format(model="good", key="id", positive="coalesce(citations, 0)", bounded="year <= 2022",
                                     nonnull="code is not null", where="is not null")}
  - name: keyed
    data_tests:{MERGED.format(model="keyed", key="k", positive="n", bounded="n < 6",
                              nonnull="flag = 1", where="= 'a'")}
  - name: codes
seeds:
  - name: listed
    data_tests:
      - primary_key:
          arguments:
            columns: [k1, k2]
      - column_checks:
          arguments:
            not_null: [label]
sources:
  - name: landed
    config:
      meta:
        external_location: "read_parquet('landing/{{name}}.parquet')"
    tables:
      - name: rows
        data_tests:
          - column_checks:
              arguments:
                not_null: [a, _source_row]
"""


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> dict:
    project = tmp_path_factory.mktemp("generic_tests")
    (project / "macros").mkdir()
    for name in ("column_checks.sql", "primary_key.sql"):
        shutil.copyfile(ROOT / "macros" / "tests" / name, project / "macros" / name)
    (project / "models").mkdir()
    # bad and keyed are views: column_checks reads a view once (a materialized CTE of the columns
    # its rules name, or of all columns when a rule is an expression)
    (project / "models" / "bad.sql").write_text("{{ config(materialized='view') }}\n" + BAD)
    (project / "models" / "good.sql").write_text(GOOD)
    (project / "models" / "keyed.sql").write_text("{{ config(materialized='view') }}\n" + KEYED)
    (project / "models" / "codes.sql").write_text(CODES)
    (project / "models" / "schema.yml").write_text(SCHEMA)
    (project / "seeds").mkdir()
    # (k1, k2): (1, x) twice and one null k2; label null once
    (project / "seeds" / "listed.csv").write_text("k1,k2,label\n1,x,one\n1,x,two\n2,,three\n3,y,\n")
    (project / "landing").mkdir()
    with duckdb.connect() as con:
        con.execute("copy (select * from (values ('p', 1), (null, 2), (null, 3)) as t(a, _source_row)) "
                    f"to '{project / 'landing' / 'rows.parquet'}' (format parquet)")
    (project / "dbt_project.yml").write_text(
        "name: generic_tests_fixture\nversion: '1.0.0'\nconfig-version: 2\nprofile: fixture\n"
        "vars: {first_year: 2008}\nmodels: {generic_tests_fixture: {+materialized: table}}\n")
    # like profiles.yml: the file is attached as catalog `warehouse` (build._failing_rows relies on it)
    (project / "profiles.yml").write_text(
        "fixture:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: ':memory:'\n"
        "      database: warehouse\n      attach: [{path: fixture.duckdb, alias: warehouse}]\n      threads: 1\n")
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    proc = subprocess.run([dbt_executable(), "build", "--profiles-dir", str(project), "--project-dir", str(project)],
                          cwd=project, env=env, capture_output=True, text=True)
    assert (project / "target" / "run_results.json").is_file(), proc.stdout[-3000:]
    results = json.loads((project / "target" / "run_results.json").read_text(encoding="utf-8"))["results"]
    return {"project": project, "proc": proc, "db": project / "fixture.duckdb",
            "results": {r["unique_id"]: r for r in results}}


def _test(fixture_run: dict, macro: str, on: str) -> dict:
    found = [r for uid, r in fixture_run["results"].items()
             if uid.startswith(f"test.generic_tests_fixture.{macro}_{on}")]
    assert len(found) == 1, sorted(fixture_run["results"])
    return found[0]


def _rows(fixture_run: dict, result: dict) -> set[tuple]:
    with duckdb.connect() as con:
        con.execute(f"set file_search_path = '{fixture_run['project']}'")
        con.execute(f"attach '{fixture_run['db']}' as warehouse (read_only)")
        return set(con.execute(result["compiled_code"]).fetchall())


def test_every_rule_passes_on_clean_data(fixture_run):
    assert fixture_run["proc"].returncode == 1  # the planted violations fail the build
    for macro in ("primary_key", "column_checks", "merged_checks"):
        assert _test(fixture_run, macro, "good")["status"] == "pass"


def test_column_checks_fails_on_exactly_the_planted_rows(fixture_run):
    result = _test(fixture_run, "column_checks", "bad")
    # one row per broken (column, rule); the id column's null and repeat are primary_key's
    assert result["status"] == "fail" and result["failures"] == 6
    # a view read by two queries (the tallies, unique): its rule columns computed once
    assert re.search(r"with model_rows as materialized \(\s*select code, patent_type, flag, year, citations\s",
                     result["compiled_code"]), result["compiled_code"]
    assert _rows(fixture_run, result) == {
        ("code", "not_null", 1, None),
        ("code", "unique", 2, "a"),
        ("patent_type", "accepted_values: invention, utility_model, design", 1, "junk"),
        ("flag", "accepted_values: 0, 1", 1, "2"),
        ("year", "accepted_range: >= 2008, <= 2022", 2, "1999"),
        ("citations", "accepted_range: >= 0", 1, "-1"),
    }


def test_primary_key_fails_on_null_and_repeated_keys(fixture_run):
    result = _test(fixture_run, "primary_key", "bad")
    assert result["status"] == "fail"
    assert _rows(fixture_run, result) == {(2, 2, "unique"), (None, 1, "not_null: id")}
    seed = _test(fixture_run, "primary_key", "listed")
    assert _rows(fixture_run, seed) == {(1, "x", 2, "unique"), (2, None, 1, "not_null: k2")}
    assert _rows(fixture_run, _test(fixture_run, "column_checks", "listed")) == {("label", "not_null", 1, None)}


def test_merged_row_set_rules_fail_on_exactly_the_planted_rows(fixture_run):
    """column_checks' primary_key (null keys apart from repeats), unique_combination (nulls grouped,
    expressions allowed), relationships (nulls ignored), expression_is_true (null fails; where)
    and equal_row_count (with compare_where): one row per broken rule, counts worked out by hand
    above."""
    result = _test(fixture_run, "merged_checks", "keyed")
    assert result["status"] == "fail" and result["failures"] == 10
    assert re.search(r"with model_rows as materialized \(\s*select \*\s", result["compiled_code"])  # expressions: all columns
    good = _test(fixture_run, "merged_checks", "good")["compiled_code"]
    assert "model_rows" not in good and "from \"warehouse\"" in good  # a table is read where it is
    rows = _rows(fixture_run, result)
    relationship = [row for row in rows if row[1].startswith("relationships: ")]
    assert [(row[0], row[2], row[3]) for row in relationship] == [("code", 1, "x")]
    assert relationship[0][1].startswith("relationships: code of ") and relationship[0][1].endswith('codes"')
    assert {row for row in rows if not row[1].startswith(("relationships: ", "equal_row_count: "))} == {
        ("k", "primary_key: not_null", 2, None),
        ("k", "primary_key: unique", 2, "1"),
        ("code", "unique_combination", 4, "a"),
        ("k, coalesce(flag, 0)", "unique_combination", 2, "null, 1"),
        ("", "expression_is_true: n >= 0", 1, None),
        ("", "expression_is_true: n < 6 where flag = 1", 1, None),
        ("", "expression_is_true: flag = 1", 2, None),
    }
    counts = sorted((row[2], row[3]) for row in rows if row[1].startswith("equal_row_count: "))
    assert counts == [(2, "5 rows, compared with 3"), (4, "5 rows, compared with 1")]
    assert any(row[1].endswith(" where code = 'a'") for row in rows)


def test_source_tables_are_checked_where_they_are_read(fixture_run):
    result = _test(fixture_run, "source_column_checks", "landed_rows")
    assert result["status"] == "fail"
    assert _rows(fixture_run, result) == {("a", "not_null", 2, None)}


def test_the_build_message_names_column_rule_and_example(fixture_run, monkeypatch, tmp_path):
    """keytech build's failure message: each failed test with its first failing rows, read from
    the built file; a source test's relative landing path resolves from the file's folder (the
    message is built from another working directory)."""
    monkeypatch.chdir(tmp_path)
    lines = _failed_nodes(fixture_run["project"], fixture_run["db"])
    text = "\n".join(lines)
    assert "column_name='patent_type', rule='accepted_values: invention, utility_model, design', " \
           "failing_rows=1, example_value='junk'" in text, text
    assert "column_name='a', rule='not_null', failing_rows=2, example_value=None" in text, text
    assert "id=None, n_rows=1, rule='not_null: id'" in text, text
    assert "column_name='code', rule='relationships: code of " in text and "example_value='x'" in text, text
    assert "column_name='k', rule='primary_key: unique', failing_rows=2, example_value='1'" in text, text
    assert "could not list" not in text, text
    failed = [line for line in lines if not line.startswith("    ")]
    assert len(failed) == 6 and all(": fail — Got " in line for line in failed), failed


def _pilot_waves_failures(seed_edit: str = "", landed_edit: str = "") -> set[tuple]:
    """tests/data_tests/assert_pilot_waves_match_published.sql (the seed and the landed dates
    against Table 1, one node since issue 17) on the real seed and a pilot list with one row per
    wave at the published date, each edited by the given SQL; its (wave, failure) rows."""
    sql = (ROOT / "tests" / "data_tests" / "assert_pilot_waves_match_published.sql").read_text(encoding="utf-8")
    sql = re.sub(r"\{\{\s*ref\('(\w+)'\)\s*\}\}", r"\1", sql)
    assert "{{" not in sql
    with duckdb.connect() as con:
        con.execute("create table pilot_waves as select wave::integer as wave, announcement_date::date as "
                    "announcement_date, pilot_units::integer as pilot_units, new_pilot_cities::integer as "
                    f"new_pilot_cities from read_csv('{ROOT / 'seeds' / 'pilot_waves.csv'}', all_varchar = true)")
        con.execute("create table stg_miit__pilot_projects as select wave, announcement_date, 'unit' as unit_name "
                    "from pilot_waves")
        for statement in (seed_edit, landed_edit):
            if statement:
                con.execute(statement)
        return set(con.execute(sql).fetchall())


def test_pilot_waves_test_fires_on_each_planted_mismatch():
    """The merged singular test keeps both former tests (assert_pilot_wave_seed_matches_published,
    assert_pilot_wave_dates_match_published): silent on the published seed and matching dates, and
    fails on a changed count, a missing seed wave, a second or a wrong landed date, a null date
    and an unknown landed wave."""
    assert _pilot_waves_failures() == set()
    seed_changed = _pilot_waves_failures("update pilot_waves set pilot_units = 65 where wave = 2016")
    assert seed_changed == {(2016, "seed pilot_waves differs from the published Table 1"),
                            (None, "seed totals are not 306 units / 116 cities")}
    missing = _pilot_waves_failures("delete from pilot_waves where wave = 2018")
    assert {wave for wave, _ in missing} == {2018, None}
    assert (2018, "landed wave 2018: 1 announcement date(s), first 2018-07-31; published no such wave") in missing
    second_date = _pilot_waves_failures(landed_edit="insert into stg_miit__pilot_projects values (2017, date '2017-10-01', 'u2')")
    assert second_date == {(2017, "landed wave 2017: 2 announcement date(s), first 2017-09-29; published 2017-09-29")}
    wrong_date = _pilot_waves_failures(landed_edit="update stg_miit__pilot_projects set announcement_date = date '2015-07-22' "
                                                   "where wave = 2015")
    assert wrong_date == {(2015, "landed wave 2015: 1 announcement date(s), first 2015-07-22; published 2015-07-21")}
    null_date = _pilot_waves_failures(landed_edit="update stg_miit__pilot_projects set announcement_date = null where wave = 2016")
    assert null_date == {(2016, "landed wave 2016: 0 announcement date(s), first none; published 2016-06-17")}
    unknown = _pilot_waves_failures(landed_edit="insert into stg_miit__pilot_projects values (2019, date '2019-05-01', 'u')")
    assert unknown == {(2019, "landed wave 2019: 1 announcement date(s), first 2019-05-01; published no such wave")}
