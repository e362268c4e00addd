"""Raw-folder validation and landing: every problem reported at once, with file, row, column."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import duckdb
import pytest

from conftest import MINIMAL_RAW, write_raw
from keytech.ingest import ValidationFailed, detect_encoding, ingest, validate


def test_minimal_folder_lands_with_lineage(minimal_raw: Path, tmp_path: Path):
    landing = tmp_path / "landing"
    manifest = ingest(minimal_raw, landing)
    tables = manifest["tables"]
    assert tables["firm_info"]["description_rows_skipped"] == 2
    assert tables["city_yearbook"]["description_rows_skipped"] == 1
    assert tables["city_yearbook"]["encoding"] == "gbk"
    assert tables["city_yearbook"]["header_map"]["GdpPerCapita"] == "人均地区生产总值(元)"
    rows = duckdb.sql(f"select Stkcd, Ctnm, _source_row from '{landing}/firm_info.parquet' order by 3").fetchall()
    # header is line 1, two description rows are lines 2-3: data starts on line 4
    assert rows == [("000001", "深圳", 4), ("000001", "深圳", 5), ("600001", "南京市", 6)]
    # stock codes land exactly as written (padding happens in dbt staging)
    assert duckdb.sql(f"select Stkcd from '{landing}/balance_sheet.parquet' order by _source_row").fetchall()[0] == ("1",)
    # optional columns absent from the file land as null
    assert duckdb.sql(f"select count(A001212000) from '{landing}/balance_sheet.parquet'").fetchall() == [(0,)]
    saved = json.loads((landing / "_manifest.json").read_text(encoding="utf-8"))
    assert saved["tables"]["patents"]["data_rows"] == 3
    # the duplicated patent row is a warning, not an error
    assert any("merged" in w for w in saved["warnings"])


def test_every_problem_is_reported_at_once(tmp_path: Path):
    files = dict(MINIMAL_RAW)
    del files["income_statement.csv"]
    del files["cash_flow.csv"]  # optional: a warning, not an error
    files["balance_sheet.csv"] = files["balance_sheet.csv"].replace("A002000000", "Liabilities")
    files["patents.csv"] = files["patents.csv"].replace(",3\n", ",three\n", 1)
    files["city_yearbook.csv"] = files["city_yearbook.csv"].replace("150000", "15万")
    # the same pilot project again with another category: a conflicting duplicate (an identical
    # repeat would be a counted warning)
    files["pilot_list.csv"] += "2015,2015-07-21,某智能工厂试点示范,丙公司,广东省,深圳市,离散制造,\n"
    files["firm_info.csv"] = files["firm_info.csv"].replace("2005-06-01", "1805-06-01", 1)
    raw = write_raw(tmp_path / "raw", files)
    with pytest.raises(ValidationFailed) as caught:
        validate(raw)
    problems = caught.value.problems
    errors = {(p.table, p.column) for p in problems if p.severity == "error"}
    assert ("income_statement", None) in errors
    assert ("cash_flow", None) not in errors
    assert any(p.table == "cash_flow" and p.severity == "warning" and "optional" in p.message for p in problems)
    assert ("balance_sheet", "A002000000") in errors
    assert ("city_yearbook", "GdpPerCapita") in errors
    assert ("patents", "CitedTimes") in errors
    assert ("pilot_list", None) in errors  # duplicate key
    assert ("firm_info", "Listdt") in errors  # date out of range
    message = str(caught.value)
    assert "missing file income_statement.csv or income_statement.parquet" in message
    assert "missing column A002000000" in message
    # file, row and value of the type error
    bad_amount = next(p for p in problems if p.column == "GdpPerCapita")
    assert bad_amount.file == "city_yearbook.csv" and bad_amount.rows == [3] and bad_amount.values == ["15万"]
    bad_count = next(p for p in problems if p.column == "CitedTimes")
    assert bad_count.rows == [2] and bad_count.values == ["three"]
    duplicate = next(p for p in problems if p.table == "pilot_list")
    assert duplicate.rows == [2, 3]


def test_column_mapping_file_maps_vendor_headers(tmp_path: Path):
    files = dict(MINIMAL_RAW)
    files["balance_sheet.csv"] = files["balance_sheet.csv"].replace("A002000000", "TotalLiab")
    files["column_mapping.yml"] = "tables:\n  balance_sheet:\n    columns:\n      TotalLiab: A002000000\n"
    raw = write_raw(tmp_path / "raw", files)
    manifest = ingest(raw, tmp_path / "landing")
    assert manifest["tables"]["balance_sheet"]["header_map"]["A002000000"] == "TotalLiab"


def test_mapping_to_unknown_column_is_a_clear_error(tmp_path: Path):
    files = dict(MINIMAL_RAW)
    files["column_mapping.yml"] = "tables:\n  balance_sheet:\n    columns:\n      TotalLiab: Liabilities\n"
    raw = write_raw(tmp_path / "raw", files)
    with pytest.raises(ValueError, match="not a contract column of balance_sheet"):
        validate(raw)


def test_empty_file_and_failed_ingest_leave_landing_untouched(minimal_raw: Path, tmp_path: Path):
    landing = tmp_path / "landing"
    ingest(minimal_raw, landing)
    before = (landing / "patents.parquet").read_bytes()
    (minimal_raw / "patents.csv").write_bytes(b"")
    with pytest.raises(ValidationFailed, match="patents.csv.*empty"):
        ingest(minimal_raw, landing)
    assert (landing / "patents.parquet").read_bytes() == before


def test_encoding_detection(tmp_path: Path):
    text = "城市,年份\n深圳,2015\n"
    (tmp_path / "u.csv").write_bytes(text.encode("utf-8"))
    (tmp_path / "g.csv").write_bytes(text.encode("gbk"))
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert detect_encoding(tmp_path / "u.csv") == "utf-8"
    assert detect_encoding(tmp_path / "g.csv") == "gb18030"
    assert detect_encoding(tmp_path / "b.csv") == "utf-8"


def test_input_contract_doc_is_generated_from_the_contract():
    from keytech import paths
    from keytech.contract import render_markdown

    doc = (paths.project_root() / "docs" / "input-contract.md").read_text(encoding="utf-8")
    assert doc == render_markdown(), "run `keytech contract-doc` after editing contract.yml"


@pytest.mark.parametrize("encoding, bom, delimiter", [
    ("utf-16-le", codecs.BOM_UTF16_LE, "\t"),  # Excel's 'Unicode text'
    ("utf-16-le", b"", ","),
    ("utf-16-be", b"", ","),
    ("gbk", b"", "\t"),
    ("utf-8", codecs.BOM_UTF8, "\t"),
])
def test_utf16_and_tab_separated_files_land_like_utf8_csv(tmp_path: Path, encoding, bom, delimiter):
    clean = ingest(write_raw(tmp_path / "clean"), tmp_path / "landing_clean")
    files = dict(MINIMAL_RAW)
    raw = write_raw(tmp_path / "raw", {k: v for k, v in files.items() if k != "patents.csv"})
    text = files["patents.csv"].replace(",", delimiter) if delimiter == "\t" else files["patents.csv"]
    # the Applicants field '乙公司;某大学' holds no comma, so a plain replace makes a valid TSV
    (raw / "patents.csv").write_bytes(bom + text.encode(encoding))
    manifest = ingest(raw, tmp_path / "landing")
    assert manifest["tables"]["patents"]["encoding"] in ("utf-16", "gbk", "utf-8")
    query = "select * exclude (_source_file) from '{}/patents.parquet' order by _source_row"
    assert duckdb.sql(query.format(tmp_path / "landing")).fetchall() == \
        duckdb.sql(query.format(tmp_path / "landing_clean")).fetchall()
    assert clean["tables"]["patents"]["data_rows"] == manifest["tables"]["patents"]["data_rows"] == 3


def test_encoding_is_checked_over_the_whole_file(tmp_path: Path):
    # valid UTF-8 for more than the sniffing sample, then a Latin-1 byte: the real cause is named
    from keytech.ingest import SNIFF_BYTES

    path = tmp_path / "big.csv"
    line = "000001,CN201510000001.1,2015-03-01,发明,H04L27/26,甲公司,,0\n".encode()
    body = line * (SNIFF_BYTES // len(line) + 10)
    path.write_bytes(b"Scode,ApplyNo,ApplyDate,PatentType,IPC,Applicants,GrantDate,CitedTimes\n" + body
                     + b"000001,CN2015,2015-03-01,\xe9,x,y,,0\n")
    with pytest.raises(ValueError) as caught:
        detect_encoding(path)
    message = str(caught.value)
    assert "UTF-8 fails at byte" in message and "GBK/GB18030 fails" in message
    newlines = body.count(b"\n")
    assert f"line {newlines + 2}" in message


def test_a_csv_and_a_parquet_of_one_table_is_an_error_naming_both(tmp_path: Path):
    raw = write_raw(tmp_path / "raw")
    duckdb.sql(f"copy (select * from read_csv('{raw / 'pilot_list.csv'}', all_varchar=true)) "
               f"to '{raw / 'pilot_list.parquet'}' (format parquet)")
    with pytest.raises(ValidationFailed) as caught:
        validate(raw)
    message = str(caught.value)
    assert "pilot_list.csv and pilot_list.parquet both hold table pilot_list" in message
    assert "stale copy" in message


def test_parts_of_a_table_are_stacked_and_overlap_is_resolved(tmp_path: Path):
    files = dict(MINIMAL_RAW)
    header, *rows = files.pop("balance_sheet.csv").splitlines()
    files["balance_sheet_2015.csv"] = "\n".join([header, rows[0], rows[2]]) + "\n"
    files["balance_sheet_2016.csv"] = "\n".join([header, rows[1], rows[0]]) + "\n"  # rows[0] in both
    raw = write_raw(tmp_path / "raw", files)
    manifest = ingest(raw, tmp_path / "landing")
    assert manifest["tables"]["balance_sheet"]["data_rows"] == 3
    assert [f["name"] for f in manifest["tables"]["balance_sheet"]["files"]] == ["balance_sheet_2015.csv",
                                                                                  "balance_sheet_2016.csv"]
    assert any("identical rows; landed once (1 repeated row(s) left out)" in w for w in manifest["warnings"])
    # a key with different values in two files is an error naming both
    (raw / "balance_sheet_2016.csv").write_text(
        "\n".join([header, rows[1], rows[0].replace("400000000", "400000001")]) + "\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as caught:
        validate(raw)
    assert "balance_sheet_2015.csv and balance_sheet_2016.csv" in str(caught.value)
    assert "different values" in str(caught.value)


def test_mapping_file_may_list_the_parts_of_a_table(tmp_path: Path):
    files = dict(MINIMAL_RAW)
    header, *rows = files.pop("patents.csv").splitlines()
    files["cnrds_a.csv"] = "\n".join([header, rows[0]]) + "\n"
    files["cnrds_b.csv"] = "\n".join([header, *rows[1:]]) + "\n"
    files["column_mapping.yml"] = "tables:\n  patents:\n    file: cnrds_*.csv\n"
    raw = write_raw(tmp_path / "raw", files)
    manifest = ingest(raw, tmp_path / "landing")
    assert manifest["tables"]["patents"]["data_rows"] == 3
    assert manifest["tables"]["patents"]["file"] == "cnrds_a.csv, cnrds_b.csv"
