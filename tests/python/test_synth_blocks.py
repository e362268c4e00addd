"""The patents table written block by block (issue 17: at xl the whole table as Python strings took
9 GiB) and the calendar per scale (xl: 2008-2024).

Two independent checks that streaming changed no byte:

* the block writers against the whole-table writers on the same world (``write_csv`` of the whole
  frame, ``pq.write_table`` of the whole table with the same row-group size), with blocks much
  smaller than the table so that many block boundaries are crossed;
* the files of ``keytech synth --scale tiny --seed 20250101`` against digests frozen from the code
  before the change (commit e5aa20b, the generator that built the whole patents frame in memory).
  Made with::

      git worktree add /tmp/kt-e5aa20b e5aa20b && cd /tmp/kt-e5aa20b && make venv
      .venv/bin/keytech synth -q --scale tiny --seed 20250101 --out /tmp/tiny
      cd /tmp/tiny && sha256sum *

  (the same run at small and paper scale gave byte-identical files too: docs/performance.md). A
  deliberate change of the generator changes these digests: regenerate them with the commands
  above on the new code and say why in the commit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from keytech.synth import SCALES, Rates, build_world, generate
from keytech.synth.columns import names, types
from keytech.synth.writers import _arrow_table, write_csv, write_csv_blocks, write_parquet_blocks

# sha256 of every file, code of e5aa20b (see the module docstring); _truth.json holds floats that
# numpy computes with OpenBLAS, so its digest needs the Haswell kernels keytech pins on AVX2 machines
FROZEN_TINY_20250101 = {
    "_truth.json": "e080759fbedd3830404cd5012ab3b386ce7edef61a57941aea325b67a9770539",
    "annual_report_keywords.csv": "e31f5d768705c0ac624c6c1a5bc32f59c918bf82e8c25b92d951ed6a2c9576d8",
    "balance_sheet.csv": "dbbe2b87a2ca643986ea52e37e7fd8ac37e412e6f6c39cb0943c41f85787b9d8",
    "cash_flow.csv": "ed15a874ca1533053e5759b56359d6ba878f1bf446cb0170b0beb480803e42ac",
    "city_yearbook.csv": "457db4db26255421c678a017cc2b2a47d42ac1dd0d010f76e99937f1397fdde9",
    "firm_info.csv": "06a3de9b8ad9b69a9261e66e230ad22e6390dd5e49066f8c592ba1f804c2923d",
    "income_statement.csv": "be541d3494ac4b3acfda262e60589f41ce3c77a794305c5eafec699e16b09a69",
    "industry_employment.csv": "f815c1a66035f538a9c8acc69e228830e3f85474ff83292d8621fdbbdec378b8",
    "national_internet_users.csv": "0ace446451170c8d03035a02e24552b3f1eb001fc305754893e46a4b14edec31",
    "patents.csv": "60d924af517c3d46b7d70f2939b34823763b5ead511f7507acccc46a9fcbe607",
    "pilot_list.csv": "8ced0de98ba4f2396ab98d7a7d04e0cccc7024462398e2ac97629a44e60b8675",
    "region_robot_density.csv": "86c39d6d4fac6a2e7217ccf403569d3c2203f8408a62d1430c3237ace7148398",
    "subsidy_detail.csv": "8b7bf568c34a13e4983a88c2d430146d2c54e6a8bcf70e977793afb866492ee8",
    "us_industry_robots.csv": "98c8829310c58476f43c7783650441bd6c7e55d506a87bda8b86d40177f23b50",
}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world():
    return build_world("tiny", 1)


def test_tiny_files_match_digests_frozen_before_streaming(tmp_path):
    generate("tiny", 20250101, tmp_path, progress=False)
    got = {p.name: _sha(p) for p in sorted(tmp_path.iterdir())}
    assert got == FROZEN_TINY_20250101


def test_csv_blocks_equal_the_whole_frame_written_at_once(world, tmp_path):
    whole = world.patents
    assert len(whole) == len(world.patent_table) > 5000
    write_csv(whole, tmp_path / "whole.csv", "utf-8")
    write_csv_blocks(names("patents"), world.patent_table.blocks(997), tmp_path / "blocks.csv", "utf-8")
    assert (tmp_path / "blocks.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_parquet_blocks_equal_the_whole_table_written_at_once(world, tmp_path, monkeypatch):
    import keytech.synth.writers as writers

    rows = 1000  # row groups (and blocks) of 1,000 rows: many groups on the tiny table
    monkeypatch.setattr(writers, "PARQUET_ROW_GROUP", rows)
    column_types = types("patents")
    pq.write_table(_arrow_table(world.patents, column_types), tmp_path / "whole.parquet",
                   compression="zstd", row_group_size=rows)
    write_parquet_blocks(world.patent_table.blocks(rows), tmp_path / "blocks.parquet", column_types)
    assert pq.ParquetFile(tmp_path / "blocks.parquet").metadata.num_row_groups == -(-len(world.patents) // rows)
    assert (tmp_path / "blocks.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_blocks_cover_every_row_once_in_order(world):
    whole = world.patents
    parts = list(world.patent_table.blocks(1234))
    assert [len(p) for p in parts[:-1]] == [1234] * (len(parts) - 1)
    pd.testing.assert_frame_equal(pd.concat(parts), whole)
    # duplicates repeat their application's row, the planted status is aligned with the rows
    dup = world.patents_duplicate
    assert dup.sum() >= 5 and whole[dup].drop_duplicates().merge(whole[~dup]).shape[0] == dup.sum()


def test_xl_calendar_is_2008_2024_and_the_others_2022():
    xl = SCALES["xl"]
    assert (xl.years == np.arange(2008, 2025)).all() and xl.extraction_date == "2024-12-31"
    assert len(Rates().year_effects) + len(xl.later_year_effects) == len(xl.years)
    for name in ("tiny", "small", "paper"):
        assert SCALES[name].last_year == 2022 and SCALES[name].later_year_effects == ()


def test_the_calendar_reaches_every_table(tmp_path, monkeypatch):
    """A tiny world on xl's calendar: firm-years, yearbook, IV series and patents reach 2024."""
    xl = SCALES["xl"]
    cal = dataclasses.replace(SCALES["tiny"], name="tiny_to_2024", last_year=xl.last_year,
                              later_year_effects=xl.later_year_effects)
    monkeypatch.setitem(SCALES, cal.name, cal)
    truth = generate(cal.name, 1, tmp_path, progress=False)
    assert truth["years"] == [2008, 2024] and truth["extraction_date"] == "2024-12-31"
    assert truth["year_effects_after_2022"] == [1.05, 1.04]
    firm_info = pd.read_csv(tmp_path / "firm_info.csv", encoding="utf-8-sig", dtype=str, skiprows=[1, 2])
    assert firm_info["Accper"].str[:4].astype(int).max() == 2024
    yearbook = pd.read_csv(tmp_path / "city_yearbook.csv", encoding="gbk", dtype=str, skiprows=[1])
    assert sorted(set(yearbook.iloc[:, 1].astype(int))) == list(range(2008, 2025))
    users = pd.read_csv(tmp_path / "national_internet_users.csv")
    assert users["Year"].max() == 2024
    patents = pd.read_csv(tmp_path / "patents.csv", dtype=str, keep_default_na=False)
    years = patents["ApplyDate"].str[:4].astype(int)
    assert years.max() == 2024 and (years >= 2023).sum() > 0.05 * (years >= 2008).sum()
    granted = patents["GrantDate"] != ""
    assert (patents.loc[granted, "GrantDate"] <= "2024-12-31").all()
    assert json.loads((tmp_path / "_truth.json").read_text(encoding="utf-8"))["years"] == [2008, 2024]


