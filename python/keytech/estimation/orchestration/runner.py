"""Run the registry against the warehouse and store the results."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pandas as pd

import keytech
from keytech import warehouse
from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.core.results import NOT_ESTIMABLE_TERM, SpecResult
from keytech.estimation.orchestration import schedule, store
from keytech.estimation.orchestration.gate import check_gate
from keytech.estimation.orchestration.registry import Registry, load_registry
from keytech.inputs import skipped_specs
from keytech.synthetic import load_truth

from keytech.estimation.core.results import DEFAULT_SEED  # noqa: E402  (re-exported)

DEFAULT_PLACEBO_DRAWS = 500
STOCHASTIC_ESTIMATORS = schedule.STOCHASTIC_ESTIMATORS  # re-exported


def code_version() -> str:
    """``git describe --always --dirty`` of the project when available, else the package version."""
    import keytech

    try:
        root = Path(keytech.__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{out.stdout.strip()} (keytech {keytech.__version__})"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"keytech {keytech.__version__}"


def planted_effects(truth: dict[str, Any] | None) -> dict[str, float] | None:
    """``beta_key``/``beta_nonkey`` from a truth dict (top level or under ``rates``)."""
    if not truth:
        return None
    out = {}
    for key in ("beta_key", "beta_nonkey"):
        if key in truth:
            out[key] = truth[key]
        elif isinstance(truth.get("rates"), dict) and key in truth["rates"]:
            out[key] = truth["rates"][key]
    return out or None


def list_specs(registry: Registry | None = None) -> list[tuple[str, str]]:
    """(spec id, description) for every registered specification, in registry order."""
    reg = registry or load_registry()
    return [(s.id, s.description) for s in reg.specs]


def run_outcome(run_id: str, db_path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """{'failures': {spec: error}, 'skipped': {spec: reason}, 'not_estimable': {spec: reason}} of a stored run."""
    with warehouse.connect(db_path) as con:
        row = con.execute("select parameters_json from results.runs where run_id = ?", [run_id]).fetchone()
    params = json.loads(row[0]) if row and row[0] else {}
    return {"failures": params.get("failures") or {}, "skipped": params.get("skipped") or {},
            "not_estimable": params.get("not_estimable") or {}}


def pyfixest_version() -> str:
    """The version pyfixest reports as ``pyfixest.__version__`` (which is this package-metadata
    lookup, "unknown" without metadata), without importing pyfixest: with ``--jobs N`` the specs ran
    in worker processes and this one never needed it (importing it takes 1-1.5 s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyfixest")
    except PackageNotFoundError:
        return "unknown"


def run_estimation(
    only: list[str] | None = None,
    force: bool = False,
    placebo_draws: int = DEFAULT_PLACEBO_DRAWS,
    seed: int = DEFAULT_SEED,
    db_path: str | Path | None = None,
    progress: bool = True,
    *,
    render: Callable[..., Any] | None = None,
    out_dir: str | Path | None = None,
    synthetic: bool | None = None,
    registry: Registry | None = None,
    strict: bool = False,
    permutation_draws: int | None = None,
    jobs: int = 1,
) -> str:
    """Estimate the selected specs on the warehouse marts and append them to the results store.

    ``only``: spec ids, groups (table3, event_study, robust, placebo, staggered, cluster) or id
    prefixes; None runs everything. Refuses (``ChecksNotPassed``) unless the latest
    ``keytech check`` passed on the current marts, or ``force``. A spec that fails is recorded with
    term ``(error)`` and the error in ``diagnostics_json``; with ``strict`` the run raises instead.
    A spec whose sample has no residual degrees of freedom (``NotEstimable``) is recorded with term
    ``(not estimable)`` and listed under ``not_estimable``: a property of the data, not a failure.
    ``permutation_draws``: when set, the number of reshuffles of every between-group permutation
    test (replacing ``options.permutation.draws`` of the registry: 999 for Table 5, 199 for the
    heterogeneity splits in ``specs.yml``). ``jobs``: worker processes (forked): the specs run in
    ``jobs`` workers, one registry group at a time each
    (:mod:`keytech.estimation.orchestration.schedule`), or, when the selection is one group, the
    draws of each permutation test are shared among them; the stored results are bit-identical to
    ``jobs=1`` (the default: one process, nothing forked), only the wall time and the timings change.
    Specs that need an optional raw table the build was not given (``contract.yml`` ``enables``)
    are skipped, not run: they are named on stderr with what to add and listed under
    ``skipped`` in the run's parameters (``results.runs``). Returns the run id; ``run_outcome``
    says which specs failed or were skipped.
    ``render``: called after the run is stored as ``render(run_id, db_path=, out_dir=, synthetic=,
    registry=)`` — pass :func:`keytech.tables.render_tables` to write the tables and figures
    (the CLI does); estimation itself knows nothing of tables.
    """
    if permutation_draws is not None and permutation_draws < 1:
        raise ValueError(f"permutation_draws must be at least 1, got {permutation_draws}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    from tqdm.auto import tqdm

    reg = registry or load_registry()
    specs = reg.select(only)
    # the workers' server imports pyfixest and scipy.stats while the gate and the panels are read
    schedule.start_worker_server(specs, jobs)
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    run_id = started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

    # 1. gate + fingerprint (read-only), then close
    with warehouse.connect(db_path) as con:
        gate = check_gate(con, force=force)
        # specs that need an optional raw table the build did not get (keytech/inputs.py)
        skips = skipped_specs([s.id for s in specs], con)
        timings_before = schedule.previous_timings(con) if jobs > 1 else {}
    if gate["status"] == "forced":
        print(f"WARNING: {gate['message']}", file=sys.stderr)
    for skip in skips.values():
        print(f"  {skip.spec_id} SKIPPED: {skip.reason}", file=sys.stderr)
    skipped = {skip.spec_id: skip.reason for skip in skips.values()}
    specs = [s for s in specs if s.id not in skipped]

    truth = load_truth()
    syn = synthetic if synthetic is not None else truth is not None
    planted = planted_effects(truth)
    ctx = RunContext(placebo_draws=placebo_draws, seed=seed, progress=progress, fe_labels=reg.fe_labels, truth=planted,
                     registry=reg,
                     permutation_draws=permutation_draws, jobs=jobs)

    # 2. read the panels the selection needs (each read opens and closes a read-only connection)
    panels: dict[str, pd.DataFrame | BaseException] = {}
    for key in dict.fromkeys((s.panel, s.extra_marts) for s in specs):
        try:
            panels[key] = pnl.load_panel(key[0], db_path, extra_marts=key[1])
        except warehouse.WarehouseMissing as exc:
            panels[key] = exc

    # 3. estimate (in this process, or in `jobs` forked workers: the same results, see schedule.py)
    bar = tqdm(total=len(specs), desc="estimating", disable=not progress, unit="spec")

    def arrived(outcome: schedule.Outcome) -> None:
        bar.update(1)
        bar.set_postfix_str(outcome.spec_id)
        if outcome.not_estimable is not None:
            tqdm.write(f"  {outcome.spec_id} NOT ESTIMABLE: {outcome.message}", file=sys.stderr)
        elif outcome.error is not None:
            if strict:
                schedule.reraise(outcome)  # with the worker's traceback when it failed in one
            tqdm.write(f"  {outcome.spec_id} FAILED: {outcome.message}", file=sys.stderr)

    outcomes = schedule.estimate_specs(specs, panels, ctx, jobs, timings_before, arrived)
    bar.close()
    results: list[SpecResult] = []
    timings: dict[str, float] = {}
    failures: dict[str, str] = {}
    not_estimable: dict[str, str] = {}
    for spec in specs:  # registry order, whatever order the specs finished in
        outcome = outcomes[spec.id]
        results.extend(outcome.results)  # an error row for a failed or not estimable spec
        if outcome.not_estimable is not None:
            not_estimable[spec.id] = outcome.message
        elif outcome.error is not None:
            failures[spec.id] = outcome.message
        timings[spec.id] = outcome.seconds

    # 4. store (the only read-write step)
    reg_text = json.dumps([s.id for s in reg.specs])
    params = {
        "only": only,
        "force": force,
        "placebo_draws": placebo_draws,
        "permutation_draws": permutation_draws,
        "seed": seed,
        "specs": [s.id for s in specs],
        "gate": gate,
        "synthetic": syn,
        "truth": planted,
        "timings_seconds": timings,
        "jobs": jobs,
        "failures": failures,
        "skipped": skipped,
        "not_estimable": not_estimable,
        "versions": {"python": platform.python_version(), "pyfixest": pyfixest_version(), "pandas": pd.__version__},
        "threads": keytech.thread_settings(),  # the thread counts the digits depend on
        "registry_ids_sha": hashlib.sha256(reg_text.encode()).hexdigest()[:12],
    }
    finished = datetime.now(timezone.utc).replace(tzinfo=None)
    store.write_run(
        db_path,
        {
            "run_id": run_id,
            "started_at": started,
            "finished_at": finished,
            "data_fingerprint": gate["fingerprint"],
            "code_version": code_version(),
            "parameters": params,
        },
        results,
    )
    if skipped:
        print(f"{len(skipped)} spec(s) skipped for want of an optional input table: {', '.join(skipped)} "
              "(listed in results.runs parameters 'skipped')", file=sys.stderr)
    if not_estimable:
        print(f"{len(not_estimable)} spec(s) not estimable on this data (too few observations for their parameters): "
              f"{', '.join(not_estimable)} (results.estimates term '{NOT_ESTIMABLE_TERM}')", file=sys.stderr)
    if failures:
        print(f"{len(failures)} spec(s) failed: {', '.join(failures)} (details in results.estimates term '(error)')", file=sys.stderr)
    if render:
        render(run_id, db_path=db_path, out_dir=out_dir, synthetic=syn, registry=reg)
    return run_id
