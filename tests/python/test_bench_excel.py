"""The bench's excel_read stage (issue 12: a 100k-row sheet must not take a minute): on a small
sheet, the workbook it writes lands whole through the ingest path — CSMAR's three header rows
recognised (two skipped as description rows), integer stock codes padded, every row landed — and
the stage is reported in bench.md. The 100,000-row timing itself is `python -m keytech.bench
--stages excel_read` (docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from keytech import bench


def test_excel_read_stage_lands_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "EXCEL_ROWS", 3_000)
    result = bench._stage_excel_read(tmp_path, "tiny", 7)
    assert result["rows"] == 3_000 and result["sheet_rows"] == 3_000 + 2  # label and unit rows under the header
    assert result["description_rows_skipped"] == 2
    assert 0 < result["read_seconds"] and 0 < result["seconds"]
    stages = {"excel_read": {**result, "status": "ok", "peak_rss_bytes": 1}}
    report = {"scale": "tiny", "seed": 7, "started_at": "now", "machine": {}, "stages": stages,
              "targets": bench.evaluate(stages)}
    assert report["targets"]["excel_read"]["passed"] is True
    assert "3,000-row .xlsx" in bench.render_markdown(report)


def test_excel_rows_match_what_the_ingest_path_lands(tmp_path):
    """The landed values equal the rows written (numbers as text, stock codes stored as numbers
    come back without '.0'; staging pads them to six digits)."""
    import shutil
    import tempfile

    from keytech.contract import Mapping, load_contract
    from keytech.ingest import land_table

    rows = bench.excel_rows(40, 3)
    path = tmp_path / "FS_Comins.xlsx"
    bench.write_xlsx(path, rows, header_rows=3)
    con = duckdb.connect()
    scratch = tempfile.mkdtemp()
    try:
        problems: list = []
        report = land_table(con, tmp_path, load_contract()["income_statement"], Mapping(), [path], Path(scratch), problems)
        landed = con.execute("select Stkcd, Accper, Typrep, B001101000 from landed order by _source_row").fetchall()
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    assert report is not None and not [p for p in problems if p.severity == "error"]
    expected = [(str(r[0]), r[1], r[2], repr(float(r[3])) if not float(r[3]).is_integer() else str(int(r[3])))
                for r in rows[3:]]
    assert landed == expected
