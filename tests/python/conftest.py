"""Shared fixtures: a minimal hand-written raw folder that satisfies the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

MINIMAL_RAW = {
    "firm_info.csv": (
        "Stkcd,Accper,Stknme,Nnindcd,Provnm,Ctnm,Estbdt,Listdt,Statco,Delistdt,Stflg,Ownership\n"
        "证券代码,统计截止日期,证券简称,行业代码,省份,城市,成立日期,上市日期,上市状态,退市日期,ST标识,股权性质\n"
        "没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位\n"
        "000001,2015-12-31,甲公司,C39,广东,深圳,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "000001,2016-12-31,甲公司,C39,广东,深圳,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "600001,2015-12-31,乙公司,C35,江苏省,南京市,1998-03-01,2001-02-01,正常上市,,ST,国有企业\n"
    ),
    "balance_sheet.csv": (
        "Stkcd,Accper,Typrep,A001000000,A002000000\n"
        "1,2015-12-31,A,1000000000,400000000\n"
        "1,2016-12-31,A,1100000000,420000000\n"
        "600001,2015-12-31,A,2000000000,900000000\n"
    ),
    "income_statement.csv": (
        "Stkcd,Accper,Typrep,B001101000,B002000000\n"
        "000001,2015-12-31,A,800000000,50000000\n"
        "000001,2016-12-31,A,850000000,52000000\n"
        "600001,2015-12-31,A,1500000000,-1000000\n"
    ),
    "cash_flow.csv": (
        "Stkcd,Accper,Typrep,C001000000\n"
        "000001,2015-12-31,A,60000000\n"
        "000001,2016-12-31,A,61000000\n"
        "600001,2015-12-31,A,70000000\n"
    ),
    "patents.csv": (
        "Scode,ApplyNo,ApplyDate,PatentType,IPC,Applicants,GrantDate,CitedTimes\n"
        "000001,CN201510000001.1,2015-03-01,发明,H04L 27/26;G06F17/30,甲公司,2017-05-01,3\n"
        "000001,CN201510000001.1,2015-03-01,发明,H04L 27/26;G06F17/30,甲公司,2017-05-01,3\n"
        "600001,CN201520000002.X,2015/04/02,实用新型,A47J27/00,乙公司;某大学,,0\n"
    ),
    "city_yearbook.csv": (
        "城市,年份,人均地区生产总值(元),年末户籍人口(万人),互联网宽带接入用户数(万户),"
        "地方一般公共预算支出(万元),当年实际使用外资金额(万美元)\n"
        "单位,年,元,万人,万户,万元,万美元\n"
        "深圳,2015,150000,350,500,35000000,650000\n"
        "南京市,2015,120000,650,300,11000000,330000\n"
    ),
    "pilot_list.csv": (
        "Wave,AnnounceDate,ProjectName,UnitName,Province,City,Category,Stkcd\n"
        "2015,2015-07-21,某智能工厂试点示范,丙公司,广东省,深圳市,流程制造,\n"
    ),
}


def write_raw(folder: Path, files: dict[str, str] | None = None, encodings: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or MINIMAL_RAW).items():
        encoding = (encodings or {}).get(name, "utf-8")
        (folder / name).write_bytes(text.encode(encoding))
    return folder


@pytest.fixture
def minimal_raw(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw", encodings={"city_yearbook.csv": "gbk"})
