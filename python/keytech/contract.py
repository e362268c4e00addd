"""The raw input contract (``contract.yml``) and the user's column-mapping file.

A raw folder may hold ``column_mapping.yml``::

    tables:
      patents:
        file: cnrds_patents_*.csv         # optional: a file name, glob or list (parts are stacked)
        columns:                          # your header -> contract column
          证券代码: Scode
          专利申请号: ApplyNo

Headers listed in the contract (the column name or one of its ``aliases``) need no mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from keytech.yaml_files import load_yaml

COLUMN_TYPES = ("stock_code", "text", "date", "integer", "number")
MAPPING_FILE = "column_mapping.yml"


class ContractError(ValueError):
    """The contract or a column-mapping file is malformed."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    required: bool = True
    not_null: bool = False
    aliases: tuple[str, ...] = ()
    min: float | None = None


@dataclass(frozen=True)
class Enables:
    """What an optional table feeds: spec ids (or id prefixes) that need the mart columns."""

    specs: tuple[str, ...]
    mart: str
    columns: tuple[str, ...]

    def covers(self, spec_id: str) -> bool:
        return any(spec_id == s or (s.endswith("_") and spec_id.startswith(s)) for s in self.specs)


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    vendor: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    duplicates: str = "error"  # 'error' or 'merge' (duplicates are handled downstream)
    required: bool = True  # optional tables (extensions) may be absent: they land empty
    supply: str = ""  # what to add when the table is absent (optional tables)
    enables: tuple[Enables, ...] = ()  # the specs and mart columns an optional table feeds

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


@dataclass
class Mapping:
    """A user's column-mapping file: optional file names and header renames per table."""

    files: dict[str, str | list[str]] = field(default_factory=dict)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None


def _contract_document() -> dict:
    """The parsed ``contract.yml`` shipped with the package."""
    return load_yaml(resources.files("keytech").joinpath("contract.yml").read_text(encoding="utf-8"))


def load_contract() -> dict[str, Table]:
    return _contract_tables(_contract_document())


def _contract_tables(data: dict) -> dict[str, Table]:
    """The ``tables`` block of a parsed contract as :class:`Table` objects."""
    tables: dict[str, Table] = {}
    for name, spec in data["tables"].items():
        columns = []
        for col in spec["columns"]:
            if col["type"] not in COLUMN_TYPES:
                raise ContractError(f"contract.yml: {name}.{col['name']} has unknown type {col['type']!r}")
            columns.append(
                Column(
                    name=col["name"],
                    type=col["type"],
                    description=col.get("description", ""),
                    required=col.get("required", True),
                    not_null=col.get("not_null", False),
                    aliases=tuple(col.get("aliases", ())),
                    min=col.get("min"),
                )
            )
        tables[name] = Table(
            name=name,
            description=spec.get("description", "").strip(),
            vendor=spec.get("vendor", ""),
            key=tuple(spec["key"]),
            columns=tuple(columns),
            duplicates=spec.get("duplicates", "error"),
            required=spec.get("required", True),
            supply=spec.get("supply", ""),
            enables=tuple(
                Enables(specs=tuple(e["specs"]), mart=e["mart"], columns=tuple(e["columns"]))
                for e in spec.get("enables") or ()
            ),
        )
    return tables


def load_mapping(raw_dir: Path, contract: dict[str, Table]) -> Mapping:
    """Read ``<raw_dir>/column_mapping.yml`` if present; check that it names real tables/columns."""
    path = raw_dir / MAPPING_FILE
    if not path.is_file():
        return Mapping()
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ContractError(f"{path}: not UTF-8 (byte {exc.start} does not decode; saved as GBK?). "
                            "Save it as UTF-8 and run again.") from exc
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML ({exc}). Fix the file or remove it.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("tables") or {}, dict):
        raise ContractError(f"{path}: expected a mapping with a 'tables:' key (tables: {{firm_info: {{file: …, "
                            "columns: {your header: contract column}}}}}); see docs/input-contract.md.")
    if any(spec is not None and not isinstance(spec, dict) for spec in (data.get("tables") or {}).values()) or any(
            not isinstance((spec or {}).get("columns") or {}, dict) for spec in (data.get("tables") or {}).values()):
        raise ContractError(f"{path}: each table entry must be a mapping with optional 'file:' and 'columns:' "
                            "(a mapping of your header to the contract column); see docs/input-contract.md.")
    mapping = Mapping(path=path)
    for table_name, spec in (data.get("tables") or {}).items():
        if table_name not in contract:
            raise ContractError(
                f"{path}: unknown table {table_name!r}; contract tables are {', '.join(contract)}."
            )
        spec = spec or {}
        if spec.get("file"):  # a name, a glob, or a list of them (the parts of one table)
            file = spec["file"]
            mapping.files[table_name] = [str(f) for f in file] if isinstance(file, list) else str(file)
        renames = {}
        known = {c.name for c in contract[table_name].columns}
        for header, target in (spec.get("columns") or {}).items():
            if target not in known:
                raise ContractError(
                    f"{path}: tables.{table_name}.columns maps {header!r} to {target!r}, which is not "
                    f"a contract column of {table_name}; choose one of {', '.join(sorted(known))}."
                )
            renames[str(header)] = target
        mapping.columns[table_name] = renames
    return mapping


