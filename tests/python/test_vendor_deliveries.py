"""Issue 12 §1 done-when: a raw folder as CSMAR and CNRDS deliver it builds with no mapping file,
and its panel equals the one built from the same data as clean one-file-per-table CSVs.

The clean folder is the tiny synthetic one (``keytech synth``). The vendor folder holds the same
data as:
* ``STK_LISTEDCOINFOANL.zip``: an ``.xlsx`` with three header rows (field code, Chinese label,
  unit), stock codes stored as numbers, cities named as in their own year (襄樊 before 2010, 毕节地区
  before 2011) or by county (浦东新区), a ``[DES][csv].txt`` description file and a copyright PDF;
* ``FS_Combas_2000_2015.zip`` + ``FS_Combas_2016_2024.zip``: GBK CSVs with table-prefixed columns
  (``FS_Combas-A001000000``), split by period, overlapping in one year (identical rows: landed once);
* ``FS_Comins.xlsx`` (three header rows, integer stock codes) and ``FS_Comscfd.txt`` (UTF-16,
  tab-separated, as Excel saves 'Unicode text');
* ``patents_2008_2015.csv`` + ``patents_2016_2022.csv``: split by application year; the later file
  prints IPC as CNIPA does (``H04L27/26(2006.01)I、…``) and repeats some applications of the earlier
  one with application numbers in another CNIPA form (merged, not double counted).
"""

from __future__ import annotations

import codecs
import csv
import io
import shutil
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import duckdb
import pytest

from keytech.build import BuildOptions, build_warehouse
from keytech.ipc import normalise_ipc_code

pytestmark = pytest.mark.slow

DES = ("Stkcd [证券代码] - 以上交所、深交所公布的证券代码为准\n"
       "Accper [统计截止日期] - 以YYYY-MM-DD表示\n"
       "Ctnm [所属城市] - 注册地所在城市\n")


def _rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def _cell(ref: str, value: str, numeric: bool) -> str:
    if numeric:
        return f'<c r="{ref}"><v>{value}</v></c>'
    return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(value)}</t></is></c>'


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def xlsx_bytes(rows: list[list[str]], numeric_columns: set[int], header_rows: int) -> bytes:
    """A minimal .xlsx (inline strings; the numeric columns stored as numbers below the header rows)."""
    sheet_rows = []
    for r, row in enumerate(rows, start=1):
        cells = "".join(
            _cell(f"{_column_letter(c)}{r}", value,
                  numeric=c in numeric_columns and r > header_rows and value.strip().lstrip("-").isdigit())
            for c, value in enumerate(row) if value != "")
        sheet_rows.append(f'<row r="{r}">{cells}</row>')
    sheet = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
             '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
             + "".join(sheet_rows) + "</sheetData></worksheet>")
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'worksheet" Target="worksheets/sheet1.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": sheet,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def _csv_text(rows: list[list[str]], delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _published_ipc(raw: str) -> str:
    tokens = [t.strip() for t in raw.replace(",", ";").split(";") if t.strip()]
    return "、".join(t + "(2006.01)I" if normalise_ipc_code(t) else t for t in tokens)


