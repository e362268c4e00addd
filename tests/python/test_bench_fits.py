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
import pytest

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
    assert counter.value == 2


def _fit_twice(_):
    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=50), "x": rng.normal(size=50), "g": np.arange(50) % 5})
    pf.feols("y ~ x | g", data=df)
    pf.feols("y ~ x", data=df)
    return 2


def test_pyfixest_fits_in_worker_processes_are_counted(monkeypatch):
    """`--jobs N` fits specs in the worker processes of keytech.estimation.orchestration.schedule
    (fresh processes, not forks): their calls reach the count."""
    import pyfixest as pf

    from keytech.estimation.orchestration import schedule

    monkeypatch.setattr(pf, "feols", pf.feols)
    monkeypatch.setattr(pf, "fepois", pf.fepois)
    monkeypatch.setattr(schedule, "WORKER_INITIALIZERS", [])
    counter = bench._count_pyfixest_fits()
    with schedule.worker_context().Pool(2, initializer=schedule._start_worker,
                                        initargs=(None, list(schedule.WORKER_INITIALIZERS))) as pool:
        assert sum(pool.map(_fit_twice, range(3))) == 6
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=50), "x": rng.normal(size=50), "g": np.arange(50) % 5})
    pf.feols("y ~ x", data=df)
    assert counter.value == 7


def test_estimation_row_shows_time_per_fit_against_the_anchor():
    report = {"scale": "tiny", "started_at": "now", "seed": 1, "machine": {}, "targets": {}, "stages": {
        "fit_anchor": {"status": "ok", "seconds": 0.05, "rows": 400, "fits": 5},
        "estimation": {"status": "ok", "seconds": 10.0, "specs": 4, "fits": 1000, "pyfixest_fits": 40,
                       "permutation_fits": 960, "seconds_per_fit": 0.01, "groups": {}}}}
    md = bench.render_markdown(report)
    assert "1,000 model fits (40 pyfixest, 960 permutation re-estimations): 10.0 ms per fit = 0.20× the anchor fit" in md


def test_one_process_estimation_groups_are_sums_of_spec_timings(monkeypatch):
    """--estimation-processes one (default): one stage process over every spec; a group's seconds
    are its specs' stored timings, the total is the run plus one import; jobs reach the worker."""
    calls = []

    def fake_stage(stage, work, scale, seed, log, only=None, jobs=1):
        calls.append((stage, only, jobs))
        return {"status": "ok", "seconds": 10.0, "import_seconds": 2.0, "specs": 3, "jobs": jobs,
                "spec_seconds": {"s1": 1.5, "s2": 2.5, "s3": 5.0}}

    monkeypatch.setattr(bench, "_run_stage", fake_stage)
    monkeypatch.setattr(bench, "estimation_groups", lambda: {"a": ["s1", "s2"], "b": ["s3"]})
    out = bench._run_estimation_one_process(None, "tiny", 1, _NullLog(), jobs=2)
    assert calls == [("estimation", None, 2)]
    assert out["processes"] == "one" and out["seconds"] == 12.0 and out["run_seconds"] == 10.0
    assert {g: r["seconds"] for g, r in out["groups"].items()} == {"a": 4.0, "b": 5.0}
    md = bench.render_markdown({"scale": "tiny", "started_at": "now", "seed": 1, "machine": {}, "targets": {},
                                "stages": {"estimation": out}})
    assert "one run (keytech estimate --jobs 2)" in md and "a 4.0 s, b 5.0 s" in md


def test_one_process_failure_falls_back_to_one_process_per_group(monkeypatch):
    def fake_stage(stage, work, scale, seed, log, only=None, jobs=1):
        if only is None:
            return {"status": "error", "note": "stage process exited with -6"}
        return {"status": "ok" if only != ["s3"] else "error", "seconds": float(len(only)), "note": "boom" if only == ["s3"] else None}

    monkeypatch.setattr(bench, "_run_stage", fake_stage)
    monkeypatch.setattr(bench, "estimation_groups", lambda: {"a": ["s1", "s2"], "b": ["s3"]})
    out = bench._run_estimation_one_process(None, "tiny", 1, _NullLog(), jobs=1)
    assert out["processes"] == "group" and out["status"] == "error" and "b" in out["note"]
    assert out["one_process_failure"] == "stage process exited with -6"


