"""`keytech export`: Stata .dta (labels, value labels), Parquet and CSV round-trips of the panel and
of the estimation results, on the shared tiny warehouse."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from _report_support import env_for
from keytech.export import VALUE_LABELS, export, label_for, numeric_equal, read_panel, read_results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tiny_demo_warehouse) -> dict:
    return tiny_demo_warehouse


def _assert_same(original: pd.DataFrame, back: pd.DataFrame) -> None:
    assert list(back.columns) == list(original.columns)
    assert len(back) == len(original)
    for column in original.columns:
        a, b = original[column], back[column]
        if pd.api.types.is_numeric_dtype(a) or pd.api.types.is_bool_dtype(a):
            assert numeric_equal(a.astype("float64"), b.astype("float64")), column
        elif pd.api.types.is_datetime64_any_dtype(a):
            assert (pd.to_datetime(b) - pd.to_datetime(a)).abs().max() < pd.Timedelta(milliseconds=1), column
        else:
            assert a.fillna("").astype(str).tolist() == b.fillna("").astype(str).tolist(), column


def test_panel_dta_round_trip_with_labels(built, tmp_path):
    target, rows = export("panel", "dta", out=tmp_path / "panel.dta", db_path=built["db"])
    original = read_panel(db_path=built["db"])
    assert rows == len(original) > 0
    back = pd.read_stata(target, convert_categoricals=False)
    _assert_same(original, back)
    with pd.io.stata.StataReader(target) as reader:
        labels = reader.variable_labels()
        value_labels = reader.value_labels()
        assert "rpt_analysis_panel" in reader.data_label
    assert set(labels) == set(original.columns)
    assert labels["policy"] == label_for("policy") and "Policy" in labels["policy"]
    assert labels["apply_inv_zl"].startswith("[Apply_inv_zl]")
    assert all(labels[c] for c in original.columns)
    for column, mapping in VALUE_LABELS.items():
        assert {int(k): v for k, v in value_labels[column].items()} == mapping
    categorical = pd.read_stata(target)
    assert set(categorical["policy"].astype(str)) <= set(VALUE_LABELS["policy"].values())


def test_results_dta_round_trip_keeps_long_json(built, tmp_path):
    target, rows = export("results", "dta", out=tmp_path, db_path=built["db"])
    assert target.parent == tmp_path and target.name == f"estimates_{built['run_id']}.dta"
    original = read_results(built["db"])
    back = pd.read_stata(target)
    _assert_same(original, back)
    assert back["diagnostics_json"].str.len().max() > 2045  # long JSON (Stata strL) survives, compared above


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_panel_parquet_and_csv_round_trip(built, tmp_path, fmt):
    target, _ = export("panel", fmt, out=tmp_path / f"p.{fmt}", db_path=built["db"])
    original = read_panel(db_path=built["db"])
    back = pd.read_parquet(target) if fmt == "parquet" else pd.read_csv(target, dtype={"stkcd": str, "city_code": str,
                                                                                          "province_code": str, "industry_code": str})
    _assert_same(original, back)
    if fmt == "parquet":
        schema = pq.read_schema(target)
        assert schema.field("policy").metadata[b"label"].decode() == label_for("policy")


def test_cli_export_all_runs_and_unknown_run(built, monkeypatch, tmp_path, capsys):
    from keytech.cli import main

    for key, value in env_for(built).items():
        monkeypatch.setenv(key, value)
    assert main(["export", "--what", "results", "--format", "csv", "--all-runs", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "estimates_all_runs.csv").is_file()
    assert main(["export", "--what", "results", "--run", "no-such-run", "--out", str(tmp_path)]) == 3
    assert "no-such-run" in capsys.readouterr().err
    assert main(["export", "--format", "dta"]) == 0  # default output/export under KEYTECH_OUTPUT_DIR
    assert (built["out"] / "export" / "rpt_analysis_panel.dta").is_file()


def test_vendor_labels_are_appended_and_kept_within_80_characters(tmp_path):
    """Unit check of the label rule, independent of a build: the vendor's label of a panel
    column's source field follows the project's label; Stata's 80-character limit holds."""
    from keytech.export import VARIABLE_LABELS, write_frame

    frame = pd.DataFrame({"size": [1.0, 2.0], "stkcd": ["000001", "000002"], "policy": [0, 1]})
    vendor = {"balance_sheet": {"A001000000": "资产总计"}, "firm_info": {"Stkcd": "证" * 120}}
    target = write_frame(frame, "dta", tmp_path / "x.dta", vendor_labels=vendor)
    with pd.io.stata.StataReader(target) as reader:
        labels = reader.variable_labels()
    assert labels["size"] == VARIABLE_LABELS["size"] + " | 资产总计"
    assert labels["policy"] == VARIABLE_LABELS["policy"]
    assert len(labels["stkcd"]) == 80 and labels["stkcd"].endswith("证证证") and " | " in labels["stkcd"]
    parquet = write_frame(frame, "parquet", tmp_path / "x.parquet", vendor_labels=vendor)
    import pyarrow.parquet as pq

    field = pq.read_schema(parquet).field("size")
    assert field.metadata[b"vendor_label"].decode() == "资产总计"
    assert field.metadata[b"label"].decode() == VARIABLE_LABELS["size"] + " | 资产总计"