def make_vendor_folder(clean: Path, vendor: Path) -> None:
    vendor.mkdir(parents=True)
    for name in ("city_yearbook.csv", "pilot_list.csv", "region_robot_density.csv", "industry_employment.csv",
                 "us_industry_robots.csv", "national_internet_users.csv", "subsidy_detail.csv",
                 "annual_report_keywords.csv"):
        shutil.copy(clean / name, vendor / name)

    # firm_info: zip of an xlsx with 3 header rows (codes, labels, units), numeric stock codes
    firm = _rows(clean / "firm_info.csv")
    for i, row in enumerate(firm[3:]):  # cities named as in their own year, and by county
        if row[5] in ("襄阳市", "襄阳") and row[1][:4] < "2010":
            row[5] = "襄樊市"
        elif row[5] in ("毕节市", "毕节") and row[1][:4] < "2011":
            row[5] = "毕节地区"
        elif row[5] == "上海市" and i % 2 == 0:
            row[5] = "浦东新区"
    with zipfile.ZipFile(vendor / "STK_LISTEDCOINFOANL.zip", "w") as archive:
        archive.writestr("STK_LISTEDCOINFOANL.xlsx", xlsx_bytes(firm, {0}, header_rows=3))
        archive.writestr("STK_LISTEDCOINFOANL[DES][csv].txt", DES.encode("gbk"))
        archive.writestr("Copyright_Declaration.pdf", b"%PDF-1.4 not a real pdf")

    # balance_sheet: two period files (zips of GBK CSVs), table-prefixed columns, 2015 in both
    sheet = _rows(clean / "balance_sheet.csv")
    header = ["FS_Combas-" + h if h not in ("Stkcd", "Accper", "Typrep") else h for h in sheet[0]]
    head, data = sheet[1:3], sheet[3:]
    early = [r for r in data if r[1][:4] <= "2015"]
    late = [r for r in data if r[1][:4] >= "2015"]
    for name, part in (("FS_Combas_2000_2015", early), ("FS_Combas_2016_2024", late)):
        with zipfile.ZipFile(vendor / f"{name}.zip", "w") as archive:
            archive.writestr("FS_Combas.csv", _csv_text([header, *head, *part]).encode("gbk"))
            archive.writestr("FS_Combas[DES][csv].txt", "A001000000 [资产总计] - 元\n".encode("gbk"))

    # income_statement: a bare xlsx with 3 header rows and numeric stock codes
    (vendor / "FS_Comins.xlsx").write_bytes(xlsx_bytes(_rows(clean / "income_statement.csv"), {0}, header_rows=3))

    # cash_flow: UTF-16 tab-separated text (Excel 'Unicode text')
    (vendor / "FS_Comscfd.txt").write_bytes(
        codecs.BOM_UTF16_LE + _csv_text(_rows(clean / "cash_flow.csv"), "\t").encode("utf-16-le"))

    # patents: split by application year; the later file in CNIPA's printed IPC form, repeating
    # some earlier applications with the application number in another form
    patents = _rows(clean / "patents.csv")
    header, data = patents[0], patents[1:]
    early = [r for r in data if r[2][:4] <= "2015"]
    late = [[*r[:4], _published_ipc(r[4]), *r[5:]] for r in data if r[2][:4] > "2015"]
    repeats = [[r[0], r[1].removeprefix("CN").replace(".", ""), *r[2:]] for r in early[:40]]
    (vendor / "patents_2008_2015.csv").write_text(_csv_text([header, *early]), encoding="utf-8")
    (vendor / "patents_2016_2022.csv").write_text(_csv_text([header, *late, *repeats]), encoding="utf-8")


@pytest.fixture(scope="module")
def builds(tiny_demo_warehouse, tmp_path_factory) -> dict:
    """The clean build is the shared tiny demo-seed warehouse (``keytech synth --scale tiny --seed
    20250101``, read only here); the vendor folder is made from its raw folder and built once."""
    root = Path(tmp_path_factory.mktemp("deliveries"))
    clean = tiny_demo_warehouse["raw"]
    vendor = root / "vendor"
    make_vendor_folder(clean, vendor)
    out = {"clean": {"db": tiny_demo_warehouse["db"], "manifest": tiny_demo_warehouse["manifest"], "raw": clean}}
    # the usual file and landing names (in a folder of their own): dbt starts from the project parse
    # saved by the run's other default builds and re-parses only what reads the vendor labels
    # (keytech.build.run_dbt); a file name of its own cost a full parse (issue 17)
    (root / "vendor_build").mkdir()
    db = root / "vendor_build" / "warehouse.duckdb"
    outcome = build_warehouse(BuildOptions(raw_dir=vendor, landing_dir=root / "vendor_build" / "landing", warehouse=db,
                                           quiet=True))
    out["vendor"] = {"db": db, "manifest": outcome["manifest"], "raw": vendor}
    return out


def _fetch(db: Path, sql: str):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_vendor_folder_panel_equals_clean_panel(builds):
    query = "select * from marts.rpt_analysis_panel order by stkcd, year"
    clean, vendor = _fetch(builds["clean"]["db"], query), _fetch(builds["vendor"]["db"], query)
    assert len(clean) > 100
    assert vendor == clean
    query = "select * from marts.fct_firm_years order by stkcd, year"
    assert _fetch(builds["vendor"]["db"], query) == _fetch(builds["clean"]["db"], query)
    query = ("select patent_id, is_key_tech, n_ipc_codes from marts.fct_patents order by patent_id")
    assert _fetch(builds["vendor"]["db"], query) == _fetch(builds["clean"]["db"], query)


