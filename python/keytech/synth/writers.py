"""Stage 7: writing the raw folder in the vendors' formats (encodings, label rows, Parquet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from keytech.synth.columns import CSMAR_TABLES, FILE_ENCODING, csmar_units, labels, names, types, yearbook_units
from keytech.synth.world import World

PARQUET_ROW_GROUP = 500_000  # rows per row group of patents.parquet, and per block written


def write_csv(df: pd.DataFrame, path: Path, encoding: str, desc: list[list[str]] | None = None,
               line_end: str = "\n") -> None:
    """``df`` as a vendor-style CSV: the header row, the description rows ``desc`` (labels,
    units), then the data."""
    write_csv_blocks(list(df.columns), [df], path, encoding, line_end, desc)


def _arrow_table(df: pd.DataFrame, column_types: dict[str, str]) -> pa.Table:
    """Contract ``integer`` columns as int64, ``date`` columns as text with empty dates null, the rest
    as text."""
    arrays = []
    for col in df.columns:
        v = df[col].to_numpy()
        if column_types[col] == "integer":
            arrays.append(pa.array(v.astype(np.int64), type=pa.int64()))
        else:
            v = v.astype(object)
            arrays.append(pa.array([x if x != "" else None for x in v], type=pa.string())
                          if column_types[col] == "date" else pa.array(v, type=pa.string()))
    return pa.Table.from_arrays(arrays, names=list(df.columns))


def write_parquet_blocks(blocks, path: Path, column_types: dict[str, str]) -> None:
    """Write frames of ``PARQUET_ROW_GROUP`` rows each (the last may be shorter) as one Parquet file,
    one row group per frame: the same bytes as the whole table written at once
    (``pq.write_table(..., row_group_size=PARQUET_ROW_GROUP)``), without holding it (issue 17)."""
    writer = None
    try:
        for df in blocks:
            table = _arrow_table(df, column_types)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=PARQUET_ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


def write_csv_blocks(columns: list[str], blocks, path: Path, encoding: str, line_end: str = "\n",
                     desc: list[list[str]] | None = None) -> None:
    """:func:`write_csv` of the concatenated frames ``blocks``, one frame at a time (issue 17)."""
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(pd.DataFrame([columns] + (desc or []), columns=columns)
                     .to_csv(index=False, header=False, lineterminator=line_end))
        for df in blocks:
            handle.write(df.astype(object).to_csv(index=False, header=False, lineterminator=line_end))


def write_raw(w: World, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for table in CSMAR_TABLES:  # two label rows: the Chinese field names, the units
        df = w.firm_info if table == "firm_info" else w.statements[table]
        write_csv(df, out / f"{table}.csv", FILE_ENCODING[table], [labels(table), csmar_units(table)])
        files[table] = {"file": f"{table}.csv", "encoding": FILE_ENCODING[table], "description_rows": 2,
                        "rows": len(df)}
    write_csv(w.yearbook, out / "city_yearbook.csv", FILE_ENCODING["city_yearbook"], [yearbook_units()],
              line_end="\r\n")
    files["city_yearbook"] = {"file": "city_yearbook.csv", "encoding": FILE_ENCODING["city_yearbook"],
                              "description_rows": 1,
                              "rows": len(w.yearbook), "header": "contract Chinese aliases"}
    write_csv(w.pilot_list, out / "pilot_list.csv", "utf-8")
    files["pilot_list"] = {"file": "pilot_list.csv", "encoding": "utf-8", "description_rows": 0,
                           "rows": len(w.pilot_list)}
    for stale in ("patents.csv", "patents.parquet"):
        (out / stale).unlink(missing_ok=True)
    patents = w.patent_table  # written block by block (issue 17: at xl the whole frame is GiBs)
    if w.cfg.patents_format == "parquet":
        write_parquet_blocks(patents.blocks(PARQUET_ROW_GROUP), out / "patents.parquet", types("patents"))
        files["patents"] = {"file": "patents.parquet", "encoding": None, "description_rows": 0,
                            "rows": len(patents)}
    else:
        write_csv_blocks(names("patents"), patents.blocks(PARQUET_ROW_GROUP), out / "patents.csv", "utf-8")
        files["patents"] = {"file": "patents.csv", "encoding": "utf-8", "description_rows": 0,
                            "rows": len(patents)}
    for plugin in w.plugins:
        if plugin.write_tables is not None:
            files.update(plugin.write_tables(w, out))
    return files

