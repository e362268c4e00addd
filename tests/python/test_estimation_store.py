"""Results store, data-check gate and the end-to-end run on a temporary DuckDB warehouse.

The warehouse is built here from a simulated panel (no real data): ``marts.rpt_analysis_panel``,
``marts.rpt_analysis_panel_window2022`` and a ``results.check_runs`` row whose fingerprint is
computed with ``keytech.warehouse.mart_fingerprint`` on that file (missing public marts count as
'missing' in the fingerprint, as in the real warehouse before every mart exists).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from keytech import warehouse
from keytech.estimation import ChecksNotPassed, list_specs, load_registry, run_estimation
from keytech.synthetic import SYNTHETIC_NOTE
from keytech.tables import render_tables, table3_vs_paper
from keytech.estimation.orchestration import store
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.core.panel import prepare_panel
from keytech.estimation.simulate import simulate_panel

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

PLACEBO_DRAWS = 40
SEED = 99
ROUNDTRIP_RTOL = 1e-12


def _make_warehouse(path: Path, *, check: str | None = "pass", seed: int = 5) -> pd.DataFrame:
    """Write marts from simulated panels; ``check``: 'pass', 'fail', 'stale' or None (no table)."""
    panel = simulate_panel(seed=seed, n_cities=40, firms_per_city=6.0, beta_key=0.25)
    panel22 = simulate_panel(seed=seed, n_cities=40, firms_per_city=6.0, beta_key=0.25, end_year=2022)
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema marts")
        con.register("p", panel)
        con.execute("create table marts.rpt_analysis_panel as select * from p")
        con.register("p22", panel22)
        con.execute("create table marts.rpt_analysis_panel_window2022 as select * from p22")
        fp = warehouse.mart_fingerprint(con)
        if check is not None:
            con.execute("create schema results")
            con.execute(
                "create table results.check_runs (check_run_id text, checked_at timestamp, "
                "passed boolean, data_fingerprint text, details_json text)"
            )
            # an older failing run must not matter when the latest passed (and vice versa)
            con.execute("insert into results.check_runs values ('old', timestamp '2020-01-01', ?, ?, '{}')", [check != "pass", fp])
            latest_fp = "0000000000000000" if check == "stale" else fp
            con.execute("insert into results.check_runs values ('new', timestamp '2030-01-01', ?, ?, '{}')", [check != "fail", latest_fp])
    finally:
        con.close()
    return panel


PLANTED = {"beta_key": 0.25, "beta_nonkey": 0.0}
# the specs of the estimation issue (Table 3, event study, robustness, placebo); the registry may
# hold more (e.g. Table 4 on marts.rpt_endogeneity_panel), which this test warehouse does not have
MY_SPEC_IDS = [
    "table3_col1", "table3_col2", "table3_col3", "table3_col4", "table3_col5", "event_study",
    "robust_cluster_firm", "robust_cluster_province", "robust_cluster_city_year", "robust_poisson",
    "robust_negbin", "robust_grants", "robust_citations", "robust_anticipation", "robust_pretrend",
    "robust_window2022", "robust_staggered_dcdh", "robust_staggered_bacon", "robust_staggered_sunab",
    "robust_staggered_did2s", "robust_staggered_cs", "placebo",
]


@pytest.fixture(autouse=True)
def _isolated_paths(tmp_path, monkeypatch):
    """Never read the repository's raw folder or write its output folder."""
    monkeypatch.setenv("KEYTECH_RAW_DIR", str(tmp_path / "raw-none"))
    monkeypatch.setenv("KEYTECH_OUTPUT_DIR", str(tmp_path / "output"))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """One full run of every spec on a temporary warehouse (shared by the tests below), with a
    synthetic-data truth file (the generator nests the planted rates under "rates")."""
    base = tmp_path_factory.mktemp("e2e")
    db = base / "warehouse.duckdb"
    panel = _make_warehouse(db)
    raw = base / "raw"
    raw.mkdir()
    (raw / "_truth.json").write_text(json.dumps({"generator": "test", "rates": PLANTED}), encoding="utf-8")
    with duckdb.connect(str(db), read_only=True) as con:
        fp_before = warehouse.mart_fingerprint(con)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEYTECH_RAW_DIR", str(raw))
        run_id = run_estimation(MY_SPEC_IDS, False, PLACEBO_DRAWS, SEED, db_path=db, progress=False, out_dir=base / "output",
                                render=render_tables)
    return {"db": db, "out": base / "output", "run_id": run_id, "panel": panel, "fp_before": fp_before}


