"""``run_estimation(jobs=N)`` runs the specs in worker processes and stores exactly what one process
stores (keytech.estimation.orchestration.schedule).

The comparison is row for row on ``results.estimates`` (every column but the run id; diagnostics
parsed, only their timing fields, ``seconds``, left out) and on ``results.runs``'s parameters (but
the timings and ``jobs``), for one selection that exercises what could differ between the two ways:
work shared between the specs of a group (the joint permutation pass of a heterogeneity split, the
IV first stage), the multiple-testing families that take their members' estimates from the run
(also one placed *before* its members, which must re-estimate them as one process does), a spec
that fails, and the placebo's random draws."""

from __future__ import annotations

import dataclasses
import json
import traceback

import duckdb
import pytest

from conftest import copy_warehouse
from keytech.estimation import run_estimation
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.orchestration import schedule
from keytech.estimation.orchestration.registry import load_registry

SEED = 5


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _stored(db, run_id):
    with duckdb.connect(str(db), read_only=True) as con:
        params = json.loads(con.execute("select parameters_json from results.runs where run_id = ?",
                                        [run_id]).fetchone()[0])
        cur = con.execute("select * exclude (run_id, diagnostics_json), diagnostics_json from results.estimates "
                          "where run_id = ?", [run_id])
        rows = cur.fetchall()
    out = []
    for row in rows:
        values = tuple("nan" if isinstance(v, float) and v != v else v for v in row[:-1])
        out.append((values, _without_timings(json.loads(row[-1])) if row[-1] else None))
    return params, out


# what could differ between one process and workers: work shared inside a group (the joint
# permutation pass of het_fc, Table 4's IV first stage), families that take their members from the
# run (mt_het_fc, mt_table7 after their members; mt_table6 moved before its members, so it must
# re-estimate them as one process does), a spec that fails, the placebo's random draws
ONLY = ["table3_col5", "table4_col2", "table4_col3", "het_fc", "mt_het_fc", "robust_window2022", "placebo",
        "mt_table6", "table6", "table7_col", "mt_table7", "broken_outcome"]


def _registry():
    reg = load_registry()
    broken = dataclasses.replace(reg.get("table3_col1"), id="broken_outcome", outcome="no_such_column", group="broken")
    order = [reg.get("mt_table6"), *[s for s in reg.specs if s.id != "mt_table6"], broken]
    return dataclasses.replace(reg, specs=tuple(order))


@pytest.fixture(scope="module")
def runs(tiny_demo_warehouse, tmp_path_factory):
    """The same selection stored by jobs=1 and by jobs=2; the units handed to the workers."""
    calls = []
    original = schedule._run_in_workers

    def recording(specs, first, dependent, *args, **kwargs):
        calls.append(([[s.id for s in unit] for unit in first], [[s.id for s in unit] for unit in dependent]))
        return original(specs, first, dependent, *args, **kwargs)

    stored, worker_cpu = {}, {}
    root = tmp_path_factory.mktemp("parallel")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(schedule, "_run_in_workers", recording)
        for jobs in (1, 2):
            db = copy_warehouse(tiny_demo_warehouse, root / f"jobs{jobs}")
            cpu_before = schedule.WORKER_CPU_SECONDS[0]
            run_id = run_estimation(only=ONLY, placebo_draws=20, seed=SEED, db_path=db, progress=False, render=False,
                                    synthetic=True, permutation_draws=19, jobs=jobs, registry=_registry())
            worker_cpu[jobs] = schedule.WORKER_CPU_SECONDS[0] - cpu_before
            stored[jobs] = _stored(db, run_id)
    return {"stored": stored, "calls": calls, "worker_cpu": worker_cpu, "worker_rss": schedule.WORKER_PEAK_RSS_BYTES[0]}


def test_workers_store_what_one_process_stores(runs):
    (params1, rows1), (params2, rows2) = runs["stored"][1], runs["stored"][2]
    assert params2["jobs"] == 2 and params1["jobs"] == 1
    # the digits' thread counts are recorded: one demeaner and one BLAS thread (keytech/__init__.py),
    # and the BLAS kernels in force (Haswell on an AVX2 machine)
    import keytech

    core = keytech.pinned_openblas_core() or params1["threads"]["blas_core"]
    assert params1["threads"] == params2["threads"] == {"demeaner": "1", "blas": "1", "blas_core": core}
    assert len(rows1) == len(rows2) > 40
    for one, worker in zip(rows1, rows2):
        assert one == worker
    for key in set(params1) | set(params2):
        if key not in ("timings_seconds", "jobs"):
            assert params1[key] == params2[key], key
    assert list(params1["timings_seconds"]) == list(params2["timings_seconds"])
    # the workers' CPU time reaches this process (the bench adds it to its own)
    assert runs["worker_cpu"][1] == 0 and runs["worker_cpu"][2] > 0.5
    assert runs["worker_rss"] > 50 * 2**20  # and their peak memory (a worker holds the panels and pyfixest)