def test_jobs_reach_the_stage_command(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, env, stdout, stderr):
        seen["command"] = command
        return type("Done", (), {"returncode": 1})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    bench._run_stage("estimation", tmp_path, "tiny", 1, _NullLog(), jobs=3)
    assert seen["command"][-2:] == ["--jobs", "3"]
    bench._run_stage("estimation", tmp_path, "tiny", 1, _NullLog())
    assert "--jobs" not in seen["command"]


class _NullLog:
    def write(self, text):
        pass

    def flush(self):
        pass


def test_end_to_end_is_the_sum_of_the_commands_stages():
    """raw → report (issue 17's ≤ 2 min) = build + checks + estimation + placebo + report, each stage
    its own process as each command is; the validate stage is not counted (the build validates
    the raw folder again), and there is no figure when one of the five did not run or failed."""
    seconds = {"synth": 17.0, "validate": 4.9, "build": 32.2, "checks": 5.4, "estimation": 73.3, "placebo": 2.5,
               "report": 2.7}
    stages = {name: {"status": "ok", "seconds": value} for name, value in seconds.items()}
    targets = bench.evaluate(stages)
    assert targets["end_to_end"]["value"] == pytest.approx(32.2 + 5.4 + 73.3 + 2.5 + 2.7)
    assert targets["end_to_end"]["limit"] == 120.0 and targets["end_to_end"]["passed"] is True
    stages["estimation"]["seconds"] = 80.0
    assert bench.evaluate(stages)["end_to_end"]["passed"] is False
    assert bench.evaluate({**stages, "placebo": {"status": "error", "seconds": 1.0}})["end_to_end"]["value"] is None
    assert bench.evaluate({k: v for k, v in stages.items() if k != "report"})["end_to_end"]["passed"] is None


def test_end_to_end_is_the_commands_stage_when_it_ran():
    """The commands stage (the three commands a user types, timed as processes) is the end-to-end
    figure when it succeeded; the stages' sum stays beside it, and is the figure (so labelled)
    when the commands stage failed or did not run."""
    seconds = {"build": 32.2, "checks": 5.4, "estimation": 73.3, "placebo": 2.5, "report": 2.7}
    stages = {name: {"status": "ok", "seconds": value} for name, value in seconds.items()}
    stages["commands"] = {"status": "ok", "seconds": 118.5, "jobs": 2,
                          "command_seconds": {"build": 40.1, "estimate": 74.9, "report": 3.5}}
    target = bench.evaluate(stages)["end_to_end"]
    assert target["value"] == 118.5 and target["basis"] == "commands" and target["passed"] is True
    assert target["sum_of_stages"] == pytest.approx(116.1)
    stages["commands"] = {"status": "error", "seconds": None, "note": "keytech estimate exited with 1"}
    target = bench.evaluate(stages)["end_to_end"]
    assert target["value"] == pytest.approx(116.1) and target["basis"] == "sum of stages"
    assert bench.evaluate({})["end_to_end"]["basis"] is None
    stages["commands"] = {"status": "ok", "seconds": 121.0, "jobs": 2,
                          "command_seconds": {"build": 40.1, "estimate": 77.4, "report": 3.5}}
    report = {"scale": "paper", "seed": 1, "started_at": "now", "machine": {}, "stages": stages,
              "targets": bench.evaluate(stages)}
    text = bench.render_markdown(report)
    assert "| end_to_end (commands) | 121.0 s | 120.0 s | **miss** |" in text
    assert ("keytech build 40.1 s, keytech estimate 77.4 s, keytech report 3.5 s (estimate --jobs 2); "
            "the stages build + checks + estimation + placebo + report add up to 116.1 s") in text