def test_store_round_trip_every_spec_present(e2e):
    reg = load_registry()
    est = store.read_estimates(e2e["db"], e2e["run_id"])
    assert set(MY_SPEC_IDS) <= set(reg.ids)
    assert set(est["spec_id"]) == set(MY_SPEC_IDS)
    assert "(error)" not in set(est["term"]), est.loc[est["term"] == "(error)", "diagnostics_json"].tolist()
    assert list(est.columns) == store.ESTIMATE_COLUMNS
    runs = store.read_runs(e2e["db"])
    run = runs.loc[runs["run_id"] == e2e["run_id"]].iloc[0]
    assert run["data_fingerprint"] == e2e["fp_before"]
    assert run["finished_at"] >= run["started_at"] and run["code_version"]
    params = json.loads(run["parameters_json"])
    assert params["placebo_draws"] == PLACEBO_DRAWS and params["seed"] == SEED and params["gate"]["status"] == "passed"
    assert params["synthetic"] is True and params["failures"] == {}  # inferred from _truth.json
    assert params["truth"] == PLANTED
    # stored numbers equal a direct computation on the same panel
    reg_ctx = RunContext(placebo_draws=PLACEBO_DRAWS, seed=SEED, fe_labels=reg.fe_labels)
    (direct,) = run_spec(reg.get("table3_col5"), prepare_panel(e2e["panel"]), reg_ctx)
    row = est.loc[(est["spec_id"] == "table3_col5") & (est["term"] == "policy")].iloc[0]
    assert row["estimate"] == pytest.approx(direct.main.estimate, rel=ROUNDTRIP_RTOL)
    assert row["std_error"] == pytest.approx(direct.main.std_error, rel=ROUNDTRIP_RTOL)
    assert row["nobs"] == direct.nobs and row["vcov"] == "cluster(city_code)"
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    diag = json.loads(row["diagnostics_json"])
    assert diag["n_clusters"] == [40] or diag["n_clusters"][0] <= 40
    # placebo diagnostics hold the draws used for the figure
    prow = est.loc[(est["spec_id"] == "placebo") & (est["term"] == "policy")].iloc[0]
    assert len(json.loads(prow["diagnostics_json"])["draws"]) == PLACEBO_DRAWS


def test_poisson_recovers_truth_file_effect_end_to_end(e2e):
    est = store.read_estimates(e2e["db"], e2e["run_id"])
    for sid in ("robust_poisson", "robust_negbin"):
        row = est.loc[(est["spec_id"] == sid) & (est["term"] == "policy")].iloc[0]
        assert json.loads(row["diagnostics_json"])["planted_beta_key"] == PLANTED["beta_key"]
        assert abs(row["estimate"] - PLANTED["beta_key"]) < 2 * row["std_error"], sid
    ols = est.loc[(est["spec_id"] == "table3_col5") & (est["term"] == "policy"), "estimate"].iloc[0]
    assert ols > 0


def test_marts_untouched_and_outputs_written(e2e):
    with duckdb.connect(str(e2e["db"]), read_only=True) as con:
        assert warehouse.mart_fingerprint(con) == e2e["fp_before"]
    out = e2e["out"]
    for name in ("table3", "robustness", "event_study"):
        for ext in ("md", "tex", "html"):
            p = out / "tables" / f"{name}.{ext}"
            assert p.is_file() and p.stat().st_size > 200, p
            assert "synthetic" in p.read_text(encoding="utf-8")
    for name in ("event_study", "placebo"):
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 5000
    md = (out / "tables" / "table3.md").read_text(encoding="utf-8")
    assert "0.1287***" in md and "(0.0423)" in md and "Province×year FE" in md
    assert md.count("|") > 60