def test_the_units_are_the_groups_and_the_families(runs):
    assert len(runs["calls"]) == 1  # jobs=1 runs in this process
    first, dependent = runs["calls"][0]
    assert sorted(map(sorted, first)) == sorted(map(sorted, [
        ["table3_col5"], ["placebo"], ["table4_col2", "table4_col3"], ["robust_window2022"],
        ["het_fc_low_key", "het_fc_high_key", "het_fc_low_nonkey", "het_fc_high_nonkey"],
        [f"table6_col{i}" for i in range(1, 7)], [f"table7_col{i}" for i in range(1, 5)], ["broken_outcome"]]))
    assert sorted(dependent) == [["mt_het_fc"], ["mt_table6"], ["mt_table7"]]


def test_shared_work_stays_shared_and_families_see_what_one_process_gives_them(runs):
    _, rows = runs["stored"][2]
    assert "computed_in_pass_of" in json.dumps([d for _, d in rows], ensure_ascii=False)
    taken = {values[0]: d["members_taken_from_this_run"] for values, d in rows
             if values[0].startswith("mt_") and "members_taken_from_this_run" in d}
    assert taken == {"mt_table6": [],  # before its members in the registry: re-estimated them
                     "mt_het_fc": ["het_fc_low_key", "het_fc_high_key", "het_fc_low_nonkey", "het_fc_high_nonkey"],
                     "mt_table7": ["table7_col1", "table7_col2", "table7_col3", "table7_col4"]}


def test_a_failing_spec_fails_the_same_way(runs):
    (params1, rows1), (params2, rows2) = runs["stored"][1], runs["stored"][2]
    assert params1["failures"] == params2["failures"] and list(params2["failures"]) == ["broken_outcome"]
    assert "no_such_column" in params2["failures"]["broken_outcome"]
    error_rows = [d for values, d in rows2 if values[0] == "broken_outcome"]
    assert error_rows and "no_such_column" in error_rows[0]["error"] and error_rows[0]["traceback"]


def test_the_worker_server_starts_early_only_for_a_run_in_workers(monkeypatch):
    """schedule.start_worker_server, called by run_estimation before the gate and the panels are
    read: the forkserver (and its preload) starts only when the specs will run in workers that it
    forks; it then runs with the workers' preload list."""
    import multiprocessing
    from multiprocessing import forkserver

    reg = load_registry()
    several, one_group = reg.select(["table3", "table6"]), reg.select(["table3"])
    assert not schedule.start_worker_server(several, 1)  # one process
    assert not schedule.start_worker_server(one_group, 2)  # one unit: it runs in this process
    with monkeypatch.context() as patch:  # workers spawned (no forkserver): nothing to start
        patch.setattr(schedule, "worker_context", lambda: multiprocessing.get_context("spawn"))
        assert not schedule.start_worker_server(several, 2)
    assert schedule.runs_in_workers(several, 2) and not schedule.runs_in_workers(one_group, 2)
    assert schedule.start_worker_server(several, 2)
    server = forkserver._forkserver
    assert server._forkserver_pid is not None and server._preload_modules == schedule.WORKER_PRELOAD


def test_units_and_their_order():
    reg = load_registry()
    specs = reg.select(["table3", "table5", "het_fc", "mt_table5", "mt_het_fc"])
    first, dependent = schedule.units_of_work(specs)
    assert [[s.id for s in u] for u in dependent] == [["mt_table5"], ["mt_het_fc"]]
    assert [u[0].group for u in first] == ["table3", "table5", "het"]
    assert all(len({s.group for s in u}) == 1 for u in first)
    assert sum(len(u) for u in first) + len(dependent) == len(specs)
    ctx = RunContext()
    # no timings: the permutation specs (table5, 999 draws; het, 199) before the plain table3 fits
    assert [first[i][0].group for i in schedule.longest_first(first, ctx, {})] == ["table5", "het", "table3"]
    # timings of an earlier run decide when there are some
    timings = {s.id: 0.01 for s in specs} | {"table3_col1": 500.0}
    assert [first[i][0].group for i in schedule.longest_first(first, ctx, timings)] == ["table3", "table5", "het"]


