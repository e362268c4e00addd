"""The bench's ipc_floor stage (issue 17): the bare DuckDB exact join of every landed patent-IPC
token against the concordance, beside dbt's time for the patent/IPC models. On a hand-made landed
file the token and match counts equal an independent Python count; the SQL/floor ratio is the
models' summed execution time over the stage's own seconds and is a bench target (≤ 10×)."""

from __future__ import annotations

import csv
import json

import duckdb
import pytest

from keytech import bench, paths
from keytech.sql_literals import sql_string


def test_ipc_floor_counts_tokens_and_exact_matches(tmp_path):
    ipc = ["H04L 27/26;G06F17/30", "A47J27/00", None, "H01L31/04; ZZZZ1/00", "G06F17/30;G06F17/30"]
    (tmp_path / "landing").mkdir()
    con = duckdb.connect()
    con.execute("create table p (Scode varchar, ApplyNo varchar, IPC varchar)")
    con.executemany("insert into p values (?, ?, ?)", [("000001", f"CN{i}", v) for i, v in enumerate(ipc)])
    con.execute(f"copy p to '{tmp_path / 'landing' / 'patents.parquet'}' (format parquet)")
    con.close()
    (tmp_path / "run_results.json").write_text(json.dumps({"results": [
        {"unique_id": "model.keytech.int_patent_ipc_codes_flagged", "execution_time": 2.0},
        {"unique_id": "model.keytech.int_patent_ipc_tokens_parsed", "execution_time": 1.5},
        {"unique_id": "model.keytech.dim_firms", "execution_time": 9.0},  # not a patent model
    ]}))
    result = bench._stage_ipc_floor(tmp_path, "tiny", 1)

    with open(paths.seeds_dir() / "sei_ipc_concordance.csv", encoding="utf-8") as fh:
        codes = {row["ipc_code"] for row in csv.DictReader(fh)}
    tokens = [t for v in ipc for t in (v or "").replace(" ", "").split(";")]
    assert result["patent_rows"] == len(ipc)
    assert result["ipc_tokens"] == len(tokens)  # an empty IPC field is one empty token, as string_split gives
    assert result["exact_matches"] == sum(t in codes for t in tokens)
    assert result["sql_seconds"] == pytest.approx(3.5)
    assert result["sql_over_floor"] == pytest.approx(3.5 / result["seconds"])
    stages = {"ipc_floor": {**result, "status": "ok", "peak_rss_bytes": 1}}
    report = {"scale": "tiny", "seed": 1, "started_at": "now", "machine": {}, "stages": stages,
              "targets": bench.evaluate(stages)}
    assert report["targets"]["ipc_sql_over_floor"]["value"] == pytest.approx(result["sql_over_floor"])
    assert "× the floor" in bench.render_markdown(report)


def test_write_floor_copies_the_patent_tables_of_the_warehouse(tmp_path):
    """The second anchor: each patent/IPC model that is a table in the warehouse is copied whole
    (views and other tables are not), the scratch file is removed, and bench.md shows it. The work
    folder's name has a quote: the warehouse path reaches ATTACH as a quoted literal."""
    tmp_path = tmp_path / "bench's work"
    tmp_path.mkdir()
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema intermediate; create schema marts")
        con.execute("create table intermediate.int_patent_ipc_tokens_parsed as select range as i from range(5000)")
        con.execute("create table intermediate.int_patents_dispositioned as select range as i from range(300)")
        con.execute("create view marts.fct_patents as select * from intermediate.int_patents_dispositioned")
        con.execute("create table marts.dim_firms as select 1 as i")  # not a patent model
    scratch = tmp_path / "write_floor.duckdb"
    written = bench._write_floor(warehouse, scratch)
    assert set(written) == {"int_patent_ipc_tokens_parsed", "int_patents_dispositioned"}
    assert all(seconds > 0 for seconds in written.values())
    assert not scratch.exists()

    (tmp_path / "landing").mkdir()
    with duckdb.connect() as con:
        con.execute(f"copy (select '000001' as Scode, 'CN1' as ApplyNo, 'G06F17/30' as IPC) "
                    f"to {sql_string(tmp_path / 'landing' / 'patents.parquet')} (format parquet)")
    (tmp_path / "run_results.json").write_text(json.dumps({"results": [
        {"unique_id": "model.keytech.int_patent_ipc_tokens_parsed", "execution_time": 1.5}]}))
    result = bench._stage_ipc_floor(tmp_path, "tiny", 1)
    assert set(result["write_floor_tables"]) == set(written)
    assert result["write_floor_seconds"] == pytest.approx(sum(result["write_floor_tables"].values()))
    assert result["sql_over_write_floor"] == pytest.approx(1.5 / result["write_floor_seconds"])
    stages = {"ipc_floor": {**result, "status": "ok", "peak_rss_bytes": 1}}
    report = {"scale": "tiny", "seed": 1, "started_at": "now", "machine": {}, "stages": stages,
              "targets": bench.evaluate(stages)}
    assert "writing their 2 tables' rows alone" in bench.render_markdown(report)


def test_fit_anchor_is_the_table3_col5_fit(tmp_path, monkeypatch):
    """The anchor fit is Table 3 column 5 as the registry runs it: same N and coefficient."""
    from keytech.estimation import load_registry
    from keytech.estimation.core.fitting import RunContext
    from keytech.estimation.dispatch import run_spec
    from keytech.estimation.core.panel import prepare_panel
    from keytech.estimation.simulate import simulate_panel

    panel = simulate_panel(seed=4, n_cities=30, firms_per_city=5.0, beta_key=0.2)
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create schema marts")
        con.register("p", panel)
        con.execute("create table marts.rpt_analysis_panel as select * from p")
    monkeypatch.setenv("KEYTECH_DB", str(db))
    monkeypatch.setattr(bench, "ANCHOR_REPEATS", 2)
    result = bench._stage_fit_anchor(tmp_path, "tiny", 1)
    spec = load_registry().get(bench.ANCHOR_SPEC)
    ours = run_spec(spec, prepare_panel(panel), RunContext(placebo_draws=0, seed=1, progress=False))[0]
    assert result["nobs"] == ours.nobs and result["fits"] == 2 and result["seconds"] > 0
    assert result["policy"] == pytest.approx(ours.main.estimate, rel=1e-8)
