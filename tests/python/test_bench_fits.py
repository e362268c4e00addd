"""The bench's model-fit count (issue 17): pyfixest fits counted in the stage process plus the
permutation re-estimations read back from the stored diagnostics (2 per draw + the observed
pair, failed draws included, once per spec however many term rows it has, none for a test taken
from a sibling spec's joint pass), and the estimation
row of bench.md showing the time per fit against the anchor fit."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd

from keytech import bench


def test_permutation_fits_from_the_stored_diagnostics(tmp_path, monkeypatch):
    db = tmp_path / "warehouse.duckdb"
    perm = {"permutation": {"n_draws": 9, "n_draws_failed": 1, "p_one_sided": 0.1}}
    rows = [("r1", "het_a_high", "policy", json.dumps(perm)), ("r1", "het_a_high", "roa", json.dumps(perm)),
            ("r1", "het_a_low", "policy", json.dumps({"split": {}})), ("r1", "table3_col5", "policy", None),
            # a sibling's test taken from het_a_high's joint pass: no re-estimation of its own
            ("r1", "het_b_high", "policy", json.dumps({"permutation": {"n_draws": 9, "computed_in_pass_of": "het_a_high"}})),
            ("r0", "het_a_high", "policy", json.dumps({"permutation": {"n_draws": 99}}))]  # another run
    with duckdb.connect(str(db)) as con:
        con.execute("create schema results")
        con.execute("create table results.estimates (run_id varchar, spec_id varchar, term varchar, diagnostics_json varchar)")
        con.executemany("insert into results.estimates values (?, ?, ?, ?)", rows)
    monkeypatch.setenv("KEYTECH_DB", str(db))
    assert bench._permutation_fits("r1") == 2 * (1 + 9 + 1)
    assert bench._permutation_fits("r0") == 2 * (1 + 99)


def test_pyfixest_fits_are_counted(monkeypatch):
    import pyfixest as pf

    monkeypatch.setattr(pf, "feols", pf.feols)  # restored after the test
    monkeypatch.setattr(pf, "fepois", pf.fepois)
    counter = bench._count_pyfixest_fits()
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=50), "x": rng.normal(size=50), "g": np.arange(50) % 5})
    pf.feols("y ~ x | g", data=df)
    pf.feols("y ~ x", data=df)
    assert counter["n"] == 2


def test_estimation_row_shows_time_per_fit_against_the_anchor():
    report = {"scale": "tiny", "started_at": "now", "seed": 1, "machine": {}, "targets": {}, "stages": {
        "fit_anchor": {"status": "ok", "seconds": 0.05, "rows": 400, "fits": 5},
        "estimation": {"status": "ok", "seconds": 10.0, "specs": 4, "fits": 1000, "pyfixest_fits": 40,
                       "permutation_fits": 960, "seconds_per_fit": 0.01, "groups": {}}}}
    md = bench.render_markdown(report)
    assert "1,000 model fits (40 pyfixest, 960 permutation re-estimations): 10.0 ms per fit = 0.20× the anchor fit" in md
