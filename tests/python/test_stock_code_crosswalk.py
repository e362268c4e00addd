"""Issue 12 §3: stock codes that changed (the Beijing Stock Exchange moved its 43/83/87 codes to
920 codes in October 2025) keep one firm identity across vintages of CSMAR and CNRDS extracts.

* The seed ``seeds/stock_code_crosswalk.csv``: 6-digit codes, unique old codes, no chains or
  cycles (a new code is never an old code), every row cited; the bundled pairs follow the pattern
  of the published BSE list (920 + the old code's last three digits), which catches a mistyped row.
* A raw folder where one BSE firm appears under its old code 839729 in one firm_info vintage, the
  balance sheets, the cash flows and a patent, and under its new code 920729 in a later firm_info
  vintage, the income statements and a repeat of the same patent, builds into one firm 920729:
  financials of both codes join its firm-years, the repeated firm-year of the two vintages is
  kept once, the patent is counted once.
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from conftest import MINIMAL_RAW, write_raw
from keytech import paths
from keytech.build import BuildOptions, build_warehouse

OLD, NEW = "839729", "920729"  # 永顺生物, a published pair of the seed


def _crosswalk() -> list[dict]:
    with open(paths.seeds_dir() / "stock_code_crosswalk.csv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_crosswalk_seed_is_well_formed():
    rows = _crosswalk()
    assert rows and set(rows[0]) == {"old_code", "new_code", "effective_date", "exchange", "security_name", "source"}
    old = [r["old_code"] for r in rows]
    assert len(old) == len(set(old)), "old_code must be unique"
    assert all(r["old_code"].isdigit() and len(r["old_code"]) == 6 for r in rows)
    assert all(r["new_code"].isdigit() and len(r["new_code"]) == 6 for r in rows)
    assert not {r["new_code"] for r in rows} & set(old), "a new_code is also an old_code (chain or cycle)"
    assert all(r["old_code"] != r["new_code"] and r["source"].strip() for r in rows)
    bse = [r for r in rows if r["exchange"] == "BSE"]
    assert bse and all(r["old_code"][:2] in ("43", "83", "87") and r["new_code"] == "920" + r["old_code"][3:]
                       and r["effective_date"] == "2025-10-09" for r in bse)
    assert (OLD, NEW) in {(r["old_code"], r["new_code"]) for r in rows}


FIRM_HEADER = MINIMAL_RAW["firm_info.csv"].split("\n", 3)[:3]


def _firm(code: str, year: int) -> str:
    return f"{code},{year}-12-31,永顺生物,C27,广东,深圳,2002-01-01,2020-07-27,正常上市,,,民营企业\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = Path(tmp_path_factory.mktemp("crosswalk"))
    files = dict(MINIMAL_RAW)
    # the 2024 vintage prints the old code (for 2015 and 2016), the 2025 vintage the new one (2016)
    files["firm_info.csv"] += _firm(OLD, 2015) + _firm(OLD, 2016)
    files["firm_info_vintage2025.csv"] = "\n".join(FIRM_HEADER) + "\n" + _firm(NEW, 2016)
    files["balance_sheet.csv"] += f"{OLD},2015-12-31,A,500000000,100000000\n{OLD},2016-12-31,A,550000000,110000000\n"
    files["income_statement.csv"] += f"{NEW},2015-12-31,A,300000000,20000000\n{NEW},2016-12-31,A,320000000,21000000\n"
    files["cash_flow.csv"] += f"{OLD},2015-12-31,A,9000000\n{OLD},2016-12-31,A,9500000\n"
    files["patents.csv"] += (f"{OLD},CN201510999999.9,2015-06-01,发明,H04L27/26,永顺生物,,0\n"
                             f"{NEW},CN201510999999.9,2015-06-01,发明,H04L27/26,永顺生物,,0\n")
    raw = write_raw(root / "raw", files, encodings={"city_yearbook.csv": "gbk"})
    db = root / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing", warehouse=db, quiet=True))
    return db


def _q(db: Path, sql: str):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.slow
def test_old_and_new_code_build_into_one_firm(built):
    assert _q(built, f"select stkcd, n_firm_years from marts.dim_firms where stkcd in ('{OLD}', '{NEW}')") \
        == [(NEW, 2)]
    rows = _q(built, f"select stkcd, year, size, sale, operating_cash_flow from marts.fct_firm_years "
                     f"where stkcd in ('{OLD}', '{NEW}') order by year")
    # total assets and cash flow came under the old code, revenue under the new one
    assert rows == [(NEW, 2015, 500000000.0, 300000000.0, 9000000.0), (NEW, 2016, 550000000.0, 320000000.0, 9500000.0)]
    for schema_table in ("staging.stg_csmar__firm_years", "staging.stg_csmar__balance_sheets",
                         "staging.stg_csmar__income_statements", "staging.stg_cnrds__patents", "marts.fct_patents"):
        assert _q(built, f"select count(*) from {schema_table} where stkcd = '{OLD}'") == [(0,)], schema_table


@pytest.mark.slow
def test_same_firm_year_and_patent_under_both_codes_count_once(built):
    # 2016 is in both firm_info vintages (old code, new code): one firm-year, the other quarantined
    assert _q(built, f"select count(*) from intermediate.int_firm_years_city_matched "
                     f"where stkcd = '{NEW}' and year = 2016") == [(2,)]
    assert _q(built, f"select count(*) from marts.fct_firm_years where stkcd = '{NEW}' and year = 2016") == [(1,)]
    # the repeat is quarantined (the later vintage file's row is kept: the firm-year key rule)
    assert _q(built, "select _source_file from marts.rpt_quarantine where rejection_code = 'duplicate_firm_year'") \
        == [("firm_info.csv",)]
    # the application filed under both codes is one patent of the firm
    assert _q(built, f"select count(*) from marts.fct_patents where stkcd = '{NEW}'") == [(1,)]
    assert _q(built, f"select apply_inv_zl + apply_inv_nozl from marts.fct_firm_years "
                     f"where stkcd = '{NEW}' and year = 2015") == [(1,)]
