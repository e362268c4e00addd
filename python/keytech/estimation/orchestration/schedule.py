"""Run the specs of one estimation run, in this process or in worker processes (``--jobs``).

**What runs where.** ``jobs`` = 1: every spec in this process, in registry order, as always.
``jobs`` > 1: the specs are cut into *units* that run in a pool of ``jobs`` worker processes,
then the results are put back in registry order, so the stored run (``results.estimates``,
``results.runs``) is the one ``jobs`` = 1 stores: the same rows in the same order, bit for bit
(tested, ``tests/python/test_estimation_parallel.py``); only the wall time and the per-spec
timings (and ``jobs`` in the run's parameters) change. The workers are fresh processes
(:func:`worker_context`: ``forkserver``, else ``spawn``, never a fork of this process) that get
the panels and the run context once, pickled.

**Why units, and which.** Specs of one run share work through ``RunContext.shared``: the two
stages of an IV instrument set, the PSM matching of Table 4's columns 6 and 7, the joint
permutation pass of a heterogeneity split's key and non-key outcomes. A spec that finds the
shared work computes it again, which costs time and, for the joint permutation pass, may differ
in the last bits (its columns come in another order). So a unit is one registry ``group``
(table3, table4, het, robust, ...): every spec that shares work with another is in its group
(checked on the paper-scale run: every ``computed_in_pass_of`` names a spec of the same group),
and within a unit the specs run in registry order, as in one process.

**Dependent specs.** Specs that use the results of other specs of the run
(``DEPENDENT_ESTIMATORS``: the multiple-testing families, which take their members' estimates
from the run) are units of their own that start when the members they read — those earlier in the
registry, as in one process — are done, and get their results.

**Order.** At most ``jobs`` units run at a time; when a worker is free, the longest ready unit
starts (a unit's expected time is the sum of its specs' times in the warehouse's latest run that
has them, else a rough guess from the spec: permutation draws, interactive fixed effects). The
order only changes the wall time. Inside a worker the permutation draws of a spec run serially
(a pool's worker cannot start processes); with a single unit the run stays in this process,
where ``jobs`` shares the permutation draws instead (:mod:`keytech.estimation.inference.permutation`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import pickle
import sys
import time
import traceback
import warnings
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pandas as pd

from keytech.estimation.core.fitting import RunContext, relevant_warnings
from keytech.estimation.core.results import ERROR_TERM, NOT_ESTIMABLE_TERM, NotEstimable, SpecResult, TermEstimate
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import Spec

# estimators that read the results of other specs of the run (ctx.shared[("spec_result", id)]):
# estimator -> the ids of the specs a spec of it reads
DEPENDENT_ESTIMATORS: dict[str, Callable[[Spec], list[str]]] = {
    "multiple_testing": lambda spec: list(spec.options.get("members") or []),
}
# estimators that draw random numbers (all from the run seed); their results store it as diagnostics.seed
STOCHASTIC_ESTIMATORS = ("placebo", "staggered_cs")


@dataclass
class Outcome:
    """What estimating one spec gave: its results, or why there are none (then ``results`` is its
    one error row, term ``(error)`` or ``(not estimable)``, made where the exception was raised)."""

    spec_id: str
    results: list[SpecResult] = field(default_factory=list)
    seconds: float = 0.0
    error: BaseException | None = None  # a failure (recorded; re-raised when the run is strict)
    message: str = ""  # "<exception type>: <message>" of the failure or of the not-estimable reason
    not_estimable: NotEstimable | None = None
    traceback: str = ""  # the failure's whole traceback, formatted where it was raised (a worker's
    # exception loses its own when pickled back: see WorkerTraceback)

    @property
    def shared_result(self) -> SpecResult | None:
        """The result other specs of the run may read (a multiple-testing family its members'):
        the one result of a spec that estimated, else None."""
        ok = self.error is None and self.not_estimable is None and len(self.results) == 1
        return self.results[0] if ok else None


class WorkerTraceback(Exception):
    """The traceback of a spec's failure in a worker process, as the ``__cause__`` of the exception a
    strict run re-raises (an exception pickled back from a worker has no traceback of its own;
    ``concurrent.futures`` shows a worker's the same way)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text.rstrip()}\n\"\"\""


def reraise(outcome: Outcome) -> None:
    """Raise ``outcome.error`` (a strict run); one that arrived from a worker process without its
    traceback is raised from a :class:`WorkerTraceback` holding the one formatted in the worker."""
    if outcome.error.__traceback__ is None and outcome.traceback:
        raise outcome.error from WorkerTraceback(outcome.traceback)
    raise outcome.error


def error_result(spec_id: str, exc: BaseException, tb: list[str] | None = None) -> SpecResult:
    """The one result row of a failed or not estimable spec (``tb``: the exception's formatted
    traceback when the caller has it already)."""
    if tb is None:
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    term = NOT_ESTIMABLE_TERM if isinstance(exc, NotEstimable) else ERROR_TERM
    return SpecResult(
        spec_id=spec_id,
        terms=[TermEstimate(term, float("nan"))],
        nobs=None,
        adj_r2=None,
        fixed_effects="",
        vcov="",
        sample="",
        main_term=term,
        diagnostics={"error": f"{type(exc).__name__}: {exc}", "traceback": "".join(tb[-6:])},
    )


def estimate_spec(spec: Spec, df: pd.DataFrame | BaseException, ctx: RunContext) -> Outcome:
    """Estimate one spec on its panel (or the error loading the panel gave)."""
    t0 = time.perf_counter()
    outcome = Outcome(spec.id)
    try:
        if isinstance(df, BaseException):
            raise df
        # library warnings (e.g. pyfixest's "variables dropped due to multicollinearity") go to
        # the spec's diagnostics, not the console
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = run_spec(spec, df, ctx)
        msgs = relevant_warnings(caught)
        for r in out if msgs else ():
            r.diagnostics["warnings"] = sorted(set(r.diagnostics.get("warnings") or ()) | set(msgs))
        if spec.estimator in STOCHASTIC_ESTIMATORS or spec.options.get("permutation"):
            for r in out:
                r.diagnostics.setdefault("seed", ctx.seed)
        outcome.results = out
        if outcome.shared_result is not None:  # for specs that use another spec's estimate (mt members)
            ctx.shared[("spec_result", spec.id)] = {"spec": spec, "df": df, "result": outcome.shared_result}
    except NotEstimable as exc:  # a property of the data: recorded and named, not a failure
        outcome.not_estimable, outcome.results = exc, [error_result(spec.id, exc)]
        outcome.message = str(exc)
    except Exception as exc:  # recorded; the caller decides (strict re-raises)
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        outcome.error, outcome.results = exc, [error_result(spec.id, exc, tb)]
        outcome.message = f"{type(exc).__name__}: {exc}"
        outcome.traceback = "".join(tb)
    outcome.seconds = round(time.perf_counter() - t0, 3)
    return outcome


def units_of_work(specs: list[Spec]) -> tuple[list[list[Spec]], list[list[Spec]]]:
    """(independent units, dependent units): one unit per registry group (registry order inside),
    and one per spec of a ``DEPENDENT_ESTIMATORS`` estimator."""
    groups: dict[str, list[Spec]] = {}
    dependent: list[list[Spec]] = []
    for spec in specs:
        if spec.estimator in DEPENDENT_ESTIMATORS:
            dependent.append([spec])
        else:
            groups.setdefault(spec.group, []).append(spec)
    return list(groups.values()), dependent


def guessed_seconds(spec: Spec, ctx: RunContext) -> float:
    """A rough relative cost of a spec that has no timing yet (only the order of units uses it)."""
    cost = 1.0
    permutation = spec.options.get("permutation")
    if permutation:
        draws = ctx.permutation_draws or (permutation.get("draws", 199) if isinstance(permutation, dict) else 199)
        cost += float(draws) / 50.0
    if spec.estimator == "ife":
        cost += 10.0
    return cost


def previous_timings(con) -> dict[str, float]:
    """Spec id → seconds in the latest stored run that timed it (empty without results)."""
    try:
        rows = con.execute("select parameters_json from results.runs order by started_at desc limit 50").fetchall()
    except Exception:  # no results schema yet (a fresh warehouse)
        return {}
    out: dict[str, float] = {}
    for (text,) in rows:
        try:
            timings = (json.loads(text) if text else {}).get("timings_seconds") or {}
        except ValueError:
            continue
        for spec_id, seconds in timings.items():
            if isinstance(seconds, (int, float)):
                out.setdefault(spec_id, float(seconds))
    return out


def expected_seconds(unit: list[Spec], ctx: RunContext, timings: dict[str, float]) -> float:
    """A unit's expected time: its specs' earlier timings, else :func:`guessed_seconds`."""
    return sum(timings.get(s.id, guessed_seconds(s, ctx)) for s in unit)


def longest_first(units: list[list[Spec]], ctx: RunContext, timings: dict[str, float]) -> list[int]:
    """Indices of ``units`` by expected time, longest first (ties: registry order)."""
    return sorted(range(len(units)), key=lambda i: (-expected_seconds(units[i], ctx, timings), i))


# modules the worker processes start with (imported once, in the forkserver that forks them).
# scipy.stats: every worker computes p-values, and the estimation modules import it where it is
# used (not with the module, so that this process, which fits nothing, does not load it)
WORKER_PRELOAD = ["scipy.stats", "keytech.estimation.orchestration.schedule", "keytech.estimation.core.pyfixest_order",
                  "pyfixest"]
# (function, args) pairs each worker runs when it starts, e.g. the bench's fit counter; the
# functions must be importable (module level), the args picklable
WORKER_INITIALIZERS: list[tuple[Callable[..., Any], tuple]] = []


def can_start_workers() -> bool:
    """False in a daemonic process (e.g. a ``multiprocessing.Pool`` worker: it cannot have children)."""
    return not multiprocessing.current_process().daemon


def worker_context():
    """Fresh worker processes: ``forkserver`` where there is one (Linux, macOS), else ``spawn``.
    Not ``fork``: a process forked after pyfixest's Rust demeaner has run (its thread pool
    started) deadlocks in the next demeaning, and a Python session (a notebook, a test) may
    well have estimated something before."""
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


# CPU seconds (user + system, all threads) the pool workers of this process spent on specs so far:
# they are not children of this process (the forkserver's), so its rusage does not see them
WORKER_CPU_SECONDS = [0.0]
# the largest maximum resident set size of a pool worker so far (bytes), for the same reason
WORKER_PEAK_RSS_BYTES = [0]

# in a worker: (units, panels, ctx, spec id -> spec) of the pool, set by _start_worker
_WORKER_STATE: tuple | None = None


def _start_worker(state: tuple, initializers: list[tuple[Callable[..., Any], tuple]]) -> None:
    global _WORKER_STATE
    for function, args in initializers:
        function(*args)
    _WORKER_STATE = state


def _panel_of(panels: dict, spec: Spec):
    return panels[(spec.panel, spec.extra_marts)]


def _picklable(exc: BaseException | None) -> BaseException | None:
    if exc is None:
        return None
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
        return RuntimeError(f"{type(exc).__name__}: {exc}\n{text}")


def _run_unit(index: int, members: dict[str, SpecResult] | None) -> tuple[int, list[Outcome], float, int]:
    """In a worker: the specs of unit ``index`` in order; the CPU seconds they took and the worker's
    peak memory. A unit of a
    dependent spec (``members`` given) sees in ``ctx.shared`` the results of this run it reads,
    with this worker's panel objects (as one process would give them to it)."""
    units, panels, ctx, specs_by_id = _WORKER_STATE
    cpu_start = time.process_time()
    if members is not None:
        ctx = dataclasses.replace(ctx, shared={
            ("spec_result", spec_id): {"spec": specs_by_id[spec_id], "df": _panel_of(panels, specs_by_id[spec_id]),
                                       "result": result}
            for spec_id, result in members.items()})
    outcomes = []
    for spec in units[index]:
        outcome = estimate_spec(spec, _panel_of(panels, spec), ctx)
        outcome.error = _picklable(outcome.error)
        outcome.not_estimable = _picklable(outcome.not_estimable)
        outcomes.append(outcome)
    return index, outcomes, time.process_time() - cpu_start, _max_rss_bytes()


def _max_rss_bytes() -> int:
    """This process's maximum resident set size so far, in bytes (0 where unknown)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _run_in_workers(specs: list[Spec], first: list[list[Spec]], dependent: list[list[Spec]], panels: dict,
                    ctx: RunContext, jobs: int, timings: dict[str, float],
                    on_unit: Callable[[list[Outcome]], None]) -> None:
    """Every unit in a pool of ``jobs`` worker processes, at most ``jobs`` at a time: the longest
    ready unit next, a dependent unit ready when the specs it reads that come before it in the
    registry are done (it gets their results). Each worker gets the panels and the context once,
    pickled. A worker that dies abruptly raises :class:`WorkerDied` naming the specs in flight
    (an exception inside a spec is an outcome like any other, not this)."""
    units = first + dependent
    position = {s.id: i for i, s in enumerate(specs)}
    needs: dict[int, set[str]] = {}
    for j, unit in enumerate(dependent, start=len(first)):
        spec = unit[0]
        reads = DEPENDENT_ESTIMATORS[spec.estimator](spec)
        needs[j] = {m for m in reads if m in position and position[m] < position[spec.id]}
    rank = {index: r for r, index in enumerate(longest_first(units, ctx, timings))}
    ready = set(range(len(first))) | {j for j, waits in needs.items() if not waits}
    submitted: set[int] = set()
    finished: dict[str, Outcome] = {}
    # jobs=1 inside: a spec's permutation draws run serially in its worker (the workers are not
    # daemonic, so they could fork draw pools of their own: N x N processes on N cores)
    worker_ctx = dataclasses.replace(ctx, progress=False, jobs=1, shared=dict(ctx.shared))
    state = (units, panels, worker_ctx, {s.id: s for s in specs})
    running: dict[concurrent.futures.Future, int] = {}
    pool = concurrent.futures.ProcessPoolExecutor(min(jobs, len(units)), mp_context=worker_context(),
                                                  initializer=_start_worker, initargs=(state, list(WORKER_INITIALIZERS)))
    try:
        left = len(units)
        while left:
            while ready and len(running) < jobs:
                index = min(ready, key=rank.get)
                ready.discard(index)
                submitted.add(index)
                members = None
                if index in needs:
                    members = {m: finished[m].shared_result for m in sorted(needs[index], key=position.get)
                               if finished[m].shared_result is not None}
                running[pool.submit(_run_unit, index, members)] = index
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                try:
                    _, outcomes, cpu_seconds, rss_bytes = future.result()
                except BrokenProcessPool as exc:
                    in_flight = sorted({s.id for i in [index, *running.values()] for s in units[i]})
                    raise WorkerDied(
                        f"an estimation worker process died (killed, e.g. out of memory, or crashed) while these "
                        f"specs were running: {', '.join(in_flight)}. Nothing was stored. Run them with --jobs 1 "
                        f"(one process) to see the error, or with fewer jobs if memory is short.") from exc
                left -= 1
                WORKER_CPU_SECONDS[0] += cpu_seconds
                WORKER_PEAK_RSS_BYTES[0] = max(WORKER_PEAK_RSS_BYTES[0], rss_bytes)
                for outcome in outcomes:
                    finished[outcome.spec_id] = outcome
                ready |= {j for j, waits in needs.items() if j not in submitted and waits.issubset(finished)}
                on_unit(outcomes)
    except BaseException:  # a failure with --strict, an interrupt, a dead worker: stop the others now
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class WorkerDied(RuntimeError):
    """A worker process of ``--jobs`` ended abruptly (a signal, e.g. the out-of-memory killer)."""


def estimate_specs(specs: list[Spec], panels: dict, ctx: RunContext, jobs: int, timings: dict[str, float],
                   on_spec: Callable[[Outcome], None]) -> dict[str, Outcome]:
    """Estimate ``specs`` (registry order), ``jobs`` processes; ``on_spec`` is called in this
    process as each spec's outcome arrives (progress, messages). Returns spec id → outcome."""
    outcomes: dict[str, Outcome] = {}

    def done(unit_outcomes: Iterable[Outcome]) -> None:
        for outcome in unit_outcomes:
            outcomes[outcome.spec_id] = outcome
            on_spec(outcome)

    if not runs_in_workers(specs, jobs):
        for spec in specs:
            done([estimate_spec(spec, _panel_of(panels, spec), ctx)])
        return outcomes
    first, dependent = units_of_work(specs)
    _run_in_workers(specs, first, dependent, panels, ctx, jobs, timings, done)
    return outcomes


def runs_in_workers(specs: list[Spec], jobs: int) -> bool:
    """Whether :func:`estimate_specs` runs ``specs`` in worker processes: ``jobs`` > 1, more than
    one unit of work, and a process that may have children."""
    first, dependent = units_of_work(specs)
    return jobs > 1 and len(first) + len(dependent) > 1 and can_start_workers()


def start_worker_server(specs: list[Spec], jobs: int) -> bool:
    """Start the ``forkserver`` that forks the worker processes now, when ``specs`` will run in
    workers (:func:`runs_in_workers`) and the forkserver is the workers' start method: it imports
    ``WORKER_PRELOAD`` (pyfixest and scipy.stats: ≈ 1.5 s) while the caller reads the gate and the panels,
    instead of after them, when the pool starts its first worker (issue 17). The same server then
    forks the same workers; nothing else changes. Returns whether the server is running."""
    if not runs_in_workers(specs, jobs) or worker_context().get_start_method() != "forkserver":
        return False  # (worker_context also sets the server's preload list)
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True
