"""``run_estimation(jobs=N)`` runs the specs in worker processes and stores exactly what one process
stores (keytech.estimation.orchestration.schedule).

The comparison is row for row on ``results.estimates`` (every column but the run id; diagnostics
parsed, only their timing fields, ``seconds``, left out) and on ``results.runs``'s parameters (but
the timings and ``jobs``), for selections that exercise what could differ between the two ways:
work shared between the specs of a group (the joint permutation pass of a heterogeneity split, the
IV first stage), the multiple-testing families that take their members' estimates from the run
(also one placed *before* its members, which must re-estimate them as one process does), a spec
that fails, and the placebo's random draws."""

from __future__ import annotations

import dataclasses
import json

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


def _run_both(tiny_demo_warehouse, tmp_path, only, registry=None, monkeypatch=None):
    calls = []
    original = schedule._run_in_workers

    def counting(specs, first, dependent, *args, **kwargs):
        calls.append(([[s.id for s in unit] for unit in first], [[s.id for s in unit] for unit in dependent]))
        return original(specs, first, dependent, *args, **kwargs)

    stored = {}
    for jobs in (1, 2):
        db = copy_warehouse(tiny_demo_warehouse, tmp_path / f"jobs{jobs}")
        if monkeypatch is not None:
            monkeypatch.setattr(schedule, "_run_in_workers", counting)
        cpu_before = schedule.WORKER_CPU_SECONDS[0]
        run_id = run_estimation(only=only, placebo_draws=20, seed=SEED, db_path=db, progress=False, render=False,
                                synthetic=True, permutation_draws=19, jobs=jobs, registry=registry)
        stored[jobs] = _stored(db, run_id)
        # the workers' CPU time reaches this process (the bench adds it to its own)
        assert (schedule.WORKER_CPU_SECONDS[0] > cpu_before + 0.5) == (jobs > 1)
    return stored, calls


def test_run_in_workers_stores_what_one_process_stores(tiny_demo_warehouse, tmp_path, monkeypatch):
    only = ["table3_col5", "table4_col2", "table4_col3", "het_fc", "mt_het_fc", "robust_window2022", "placebo"]
    stored, calls = _run_both(tiny_demo_warehouse, tmp_path, only, monkeypatch=monkeypatch)
    (params1, rows1), (params2, rows2) = stored[1], stored[2]
    # jobs=2 ran in workers, one unit per group, and the mt family as a unit of its own
    assert len(calls) == 1
    first, dependent = calls[0]
    assert sorted(map(sorted, first)) == sorted(map(sorted, [
        ["table3_col5"], ["placebo"], ["table4_col2", "table4_col3"], ["robust_window2022"],
        ["het_fc_low_key", "het_fc_high_key", "het_fc_low_nonkey", "het_fc_high_nonkey"]]))
    assert dependent == [["mt_het_fc"]]
    assert params2["jobs"] == 2 and params1["jobs"] == 1
    assert len(rows1) == len(rows2) > 20
    for one, forked in zip(rows1, rows2):
        assert one == forked
    for key in set(params1) | set(params2):
        if key not in ("timings_seconds", "jobs"):
            assert params1[key] == params2[key], key
    assert list(params1["timings_seconds"]) == list(params2["timings_seconds"])
    # the shared work was shared in both runs: the joint permutation pass and the mt members
    text = json.dumps([d for _, d in rows2], ensure_ascii=False)
    assert "computed_in_pass_of" in text
    mt = [d for values, d in rows2 if values[0] == "mt_het_fc" and "members_taken_from_this_run" in d]
    assert mt[0]["members_taken_from_this_run"] == ["het_fc_low_key", "het_fc_high_key", "het_fc_low_nonkey",
                                                    "het_fc_high_nonkey"]


def test_order_failures_and_dependent_families_match(tiny_demo_warehouse, tmp_path, monkeypatch):
    """mt_table6 placed before its members re-estimates them (nothing of theirs is in the run
    yet), mt_table7 after its members takes theirs; a broken spec fails the same way."""
    reg = load_registry()
    broken = dataclasses.replace(reg.get("table3_col1"), id="broken_outcome", outcome="no_such_column", group="broken")
    order = [reg.get("mt_table6"), *[s for s in reg.specs if s.id != "mt_table6"], broken]
    registry = dataclasses.replace(reg, specs=tuple(order))
    only = ["mt_table6", "table6", "table7_col", "mt_table7", "broken_outcome"]
    stored, calls = _run_both(tiny_demo_warehouse, tmp_path, only, registry=registry, monkeypatch=monkeypatch)
    (params1, rows1), (params2, rows2) = stored[1], stored[2]
    assert len(calls) == 1
    assert calls[0][1] == [["mt_table6"], ["mt_table7"]]  # the two families: units of their own
    assert rows1 == rows2
    assert params1["failures"] == params2["failures"] and list(params1["failures"]) == ["broken_outcome"]
    assert "no_such_column" in params2["failures"]["broken_outcome"]
    taken = {values[0]: d["members_taken_from_this_run"] for values, d in rows2
             if values[0].startswith("mt_") and "members_taken_from_this_run" in d}
    assert taken["mt_table6"] == []
    assert taken["mt_table7"] == ["table7_col1", "table7_col2", "table7_col3", "table7_col4"]
    error_rows = [d for values, d in rows2 if values[0] == "broken_outcome"]
    assert error_rows and "no_such_column" in error_rows[0]["error"] and error_rows[0]["traceback"]


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


@pytest.mark.parametrize("jobs", [0, -1])
def test_jobs_must_be_positive(jobs):
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        run_estimation(only=["table3_col1"], jobs=jobs, progress=False, render=False)