def test_table3_vs_paper_text(e2e):
    text = table3_vs_paper(e2e["run_id"], db_path=e2e["db"], synthetic=True)
    assert SYNTHETIC_NOTE in text
    lines = text.splitlines()
    assert sum(1 for ln in lines if ln.startswith("(")) == 5
    assert "0.7008***" in text and "20,607" in text
    assert SYNTHETIC_NOTE not in table3_vs_paper(e2e["run_id"], db_path=e2e["db"], synthetic=False)


def test_partial_run_tables_fall_back_to_same_fingerprint_run(e2e):
    rid2 = run_estimation(["table3_col1"], False, 0, SEED, db_path=e2e["db"], progress=False, render=False)
    est, source, run = store.estimates_for_display(e2e["db"], rid2)
    assert source["table3_col1"] == rid2 and source["table3_col5"] == e2e["run_id"]
    paths = render_tables(rid2, db_path=e2e["db"], out_dir=e2e["out"] / "again", synthetic=True)
    assert any(p.name == "table3.md" for p in paths)
    # two runs, same data: an analyst can compare them in SQL
    with duckdb.connect(str(e2e["db"]), read_only=True) as con:
        n = con.execute(
            "select count(distinct run_id) from results.estimates where spec_id = 'table3_col1' and term = 'policy'"
        ).fetchone()[0]
    assert n == 2


def test_list_specs_covers_registry():
    ids = [i for i, _ in list_specs()]
    assert ids == load_registry().ids and all(desc for _, desc in list_specs())


# ----------------------------------------------------------------------------- gate


@pytest.mark.parametrize(
    "check, message",
    [
        (None, "keytech check"),
        ("fail", "checks failed: see"),
        ("stale", "marts changed since the last data check"),
    ],
)
def test_gate_refuses_without_passing_checks(tmp_path, check, message):
    db = tmp_path / "w.duckdb"
    _make_warehouse(db, check=check)
    with pytest.raises(ChecksNotPassed, match=message):
        run_estimation(["table3_col1"], False, 0, SEED, db_path=db, progress=False, render=False)
    # nothing was written
    with duckdb.connect(str(db), read_only=True) as con:
        assert not warehouse.table_exists(con, "results", "estimates")
    # force runs anyway and records that the gate was overridden
    rid = run_estimation(["table3_col1"], True, 0, SEED, db_path=db, progress=False, render=False)
    runs = store.read_runs(db)
    params = json.loads(runs.loc[runs["run_id"] == rid, "parameters_json"].iloc[0])
    assert params["gate"]["status"] == "forced" and params["force"] is True
    assert set(store.read_estimates(db, rid)["spec_id"]) == {"table3_col1"}


def test_gate_uses_latest_check_run(tmp_path):
    db = tmp_path / "w.duckdb"
    _make_warehouse(db, check="pass")  # older run failed, latest passed -> allowed
    rid = run_estimation(["table3_col1"], False, 0, SEED, db_path=db, progress=False, render=False)
    assert rid in set(store.read_runs(db)["run_id"])


def test_failed_spec_is_recorded_not_fatal(tmp_path):
    db = tmp_path / "w.duckdb"
    _make_warehouse(db)
    with duckdb.connect(str(db)) as con:  # drop the 2022 mart, then re-record a passing check
        con.execute("drop table marts.rpt_analysis_panel_window2022")
        fp = warehouse.mart_fingerprint(con)
        con.execute("insert into results.check_runs values ('newest', timestamp '2031-01-01', true, ?, '{}')", [fp])
    rid = run_estimation(["robust_window2022", "table3_col1"], False, 0, SEED, db_path=db, progress=False, render=False)
    est = store.read_estimates(db, rid)
    err = est.loc[est["spec_id"] == "robust_window2022"]
    assert list(err["term"]) == ["(error)"] and "rpt_analysis_panel_window2022" in err["diagnostics_json"].iloc[0]
    assert np.isfinite(est.loc[est["spec_id"] == "table3_col1", "estimate"]).all()
    with pytest.raises(Exception):
        run_estimation(["robust_window2022"], False, 0, SEED, db_path=db, progress=False, render=False, strict=True)