def test_vendor_folder_names_cities_by_year_and_county(builds):
    printed = _fetch(builds["vendor"]["db"], "select distinct city_name_raw, city_code from "
                                             "intermediate.int_firm_years_city_matched order by 1")
    printed = dict(printed)
    assert printed.get("浦东新区") == "310000"
    assert any(name in printed for name in ("襄樊市", "毕节地区"))


def test_vendor_files_are_recognised_and_reported(builds):
    tables = builds["vendor"]["manifest"]["tables"]
    assert tables["firm_info"]["format"] == "excel"
    assert [f["name"] for f in tables["firm_info"]["files"]] == ["STK_LISTEDCOINFOANL.zip"]
    assert tables["firm_info"]["labels"]["Stkcd"] == "证券代码" and tables["firm_info"]["labels"]["Ctnm"] == "所属城市"
    assert tables["firm_info"]["description_rows_skipped"] == 2
    assert [f["name"] for f in tables["balance_sheet"]["files"]] == ["FS_Combas_2000_2015.zip",
                                                                      "FS_Combas_2016_2024.zip"]
    assert tables["balance_sheet"]["header_map"]["A001000000"] == "FS_Combas-A001000000"
    assert tables["balance_sheet"]["labels"]["A001000000"] == "资产总计"
    assert tables["cash_flow"]["format"] == "tsv" and tables["cash_flow"]["encoding"] == "utf-16"
    assert tables["income_statement"]["format"] == "excel"
    assert [f["name"] for f in tables["patents"]["files"]] == ["patents_2008_2015.csv", "patents_2016_2022.csv"]
    # the 2015 overlap of the balance sheets is reported and landed once
    clean_rows = builds["clean"]["manifest"]["tables"]["balance_sheet"]["data_rows"]
    assert tables["balance_sheet"]["data_rows"] == clean_rows
    warnings = builds["vendor"]["manifest"]["warnings"]
    assert any("FS_Combas_2000_2015.zip:FS_Combas.csv and FS_Combas_2016_2024.zip:FS_Combas.csv" in w
               and "identical rows; landed once" in w for w in warnings), warnings


def test_repeated_applications_across_files_are_merged_not_doubled(builds):
    merged = _fetch(builds["vendor"]["db"], "select sum(raw_rows) from marts.rpt_patent_reconciliation "
                                            "where disposition = 'merged_duplicate'")[0][0]
    clean_merged = _fetch(builds["clean"]["db"], "select sum(raw_rows) from marts.rpt_patent_reconciliation "
                                                 "where disposition = 'merged_duplicate'")[0][0]
    assert merged == clean_merged + 40


def test_des_labels_reach_the_staging_docs(builds):
    """The [DES] labels of the landing manifest are the staging models' meta.vendor_labels in the
    manifest dbt wrote for this warehouse (what `keytech docs` renders)."""
    import json

    from keytech import paths

    manifest = json.loads((paths.dbt_artifacts_dir(builds["vendor"]["db"]) / "target" / "manifest.json")
                          .read_text(encoding="utf-8"))
    meta = {node["name"]: node["meta"].get("vendor_labels") for node in manifest["nodes"].values()
            if node["resource_type"] == "model" and node["name"].startswith("stg_")}
    assert meta["stg_csmar__firm_years"] == {"Stkcd": "证券代码", "Accper": "统计截止日期", "Ctnm": "所属城市"}
    assert meta["stg_csmar__balance_sheets"]["A001000000"] == "资产总计"
    assert meta["stg_csmar__firm_years"] == builds["vendor"]["manifest"]["tables"]["firm_info"]["labels"]
    assert set(meta) >= {"stg_cnrds__patents", "stg_yearbook__city_years"}  # every staging model carries it


def test_des_labels_reach_the_dta_variable_labels(builds, tmp_path):
    import pandas as pd

    from keytech.export import VARIABLE_LABELS, export

    target, rows = export("panel", "dta", tmp_path / "panel.dta", db_path=builds["vendor"]["db"])
    assert rows > 100
    with pd.io.stata.StataReader(target) as reader:
        labels = reader.variable_labels()
    assert labels["stkcd"] == VARIABLE_LABELS["stkcd"] + " | 证券代码"
    assert labels["size"] == VARIABLE_LABELS["size"] + " | 资产总计"
    assert labels["policy"] == VARIABLE_LABELS["policy"]  # not a vendor field