def _kill_the_worker_on(spec_id: str) -> None:
    """A worker initializer (schedule.WORKER_INITIALIZERS): the worker dies by SIGKILL, as the
    out-of-memory killer would kill it, when it starts ``spec_id``."""
    import os
    import signal

    from keytech.estimation import dispatch

    original = dispatch.ESTIMATORS["ols"]

    def dying(spec, df, ctx):
        if spec.id == spec_id:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(spec, df, ctx)

    dispatch.ESTIMATORS["ols"] = dying


def test_a_dead_worker_stops_the_run_with_a_message_and_stores_nothing(tiny_demo_warehouse, tmp_path, monkeypatch):
    from keytech.cli import main

    db = copy_warehouse(tiny_demo_warehouse, tmp_path / "dead")
    with duckdb.connect(str(db), read_only=True) as con:
        runs_before = con.execute("select count(*) from results.runs").fetchone()[0]
    monkeypatch.setattr(schedule, "WORKER_INITIALIZERS", [(_kill_the_worker_on, ("table3_col4",))])
    with pytest.raises(schedule.WorkerDied, match=r"died .* running: table3_col4.*--jobs 1"):
        run_estimation(only=["table3_col4", "table6_col1", "table6_col2"], db_path=db, progress=False,
                       render=False, synthetic=True, jobs=2)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from results.runs").fetchone()[0] == runs_before
    # the command line says it in one message, exit code 1
    for name, value in {"KEYTECH_DB": str(db), "KEYTECH_RAW_DIR": str(tiny_demo_warehouse["raw"]),
                        "KEYTECH_OUTPUT_DIR": str(tmp_path / "out")}.items():
        monkeypatch.setenv(name, value)
    assert main(["-q", "estimate", "--only", "table3_col4", "table6_col1", "--jobs", "2"]) == 1


def _record_the_workers_jobs() -> None:
    """A worker initializer: every OLS spec stores the ``RunContext.jobs`` it ran with."""
    from keytech.estimation import dispatch

    original = dispatch.ESTIMATORS["ols"]

    def recording(spec, df, ctx):
        result = original(spec, df, ctx)
        result.diagnostics["ctx_jobs_in_worker"] = ctx.jobs
        return result

    dispatch.ESTIMATORS["ols"] = recording


def _record_what_the_worker_started_with() -> None:
    """A worker initializer (it runs first in a new worker): every OLS spec stores which of the
    fitting libraries were loaded when its worker started."""
    import sys

    from keytech.estimation import dispatch

    loaded = [m for m in ("scipy.stats", "pyfixest") if m in sys.modules]
    original = dispatch.ESTIMATORS["ols"]

    def recording(spec, df, ctx):
        result = original(spec, df, ctx)
        result.diagnostics["loaded_when_the_worker_started"] = loaded
        return result

    dispatch.ESTIMATORS["ols"] = recording


def test_workers_start_with_the_fitting_libraries_loaded(tiny_demo_warehouse, tmp_path, monkeypatch):
    """The forkserver imports pyfixest and scipy.stats once (schedule.WORKER_PRELOAD) and every
    worker forked from it starts with them: the estimation modules import scipy.stats where it is
    used, so without the preload each worker would import it itself (issue 17)."""
    db = copy_warehouse(tiny_demo_warehouse, tmp_path / "preload")
    monkeypatch.setattr(schedule, "WORKER_INITIALIZERS", [(_record_what_the_worker_started_with, ())])
    run_id = run_estimation(only=["table3_col5", "table6_col1"], db_path=db, progress=False, render=False,
                            synthetic=True, jobs=2)
    _, rows = _stored(db, run_id)
    seen = {values[0]: d["loaded_when_the_worker_started"] for values, d in rows
            if d and "loaded_when_the_worker_started" in d}
    assert seen == {"table3_col5": ["scipy.stats", "pyfixest"], "table6_col1": ["scipy.stats", "pyfixest"]}


