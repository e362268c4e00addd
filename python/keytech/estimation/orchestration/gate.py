"""Data-check gate: estimate only on marts that passed the latest `keytech check`."""

from __future__ import annotations

from typing import Any

import duckdb

from keytech import warehouse


class ChecksNotPassed(RuntimeError):
    """The latest data checks are missing, failed, or were run on different marts."""


def _checks_dir() -> str:
    try:
        from keytech import paths

        return str(paths.output_dir() / "checks")
    except Exception:  # no project root: show the conventional location
        return "output/checks"


def check_gate(con: duckdb.DuckDBPyConnection, force: bool = False) -> dict[str, Any]:
    """Compare the latest ``results.check_runs`` row with the marts' current fingerprint.

    Returns a dict (fingerprint, status, check_run_id, message). Raises :class:`ChecksNotPassed`
    with a message saying what to do, unless ``force`` (then the status says what was overridden).
    """
    fingerprint = warehouse.mart_fingerprint(con)
    info: dict[str, Any] = {"fingerprint": fingerprint, "check_run_id": None}
    problem: str | None = None
    if not warehouse.table_exists(con, "results", "check_runs"):
        problem = (
            "No data-check run is recorded (results.check_runs is missing). "
            "Run `keytech check` before estimating."
        )
    else:
        row = con.execute(
            "select check_run_id, checked_at, passed, data_fingerprint from results.check_runs "
            "order by checked_at desc nulls last limit 1"
        ).fetchone()
        if row is None:
            problem = "results.check_runs is empty. Run `keytech check` before estimating."
        else:
            run_id, checked_at, passed, fp = row
            info.update(check_run_id=run_id, checked_at=str(checked_at), check_fingerprint=fp)
            if not passed:
                problem = (
                    f"The latest data checks failed (check run {run_id} at {checked_at}): "
                    f"checks failed: see {_checks_dir()}/ for the report. Fix the data and run "
                    "`keytech check` again."
                )
            elif fp != fingerprint:
                problem = (
                    f"The marts changed since the last data check (checked fingerprint {fp}, "
                    f"current {fingerprint}). Run `keytech check` on the current marts."
                )
    if problem is None:
        info.update(status="passed", message="latest data checks passed on these marts")
        return info
    if not force:
        raise ChecksNotPassed(problem + " (Use --force to estimate anyway.)")
    info.update(status="forced", message=f"FORCED past the check gate: {problem}")
    return info
