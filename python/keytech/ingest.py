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
    sha256: str


# ----------------------------------------------------------------------------------------------
# File discovery and reading


def _find_file(raw_dir: Path, table: Table, mapping: Mapping) -> Path | None:
    if table.name in mapping.files:
        candidate = raw_dir / mapping.files[table.name]
        return candidate if candidate.is_file() else None
    for suffix in (".parquet", ".csv"):
        candidate = raw_dir / f"{table.name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def detect_encoding(path: Path) -> str:
    """'utf-8' (BOM or not) or 'gb18030' (a superset of GBK/GB2312). Raises ValueError otherwise."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in head:
        raise ValueError(
            f"{path.name}: looks like UTF-16 or a binary file (NUL bytes); save it as UTF-8 or GBK CSV"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        codecs.getincrementaldecoder("gb18030")().decode(head, final=False)
        return "gb18030"
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path.name}: neither UTF-8 nor GBK/GB18030 (byte {exc.start}); save it as UTF-8"
        ) from exc


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


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class UnreadableFile(ValueError):
    """A raw file that cannot be parsed; the message names the file, the line and what to do."""


def _read_header(source: Path) -> list[str]:
    import csv

    with open(source, encoding="utf-8-sig", newline="") as handle:
        try:
            header = next(csv.reader(handle))
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


def _load_raw(con: duckdb.DuckDBPyConnection, path: Path, scratch: Path) -> tuple[str, str | None, int]:
    """Load a raw file into temp table ``raw_t``. Returns (format, encoding, header_lines)."""
    if path.suffix.lower() == ".parquet":
        try:
            con.execute(f"create or replace temp table raw_t as select * from read_parquet('{path}')")
        except duckdb.Error as exc:
            raise UnreadableFile(
                f"{path.name}: not a complete Parquet file ({str(exc).splitlines()[0].replace(str(path), path.name)}); "
                "it may be truncated — export or copy it again."
            ) from exc
        return "parquet", None, 0
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.removeprefix(codecs.BOM_UTF8).strip():
        raise UnreadableFile(f"{path.name} is empty (no header, no data); export the table again")
    encoding = detect_encoding(path)
    source = path
    if encoding != "utf-8":
        source = scratch / f"{path.stem}.utf8.csv"
        _transcode_to_utf8(path, encoding, source)
    header = _read_header(source)
    columns = {name.strip() or f"column{i}": "VARCHAR" for i, name in enumerate(header)}
    try:
        con.execute(
            "create or replace temp table raw_t as select * from read_csv(?, header = true, "
            "auto_detect = false, columns = ?, delim = ',', quote = '\"', escape = '\"', "
            "strict_mode = true, null_padding = false)",
            [str(source), columns],
        )
    except duckdb.Error as exc:
        raise _csv_error(path, source, exc, len(columns)) from exc
    return "csv", "gbk" if encoding == "gb18030" else "utf-8", 1


def _resolve_headers(
    table: Table, headers: list[str], mapping: Mapping
) -> tuple[dict[str, str], list[str], list[str]]:
    """Map raw headers to contract columns. Returns ({contract: header}, missing, extra)."""
    by_folded = {h.strip().lower(): h for h in headers}
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
    select = ", ".join(_quote(header) for _, header in typed)
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
            parts.append(f"nullif(trim(cast({_quote(resolved[column.name])} as varchar)), '') as {_quote(column.name)}")
        else:
            parts.append(f"cast(null as varchar) as {_quote(column.name)}")
    parts.append(f"'{file_name}' as _source_file")
    parts.append(f"cast(rowid + 1 + {header_lines} as bigint) as _source_row")
    return f"select {', '.join(parts)} from raw_t where rowid >= {skip} order by rowid"


def _check_values(con: duckdb.DuckDBPyConnection, table: Table, file_name: str) -> list[Problem]:
    problems: list[Problem] = []
    for column in table.columns:
        c = _quote(column.name)
        if column.not_null:
            count, rows = con.execute(
                f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] "
                f"from landed where {c} is null"
            ).fetchone()
            if count:
                problems.append(Problem("error", table.name, file_name, "empty value in a column that must be filled",
                                        column=column.name, rows=rows, count=count))
        if column.type == "text":
            continue
        bad = _BAD_VALUE_SQL[column.type].format(c=c)
        count, rows, values = con.execute(
            f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}], "
            f"list({c} order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] from landed where {c} is not null and {bad}"
        ).fetchone()
        if count:
            problems.append(Problem("error", table.name, file_name, f"value {_TYPE_WORDS[column.type]}",
                                    column=column.name, rows=rows, values=values, count=count))
        if column.min is not None:
            count, rows, values = con.execute(
                f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}], "
                f"list({c} order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] from landed "
                f"where {c} is not null and not ({bad}) and try_cast({c} as double) < {column.min}"
            ).fetchone()
            if count:
                problems.append(Problem("error", table.name, file_name, f"value below the minimum {column.min:g}",
                                        column=column.name, rows=rows, values=values, count=count))
        if column.type == "date":
            parsed = _DATE_PARSE.format(c=c)
            count, rows, values = con.execute(
                f"select count(*), list(_source_row order by _source_row)[1:{EXAMPLES_PER_PROBLEM}], "
                f"list({c} order by _source_row)[1:{EXAMPLES_PER_PROBLEM}] from landed "
                f"where {c} is not null and year({parsed}) not between {DATE_RANGE[0]} and {DATE_RANGE[1]}"
            ).fetchone()
            if count:
                problems.append(Problem("error", table.name, file_name,
                                        f"date outside {DATE_RANGE[0]}–{DATE_RANGE[1]}",
                                        column=column.name, rows=rows, values=values, count=count))
    return problems


def _check_keys(con: duckdb.DuckDBPyConnection, table: Table, file_name: str) -> list[Problem]:
    keys = ", ".join(_quote(k) for k in table.key)
    groups, rows, examples = con.execute(
        f"with dup as (select {keys}, list(_source_row order by _source_row) as r from landed "
        f"group by all having count(*) > 1) "
        f"select count(*), flatten(list(r))[1:{EXAMPLES_PER_PROBLEM}], "
        f"list(concat_ws('/', {keys}))[1:{EXAMPLES_PER_PROBLEM}] from dup"
    ).fetchone()
    if not groups:
        return []
    if table.duplicates == "merge":
        return [Problem("warning", table.name, file_name,
                        f"{groups} key(s) ({', '.join(table.key)}) occur more than once; "
                        "they will be merged (see marts.rpt_patent_reconciliation)",
                        rows=rows, values=examples, count=groups)]
    return [Problem("error", table.name, file_name,
                    f"{groups} duplicate key(s) ({', '.join(table.key)}); each key must occur once",
                    rows=rows, values=examples, count=groups)]


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
    try:
        for table in contract.values():
            path = _find_file(raw_dir, table, mapping)
            if path is None:
                expected = mapping.files.get(table.name) or f"{table.name}.csv or {table.name}.parquet"
                if table.required:
                    problems.append(Problem("error", table.name, None, f"missing file {expected} for table {table.name}"))
                    continue
                # An optional (extension) table: land it empty so the models that use it build empty.
                problems.append(Problem("warning", table.name, None,
                                        f"optional table {table.name} not supplied ({expected}); landed empty"))
                columns = ", ".join(f"cast(null as varchar) as {_quote(c.name)}" for c in table.columns)
                con.execute(f"create or replace temp table landed as select {columns}, "
                            "cast(null as varchar) as _source_file, cast(null as bigint) as _source_row limit 0")
                reports.append(FileReport(table=table.name, file="", format="absent", encoding=None, data_rows=0,
                                          description_rows_skipped=0, header_map={}, missing_optional_columns=[],
                                          extra_columns=[], sha256=""))
                if landing_dir is not None:
                    con.execute(f"copy landed to '{scratch / (table.name + '.parquet')}' (format parquet)")
                continue
            try:
                fmt, encoding, header_lines = _load_raw(con, path, scratch)
            except UnreadableFile as exc:
                # the problem already names the file: do not repeat it in the message
                problems.append(Problem("error", table.name, path.name, str(exc).removeprefix(f"{path.name}: ")))
                continue
            except (ValueError, duckdb.Error) as exc:
                problems.append(Problem("error", table.name, path.name, f"cannot read the file: {exc}".splitlines()[0]))
                continue
            headers = [row[0] for row in con.execute("describe raw_t").fetchall()]
            resolved, missing, extra = _resolve_headers(table, headers, mapping)
            missing_required = [m for m in missing if table.column(m).required]
            for name in missing_required:
                column = table.column(name)
                known = ", ".join([column.name, *column.aliases])
                problems.append(Problem(
                    "error", table.name, path.name,
                    f"missing column {name} ({column.description.rstrip('.')}); accepted headers: {known}; "
                    f"or map yours in {raw_dir / 'column_mapping.yml'}",
                    column=name))
            if missing_required:
                continue
            skip = _count_description_rows(con, table, resolved)
            con.execute("create or replace temp table landed as " + _landed_select(table, resolved, path.name, header_lines, skip))
            problems += _check_values(con, table, path.name)
            problems += _check_keys(con, table, path.name)
            data_rows = con.execute("select count(*) from landed").fetchone()[0]
            if data_rows == 0 and table.required:
                problems.append(Problem("error", table.name, path.name, "the file has a header but no data rows"))
            elif data_rows == 0:
                problems.append(Problem("warning", table.name, path.name,
                                        f"optional table {table.name} has a header but no data rows; landed empty"))
            if extra:
                problems.append(Problem("warning", table.name, path.name,
                                        f"extra column(s) not in the contract, ignored: {', '.join(extra)}"))
            reports.append(FileReport(
                table=table.name, file=path.name, format=fmt, encoding=encoding, data_rows=data_rows,
                description_rows_skipped=skip, header_map={k: resolved[k] for k in resolved},
                missing_optional_columns=[m for m in missing if m not in missing_required],
                extra_columns=extra, sha256=_sha256(path)))
            if landing_dir is not None and not any(p.severity == "error" for p in problems):
                con.execute(f"copy landed to '{scratch / (table.name + '.parquet')}' (format parquet, compression zstd)")
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
