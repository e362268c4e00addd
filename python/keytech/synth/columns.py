"""Column names, vendor label rows and types of the raw files the generator writes, read from the
input contract (``keytech/contract.yml``): the contract is the one list of each table's columns.

* ``names(table)``: the contract columns in contract order (every file's header; the yearbook's
  header is ``labels``).
* ``labels(table)``: each column's first alias, its Chinese vendor label (证券代码, 资产总计,
  人均地区生产总值(元), …): the CSMAR label row under the header and the yearbook header.
* ``csmar_units(table)``: the CSMAR unit row (元 for ``number`` columns, 没有单位 otherwise).
* ``yearbook_units()``: the yearbook's unit row (单位, then the unit in each label's brackets).
* ``frame(table, data)``: the table's frame from values keyed by contract column, refusing a key
  the contract does not have or a contract column without values.

The generator still names the columns whose values it computes (``"A001000000": assets``): the
contract says what a field holds, the generator how it is drawn; ``frame`` keeps the two lists
equal.
"""

from __future__ import annotations

import re
from functools import cache

import pandas as pd

from keytech.contract import Table, load_contract

CORE_TABLES = ("firm_info", "balance_sheet", "income_statement", "cash_flow", "patents", "city_yearbook",
               "pilot_list")  # the plug-in worlds add their own (keytech.synth.generator.TABLES)
CSMAR_TABLES = ("firm_info", "balance_sheet", "income_statement", "cash_flow")  # two label rows
# Encodings of the synthetic files (vendor habits the ingest must cope with; not in the contract)
FILE_ENCODING = {
    "firm_info": "utf-8-sig", "balance_sheet": "utf-8-sig", "income_statement": "utf-8",
    "cash_flow": "utf-8", "patents": "utf-8", "pilot_list": "utf-8", "city_yearbook": "gbk",
}


@cache
def _table(table: str) -> Table:
    return load_contract()[table]


def names(table: str) -> list[str]:
    return [c.name for c in _table(table).columns]


def types(table: str) -> dict[str, str]:
    return {c.name: c.type for c in _table(table).columns}


def labels(table: str) -> list[str]:
    out = []
    for c in _table(table).columns:
        if not c.aliases:
            raise ValueError(f"contract.yml: {table}.{c.name} has no alias, so no vendor label to print")
        out.append(c.aliases[0])
    return out


def csmar_units(table: str) -> list[str]:
    return ["元" if c.type == "number" else "没有单位" for c in _table(table).columns]


def yearbook_units() -> list[str]:
    units = ["单位", ""]  # the row's name under CityName; the year has no unit
    for label in labels("city_yearbook")[2:]:
        m = re.search(r"\((.+)\)$", label)
        if not m:
            raise ValueError(f"contract.yml: city_yearbook label {label!r} prints no unit in brackets")
        units.append(m.group(1))
    return units


def frame(table: str, data: dict) -> pd.DataFrame:
    """``pd.DataFrame(data)`` with the contract's columns in contract order."""
    want = names(table)
    if set(data) != set(want):
        raise ValueError(f"synthetic {table}: columns {sorted(set(data) - set(want))} are not in contract.yml, "
                         f"{sorted(set(want) - set(data))} of contract.yml get no values")
    return pd.DataFrame({k: data[k] for k in want})
