"""`keytech demo` end to end at tiny scale, as `make demo` runs it (the command assembles the
arguments of synth, build, check, estimate and report itself, so a new option of one of them must
reach it): synthetic data → warehouse → checks → every spec id → report, in temporary folders. The
report is written even when a spec fails; the exit code is then 1 (issue 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from keytech.estimation.orchestration.registry import load_registry

pytestmark = pytest.mark.slow


def test_demo_runs_every_spec_and_writes_the_report(tmp_path: Path):
    env = dict(os.environ,
               KEYTECH_RAW_DIR=str(tmp_path / "raw"), KEYTECH_LANDING_DIR=str(tmp_path / "landing"),
               KEYTECH_DB=str(tmp_path / "warehouse.duckdb"), KEYTECH_OUTPUT_DIR=str(tmp_path / "output"))
    keytech = Path(sys.executable).with_name("keytech")
    done = subprocess.run([str(keytech), "demo", "--scale", "tiny"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    assert "SYNTHETIC" in done.stdout
    # library warnings are kept in each spec's diagnostics, not printed over the progress output
    assert "dropped due to multicollinearity" not in done.stdout + done.stderr
    report = tmp_path / "output" / "report" / "index.html"
    assert f"Report: {report}" in done.stdout and report.is_file()
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        ids = {r[0] for r in con.execute("select distinct spec_id from results.estimates").fetchall()}
        passed = con.execute("select count(*) from results.check_runs").fetchone()[0]
        kept = con.execute("select count(*) from results.estimates where diagnostics_json like "
                           "'%dropped due to multicollinearity%'").fetchone()[0]
        failed = sorted(r[0] for r in con.execute("select distinct spec_id from results.estimates "
                                                  "where term = '(error)'").fetchall())
    finally:
        con.close()
    assert ids == {s.id for s in load_registry().specs}
    # the exit code says whether every spec estimated (at tiny scale a few splits have too little data)
    assert done.returncode == (1 if failed else 0), failed
    if failed:
        assert f"{len(failed)} requested spec(s) failed" in done.stderr
    assert passed >= 1
    assert kept > 0
