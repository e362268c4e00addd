"""Issue 12 §3: city names valid by year → one consistent prefecture geography.

* ``seeds/city_name_history.csv`` equals what ``keytech.geography`` derives from the division-code
  history seed (no hand edits drift in).
* The known changes inside 2008–2022 resolve in ``intermediate.int_city_names_by_year`` to the
  panel city of the record's year; a county (浦东新区) to its prefecture; an ambiguous county name
  (市中区) to nothing.
* On a built folder: firm rows naming 襄樊 (2009) and 铜仁地区 (2010), a yearbook row naming 巢湖市
  in 2010, and a pilot row in 浦东新区 resolve; an unknown name is quarantined with the reason."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pytest

from conftest import MINIMAL_RAW, write_raw
from keytech import paths
from keytech.build import BuildOptions, build_warehouse
from keytech.geography import HISTORY_COLUMNS, city_name_history

KNOWN = [  # (name, year, panel city)
    ("襄樊市", 2009, "420600"), ("襄樊", 2009, "420600"), ("襄阳市", 2012, "420600"),
    ("巢湖市", 2010, "340100"), ("巢湖", 2010, "340100"), ("巢湖市", 2012, "340100"),
    ("铜仁地区", 2010, "520600"), ("毕节地区", 2010, "520500"), ("海东地区", 2012, "630200"),
    ("日喀则地区", 2013, "540200"), ("昌都地区", 2013, "540300"), ("林芝地区", 2014, "540400"),
    ("吐鲁番地区", 2014, "650400"), ("山南地区", 2015, "540500"), ("哈密地区", 2015, "650500"),
    ("那曲地区", 2016, "540600"), ("莱芜市", 2017, "370100"), ("莱芜", 2015, "370100"),
    ("莱芜市", 2019, "370100"),  # printed after its abolition: the only city it ever named since 2000
    ("浦东新区", 2016, "310000"), ("居巢区", 2009, "340100"), ("深圳", 2015, "440300"),
]


def test_seed_equals_the_derivation():
    with open(paths.seeds_dir() / "city_name_history.csv", encoding="utf-8", newline="") as handle:
        seed = [{k: row[k] for k in HISTORY_COLUMNS} for row in csv.DictReader(handle)]
    derived = [{k: str(row[k]) for k in HISTORY_COLUMNS} for row in city_name_history()]
    assert seed == derived


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = Path(tmp_path_factory.mktemp("city_names"))
    files = dict(MINIMAL_RAW)
    files["firm_info.csv"] += (
        "000002,2009-12-31,丙公司,C39,湖北,襄樊,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "000002,2010-12-31,丙公司,C39,湖北,襄阳,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "000003,2010-12-31,丁公司,C39,贵州,铜仁地区,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "000004,2010-12-31,戊公司,C39,山东,市中区,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
    )
    files["city_yearbook.csv"] += "巢湖市,2010,20000,460,50,2000000,10000\n"
    files["pilot_list.csv"] += "2015,2015-07-21,某智能工厂试点示范,丁公司,上海市,浦东新区,离散制造,\n"
    raw = write_raw(root / "raw", files, encodings={"city_yearbook.csv": "gbk"})
    db = root / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing", warehouse=db, quiet=True))
    return db


def _q(db: Path, sql: str, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


@pytest.mark.slow
@pytest.mark.parametrize("name, year, city", KNOWN)
def test_known_changes_resolve_by_year(built, name, year, city):
    rows = _q(built, "select city_code from intermediate.int_city_names_by_year where lookup_name = ? and year = ?",
              [name, year])
    assert rows == [(city,)]


@pytest.mark.slow
def test_ambiguous_county_name_resolves_to_nothing(built):
    assert _q(built, "select count(*) from intermediate.int_city_names_by_year where lookup_name = '市中区'") == [(0,)]


@pytest.mark.slow
def test_records_named_as_in_their_year_land_in_one_geography(built):
    firms = _q(built, "select stkcd, year, city_code from intermediate.int_firm_years_city_matched "
                      "where stkcd in ('000002', '000003', '000004') order by 1, 2")
    assert firms == [("000002", 2009, "420600"), ("000002", 2010, "420600"), ("000003", 2010, "520600"),
                     ("000004", 2010, None)]
    assert _q(built, "select city_code from intermediate.int_city_years_matched where city_name_raw = '巢湖市'") \
        == [("340100",)]
    assert _q(built, "select city_code from intermediate.int_pilot_projects_city_matched "
                     "where city_name_raw = '浦东新区'") == [("310000",)]
    quarantined = _q(built, "select value, reason from marts.rpt_quarantine where rejection_code = 'unknown_city'")
    assert [v for v, _ in quarantined] == ["市中区"]
    assert "city_name_history" in quarantined[0][1]
