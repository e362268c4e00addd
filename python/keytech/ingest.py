"""Raw folder → validated landing area.

``validate(raw_dir)`` checks a raw folder against the contract and reports *every* problem at once:
missing file or column (naming both), values of the wrong type (file, row, column, value), duplicate
keys (with examples). ``ingest(raw_dir, landing_dir)`` validates and, when nothing is wrong, writes
``<landing_dir>/<table>.parquet`` for each contract table (contract column names, all text, plus the
lineage columns ``_source_file`` and ``_source_row``) and ``_manifest.json`` with row counts. dbt reads
the landing area as its sources.

Files: ``<table>.csv`` (UTF-8 with or without BOM, or GBK/GB18030 — detected) or ``<table>.parquet``,
or the file named in ``column_mapping.yml``. Vendor description/unit rows directly under the header
(CSMAR exports have two, yearbook extracts one) are recognised and skipped: a leading row (at most
three) is a description row when none of its typed columns holds a value of its type.

Row numbers: for CSV, ``_source_row`` is the line of the record in the raw file (header = line 1);
for Parquet it is the 1-based row index.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from keytech.contract import Mapping, Table, load_contract, load_mapping
from keytech.sql_literals import sql_identifier, sql_string

MAX_DESCRIPTION_ROWS = 3
EXAMPLES_PER_PROBLEM = 5
SNIFF_BYTES = 4 * 1024 * 1024
DATE_RANGE = (1900, 2100)

# SQL expressions: a value of column {c} that is NOT of the type (c is already trimmed, non-null).
_DATE_PARSE = (
    "coalesce(try_strptime({c}, '%Y-%m-%d'), try_strptime({c}, '%Y/%m/%d'), "
    "try_strptime({c}, '%Y%m%d'), try_strptime({c}, '%Y-%m-%d %H:%M:%S'))"
)
_BAD_VALUE_SQL = {
    "stock_code": "not regexp_full_match({c}, '[0-9]{{1,6}}')",
    "integer": "try_cast({c} as bigint) is null",
    "number": "(try_cast({c} as double) is null or not isfinite(try_cast({c} as double)))",
    "date": f"{_DATE_PARSE} is null",
}
_TYPE_WORDS = {
    "stock_code": "is not a stock code (1 to 6 digits)",
    "integer": "is not a whole number",
    "number": "is not a number (use a dot for decimals, no thousands separators)",
    "date": "is not a date (YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD)",
}


@dataclass
class Problem:
    severity: str  # 'error' or 'warning'
    table: str
    file: str | None
    message: str
    column: str | None = None
    rows: list[int] = field(default_factory=list)
    values: list[str] = field(default_factory=list)
    count: int = 1

    def render(self) -> str:
        where = self.file or f"{self.table}.*"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:EXAMPLES_PER_PROBLEM])
            more = f" (+{self.count - len(self.rows[:EXAMPLES_PER_PROBLEM])} more)" if self.count > len(self.rows[:EXAMPLES_PER_PROBLEM]) else ""
            where += f" row {shown}{more}"
        if self.column:
            where += f", column {self.column}"
        text = f"{self.severity.upper():7} {where}: {self.message}"
        if self.values:
            text += " — e.g. " + ", ".join(repr(v) for v in self.values[:EXAMPLES_PER_PROBLEM])
        return text


class ValidationFailed(RuntimeError):
    """The raw folder breaks the contract. ``problems`` lists every problem found."""

    def __init__(self, raw_dir: Path, problems: list[Problem]):
        self.raw_dir = raw_dir
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        lines = [f"Raw folder {raw_dir} breaks the input contract ({len(errors)} problem(s)):"]
        lines += ["  " + p.render() for p in problems]
        lines.append(
            "Fix the files, or map your headers in column_mapping.yml "
            "(see docs/input-contract.md), then run `keytech validate` again."
        )
        super().__init__("\n".join(lines))


@dataclass
class FileReport:
    table: str
    file: str
    format: str
    encoding: str | None
    data_rows: int
    description_rows_skipped: int
    header_map: dict[str, str]
    missing_optional_columns: list[str]
    extra_columns: list[str]
    sha256: str  # of the file; of all part hashes when the table has several files
    files: list[dict] = field(default_factory=list)  # [{name, sha256}] of the raw files (zips, not members)
    labels: dict[str, str] = field(default_factory=dict)  # contract column -> vendor label ([DES] file or label row)


# ----------------------------------------------------------------------------------------------
# File discovery and reading


# Known CSMAR table codes (a download is named after its table code, e.g. FS_Combas.zip).
CSMAR_CODES = {
    "STK_LISTEDCOINFOANL": "firm_info",
    "FS_Combas": "balance_sheet",
    "FS_Comins": "income_statement",
    "FS_Comscfd": "cash_flow",
    "FS_Comscfi": "cash_flow",
}
DATA_SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".xlsm", ".xls", ".parquet", ".zip")
DESCRIPTION_MARK = "[DES]"


class DuplicateTableFiles(ValueError):
    """Two files of one table share a name and differ only in format (a stale copy)."""


def _table_prefixes(table_name: str) -> list[str]:
    return [table_name, *(code for code, name in CSMAR_CODES.items() if name == table_name)]


def _is_data_file(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in DATA_SUFFIXES and DESCRIPTION_MARK not in path.name.upper()
            and not path.name.startswith((".", "_")))


def _find_files(raw_dir: Path, table: Table, mapping: Mapping) -> list[Path]:
    """The raw files of a table, in name order: ``file:`` of column_mapping.yml (a name, a glob or a
    list of them), else every data file whose name is the table name or a known CSMAR code of it,
    alone or followed by ``_``, ``-`` or a space (``patents_2008_2015.csv``, ``FS_Combas_2011_2024.zip``).
    Raises DuplicateTableFiles when two of them differ only in format (``patents.csv`` and
    ``patents.parquet``): one is a stale copy, not a part."""
    import re

    if table.name in mapping.files:
        entries = mapping.files[table.name]
        found: list[Path] = []
        for entry in [entries] if isinstance(entries, str) else entries:
            matches = sorted(p for p in raw_dir.glob(str(entry)) if p.is_file())
            found += [m for m in matches if m not in found]
        return found
    patterns = [re.compile(rf"^{re.escape(prefix.lower())}(?:[_\- ].*)?$") for prefix in _table_prefixes(table.name)]
    found = sorted((p for p in raw_dir.iterdir() if _is_data_file(p)
                    and any(pattern.match(p.stem.lower()) for pattern in patterns)), key=lambda p: p.name)
    by_stem: dict[str, list[Path]] = {}
    for path in found:
        by_stem.setdefault(path.stem.lower(), []).append(path)
    for paths_ in by_stem.values():
        if len(paths_) > 1:
            raise DuplicateTableFiles(
                f"{' and '.join(p.name for p in paths_)} both hold table {table.name} under the same name: "
                "one is probably a stale copy; remove it (parts of one table need different names, "
                f"e.g. {table.name}_2008_2015.csv and {table.name}_2016_2022.csv)")
    return found


def _line_of(path: Path, offset: int) -> int:
    line = 1
    with open(path, "rb") as handle:
        remaining = offset
        while remaining > 0:
            chunk = handle.read(min(1 << 20, remaining))
            if not chunk:
                break
            line += chunk.count(b"\n")
            remaining -= len(chunk)
    return line


def _decodes(path: Path, encoding: str) -> int | None:
    """None when the whole file decodes in ``encoding`` (read in 1 MiB chunks), else the byte offset
    of the first undecodable byte."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk, final=False)
            except UnicodeDecodeError as exc:
                return offset + exc.start
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset
    return None


