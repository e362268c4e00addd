"""Issue 12 §3 in the warehouse: CNIPA/CNRDS forms on a built minimal folder.

* IPC with edition and attached marker (``H01L21/00(2006.01)I``), ``、`` and whitespace separators
  parse; the patent is kept with all its codes.
* The same application in two extracts' forms (``CN201510000001.1`` and ``2015100000011``) is one
  patent (merged as an exact duplicate), not two.
* A design patent's Locarno class (``14-03``) is not tokenised as IPC, not quarantined, and the
  patent is counted once (kept) in the reconciliation."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from conftest import MINIMAL_RAW, write_raw
from keytech.build import BuildOptions, build_warehouse

pytestmark = pytest.mark.slow

PATENTS = (
    "Scode,ApplyNo,ApplyDate,PatentType,IPC,Applicants,GrantDate,CitedTimes\n"
    "000001,CN201510000001.1,2015-03-01,发明,H01L21/00(2006.01)I;G06F17/30(2006.01)I,甲公司,2017-05-01,3\n"
    "000001,2015100000011,2015-03-01,发明,H01L21/00(2006.01)I;G06F17/30(2006.01)I,甲公司,2017-05-01,3\n"
    "000001,CN201510000002.X,2015-04-01,发明,H04L 27/26 G06F 17/30、A47J27/00,甲公司,,0\n"
    "600001,CN201530000003.5,2015-05-01,外观设计,14-03,乙公司,2015-10-01,0\n"
    "600001,201530000004,2015-06-01,外观设计,LOC (12) Cl. 12-08,乙公司,,0\n"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = Path(tmp_path_factory.mktemp("patent_forms"))
    files = dict(MINIMAL_RAW, **{"patents.csv": PATENTS})
    raw = write_raw(root / "raw", files, encodings={"city_yearbook.csv": "gbk"})
    db = root / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing", warehouse=db, quiet=True))
    return db


def _q(db: Path, sql: str):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_published_ipc_forms_are_kept_with_all_codes(built):
    rows = _q(built, "select patent_id, ipc_position, ipc_code from marts.fct_patent_ipc_codes order by 1, 2")
    assert rows == [
        ("000001:CN201510000001", 1, "H01L21/00"), ("000001:CN201510000001", 2, "G06F17/30"),
        ("000001:CN201510000002", 1, "H04L27/26"), ("000001:CN201510000002", 2, "G06F17/30"),
        ("000001:CN201510000002", 3, "A47J27/00"),
    ]


def test_one_application_in_two_forms_is_one_patent(built):
    patents = _q(built, "select patent_id from marts.fct_patents order by 1")
    assert [p[0] for p in patents] == ["000001:CN201510000001", "000001:CN201510000002",
                                       "600001:CN201530000003", "600001:CN201530000004"]
    dispositions = dict(_q(built, "select disposition, sum(raw_rows) from marts.rpt_patent_reconciliation group by 1"))
    assert dispositions == {"kept": 4, "merged_duplicate": 1}


def test_design_locarno_classes_are_not_ipc_and_not_quarantined(built):
    assert _q(built, "select count(*) from marts.rpt_quarantine where source_table = 'patents'") == [(0,)]
    assert _q(built, "select locarno_class from staging.stg_cnrds__patents where patent_type = 'design' "
                     "order by _source_row") == [("14-03",), ("LOC (12) Cl. 12-08",)]
    assert _q(built, "select count(*) from intermediate.int_patent_ipc_tokens_parsed as tokens "
                     "inner join staging.stg_cnrds__patents as staged using (_source_file, _source_row) "
                     "where staged.patent_id like '600001:%'") == [(0,)]