CONTRACT_DOC_HEADER = """# Raw input contract

A raw folder (default `data/raw/`; `KEYTECH_RAW_DIR` or `keytech build --raw-dir` to change it)
holds the files of each table **as the vendor delivers them** — no hand-made one-CSV-per-table step:

- **Which files belong to a table.** Files named after the table or its known CSMAR table code —
  `STK_LISTEDCOINFOANL` (firm_info), `FS_Combas` (balance_sheet), `FS_Comins` (income_statement),
  `FS_Comscfd` / `FS_Comscfi` (cash_flow) — alone or followed by `_`, `-` or a space
  (`patents_2008_2015.csv` + `patents_2016_2022.csv`, `FS_Combas_2000_2010.zip` +
  `FS_Combas_2011_2024.zip`), or what `file:` in `column_mapping.yml` names (a name, a glob or a
  list). Several files of one table are **stacked**. Rows of one key in two files: identical rows
  are landed once (a warning says how many), different rows are an error naming both files
  (patents: every row lands and repeats are merged downstream, see
  `marts.rpt_patent_reconciliation`). Two files that differ only in format (`patents.csv` and
  `patents.parquet`) are an error naming both: one is a stale copy, not a part.
- **Formats.** `.zip` (a CSMAR download: the CSV/TXT/Excel inside is read, the `[DES][csv].txt`
  description file's labels go to the landing manifest, the copyright PDF is ignored); `.xlsx` /
  `.xls` (first sheet, read with python-calamine; whole numbers are read without `.0`, so a
  stock code stored as the number `1` lands as `1` and is padded to `000001` in staging; dates
  as `YYYY-MM-DD`); CSV or TXT in UTF-8 (with or without
  BOM), GBK/GB18030 or UTF-16 (BOM, or recognised by its NUL bytes), comma- or tab-separated; and
  Parquet. The encoding is checked over the *whole* file; a file that is neither UTF-8 nor GBK is
  refused naming the byte and line where each fails.
- **Header rows.** Vendor description, label, unit and notes rows directly under the header (CSMAR
  exports and Excel files have two or three, yearbook extracts one) are recognised and skipped: a
  leading row (at most three) is a description row when none of its typed columns holds a value of
  its type. Columns prefixed by their table in multi-table CSMAR queries (`FS_Combas-A001000000`)
  are recognised.
- **Optional tables.** A table marked *optional* below may be absent: it lands empty, the build and
  the checks succeed, the mart columns it would fill are NULL, and the specifications it enables
  are **skipped** with the reason (`het_fc_low_key needs cash_flow: add cash_flow.csv or a CSMAR
  FS_Comscfd (direct method) download`) — listed in `results.runs` (parameters `skipped`), on the
  console and in the report. A supplied optional table that fills none of its mart columns (e.g.
  its rows match no firm-year) makes `keytech check` fail. `keytech validate` prints per table
  which specifications it enables.
- **Vendor labels.** The labels of a `[DES]` description file (lines `Field [中文名] - 说明`), or
  else of the Chinese label row under the field codes, are kept per table and column: in the
  landing manifest, as `meta.vendor_labels` of the staging model that reads the table (shown by
  `keytech docs`), and appended to the Stata/Parquet variable labels of `keytech export` for panel
  columns read from one vendor field (`size … | 资产总计`).
- **Stock codes that changed.** A firm keeps one identity when its code changed between vintages
  (the Beijing Stock Exchange moved its `43`/`83`/`87` codes to `920` codes on 9 October 2025):
  every staging model maps stock codes through `seeds/stock_code_crosswalk.csv` (`old_code`,
  `new_code`, `effective_date`, `exchange`, `security_name`, `source`), so rows delivered under
  the old code in one file and the new code in another are one firm under the new code; a
  firm-year delivered under both is kept once (the other quarantined as a repeat), a patent filed
  under both is merged. The seed bundles only ten published BSE pairs as examples (see
  `seeds/PROVENANCE-stock-code-crosswalk.md`): **add your rows** (the full list from the exchange
  or your vendor, with a `source`) and run `keytech build`. dbt tests keep `old_code` unique and
  forbid chains (a `new_code` that is itself an `old_code`: point every old code straight to the
  latest one).
- **Refreshing with a new vintage.** `keytech build` keeps the warehouse it replaces;
  `keytech diff` reports per public mart the rows added, removed and changed by key and the
  sample funnel side by side, and `keytech diff --runs A B` compares two estimation runs.

`keytech validate` checks a folder and reports **every** problem at once: a missing file or column
(naming both), a value of the wrong type (file, row, column, value), an empty required value,
a date outside 1900–2100, duplicate keys (with examples). `keytech build` runs the same validation
and then lands each table as `data/landing/<table>.parquet` — contract column names, every value as
text, plus `_source_file` (the file, or `zip:member`) and `_source_row` (the line in the raw CSV,
header = line 1; the Excel row; the row index for Parquet) — which dbt reads as its sources.
Nothing is landed unless every table passes. `data/landing/_manifest.json` lists per table its
files with their sha256, format, encoding, skipped description rows, header mapping and column
labels, and the SEI–IPC concordance edition used (`keytech build --concordance PATH` for another
edition in the shape of `seeds/sei_ipc_concordance.csv`).

## Bringing your own extracts: `column_mapping.yml`

Headers listed below (the contract name or any alias) are recognised without configuration,
case-insensitively. For any other header, put a `column_mapping.yml` in the raw folder:

```yaml
tables:
  patents:
    file: cnrds_invention_*.csv      # optional: a name, glob or list (parts are stacked)
    columns:                          # your header: contract column
      专利申请号: ApplyNo
      IPC分类号: IPC
  balance_sheet:
    columns:
      TotalLiab: A002000000
```

Extra columns are ignored (and listed as a warning). Optional columns (`required: no`) may be
absent and land as empty. No SQL needs to change.

## Types

| type | accepted values |
|---|---|
| `stock_code` | 1–6 digits; left-padded with zeros to 6 characters in staging (`1` → `000001`), then mapped through `seeds/stock_code_crosswalk.csv` |
| `text` | anything; trimmed, empty → null |
| `date` | `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYYMMDD` or `YYYY-MM-DD HH:MM:SS`, years 1900–2100 |
| `integer` | whole number |
| `number` | decimal number with a dot, no thousands separators |

_This file and the dbt sources (`models/staging/*/_*__sources.yml`) are generated from
`python/keytech/contract.yml` by `keytech contract-doc`; tests keep them identical._
"""


def render_markdown(contract: dict[str, Table] | None = None) -> str:
    """The input-contract document (docs/input-contract.md), generated from contract.yml."""
    contract = contract or load_contract()
    parts = [CONTRACT_DOC_HEADER]
    for table in contract.values():
        optional = " (optional: may be absent, lands empty)" if not table.required else ""
        parts.append(f"\n## `{table.name}` — {table.vendor}{optional}\n\n{table.description}\n")
        if not table.required and table.enables:
            needs = "; ".join(
                f"{', '.join(f'`{s}*`' if s.endswith('_') else f'`{s}`' for s in e.specs)} "
                f"(`marts.{e.mart}`: {', '.join(f'`{c}`' for c in e.columns)})" for e in table.enables)
            parts.append(f"Enables: {needs}. When absent these columns are NULL and these specifications are "
                         f"skipped with the reason (add {table.supply or table.name + '.csv'}).\n")
        parts.append(f"Key: {', '.join(f'`{k}`' for k in table.key)}"
                     + (" (duplicates are merged downstream and reconciled)" if table.duplicates == "merge" else
                        " (must be unique)") + ".\n")
        parts.append("| column | type | required | must be filled | description | also accepted headers |")
        parts.append("|---|---|---|---|---|---|")
        for c in table.columns:
            aliases = ", ".join(f"`{a}`" for a in c.aliases)
            kind = c.type + (f" ≥ {c.min:g}" if c.min is not None else "")
            parts.append(f"| `{c.name}` | {kind} | {'yes' if c.required else 'no'} | "
                         f"{'yes' if c.not_null else 'no'} | {c.description} | {aliases} |")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------ dbt source files
# models/staging/<source>/_<source>__sources.yml are generated from the contract (its `dbt_sources`
# block says which tables each dbt source groups) by `keytech contract-doc`; a test keeps them equal.
SOURCES_FILE_HEADER = ("# Generated from python/keytech/contract.yml by `keytech contract-doc`: edit the contract,\n"
                       "# not this file (tests/python/test_contract_sources.py keeps them identical).\n")
LANDING_NOTE = (
    "Read from the landing area written by `keytech ingest`: one Parquet file per contract table, every "
    "contract column as text (trimmed, empty → null, values as the vendor wrote them) plus the lineage "
    "columns `_source_file` and `_source_row`. The folder is the dbt var `landing_dir` (env var "
    "KEYTECH_LANDING_DIR, default data/landing)."
)
# dbt-duckdb reads each source table from the landing Parquet file of the same name; the folder is
# rendered when dbt parses the sources (dbt does not render Jinja in dbt_project.yml vars).
EXTERNAL_LOCATION = (
    "\"read_parquet('{{ var(\\\"landing_dir\\\", env_var(\\\"KEYTECH_LANDING_DIR\\\", \\\"data/landing\\\")) "
    "| replace(\\\"'\\\", \\\"''\\\") | replace(\\\"{\\\", \\\"{{\\\") | replace(\\\"}\\\", \\\"}}\\\") }}"
    "/{name}.parquet')\""
)
LINEAGE_COLUMNS = (  # (name, type, description)
    ("_source_file", "varchar", "Lineage: name of the raw file the row came from (a file inside a zip as "
                                "`zip:member`)."),
    ("_source_row", "bigint", "Lineage: CSV physical line number in the raw file (header = line 1), the Excel "
                              "row, or 1-based Parquet row index."),
)


@dataclass(frozen=True)
class DbtSource:
    name: str
    description: str
    tables: tuple[str, ...]


def load_dbt_sources(contract: dict[str, Table] | None = None) -> dict[str, DbtSource]:
    """The contract's `dbt_sources` block; every contract table belongs to exactly one source."""
    document = _contract_document()  # read and parsed once for both blocks
    contract = contract or _contract_tables(document)
    data = document.get("dbt_sources") or {}
    sources = {name: DbtSource(name=name, description=" ".join(spec["description"].split()),
                               tables=tuple(spec["tables"])) for name, spec in data.items()}
    listed = [t for s in sources.values() for t in s.tables]
    unknown = sorted(set(listed) - set(contract))
    missing = [t for t in contract if t not in listed]
    repeated = sorted({t for t in listed if listed.count(t) > 1})
    if unknown or missing or repeated:
        raise ContractError(f"contract.yml dbt_sources: unknown tables {unknown}, tables in no source {missing}, "
                            f"tables in several sources {repeated}")
    return sources


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON string syntax is valid YAML)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def _column_description(column: Column) -> str:
    kind = column.type + (f" >= {column.min:g}" if column.min is not None else "")
    notes = [f"Contract type {kind}"]
    if column.not_null:
        notes.append("required non-null")
    if not column.required:
        notes.append("optional column (all null when absent from the raw file)")
    return f"{column.description} {', '.join(notes)}; landed as text."


def render_dbt_sources(contract: dict[str, Table] | None = None) -> dict[str, str]:
    """{path relative to the project root: text} of every models/staging/*/_*__sources.yml."""
    contract = contract or load_contract()
    files = {}
    for source in load_dbt_sources(contract).values():
        lines = [SOURCES_FILE_HEADER + "version: 2", "", "sources:", f"  - name: {source.name}",
                 "    description: >-", f"      {source.description} {LANDING_NOTE}",
                 "    config:", "      meta:", f"        external_location: {EXTERNAL_LOCATION}", "    tables:"]
        for table in (contract[t] for t in source.tables):
            optional = (" Optional table: it may be absent and then lands empty (no rows)."
                        if not table.required else "")
            # one test node per table for the must-be-filled columns and the lineage columns
            # (macros/tests/column_checks.sql; issue 17: dbt's cost is per node, not per column)
            required = [c.name for c in table.columns if c.not_null] + [name for name, _, _ in LINEAGE_COLUMNS]
            lines += [f"      - name: {table.name}", "        description: >-",
                      f"          {table.description} Contract key: {', '.join(table.key)}.{optional}",
                      "        data_tests:", "          - column_checks:",
                      f"              name: column_checks_{source.name}_{table.name}", "              arguments:",
                      f"                not_null: [{', '.join(required)}]",
                      "        columns:"]
            for column in table.columns:
                lines += [f"          - name: {column.name}", "            data_type: varchar",
                          f"            description: {_q(_column_description(column))}"]
            for name, data_type, description in LINEAGE_COLUMNS:
                lines += [f"          - name: {name}", f"            data_type: {data_type}",
                          f"            description: {_q(description)}"]
        files[f"models/staging/{source.name}/_{source.name}__sources.yml"] = "\n".join(lines) + "\n"
    return files