def test_panel_end_year_reaches_dbt_and_the_checks(tmp_path):
    """The xl window (2024) goes to dbt as panel_end_year and back to the GX checks through the
    warehouse's build state; a build without it keeps dbt_project.yml's 2022 everywhere."""
    import duckdb

    from keytech.build import BuildOptions, dbt_vars
    from keytech.quality import PANEL_END_YEAR, SUITES, panel_end_year, suites_for

    base = dict(raw_dir=tmp_path / "raw", landing_dir=tmp_path / "landing", warehouse=tmp_path / "w.duckdb")
    assert "panel_end_year" not in dbt_vars(BuildOptions(**base))
    assert dbt_vars(BuildOptions(**base, panel_end_year=2024))["panel_end_year"] == 2024

    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert panel_end_year(con) == 2022  # no build state: dbt_project.yml's default
    con.execute("create schema build_meta")
    con.execute("create table build_meta.build_state (built_at timestamp, state varchar)")
    con.execute("insert into build_meta.build_state values (current_timestamp, ?)",
                [json.dumps({"vars": {"landing_dir": "x"}})])
    assert panel_end_year(con) == 2022
    con.execute("update build_meta.build_state set state = ?",
                [json.dumps({"vars": dbt_vars(BuildOptions(**base, panel_end_year=2024))})])
    assert panel_end_year(con) == 2024
    con.close()

    bounds = {(m, k["column"]): k["max_value"] for m, exps in suites_for(2024).items()
              for name, k in exps if name == "ExpectColumnValuesToBeBetween" and k["column"] in ("year", "application_year")}
    # the panel window moves, the 2010-2019 sample window of rpt_analysis_panel does not
    assert bounds == {("fct_firm_years", "year"): 2024, ("fct_patents", "application_year"): 2024,
                      ("rpt_analysis_panel", "year"): 2019}
    # the marker is the only thing filled in: the default window gives the suites with 2022 there
    marked = {(m, k["column"]) for m, exps in SUITES.items() for _, k in exps
              if any(v is PANEL_END_YEAR for v in k.values())}
    assert marked == {("fct_firm_years", "year"), ("fct_patents", "application_year")}
    as_2022 = {m: [(n, {key: 2022 if v is PANEL_END_YEAR else v for key, v in k.items()}) for n, k in exps]
               for m, exps in SUITES.items()}
    assert suites_for(2022) == as_2022