def test_commands_stage_runs_what_a_user_types(monkeypatch, tmp_path):
    """keytech build, keytech estimate (every spec, the bench's seed, placebo draws and --jobs),
    keytech report, in that order, into a warehouse of their own that is removed afterwards;
    the time is the three commands' sum, and a failing command stops the stage with its name,
    exit code and output."""
    calls = []

    def fake_run(command, env, capture_output, text):
        folder = tmp_path / bench.COMMANDS_FOLDER
        assert folder.is_dir()
        calls.append((command, {k: env[k] for k in ("KEYTECH_RAW_DIR", "KEYTECH_DB", "KEYTECH_LANDING_DIR",
                                                    "KEYTECH_OUTPUT_DIR")}))
        failed = fail_at is not None and len(calls) == fail_at
        return type("Done", (), {"returncode": 2 if failed else 0, "stdout": "", "stderr": "checks failed"})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    fail_at = None
    out = bench._stage_commands(tmp_path, "paper", 7, jobs=2)
    arguments = [command[command.index("build") if "build" in command else
                         command.index("estimate") if "estimate" in command else command.index("report"):]
                 for command, _ in calls]
    assert arguments == [["build"], ["estimate", "--jobs", "2", "--seed", "7", "--placebo-draws",
                                     str(bench.PLACEBO_DRAWS)], ["report"]]
    assert all("keytech" in command[0] for command, _ in calls)
    env = calls[0][1]
    assert env == {"KEYTECH_RAW_DIR": str(tmp_path / "raw"),
                   "KEYTECH_DB": str(tmp_path / "commands" / "warehouse.duckdb"),
                   "KEYTECH_LANDING_DIR": str(tmp_path / "commands" / "landing"),
                   "KEYTECH_OUTPUT_DIR": str(tmp_path / "commands" / "output")}
    assert not (tmp_path / bench.COMMANDS_FOLDER).exists()
    assert out["seconds"] == pytest.approx(sum(out["command_seconds"].values()))
    assert list(out["command_seconds"]) == ["build", "estimate", "report"]
    assert out["commands"][1] == f"keytech estimate --jobs 2 --seed 7 --placebo-draws {bench.PLACEBO_DRAWS}"
    assert bench.user_commands("xl", 7, 1)[0][1] == ["build", "--panel-end-year", "2024"]
    calls.clear()
    fail_at = 2
    out = bench._stage_commands(tmp_path, "paper", 7, jobs=2)
    assert len(calls) == 2 and out["status"] == "error" and out["jobs"] == 2
    assert out["note"].startswith("`keytech estimate --jobs 2") and "exited with 2: checks failed" in out["note"]
    assert not (tmp_path / bench.COMMANDS_FOLDER).exists()


def test_commands_stage_goes_on_after_specs_that_cannot_be_estimated(monkeypatch, tmp_path):
    """keytech estimate exits 1 when requested specs fail on the data (tiny scale); the run is
    stored, so the report runs, the stage is timed whole and the failures are recorded. Any other
    non-zero exit stops it."""
    calls = []
    stderr = "keytech estimate: 29 requested spec(s) failed: table4_col6, …; details in results.estimates"

    def fake_run(command, env, capture_output, text):
        calls.append(command)
        failed = "estimate" in command
        return type("Done", (), {"returncode": 1 if failed else 0, "stdout": "",
                                 "stderr": stderr if failed else ""})()

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    out = bench._stage_commands(tmp_path, "tiny", 7, jobs=1)
    assert len(calls) == 3 and out.get("status") is None and out["estimate_failed_specs"] == 29
    assert out["seconds"] == pytest.approx(sum(out["command_seconds"].values()))
    assert "29 spec(s) failed on this data" in out["note"]
    stderr = "Traceback: MemoryError"
    calls.clear()
    out = bench._stage_commands(tmp_path, "tiny", 7, jobs=1)
    assert len(calls) == 2 and out["status"] == "error" and "MemoryError" in out["note"]


def test_the_commands_stage_gets_the_bench_jobs(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(bench, "_run_stage", lambda stage, work, scale, seed, log, only=None, jobs=1:
                        seen.append((stage, jobs)) or {"status": "ok", "seconds": 1.0})
    bench.run("tiny", tmp_path, False, 1, stages=("report", "commands"), jobs=3)
    assert seen == [("report", 1), ("commands", 3)]


def test_machine_records_the_thread_counts_the_digits_depend_on():
    import keytech

    machine = bench._machine()
    core = keytech.pinned_openblas_core() or machine["threads"]["blas_core"]
    # conftest / keytech's defaults, and the OpenBLAS kernels in force (pinned on AVX2 machines)
    assert machine["threads"] == {"demeaner": "1", "blas": "1", "blas_core": core}
    report = {"scale": "tiny", "seed": 1, "started_at": "now", "machine": machine, "stages": {},
              "targets": bench.evaluate({})}
    assert f"demeaner/BLAS threads 1/1, BLAS kernels {core}," in bench.render_markdown(report)