def test_a_workers_specs_run_their_draws_serially(tiny_demo_warehouse, tmp_path, monkeypatch):
    """Inside a worker ``RunContext.jobs`` is 1: the workers are not daemonic, and a spec's
    permutation test would otherwise fork a draw pool of its own (jobs x jobs processes)."""
    db = copy_warehouse(tiny_demo_warehouse, tmp_path / "inside")
    monkeypatch.setattr(schedule, "WORKER_INITIALIZERS", [(_record_the_workers_jobs, ())])
    run_id = run_estimation(only=["table3_col5", "table6_col1"], db_path=db, progress=False, render=False,
                            synthetic=True, jobs=2)
    _, rows = _stored(db, run_id)
    seen = {values[0]: d["ctx_jobs_in_worker"] for values, d in rows if d and "ctx_jobs_in_worker" in d}
    assert seen == {"table3_col5": 1, "table6_col1": 1}


def test_spawned_workers_store_the_same(tiny_demo_warehouse, tmp_path, monkeypatch):
    """Where there is no forkserver (Windows) the workers are spawned: fresh interpreters that
    import everything themselves. The same rows, a family taking its members included."""
    import multiprocessing

    only = ["table6", "mt_table6"]
    stored = {}
    for jobs in (1, 2):
        db = copy_warehouse(tiny_demo_warehouse, tmp_path / f"spawn{jobs}")
        if jobs == 2:
            monkeypatch.setattr(schedule, "worker_context", lambda: multiprocessing.get_context("spawn"))
        run_id = run_estimation(only=only, seed=SEED, db_path=db, progress=False, render=False, synthetic=True,
                                jobs=jobs)
        stored[jobs] = _stored(db, run_id)
    assert stored[1][1] == stored[2][1] and len(stored[2][1]) > 6
    taken = [d["members_taken_from_this_run"] for values, d in stored[2][1] if d and "members_taken_from_this_run" in d]
    assert taken == [[f"table6_col{i}" for i in range(1, 7)]]


@pytest.mark.parametrize("jobs", [0, -1])
def test_jobs_must_be_positive(jobs):
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_estimation(only=["table3_col1"], jobs=jobs, progress=False, render=False)


def test_a_strict_run_raises_a_workers_failure_with_the_workers_traceback(tiny_demo_warehouse, tmp_path):
    """A spec that fails in a worker process reaches a strict run with the traceback it had there,
    as the ``__cause__`` of the re-raised exception (``schedule.WorkerTraceback``): the exception
    itself is pickled back without one, so before, a strict run with workers named the error but
    not where it happened."""
    db = copy_warehouse(tiny_demo_warehouse, tmp_path)
    with pytest.raises(Exception, match="no_such_column") as raised:
        run_estimation(only=["table3_col5", "broken_outcome"], placebo_draws=0, seed=SEED, db_path=db,
                       progress=False, render=False, synthetic=True, jobs=2, registry=_registry(), strict=True)
    cause = raised.value.__cause__
    assert isinstance(cause, schedule.WorkerTraceback), cause
    assert cause.text.startswith("Traceback (most recent call last):")
    assert "in estimate_spec" in cause.text and "no_such_column" in cause.text.splitlines()[-1]
    assert "WorkerTraceback" in "".join(traceback.format_exception(raised.value))  # shown with the error


PARENT_PROBE = """
import json, sys
from keytech.estimation import run_estimation
run_id = run_estimation(only=["table3_col1", "table6_col1"], db_path=sys.argv[1], progress=False, render=False,
                        synthetic=True, jobs=2)
print(json.dumps({"run_id": run_id, "loaded": [m for m in ("scipy.stats", "pyfixest") if m in sys.modules]}))
"""


def test_the_parent_of_workers_never_loads_the_fitting_libraries(tiny_demo_warehouse, tmp_path):
    """With the specs in worker processes, the parent neither fits nor computes a p-value, so it
    does not import pyfixest or scipy.stats (1-1.5 s each on its serial path, issue 17); the run
    still records the pyfixest version that the workers used."""
    import subprocess
    import sys

    import pyfixest

    db = copy_warehouse(tiny_demo_warehouse, tmp_path / "parent")
    done = subprocess.run([sys.executable, "-c", PARENT_PROBE, str(db)], capture_output=True, text=True, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["loaded"] == []
    params, rows = _stored(db, probe["run_id"])
    assert params["jobs"] == 2 and params["versions"]["pyfixest"] == pyfixest.__version__
    assert {values[0] for values, _ in rows} == {"table3_col1", "table6_col1"}