def detect_encoding(path: Path) -> str:
    """'utf-8' (BOM or not), 'utf-16' (BOM), 'utf-16-le'/'utf-16-be' (no BOM, recognised by the NUL
    bytes of ASCII text) or 'gb18030' (a superset of GBK/GB2312). The *whole* file is checked, in
    chunks: a file that is UTF-8 for its first megabytes and then not is no longer passed on to
    fail obscurely later. Raises ValueError naming the byte, the line and both candidates."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8"]
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    elif b"\x00" in head:
        sample = head[: 1 << 16]
        odd = sample[1::2].count(0) / max(len(sample[1::2]), 1)
        even = sample[0::2].count(0) / max(len(sample[0::2]), 1)
        if odd > 0.3 and even < 0.05:
            candidates = ["utf-16-le"]
        elif even > 0.3 and odd < 0.05:
            candidates = ["utf-16-be"]
        else:
            raise ValueError(f"{path.name}: a binary file, not text (NUL bytes); export the table as CSV, "
                             "Excel or Parquet")
    else:
        candidates = ["utf-8", "gb18030"]
    failures = []
    for encoding in candidates:
        bad = _decodes(path, encoding)
        if bad is None:
            return encoding
        failures.append(f"{'GBK/GB18030' if encoding == 'gb18030' else encoding.upper()} fails at byte {bad} "
                        f"(line {_line_of(path, bad)})")
    raise ValueError(f"{path.name}: not readable as text: {'; '.join(failures)}; save it as UTF-8 "
                     "(or check the file is not damaged at that line)")


def _transcode_to_utf8(path: Path, encoding: str, target: Path) -> None:
    decoder = codecs.getincrementaldecoder(encoding)()
    with open(path, "rb") as src, open(target, "w", encoding="utf-8", newline="") as dst:
        while chunk := src.read(1 << 20):
            dst.write(decoder.decode(chunk))
        dst.write(decoder.decode(b"", final=True))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class UnreadableFile(ValueError):
    """A raw file that cannot be parsed; the message names the file, the line and what to do."""


def _read_header(source: Path, delimiter: str = ",") -> list[str]:
    import csv

    with open(source, encoding="utf-8-sig", newline="") as handle:
        try:
            header = next(csv.reader(handle, delimiter=delimiter))
        except StopIteration:
            header = []
    return header


def _csv_error(path: Path, source: Path, exc: duckdb.Error, n_columns: int) -> UnreadableFile:
    """Turn DuckDB's CSV error into one that names the user's file, the line and a fix."""
    import re

    text = str(exc).replace(str(source), path.name)
    line = re.search(r"[Ll]ine:? (\d+)", text)
    where = f" at line {line.group(1)}" if line else ""
    kind = "a record with the wrong number of fields or an unterminated quote"
    cause = "The file may be truncated or cut mid-record, or a quote is not closed"
    if "Expected Number of Columns" in text or "expected" in text.lower():
        found = re.search(r"Found: (\d+)", text)
        if found:
            kind = f"a record with {found.group(1)} field(s) where the header has {n_columns}"
            if int(found.group(1)) > n_columns:
                cause = "A field probably contains an unquoted comma"
            else:
                cause = "The record is cut short: the file may be truncated or cut mid-record"
    return UnreadableFile(
        f"{path.name}: cannot be parsed as CSV{where}: {kind}. {cause}; "
        "export it again (comma-separated, double-quoted fields)."
    )


def _excel_text(value) -> str | None:
    """An Excel cell as the text a CSV export would hold: integral numbers without '.0' (stock
    codes stored as numbers), dates as YYYY-MM-DD."""
    import datetime as dt

    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d") if value.time() == dt.time(0) else value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _load_excel(con: duckdb.DuckDBPyConnection, path: Path, display: str) -> None:
    """First sheet of an .xlsx/.xls into ``raw_t`` (all text) with python-calamine (Rust; a
    100k-row sheet reads in seconds). Row 1 is the header; rows under it may be CSMAR's label,
    unit and notes rows (skipped as description rows)."""
    import pyarrow as pa
    from python_calamine import CalamineWorkbook

    try:
        rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python(skip_empty_area=False)
    except Exception as exc:  # calamine raises its own error types
        raise UnreadableFile(f"{display}: cannot be read as an Excel workbook ({exc}); export it again") from exc
    while rows and all(v in (None, "") for v in rows[-1]):
        rows.pop()
    if not rows:
        raise UnreadableFile(f"{display} is empty (no header, no data); export the table again")
    header = [(_excel_text(v) or f"column{i}").strip() for i, v in enumerate(rows[0])]
    columns = {name: [] for name in header}
    for row in rows[1:]:
        for name, value in zip(header, list(row) + [None] * (len(header) - len(row))):
            columns[name].append(_excel_text(value))
    arrow = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    con.register("raw_excel", arrow)
    try:
        con.execute("create or replace temp table raw_t as select * from raw_excel")
    finally:
        con.unregister("raw_excel")


def load_raw(con: duckdb.DuckDBPyConnection, path: Path, scratch: Path,
              display: str | None = None) -> tuple[str, str | None, int]:
    """Load a raw file into temp table ``raw_t``. Returns (format, encoding, header_lines).
    ``display`` is the name used in messages (``FS_Combas.zip:FS_Combas.csv`` for a zip member)."""
    display = display or path.name
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            con.execute("create or replace temp table raw_t as select * from read_parquet(?)", [str(path)])
        except duckdb.Error as exc:
            raise UnreadableFile(
                f"{display}: not a complete Parquet file ({str(exc).splitlines()[0].replace(str(path), display)}); "
                "it may be truncated — export or copy it again."
            ) from exc
        return "parquet", None, 0
    if suffix in (".xlsx", ".xlsm", ".xls"):
        _load_excel(con, path, display)
        return "excel", None, 1
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        raise UnreadableFile(f"{display} is empty (no header, no data); export the table again")
    try:
        encoding = detect_encoding(path)
    except ValueError as exc:
        raise UnreadableFile(str(exc).replace(path.name, display, 1)) from exc
    source = path
    if encoding != "utf-8":
        source = scratch / f"{path.stem}.{abs(hash(display))}.utf8.csv"
        _transcode_to_utf8(path, encoding, source)
    with open(source, encoding="utf-8-sig", newline="") as handle:
        first_line = handle.readline()
    delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
    header = _read_header(source, delimiter)
    columns = {name.strip() or f"column{i}": "VARCHAR" for i, name in enumerate(header)}
    try:
        con.execute(
            "create or replace temp table raw_t as select * from read_csv(?, header = true, "
            "auto_detect = false, columns = ?, delim = ?, quote = '\"', escape = '\"', "
            "strict_mode = true, null_padding = false)",
            [str(source), columns, delimiter],
        )
    except duckdb.Error as exc:
        raise _csv_error(path, source, exc, len(columns)) from exc
    names = {"gb18030": "gbk", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}
    return ("tsv" if delimiter == "\t" else "csv"), names.get(encoding, encoding), 1


def _read_description(path: Path) -> dict[str, str]:
    """A CSMAR ``[DES]`` description file: lines ``Field [中文名] - 说明`` → {field: label}."""
    import re

    try:
        text = path.read_bytes().decode(detect_encoding(path)).lstrip("\ufeff")
    except ValueError:
        return {}
    labels: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([^\s\[]+)\s*\[([^\]]+)\]", line)
        if match:
            labels.setdefault(match.group(1).strip(), match.group(2).strip())
    return labels


def _expand(path: Path, scratch: Path) -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """A raw file as its data parts [(display name, path)] and column labels from ``[DES]`` files:
    a zip (a CSMAR download) is unpacked into the scratch folder — its data members (CSV, text,
    Excel, Parquet) are the parts, its ``[DES]`` file supplies labels, anything else (the
    copyright PDF) is ignored; any other file is its own single part (labels from a
    ``<stem>[DES][csv].txt`` beside it, when present)."""
    import zipfile

    labels: dict[str, str] = {}
    if path.suffix.lower() != ".zip":
        for sibling in path.parent.glob(f"{path.stem}*"):
            if DESCRIPTION_MARK in sibling.name.upper() and sibling.is_file():
                labels.update(_read_description(sibling))
        return [(path.name, path)], labels
    target = scratch / f"zip-{abs(hash(str(path)))}"
    parts: list[tuple[str, Path]] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for index, info in enumerate(archive.infolist()):
                member = Path(info.filename)
                if info.is_dir() or member.name.startswith((".", "__MACOSX")):
                    continue
                out = target / f"{index}{member.suffix}"
                out.parent.mkdir(parents=True, exist_ok=True)
                if DESCRIPTION_MARK in member.name.upper():
                    out.write_bytes(archive.read(info))
                    labels.update(_read_description(out))
                elif member.suffix.lower() in DATA_SUFFIXES and member.suffix.lower() != ".zip":
                    out.write_bytes(archive.read(info))
                    parts.append((f"{path.name}:{member.name}", out))
    except zipfile.BadZipFile as exc:
        raise UnreadableFile(f"{path.name}: not a complete zip archive ({exc}); download it again") from exc
    if not parts:
        raise UnreadableFile(f"{path.name}: the zip holds no CSV, text, Excel or Parquet file")
    return parts, labels


def _resolve_headers(
    table: Table, headers: list[str], mapping: Mapping
) -> tuple[dict[str, str], list[str], list[str]]:
    """Map raw headers to contract columns. Returns ({contract: header}, missing, extra)."""
    by_folded = {h.strip().lower(): h for h in headers}
    # columns prefixed by their table in multi-table CSMAR queries: FS_Combas-A001000000
    for h in headers:
        prefix, sep, rest = h.strip().partition("-")
        if sep and rest and (prefix.upper() in {c.upper() for c in CSMAR_CODES} or prefix.lower() == table.name):
            by_folded.setdefault(rest.strip().lower(), h)
    user = {k.strip().lower(): v for k, v in mapping.columns.get(table.name, {}).items()}
    resolved: dict[str, str] = {}
    for folded, target in user.items():
        if folded in by_folded:
            resolved.setdefault(target, by_folded[folded])
    for column in table.columns:
        if column.name in resolved:
            continue
        for candidate in (column.name, *column.aliases):
            header = by_folded.get(candidate.strip().lower())
            if header is not None and header not in resolved.values():
                resolved[column.name] = header
                break
    missing = [c.name for c in table.columns if c.name not in resolved]
    used = set(resolved.values())
    extra = [h for h in headers if h not in used]
    return resolved, missing, extra


def _value_ok(value: str | None, column_type: str) -> bool | None:
    """Python twin of _BAD_VALUE_SQL for the few leading rows; None for empty/text."""
    import datetime as dt
    import math
    import re

    if value is None or not str(value).strip() or column_type == "text":
        return None
    text = str(value).strip()
    if column_type == "stock_code":
        return re.fullmatch(r"[0-9]{1,6}", text) is not None
    if column_type == "integer":
        return re.fullmatch(r"[+-]?[0-9]+", text) is not None
    if column_type == "number":
        try:
            return math.isfinite(float(text))
        except ValueError:
            return False
    for fmt in ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y-%m-%d %H:%M:%S"):
        try:
            dt.datetime.strptime(text, fmt)
            return True
        except ValueError:
            continue
    return False


def _count_description_rows(con: duckdb.DuckDBPyConnection, table: Table, resolved: dict[str, str]) -> int:
    typed = [(c, resolved[c.name]) for c in table.columns if c.type != "text" and c.name in resolved]
    if not typed:
        return 0
    select = ", ".join(sql_identifier(header) for _, header in typed)
    rows = con.execute(f"select {select} from raw_t order by rowid limit {MAX_DESCRIPTION_ROWS}").fetchall()
    skipped = 0
    for row in rows:
        verdicts = [_value_ok(value, column.type) for (column, _), value in zip(typed, row)]
        if any(v is True for v in verdicts):
            break
        skipped += 1
    return skipped


def _landed_select(table: Table, resolved: dict[str, str], file_name: str, header_lines: int, skip: int) -> str:
    parts = []
    for column in table.columns:
        if column.name in resolved:
            parts.append(f"nullif(trim(cast({sql_identifier(resolved[column.name])} as varchar)), '') as {sql_identifier(column.name)}")
        else:
            parts.append(f"cast(null as varchar) as {sql_identifier(column.name)}")
    parts.append(f"{sql_string(file_name)} as _source_file")  # a file name is user input: quoted
    parts.append(f"cast(rowid + 1 + {header_lines} as bigint) as _source_row")
    return f"select {', '.join(parts)} from raw_t where rowid >= {skip} order by rowid"


def _check_values(con: duckdb.DuckDBPyConnection, table: Table, file_name: str,
                  relation: str = "landed") -> list[Problem]:
    problems: list[Problem] = []
    for column in table.columns:
        c = sql_identifier(column.name)
        if column.not_null:
            count, rows = con.execute(
                f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] "
                f"from {relation} where {c} is null"
            ).fetchone()
            if count:
                problems.append(Problem("error", table.name, file_name, "empty value in a column that must be filled",
                                        column=column.name, rows=rows, count=count))
        if column.type == "text":
            continue
        bad = _BAD_VALUE_SQL[column.type].format(c=c)
        count, rows, values = con.execute(
            f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}], "
            f"list({c} order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] from {relation} where {c} is not null and {bad}"
        ).fetchone()
        if count:
            problems.append(Problem("error", table.name, file_name, f"value {_TYPE_WORDS[column.type]}",
                                    column=column.name, rows=rows, values=values, count=count))
        if column.min is not None:
            count, rows, values = con.execute(
                f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}], "
                f"list({c} order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] from {relation} "
                f"where {c} is not null and not ({bad}) and try_cast({c} as double) < {column.min}"
            ).fetchone()
            if count:
                problems.append(Problem("error", table.name, file_name, f"value below the minimum {column.min:g}",
                                        column=column.name, rows=rows, values=values, count=count))
        if column.type == "date":
            parsed = _DATE_PARSE.format(c=c)
            count, rows, values = con.execute(
                f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}], "
                f"list({c} order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] from {relation} "
                f"where {c} is not null and year({parsed}) not between {DATE_RANGE[0]} and {DATE_RANGE[1]}"
            ).fetchone()
            if count:
                problems.append(Problem("error", table.name, file_name,
                                        f"date outside {DATE_RANGE[0]}–{DATE_RANGE[1]}",
                                        column=column.name, rows=rows, values=values, count=count))
    return problems


# How key columns are compared at validation: the form staging gives them (stock codes padded to
# six digits, dates parsed whatever their format, text case-folded), so that '1' and '000001', or
# '2015-12-31' and '2015/12/31', are the same key here exactly as they are in the warehouse.
_KEY_NORMAL = {
    "stock_code": "lpad({c}, 6, '0')",
    "date": "strftime(" + _DATE_PARSE + ", '%Y-%m-%d')",
    "integer": "cast(try_cast({c} as bigint) as varchar)",
    "number": "cast(try_cast({c} as double) as varchar)",
    "text": "upper({c})",
}


def _check_keys(con: duckdb.DuckDBPyConnection, table: Table, file_name: str,
                relation: str = "landed") -> list[Problem]:
    """Duplicate keys, compared after normalisation (_KEY_NORMAL). Rows that repeat a key with the
    same values in every other column are a counted warning (the warehouse keeps the first and
    quarantines the rest); a repeated key with other values is an error with examples — unless the
    table merges duplicates (patents: reconciled in marts.rpt_patent_reconciliation)."""
    keys = ", ".join(sql_identifier(k) for k in table.key)
    if table.duplicates == "merge":
        groups, rows, examples = con.execute(
            f"with dup as (select {keys}, list(_source_row order by _source_row) as r from {relation} "
            f"group by all having count(*) > 1) "
            f"select count(*), flatten(list(r))[1:{EXAMPLES_PER_PROBLEM}], "
            f"list(concat_ws('/', {keys}))[1:{EXAMPLES_PER_PROBLEM}] from dup"
        ).fetchone()
        if not groups:
            return []
        return [Problem("warning", table.name, file_name,
                        f"{groups} key(s) ({', '.join(table.key)}) occur more than once; "
                        "they will be merged (see marts.rpt_patent_reconciliation)",
                        rows=rows, values=examples, count=groups)]
    normal = ", ".join(f"{_KEY_NORMAL[table.column(k).type].format(c=sql_identifier(k))} as k{i}"
                       for i, k in enumerate(table.key))
    knames = ", ".join(f"k{i}" for i in range(len(table.key)))
    others = [c.name for c in table.columns if c.name not in table.key]
    content = f"[{', '.join(sql_identifier(c) for c in others)}]::varchar[]" if others else "[]::varchar[]"

    def examples(kind: str) -> str:  # example source rows and keys of one kind of duplicate
        return (f"flatten(list(r order by r[1]) filter (where {kind}))[1:{EXAMPLES_PER_PROBLEM}], "
                f"(list(concat_ws('/', {knames}) order by r[1]) filter (where {kind}))[1:{EXAMPLES_PER_PROBLEM}]")

    result = con.execute(
        f"with k as (select {normal}, _source_row, {content} as content from {relation}), "
        f"dup as (select {knames}, list(_source_row order by _source_row) as r, count(*) as n, "
        f"count(distinct content) as variants from k group by {knames} having count(*) > 1) "
        f"select count(*) filter (where variants > 1), {examples('variants > 1')}, "
        f"count(*) filter (where variants = 1), coalesce(sum(n - 1) filter (where variants = 1), 0), "
        f"{examples('variants = 1')} from dup").fetchone()
    conflicting, c_rows, c_examples, identical, extra_rows, i_rows, i_examples = result
    problems = []
    if conflicting:
        problems.append(Problem(
            "error", table.name, file_name,
            f"{conflicting} duplicate key(s) ({', '.join(table.key)}) with different values; each key must "
            "occur once (keys compared after padding stock codes, parsing dates and ignoring case)",
            rows=c_rows or [], values=c_examples or [], count=conflicting))
    if identical:
        problems.append(Problem(
            "warning", table.name, file_name,
            f"{extra_rows} row(s) repeat {identical} key(s) ({', '.join(table.key)}) with identical values "
            "(after padding/date/case normalisation); the first is used, the repeats are quarantined",
            rows=i_rows or [], values=i_examples or [], count=identical))
    return problems


def _create_empty_landed(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    columns = ", ".join(f"cast(null as varchar) as {sql_identifier(c.name)}" for c in table.columns)
    con.execute(f"create or replace temp table landed as select {columns}, "
                "cast(null as varchar) as _source_file, cast(null as bigint) as _source_row limit 0")


def land_table(con: duckdb.DuckDBPyConnection, raw_dir: Path, table: Table, mapping: Mapping, files: list[Path],
                scratch: Path, problems: list[Problem]) -> FileReport | None:
    """Read every part of a table (files, zip members), check each, stack them into temp table
    ``landed`` and resolve overlap between parts. Appends problems; None when nothing landed."""
    _create_empty_landed(con, table)
    formats, encodings, labels, header_map = [], [], {}, {}
    missing_optional: list[str] = []
    extra: list[str] = []
    skipped = 0
    ok = True
    for path in files:
        try:
            parts, part_labels = _expand(path, scratch)
        except UnreadableFile as exc:
            problems.append(Problem("error", table.name, path.name, str(exc).removeprefix(f"{path.name}: ")))
            ok = False
            continue
        for display, part in parts:
            try:
                fmt, encoding, header_lines = load_raw(con, part, scratch, display)
            except UnreadableFile as exc:
                # the problem already names the file: do not repeat it in the message
                problems.append(Problem("error", table.name, display, str(exc).removeprefix(f"{display}: ")))
                ok = False
                continue
            except (ValueError, duckdb.Error) as exc:
                problems.append(Problem("error", table.name, display, f"cannot read the file: {exc}".splitlines()[0]))
                ok = False
                continue
            headers = [row[0] for row in con.execute("describe raw_t").fetchall()]
            resolved, missing, part_extra = _resolve_headers(table, headers, mapping)
            missing_required = [m for m in missing if table.column(m).required]
            for name in missing_required:
                column = table.column(name)
                known = ", ".join([column.name, *column.aliases])
                problems.append(Problem(
                    "error", table.name, display,
                    f"missing column {name} ({column.description.rstrip('.')}); accepted headers: {known}; "
                    f"or map yours in {raw_dir / 'column_mapping.yml'}",
                    column=name))
            if missing_required:
                ok = False
                continue
            skip = _count_description_rows(con, table, resolved)
            if skip and not part_labels:  # CSMAR's label row under the field codes
                first = con.execute(f"select * from raw_t order by rowid limit 1").fetchone()
                by_header = dict(zip(headers, first))
                part_labels = {resolved[c]: str(by_header[resolved[c]]).strip() for c in resolved
                               if by_header.get(resolved[c]) not in (None, "")}
            con.execute("create or replace temp table landed_part as "
                        + _landed_select(table, resolved, display, header_lines, skip))
            problems += _check_values(con, table, display, "landed_part")
            problems += _check_keys(con, table, display, "landed_part")
            con.execute("insert into landed by name select * from landed_part")
            formats.append(fmt)
            encodings.append(encoding)
            skipped += skip
            header_map.update({k: v for k, v in resolved.items() if k not in header_map})
            for c, header in resolved.items():
                label = part_labels.get(header) or part_labels.get(header.partition("-")[2] or header)
                if label and c not in labels:
                    labels[c] = label
            missing_optional += [m for m in missing if m not in missing_required and m not in missing_optional]
            extra += [h for h in part_extra if h not in extra]
    if not ok:
        return None
    if len(files) > 1 or con.execute("select count(distinct _source_file) > 1 from landed").fetchone()[0]:
        problems += _resolve_overlap(con, table)
    data_rows = con.execute("select count(*) from landed").fetchone()[0]
    names = ", ".join(p.name for p in files)
    if data_rows == 0 and table.required:
        problems.append(Problem("error", table.name, names, "the file has a header but no data rows"))
    elif data_rows == 0:
        problems.append(Problem("warning", table.name, names,
                                f"optional table {table.name} has a header but no data rows; landed empty"))
    if extra:
        problems.append(Problem("warning", table.name, names,
                                f"extra column(s) not in the contract, ignored: {', '.join(extra)}"))
    hashes = [{"name": p.name, "sha256": _sha256(p)} for p in files]
    combined = hashes[0]["sha256"] if len(hashes) == 1 else hashlib.sha256(
        "".join(h["name"] + h["sha256"] for h in hashes).encode()).hexdigest()
    return FileReport(
        table=table.name, file=names, format="+".join(dict.fromkeys(formats)),
        encoding=next((e for e in encodings if e), None), data_rows=data_rows,
        description_rows_skipped=skipped, header_map=header_map, missing_optional_columns=missing_optional,
        extra_columns=extra, sha256=combined, files=hashes, labels=labels)


def _resolve_overlap(con: duckdb.DuckDBPyConnection, table: Table) -> list[Problem]:
    """Rows of one key in more than one part (split-period files that overlap). Identical rows are
    landed once (the first by file name and row) with a warning; rows that differ are an error
    naming both files — except for tables whose duplicates are merged downstream (patents), where
    every row lands and the merge is reconciled (marts.rpt_patent_reconciliation)."""
    keys = ", ".join(sql_identifier(k) for k in table.key)
    content = ", ".join(sql_identifier(c.name) for c in table.columns)
    groups = con.execute(
        f"with k as (select {keys}, count(distinct _source_file) as n_files, "
        f"count(distinct hash({content})) as n_versions, list(distinct _source_file order by _source_file) as files "
        f"from landed group by all having count(distinct _source_file) > 1) "
        f"select count(*), count(*) filter (where n_versions = 1), "
        f"list(concat_ws('/', {keys}))[1:{EXAMPLES_PER_PROBLEM}], "
        f"list(concat_ws('/', {keys})) filter (where n_versions > 1)[1:{EXAMPLES_PER_PROBLEM}], "
        f"list(distinct f) from (select *, unnest(files) as f from k)"
    ).fetchone()
    total, identical, examples, conflicts, files = groups
    if not total:
        return []
    file_list = " and ".join(sorted(files or []))
    if table.duplicates == "merge":
        return [Problem("warning", table.name, file_list,
                        f"{total} key(s) ({', '.join(table.key)}) occur in more than one file; they are merged "
                        "downstream like any repeat (see marts.rpt_patent_reconciliation)",
                        values=examples, count=total)]
    problems = []
    if identical:
        before = con.execute("select count(*) from landed").fetchone()[0]
        con.execute(
            f"create or replace temp table landed as select * from landed "
            f"qualify row_number() over (partition by {keys}, hash({content}) "
            f"order by _source_file, _source_row) = 1 or count(distinct _source_file) over (partition by {keys}) = 1 "
            f"order by _source_file, _source_row")
        dropped = before - con.execute("select count(*) from landed").fetchone()[0]
        problems.append(Problem("warning", table.name, file_list,
                                f"{identical} key(s) ({', '.join(table.key)}) occur in overlapping files with "
                                f"identical rows; landed once ({dropped} repeated row(s) left out)",
                                values=examples, count=identical))
    if total > identical:
        problems.append(Problem("error", table.name, file_list,
                                f"{total - identical} key(s) ({', '.join(table.key)}) occur in more than one file "
                                "with different values: keep one vintage of those rows (or remove the older file)",
                                values=conflicts, count=total - identical))
    return problems


INGEST_MEMORY_LIMIT = "2GB"  # DuckDB memory_limit of the validation/landing connection


def _process(raw_dir: Path, landing_dir: Path | None) -> tuple[list[Problem], list[FileReport]]:
    contract = load_contract()
    mapping = load_mapping(raw_dir, contract)
    problems: list[Problem] = []
    reports: list[FileReport] = []
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"Raw folder {raw_dir} does not exist. Create it or set KEYTECH_RAW_DIR.")
    scratch = Path(tempfile.mkdtemp(prefix="keytech-ingest-"))
    con = duckdb.connect()
    con.execute("set preserve_insertion_order = true")
    # Bounded memory (issue 17): the landed tables are temp tables of this in-memory connection;
    # beyond INGEST_MEMORY_LIMIT DuckDB spills them to the scratch folder instead of growing with
    # the largest raw table (4.56 GiB for xl's 7.6M patent rows under DuckDB's default, 80% of RAM).
    con.execute(f"set memory_limit = '{INGEST_MEMORY_LIMIT}'")
    con.execute(f"set temp_directory = {sql_string(scratch / 'duckdb-spill')}")
    try:
        for table in contract.values():
            try:
                paths_ = _find_files(raw_dir, table, mapping)
            except DuplicateTableFiles as exc:
                problems.append(Problem("error", table.name, None, str(exc)))
                continue
            if not paths_:
                expected = mapping.files.get(table.name) or (
                    f"{table.name}.csv or {table.name}.parquet"
                    + "".join(f" or a CSMAR {code} download" for code in _table_prefixes(table.name)[1:]))
                if isinstance(expected, list):
                    expected = ", ".join(map(str, expected))
                if table.required:
                    problems.append(Problem("error", table.name, None, f"missing file {expected} for table {table.name}"))
                    continue
                # An optional table: land it empty so the models that use it build empty.
                problems.append(Problem("warning", table.name, None,
                                        f"optional table {table.name} not supplied ({expected}); landed empty"))
                _create_empty_landed(con, table)
                reports.append(FileReport(table=table.name, file="", format="absent", encoding=None, data_rows=0,
                                          description_rows_skipped=0, header_map={}, missing_optional_columns=[],
                                          extra_columns=[], sha256=""))
                if landing_dir is not None:
                    con.execute(f"copy landed to {sql_string(scratch / (table.name + '.parquet'))} (format parquet)")
                continue
            report = land_table(con, raw_dir, table, mapping, paths_, scratch, problems)
            if report is None:
                continue
            reports.append(report)
            if landing_dir is not None and not any(p.severity == "error" for p in problems):
                con.execute(f"copy landed to {sql_string(scratch / (table.name + '.parquet'))} (format parquet, compression zstd)")
        # Swap the landing area in only when every table passed: a failed ingest changes nothing.
        if landing_dir is not None and not any(p.severity == "error" for p in problems):
            landing_dir.mkdir(parents=True, exist_ok=True)
            for table in contract.values():
                shutil.move(str(scratch / f"{table.name}.parquet"), landing_dir / f".{table.name}.parquet.tmp")
            for table in contract.values():
                os.replace(landing_dir / f".{table.name}.parquet.tmp", landing_dir / f"{table.name}.parquet")
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return problems, reports


def validate(raw_dir: str | Path) -> tuple[list[Problem], list[FileReport]]:
    """Check a raw folder against the contract. Raises ValidationFailed listing every error."""
    raw = Path(raw_dir).resolve()
    problems, reports = _process(raw, None)
    if any(p.severity == "error" for p in problems):
        raise ValidationFailed(raw, problems)
    return problems, reports


def ingest(raw_dir: str | Path, landing_dir: str | Path) -> dict:
    """Validate the raw folder and write the landing area. Returns the manifest."""
    raw = Path(raw_dir).resolve()
    landing = Path(landing_dir).resolve()
    problems, reports = _process(raw, landing)
    if any(p.severity == "error" for p in problems):
        raise ValidationFailed(raw, problems)
    manifest = {
        "raw_dir": str(raw),
        "tables": {r.table: asdict(r) for r in reports},
        "warnings": [p.render() for p in problems],
    }
    (landing / "_manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest
