"""`keytech export`: the analysis panel or estimation results as Parquet, CSV or Stata ``.dta``.

* ``panel``   — ``marts.rpt_analysis_panel`` (or ``--panel rpt_analysis_panel_window2022``), one row
  per firm and year, every column of the mart.
* ``results`` — ``results.estimates`` joined to ``results.runs`` (started_at, data_fingerprint,
  code_version) for the latest run, or for every run with ``--all-runs``.

Stata files are written as format 118 (Unicode, so Chinese text survives), with a variable label on
every column and value labels where a code has meaning (``policy``, ``ifdome``). A panel column read
from one vendor field (``VENDOR_FIELDS``: ``size`` from the balance sheet's A001000000, …) has the
vendor's own label of that field appended (``… | 资产总计``) when the build recorded one: the ``[DES]``
description file of a CSMAR download, or the label row under the field codes (landing manifest,
kept in ``build_meta.build_state``). Parquet files carry the same labels as column metadata
(``label``, and ``vendor_label``). The warehouse is opened read-only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from keytech import paths
from keytech.warehouse import WarehouseMissing, connect, table_exists
from keytech.marts import marts_with

FORMATS = ("parquet", "csv", "dta")
WHATS = ("panel", "results")
# marts declared `export_panel: true` in models/marts/**/*.yml (keytech/marts.py)
PANELS = marts_with("export_panel")

# Variable labels (Stata allows 80 characters). Paper names (Pi & Luo, Table 2) in brackets.
VARIABLE_LABELS: dict[str, str] = {
    "stkcd": "Stock code (6 digits)",
    "year": "Fiscal year",
    "city_code": "Registered prefecture city, GB/T 2260 code",
    "province_code": "Province code (2 digits)",
    "industry_code": "CSRC 2012 industry division, e.g. C39",
    "first_treated_year": "First year Policy = 1 in the city (year after 1st pilot)",
    "rel_time": "Event time: year - first_treated_year",
    "policy": "[Policy] City has had an intelligent-manufacturing pilot",
    "apply_inv_zl": "[Apply_inv_zl] Key-technology invention applications",
    "apply_inv_nozl": "[Apply_inv_nozl] Non-key invention applications",
    "apply_inv_zl_joint": "[Apply_inv_zl_joint] Key-tech inventions filed jointly",
    "grant_inv_zl": "Key-tech invention applications of the year later granted",
    "cite_inv_zl": "Citations of the year's key-tech invention applications",
    "ln_apply_inv_zl": "ln(1 + Apply_inv_zl)",
    "ln_apply_inv_nozl": "ln(1 + Apply_inv_nozl)",
    "ln_apply_inv_zl_joint": "ln(1 + Apply_inv_zl_joint)",
    "ln_grant_inv_zl": "ln(1 + key-tech grants)",
    "ln_cite_inv_zl": "ln(1 + key-tech citations)",
    "lag1_ln_apply_inv_zl": "Previous year's ln(1 + Apply_inv_zl)",
    "roa": "[ROA] Net profit / total assets (winsorised 1/99)",
    "lnage": "[Lnage] ln(firm age + 1) (winsorised 1/99)",
    "ki": "[KI] Total assets / operating revenue (winsorised 1/99)",
    "ifdome": "[Ifdome] State-owned enterprise",
    "size": "[Size] Total assets, yuan (winsorised 1/99)",
    "kd": "[KD] Liabilities / total assets (winsorised 1/99)",
    "meangdp": "[Meangdp] City GDP per capita, yuan (winsorised 1/99)",
    "infor": "[Infor] Internet users per 10,000 people (winsorised 1/99)",
    "finsgov": "[Finsgov] Local general budget expenditure, yuan (winsorised)",
    "fdi": "[FDI] Foreign investment actually used, USD (winsorised 1/99)",
    "sale": "[Sale] Operating revenue, yuan (winsorised 1/99)",
    "saleshare": "[Saleshare] Firm's share of its CSRC division's sales",
    "ln_size": "ln(Size)",
    "ln_meangdp": "ln(Meangdp)",
    "ln_finsgov": "ln(Finsgov)",
    "ln_fdi": "ln(1 + FDI)",
    "ln_sale": "ln(Sale)",
    # results
    "run_id": "Estimation run id (results.runs)",
    "spec_id": "Specification id (python/keytech/specs.yml)",
    "term": "Regressor or statistic",
    "estimate": "Coefficient estimate",
    "std_error": "Standard error",
    "t_stat": "t statistic",
    "p_value": "p-value",
    "ci_low": "95% confidence interval, lower bound",
    "ci_high": "95% confidence interval, upper bound",
    "nobs": "Observations used",
    "adj_r2": "Adjusted R-squared",
    "fixed_effects": "Fixed effects",
    "vcov": "Variance estimator",
    "sample": "Sample filter",
    "diagnostics_json": "Diagnostics (JSON)",
    "started_at": "Run start time (UTC)",
    "data_fingerprint": "Content hash of the marts the run used",
    "code_version": "Code version (git describe)",
}

VALUE_LABELS: dict[str, dict[int, str]] = {
    "policy": {0: "no pilot in city yet", 1: "city has had a pilot"},
    "ifdome": {0: "not state-owned", 1: "state-owned"},
}


# Panel columns read from one vendor field: (contract table, contract column). The field's vendor
# label, when the build recorded one, is appended to the variable label.
VENDOR_FIELDS: dict[str, tuple[str, str]] = {
    "stkcd": ("firm_info", "Stkcd"),
    "year": ("firm_info", "Accper"),
    "city_code": ("firm_info", "Ctnm"),
    "industry_code": ("firm_info", "Nnindcd"),
    "ifdome": ("firm_info", "Ownership"),
    "size": ("balance_sheet", "A001000000"),
    "ln_size": ("balance_sheet", "A001000000"),
    "total_liabilities": ("balance_sheet", "A002000000"),
    "sale": ("income_statement", "B001101000"),
    "ln_sale": ("income_statement", "B001101000"),
    "net_profit": ("income_statement", "B002000000"),
    "operating_cash_flow": ("cash_flow", "C001000000"),
    "meangdp": ("city_yearbook", "GdpPerCapita"),
    "ln_meangdp": ("city_yearbook", "GdpPerCapita"),
    "finsgov": ("city_yearbook", "BudgetExpenditure"),
    "ln_finsgov": ("city_yearbook", "BudgetExpenditure"),
    "fdi": ("city_yearbook", "FdiUsed"),
    "ln_fdi": ("city_yearbook", "FdiUsed"),
}
LABEL_CHARS = 80  # Stata's limit


def vendor_label(column: str, vendor_labels: dict[str, dict[str, str]] | None) -> str | None:
    """The vendor's label of the field a panel column comes from, or None."""
    table, field_name = VENDOR_FIELDS.get(column, (None, None))
    return ((vendor_labels or {}).get(table) or {}).get(field_name) or None if table else None


def label_for(column: str, vendor_labels: dict[str, dict[str, str]] | None = None) -> str:
    """The variable label: the project's (paper name in brackets), then `` | `` and the vendor's
    label of the source field when known; the project's part is shortened to keep 80 characters."""
    base = VARIABLE_LABELS.get(column, column)
    vendor = vendor_label(column, vendor_labels)
    if not vendor:
        return base[:LABEL_CHARS]
    suffix = f" | {vendor}"[:LABEL_CHARS - 10]
    room = LABEL_CHARS - len(suffix)
    return (base if len(base) <= room else base[:room - 1] + "…") + suffix


def read_vendor_labels(db_path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """{table: {contract column: vendor label}} recorded by the warehouse's last build; {} when none."""
    from keytech.build import read_build_state

    state = read_build_state(Path(db_path) if db_path else paths.warehouse_path()) or {}
    return {name: dict(entry.get("labels") or {}) for name, entry in (state.get("tables") or {}).items()
            if isinstance(entry, dict) and entry.get("labels")}


def read_panel(panel: str = PANELS[0], db_path: str | Path | None = None) -> pd.DataFrame:
    if panel not in PANELS:
        raise ValueError(f"unknown panel {panel!r}; use one of {', '.join(PANELS)}")
    with connect(db_path) as con:
        if not table_exists(con, "marts", panel):
            raise WarehouseMissing(f"marts.{panel} is not in the warehouse; run `keytech build`.")
        return con.execute(f"select * from marts.{panel} order by stkcd, year").df()


def read_results(db_path: str | Path | None = None, run_id: str | None = None, all_runs: bool = False) -> pd.DataFrame:
    with connect(db_path) as con:
        if not table_exists(con, "results", "estimates"):
            raise LookupError("no estimation results in the warehouse; run `keytech estimate` first")
        if run_id is None and not all_runs:
            row = con.execute("select run_id from results.runs order by started_at desc limit 1").fetchone()
            if row is None:
                raise LookupError("no estimation runs in results.runs; run `keytech estimate` first")
            run_id = row[0]
        where, params = ("", []) if all_runs else ("where e.run_id = ?", [run_id])
        frame = con.execute(
            "select e.*, r.started_at, r.data_fingerprint, r.code_version "
            f"from results.estimates e join results.runs r using (run_id) {where} "
            "order by r.started_at, e.spec_id, e.term", params).df()
    if frame.empty:
        raise LookupError(f"run {run_id!r} has no estimates in results.estimates")
    return frame


def _stata_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """Stata-ready copy: nullable ints → int or float, text → str ('' for missing), booleans → int8."""
    out = pd.DataFrame(index=frame.index)
    strl: list[str] = []
    dates: dict[str, str] = {}
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_bool_dtype(series):
            out[column] = series.astype("float64") if series.isna().any() else series.astype("int8")
        elif pd.api.types.is_datetime64_any_dtype(series):
            out[column] = pd.to_datetime(series).astype("datetime64[ns]")
            dates[column] = "tc"
        elif pd.api.types.is_integer_dtype(series):
            if series.isna().any():
                out[column] = series.astype("float64")
            else:
                values = series.astype("int64")
                out[column] = values.astype("int32") if values.abs().max() < 2**31 - 1000 else values.astype("float64")
        elif pd.api.types.is_float_dtype(series):
            out[column] = series.astype("float64")
        else:
            text = series.astype(object).where(series.notna(), "").astype(str)
            out[column] = text.astype(object)
            if text.str.len().max() > 2000:
                strl.append(column)
    return out, strl, dates


def write_frame(frame: pd.DataFrame, fmt: str, target: Path, dataset_label: str = "",
                vendor_labels: dict[str, dict[str, str]] | None = None) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(target, index=False, encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        fields = [f.with_metadata({"label": label_for(f.name, vendor_labels),
                                   **({"vendor_label": v} if (v := vendor_label(f.name, vendor_labels)) else {})})
                  for f in table.schema]
        schema = pa.schema(fields, metadata={**(table.schema.metadata or {}), b"keytech.dataset": dataset_label.encode()})
        pq.write_table(table.cast(schema), target)
    elif fmt == "dta":
        stata, strl, dates = _stata_frame(frame)
        labels = {c: label_for(c, vendor_labels) for c in stata.columns}
        # a coded column with missing values (ifdome: a missing control stays NULL in the panel)
        # is float in Stata; its value labels still apply to the whole-number codes
        value_labels = {c: v for c, v in VALUE_LABELS.items()
                        if c in stata.columns and pd.api.types.is_numeric_dtype(stata[c])
                        and bool((stata[c].dropna() % 1 == 0).all())}
        stata.to_stata(target, write_index=False, version=118, variable_labels=labels,
                       value_labels=value_labels or None, convert_strl=strl or None,
                       convert_dates=dates or None, data_label=dataset_label[:80])
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return target


def export(what: str, fmt: str, out: str | Path | None = None, db_path: str | Path | None = None,
           panel: str = PANELS[0], run_id: str | None = None, all_runs: bool = False) -> tuple[Path, int]:
    """Write the export; returns (path, rows)."""
    if what not in WHATS:
        raise ValueError(f"unknown --what {what!r}; use one of {', '.join(WHATS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if what == "panel":
        frame = read_panel(panel, db_path)
        name = panel
        label = f"KeyTech Panel: marts.{panel}"
        vendor_labels = read_vendor_labels(db_path)
    else:
        frame = read_results(db_path, run_id, all_runs)
        name = "estimates_all_runs" if all_runs else f"estimates_{frame['run_id'].iloc[0]}"
        label = "KeyTech Panel: results.estimates" + ("" if all_runs else f" run {frame['run_id'].iloc[0]}")
        vendor_labels = None
    target = Path(out) if out else paths.output_dir() / "export" / f"{name}.{fmt}"
    if out and (target.is_dir() or str(out).endswith(("/", "\\")) or not target.suffix):
        target = target / f"{name}.{fmt}"
    write_frame(frame, fmt, target, label, vendor_labels)
    return target, int(len(frame))


def numeric_equal(a: pd.Series, b: pd.Series) -> bool:
    """Helper for round-trip checks: equal up to float rounding, NaN == NaN."""
    x = pd.to_numeric(a, errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(b, errors="coerce").to_numpy(dtype=float)
    return bool(np.allclose(x, y, rtol=1e-12, atol=0, equal_nan=True))
