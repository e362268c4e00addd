"""`make bench` / ``python -m keytech.bench``: time every stage of the pipeline on synthetic data.

Stages, each run in its own Python subprocess so that its peak memory is its own:

============  ==========================================================================  ==========
stage         what is timed                                                               target
============  ==========================================================================  ==========
synth         ``keytech.synth.generate(scale, seed, raw)``                                ≤ 60 s
validate      ``keytech.ingest.validate(raw)`` (raw validation only, nothing written)     —
excel_read    a 100,000-row CSMAR-style ``.xlsx`` (income statement: three header rows,    ≤ 60 s
              integer stock codes), written by the stage, through the ingest path:
              ``read`` = the workbook into DuckDB (python-calamine), ``land`` = the whole
              landing of the table (header mapping, description rows, type and key checks)
build         ``keytech.build.build_warehouse``: reported as ``validate_and_land`` and    dbt ≤ 60 s
              ``dbt_build`` (``dbt build`` into ``<warehouse>.building`` + swap), with
              dbt's per-node times (slowest models and tests) from run_results.json
checks        ``keytech.quality.run_checks`` (Great Expectations suites)                   ≤ 30 s
fit_anchor    one plain pyfixest ``feols`` of Table 3 column 5 on the panel (the spec's      —
              LSMR demeaner; median of 5 after a warm-up): the anchor the estimation
              stage's time per spec and per fit is read against
estimation    ``keytech.estimation.run_estimation`` on every spec except the placebo,     ≤ 120 s
              as ``keytech estimate`` runs them: one run (``mt_*`` families take the
              members estimated earlier in the run), the specs in ``--jobs`` worker
              processes, one registry group each at a time (default: the machine's CPUs;
              results identical for any N); time = run_estimation's time, per group = the sum of
              its specs' timings (``results.runs``); ``--estimation-processes group``
              (or a crash of the one process) runs one registry group per process
              instead (time = the groups' times + one library import; ``mt`` then
              re-estimates its members); ``fits`` =
              the ``pyfixest.feols``/``fepois`` calls (counted in the stage process and its
              workers) + the
              permutation tests' FE-OLS re-estimations (2 per draw + the observed pair, from
              the stored diagnostics), and ``seconds_per_fit`` = time / fits
placebo       the placebo spec with 500 draws (library import excluded)                   ≤ 60 s
report        ``keytech.report`` when that module exists                                   —
ipc_compare   a plain-pandas, row-by-row IPC key-tech classification (``keytech.ipc``)    —
              on a subset of the landed patents, against dbt's own timing of the SQL
              IPC models (``target/run_results.json``) scaled to the same rows
ipc_floor     the anchor of the SQL IPC models: a bare DuckDB exact join of ALL landed     SQL ≤ 10×
              patent-IPC rows (``;``-split, spaces removed) against the concordance seed    the floor
              (``seconds``), beside dbt's time for the IPC and patent models on the same
              rows (``sql_seconds``, from the build stage's run_results.json) and their ratio;
              second anchor ``write_floor_seconds``: copying the rows of those models that
              are tables (``create table … as select *`` into a scratch file), the least
              any design that keeps the tables (incremental refresh) must spend
commands      raw → report as a user runs it: ``keytech build``, ``keytech estimate         —
              --jobs N`` (every spec, the placebo included) and ``keytech report``, each
              a process of its own, on the bench's raw folder into a warehouse of their
              own (``work/commands``, removed afterwards); time = the three commands'
              wall times, start-up included. The build starts from the saved dbt parse
              the build stage left, as every build after a project's first does
end_to_end    (a target, not a stage) raw → report: the ``commands`` stage's time when it    ≤ 120 s
              ran, else the sum of build, checks, estimation, placebo and report
              (``validate`` is left out: the build validates the raw folder again as it
              lands it); ``basis`` in bench.json says which, ``sum_of_stages`` gives the sum
============  ==========================================================================  ==========

Peak memory of a stage is the larger of the stage process's own maximum resident set size and
that of its largest child (dbt runs as a child of the build stage); the run's peak is the largest
over all stages (target ≤ 6 GiB).

All data of a run lives under ``<out>/work-<scale>/`` (raw, landing, warehouse.duckdb, outputs),
never in ``data/``; ``--skip-synth`` reuses the raw folder of an earlier run. Results:
``<out>/bench.json`` and ``<out>/bench.md`` (default ``output/bench/``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

from keytech.sql_literals import sql_string
from keytech.synthetic import is_synthetic

GIB = 1024**3
TARGETS = {  # stage -> (metric, limit)
    "synth": ("seconds", 60.0),
    "excel_read": ("seconds", 60.0),
    "dbt_build": ("seconds", 60.0),
    "checks": ("seconds", 30.0),
    "estimation": ("seconds", 120.0),
    "placebo": ("seconds", 60.0),
    "peak_memory": ("bytes", 6.0 * GIB),
    "ipc_sql_over_floor": ("ratio", 10.0),
    "end_to_end": ("seconds", 120.0),
}
# raw → report added up from the stages when the ``commands`` stage (which runs ``keytech build``
# (validate + land + dbt build + checks), ``keytech estimate`` (every spec, the placebo included),
# ``keytech report``) did not run; the ``validate`` stage is not part of it (the build validates
# the raw folder again as it lands it).
END_TO_END_STAGES = ("build", "checks", "estimation", "placebo", "report")
STAGES = ("synth", "validate", "excel_read", "build", "checks", "fit_anchor", "estimation", "placebo", "report",
          "ipc_compare", "ipc_floor", "commands")
PLACEBO_DRAWS = 500
SEED = 20250101
IPC_SUBSET_ROWS = 50_000
EXCEL_ROWS = 100_000
# The dbt models that do the IPC work: tokenise + normalise, match distinct codes, join back.
IPC_MODELS = ("int_patent_ipc_tokens_parsed", "int_ipc_codes_matched", "int_patent_ipc_codes_flagged")


# ----------------------------------------------------------------------------------- locations
def work_dir(out: Path, scale: str) -> Path:
    return out / f"work-{scale}"


def stage_env(work: Path) -> dict[str, str]:
    """Environment pointing every keytech location into the bench's work folder."""
    return {
        "KEYTECH_RAW_DIR": str(work / "raw"),
        "KEYTECH_LANDING_DIR": str(work / "landing"),
        "KEYTECH_DB": str(work / "warehouse.duckdb"),
        "KEYTECH_OUTPUT_DIR": str(work / "output"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "GX_ANALYTICS_ENABLED": "False",
    }


def _max_rss_bytes() -> tuple[int, int]:
    """(this process, its largest waited-for child) maximum resident set size in bytes (Linux: KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale)


# -------------------------------------------------------------------------------------- stages
def _stage_synth(work: Path, scale: str, seed: int) -> dict:
    from keytech.synth import generate

    start = time.perf_counter()
    truth = generate(scale, seed, work / "raw", progress=False)
    return {"seconds": time.perf_counter() - start, "rows": truth.get("rows", {})}


def _stage_validate(work: Path, scale: str, seed: int) -> dict:
    from keytech.ingest import validate

    start = time.perf_counter()
    problems, reports = validate(work / "raw")
    return {"seconds": time.perf_counter() - start,
            "rows": {r.table: r.data_rows for r in reports},
            "warnings": len(problems)}


def write_xlsx(path: Path, rows: list[list], header_rows: int) -> None:
    """A minimal .xlsx of one sheet (inline strings; numbers below the header rows as numbers),
    written without a spreadsheet library."""
    import zipfile
    from xml.sax.saxutils import escape

    def letter(index: int) -> str:
        out = ""
        index += 1
        while index:
            index, rem = divmod(index - 1, 26)
            out = chr(65 + rem) + out
        return out

    letters = [letter(i) for i in range(max(len(r) for r in rows))]
    parts = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{letters[c]}{r}"
            if isinstance(value, (int, float)) and r > header_rows:
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            elif value is not None:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(str(value))}</t></is></c>')
        parts.append(f'<row r="{r}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    pkg = "http://schemas.openxmlformats.org/package/2006/relationships"
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override '
            'PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.'
            'spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType='
            '"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'),
        "_rels/.rels": (f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}"><Relationship '
                        f'Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
        "xl/workbook.xml": (f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{main}" xmlns:r="{rel}">'
                            '<sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{pkg}"><Relationship Id="rId1" '
            f'Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'),
        "xl/worksheets/sheet1.xml": (f'<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{main}">'
                                     f'<sheetData>{"".join(parts)}</sheetData></worksheet>'),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)


def excel_rows(n: int, seed: int) -> list[list]:
    """A CSMAR income-statement export of ``n`` data rows: field codes, Chinese labels, units, then
    firm-years with stock codes stored as numbers (unique keys: firm x year x report type)."""
    import random

    rng = random.Random(seed)
    rows: list[list] = [["Stkcd", "Accper", "Typrep", "B001101000", "B001100000", "B002000000"],
                        ["证券代码", "会计期间", "报表类型", "营业收入", "营业总收入", "净利润"],
                        ["没有单位", "没有单位", "没有单位", "元", "元", "元"]]
    for i in range(n):
        firm, rest = divmod(i, 30)
        year, typrep = 1995 + rest // 2, "AB"[rest % 2]
        revenue = round(rng.lognormvariate(20, 1.5), 2)
        rows.append([firm + 1, f"{year}-12-31", typrep, revenue, revenue, round(revenue * rng.uniform(-0.1, 0.2), 2)])
    return rows


def _stage_excel_read(work: Path, scale: str, seed: int) -> dict:
    import shutil
    import tempfile

    import duckdb

    from keytech.contract import Mapping, load_contract
    from keytech.ingest import land_table, load_raw

    folder = work / "excel"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "FS_Comins.xlsx"
    start = time.perf_counter()
    write_xlsx(path, excel_rows(EXCEL_ROWS, seed), header_rows=3)
    written = time.perf_counter() - start
    scratch = Path(tempfile.mkdtemp(prefix="keytech-bench-excel-"))
    con = duckdb.connect()
    try:
        start = time.perf_counter()
        load_raw(con, path, scratch)
        read = time.perf_counter() - start
        read_rows = con.execute("select count(*) from raw_t").fetchone()[0]
        problems: list = []
        start = time.perf_counter()
        report = land_table(con, folder, load_contract()["income_statement"], Mapping(), [path], scratch, problems)
        land = time.perf_counter() - start
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    errors = [p.render() for p in problems if p.severity == "error"]
    if report is None or errors or report.data_rows != EXCEL_ROWS:
        raise RuntimeError(f"the Excel file did not land whole: {report and report.data_rows} rows; {errors[:3]}")
    return {"seconds": land, "read_seconds": read, "write_seconds": written, "rows": EXCEL_ROWS,
            "sheet_rows": read_rows, "file_bytes": path.stat().st_size,
            "description_rows_skipped": report.description_rows_skipped}


def _stage_build(work: Path, scale: str, seed: int) -> dict:
    from keytech import paths
    from keytech.build import BuildOptions, build_warehouse

    started = dt.datetime.now(dt.timezone.utc)
    start = time.perf_counter()
    from keytech.synth.config import LAST_YEAR, SCALES

    last = SCALES[scale].last_year  # the scale's calendar (xl: 2024) sets the panel window
    outcome = build_warehouse(BuildOptions(raw_dir=work / "raw", landing_dir=work / "landing",
                                           warehouse=work / "warehouse.duckdb", quiet=True,
                                           panel_end_year=None if last == LAST_YEAR else last))
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "timings": outcome["timings"]}
    # dbt's per-node timings of this build (its own target/, paths.dbt_artifacts_dir; still only
    # accept results generated after this stage started)
    run_results = paths.dbt_artifacts_dir(work / "warehouse.duckdb") / "target" / "run_results.json"
    if run_results.is_file():
        data = json.loads(run_results.read_text(encoding="utf-8"))
        generated = data.get("metadata", {}).get("generated_at", "")
        try:
            fresh = dt.datetime.fromisoformat(generated.replace("Z", "+00:00")) >= started
        except ValueError:
            fresh = False
        if fresh:
            (work / "run_results.json").write_text(json.dumps(data), encoding="utf-8")
            nodes = {r["unique_id"]: r.get("execution_time", 0.0) for r in data.get("results", [])}
            models = {uid.split(".")[-1]: t for uid, t in nodes.items() if uid.startswith("model.")}
            tests = sum(t for uid, t in nodes.items() if uid.startswith(("test.", "unit_test.")))
            result["dbt_nodes"] = len(nodes)
            result["dbt_test_seconds"] = tests
            result["dbt_slowest_models"] = dict(sorted(models.items(), key=lambda kv: -kv[1])[:8])
            result["dbt_slowest_tests"] = dict(sorted(
                ((uid.split(".")[2], t) for uid, t in nodes.items() if uid.startswith(("test.", "unit_test."))),
                key=lambda kv: -kv[1])[:8])
            result["dbt_ipc_model_seconds"] = {m: models[m] for m in IPC_MODELS if m in models}
        else:
            result["dbt_nodes_note"] = "target/run_results.json was written by another dbt run; per-model timings skipped"
    return result


def _stage_checks(work: Path, scale: str, seed: int) -> dict:
    from keytech.quality import run_checks

    start = time.perf_counter()
    record = run_checks()
    return {"seconds": time.perf_counter() - start, "passed": bool(record["passed"])}


def _estimation_call(only: list[str], seed: int, jobs: int = 1) -> dict:
    start = time.perf_counter()
    from keytech import estimation

    try:  # the heavy estimation libraries, imported lazily by run_estimation: timed on their own
        import pyfixest.estimation  # noqa: F401
    except ImportError:
        pass
    import_seconds = time.perf_counter() - start
    kwargs = {"only": only, "force": False, "placebo_draws": PLACEBO_DRAWS, "seed": seed, "progress": False}
    parameters = inspect.signature(estimation.run_estimation).parameters
    if "render" in parameters:
        kwargs["render"] = False  # tables and figures belong to the report stage
    if "jobs" in parameters:
        kwargs["jobs"] = jobs
    pyfixest_fits = _count_pyfixest_fits()
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    run_id = estimation.run_estimation(**kwargs)
    seconds = time.perf_counter() - start
    cpu_seconds = _cpu_seconds() - cpu_start
    permutation_fits = _permutation_fits(run_id)
    fits = pyfixest_fits.value + permutation_fits
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "jobs": kwargs.get("jobs", 1),
            "import_seconds": import_seconds, "run_id": run_id, "specs": len(only),
            "fits": fits, "pyfixest_fits": pyfixest_fits.value, "permutation_fits": permutation_fits,
            "seconds_per_fit": seconds / fits if fits else None, "spec_seconds": _spec_seconds(run_id)}


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process, of its waited-for children (the forked
    permutation workers of ``--jobs``) and of the spec workers of ``--jobs`` (children of the
    forkserver, reported by them: ``schedule.WORKER_CPU_SECONDS``)."""
    from keytech.estimation.orchestration import schedule

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + schedule.WORKER_CPU_SECONDS[0]


def _spec_seconds(run_id: str) -> dict[str, float]:
    """Spec id -> seconds of the spec in the run (``timings_seconds`` of ``results.runs``)."""
    from keytech import warehouse

    with warehouse.connect(read_only=True) as con:
        row = con.execute("select parameters_json from results.runs where run_id = ?", [run_id]).fetchone()
    return dict((json.loads(row[0]) if row and row[0] else {}).get("timings_seconds") or {})


def _count_pyfixest_fits():
    """Count the calls of ``pyfixest.feols`` / ``fepois`` in this process and in the worker
    processes of ``--jobs`` (the counter is shared memory; the workers of the spec pool install
    the same wrappers when they start, ``schedule.WORKER_INITIALIZERS``, and forked permutation
    workers inherit them). The estimation code calls them as ``pf.feols``, so wrapping the module
    attributes sees every call. Returns the counter; ``.value`` is the count."""
    from keytech.estimation.orchestration import schedule

    counter = schedule.worker_context().Value("q", 0)
    _wrap_pyfixest_fits(counter)
    schedule.WORKER_INITIALIZERS[:] = [(f, a) for f, a in schedule.WORKER_INITIALIZERS if f is not _wrap_pyfixest_fits]
    schedule.WORKER_INITIALIZERS.append((_wrap_pyfixest_fits, (counter,)))
    return counter


def _wrap_pyfixest_fits(counter) -> None:
    """Make ``pyfixest.feols`` / ``fepois`` of this process add one to ``counter`` per call."""
    try:
        from keytech.estimation.core.pyfixest_order import load_pyfixest

        pf = load_pyfixest()
    except ImportError:
        return

    def counting(fn):
        def wrapper(*args, **kwargs):
            with counter.get_lock():
                counter.value += 1
            return fn(*args, **kwargs)
        return wrapper

    for name in ("feols", "fepois"):
        if hasattr(pf, name):
            setattr(pf, name, counting(getattr(pf, name)))


def _permutation_fits(run_id: str) -> int:
    """The FE-OLS re-estimations of the run's between-group permutation tests, from the stored
    diagnostics: both groups for the observed labelling and for every draw (failed draws too).
    A test taken from the joint pass of a sibling spec (``computed_in_pass_of``, see
    keytech.estimation.mechanisms) cost no re-estimation and is not counted: a joint pass counts
    once, though each of its re-estimations fits all the pass's outcomes on one design."""
    from keytech import warehouse

    with warehouse.connect(read_only=True) as con:
        # the diagnostics are repeated on every term row of a spec: one per spec
        rows = con.execute("select spec_id, any_value(diagnostics_json) from results.estimates where run_id = ? "
                           "group by spec_id", [run_id]).fetchall()
    fits = 0
    for _, text in rows:
        perm = (json.loads(text) if text else {}).get("permutation")
        if isinstance(perm, dict) and "n_draws" in perm and not perm.get("computed_in_pass_of"):
            fits += 2 * (1 + int(perm["n_draws"]) + int(perm.get("n_draws_failed", 0)))
    return fits


def _spec_ids() -> tuple[list[str], list[str]]:
    """(every spec except the placebo, the placebo specs)."""
    from keytech.estimation import load_registry

    specs = load_registry().specs
    placebo = [s.id for s in specs if s.group == "placebo"]
    return [s.id for s in specs if s.group != "placebo"], placebo


def _stage_estimation(work: Path, scale: str, seed: int, only: list[str] | None = None, jobs: int = 1) -> dict:
    others, _ = _spec_ids()
    return _estimation_call(only or others, seed, jobs)


ANCHOR_SPEC = "table3_col5"
ANCHOR_REPEATS = 5


def _stage_fit_anchor(work: Path, scale: str, seed: int) -> dict:
    """The anchor a researcher would run by hand: one plain pyfixest ``feols`` of Table 3 column 5
    (controls, firm + industry×year + province×year FE, SE clustered by city) on the panel, as
    the median of ``ANCHOR_REPEATS`` fits after one warm-up (numba compilation excluded). The
    estimation stage's seconds are read against it (issue 17: time per spec vs one fit)."""
    import statistics
    import warnings

    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    from keytech.estimation import load_registry
    from keytech.estimation.core.fitting import demeaner
    from keytech.estimation.core.panel import load_panel

    spec = load_registry().get(ANCHOR_SPEC)
    data = load_panel(spec.panel).dropna(subset=[spec.outcome, *spec.regressors, *spec.fixed_effects, "city_code"])
    fml = f"{spec.outcome} ~ {' + '.join(spec.regressors)} | {' + '.join(spec.fixed_effects)}"
    # the spec's demeaner (LSMR, the spec's tolerance), as the estimation uses: pyfixest's default
    # alternating projections did not converge within 10,000 iterations on the paper-scale panel
    kwargs = {"vcov": {"CRV1": "city_code"}, "demeaner": demeaner(spec)}
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyfixest's singleton notice, once per fit
        pf.feols(fml, data=data, **kwargs)  # warm-up: compiles/loads the demeaner once
        for _ in range(ANCHOR_REPEATS):
            start = time.perf_counter()
            fit = pf.feols(fml, data=data, **kwargs)
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "fits": ANCHOR_REPEATS, "rows": len(data), "nobs": int(fit._N),
            "policy": float(fit.coef()["policy"]), "formula": fml,
            "what": f"one plain pyfixest feols of {ANCHOR_SPEC} (median of {ANCHOR_REPEATS}, after a warm-up)"}


def estimation_groups() -> dict[str, list[str]]:
    """Registry group -> spec ids, every group except the placebo, in registry order."""
    from keytech.estimation import load_registry

    groups: dict[str, list[str]] = {}
    for spec in load_registry().specs:
        if spec.group != "placebo":
            groups.setdefault(spec.group, []).append(spec.id)
    return groups


def _stage_placebo(work: Path, scale: str, seed: int) -> dict:
    _, placebo = _spec_ids()
    if not placebo:
        return {"status": "not available", "note": "no spec in group 'placebo'"}
    result = _estimation_call(placebo, seed)
    result["draws"] = PLACEBO_DRAWS
    return result


def _stage_report(work: Path, scale: str, seed: int) -> dict:
    import importlib

    report = importlib.import_module("keytech.report")
    for name in ("build_report", "render_report", "write_report", "build", "render", "main"):
        func = getattr(report, name, None)
        if callable(func) and all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                                  for p in inspect.signature(func).parameters.values()):
            start = time.perf_counter()
            func()
            return {"seconds": time.perf_counter() - start, "entry_point": f"keytech.report.{name}"}
    return {"status": "not available", "note": "keytech.report has no entry point callable without arguments"}


def _stage_ipc_compare(work: Path, scale: str, seed: int) -> dict:
    """Plain pandas, row by row, on a subset, against the SQL models' time scaled to the subset."""
    import duckdb

    from keytech import paths
    from keytech.ipc import Concordance, normalise_ipc_list

    landed = work / "landing" / "patents.parquet"
    total_rows = duckdb.execute("select count(*) from read_parquet(?)", [str(landed)]).fetchall()[0][0]
    subset = duckdb.execute(f"select Scode, ApplyNo, IPC from read_parquet(?) "
                            f"using sample reservoir({IPC_SUBSET_ROWS} rows) repeatable (42)", [str(landed)]).df()
    seeds = paths.seeds_dir()
    start = time.perf_counter()
    concordance = Concordance.from_csv(seeds / "sei_ipc_concordance.csv", seeds / "ipc_revision_supplement.csv")
    load_seconds = time.perf_counter() - start

    start = time.perf_counter()
    out_rows = []
    for row in subset.itertuples(index=False):  # deliberately the naive way
        for token in normalise_ipc_list(row.IPC if isinstance(row.IPC, str) else None):
            if token.code is None:
                continue
            match = concordance.match(token.code)
            out_rows.append((row.Scode, row.ApplyNo, token.position, token.code, match.match_level, match.is_key_tech))
    import pandas as pd

    result_frame = pd.DataFrame(out_rows, columns=["stkcd", "application_number", "ipc_position", "ipc_code",
                                                   "match_level", "is_key_tech"])
    key_patents = result_frame.groupby(["stkcd", "application_number"])["is_key_tech"].any().sum()
    pandas_seconds = time.perf_counter() - start

    rows = len(subset)
    result = {
        "subset_rows": rows, "landed_patent_rows": total_rows, "codes_classified": len(result_frame),
        "key_tech_patents_in_subset": int(key_patents),
        "pandas_seconds": pandas_seconds, "concordance_load_seconds": load_seconds,
        "pandas_seconds_per_1k_rows": pandas_seconds / rows * 1000 if rows else None,
        "pandas_seconds_extrapolated_to_all_rows": pandas_seconds / rows * total_rows if rows else None,
    }
    run_results = work / "run_results.json"
    if run_results.is_file():
        data = json.loads(run_results.read_text(encoding="utf-8"))
        models = {r["unique_id"].split(".")[-1]: r.get("execution_time", 0.0)
                  for r in data.get("results", []) if r["unique_id"].startswith("model.")}
        found = {m: models[m] for m in IPC_MODELS if m in models}
        if found and rows and total_rows:
            sql_seconds = sum(found.values())
            scaled = sql_seconds * rows / total_rows
            result.update({
                "sql_models": found, "sql_seconds_all_rows": sql_seconds,
                "sql_seconds_scaled_to_subset": scaled,
                "speed_ratio_sql_vs_pandas": pandas_seconds / scaled if scaled > 0 else None,
                "sql_source": "dbt execution_time of the IPC models in this build (target/run_results.json)",
            })
    if "speed_ratio_sql_vs_pandas" not in result:
        result["sql_note"] = "no dbt per-model timings from the build stage; SQL side not measured"
    return result


# the patent/IPC models whose total the ipc_floor stage sets against the bare join
PATENT_SQL_MODELS = (*IPC_MODELS, "int_patent_ipc_codes_attributed", "int_patents_dispositioned",
                     "int_patents_key_tech_flagged", "int_firm_year_patent_counts", "fct_patents",
                     "fct_patent_ipc_codes")


def _stage_ipc_floor(work: Path, scale: str, seed: int) -> dict:
    """The floor: DuckDB's exact join of every landed patent-IPC token against the concordance,
    no normalisation or fallback. Beside it, dbt's own time for the patent/IPC models."""
    import duckdb

    from keytech import paths

    landed = work / "landing" / "patents.parquet"
    concordance = paths.seeds_dir() / "sei_ipc_concordance.csv"
    con = duckdb.connect()
    start = time.perf_counter()
    rows, tokens, matched = con.execute(
        "with tokens as (select ApplyNo, unnest(string_split(replace(coalesce(IPC, ''), ' ', ''), ';')) as ipc_code "
        "from read_parquet(?)), concordance as (select ipc_code, sei_rule_id from read_csv(?, header = true, "
        "all_varchar = true)) select (select count(*) from read_parquet(?)), count(*), count(c.sei_rule_id) "
        "from tokens as t left join concordance as c using (ipc_code)",
        [str(landed), str(concordance), str(landed)]).fetchone()
    seconds = time.perf_counter() - start
    con.close()
    result: dict = {"seconds": seconds, "patent_rows": rows, "ipc_tokens": tokens, "exact_matches": matched,
                    "what": "bare DuckDB exact join of the landed patent-IPC tokens against the concordance"}
    run_results = work / "run_results.json"
    if run_results.is_file():
        data = json.loads(run_results.read_text(encoding="utf-8"))
        models = {r["unique_id"].split(".")[-1]: r.get("execution_time", 0.0)
                  for r in data.get("results", []) if r["unique_id"].startswith("model.")}
        found = {m: models[m] for m in dict.fromkeys(PATENT_SQL_MODELS) if m in models}
        if found:
            sql_seconds = sum(found.values())
            result.update({"sql_models": found, "sql_seconds": sql_seconds,
                           "sql_over_floor": sql_seconds / seconds if seconds > 0 else None})
    if "sql_seconds" not in result:
        result["sql_note"] = "no dbt per-model timings from the build stage; run the build stage first"
    warehouse = work / "warehouse.duckdb"
    if warehouse.is_file():
        written = _write_floor(warehouse, work / "write_floor.duckdb")
        if written:
            write_seconds = sum(written.values())
            result.update({"write_floor_tables": written, "write_floor_seconds": write_seconds})
            if result.get("sql_seconds"):
                result["sql_over_write_floor"] = result["sql_seconds"] / write_seconds if write_seconds > 0 else None
    return result


def _write_floor(warehouse: Path, scratch: Path) -> dict[str, float]:
    """The second anchor of the patent/IPC models: how long writing their materialised rows takes
    by itself. Each of PATENT_SQL_MODELS that is a table in the built warehouse is copied as it is
    (``create table … as select *``) into a scratch DuckDB file, which is deleted after; table →
    seconds. No design that keeps these tables (incremental refresh needs them) can be faster."""
    import duckdb

    scratch.unlink(missing_ok=True)
    con = duckdb.connect(str(scratch))
    out: dict[str, float] = {}
    try:
        con.execute(f"attach {sql_string(warehouse)} as built (read_only)")
        tables = con.execute(
            "select schema_name, table_name from duckdb_tables() where database_name = 'built'").fetchall()
        where = {name: schema for schema, name in tables}
        for name in dict.fromkeys(PATENT_SQL_MODELS):
            if name in where:
                start = time.perf_counter()
                con.execute(f'create table "{name}" as select * from built."{where[name]}"."{name}"')
                out[name] = time.perf_counter() - start
    finally:
        con.close()
        scratch.unlink(missing_ok=True)
        scratch.with_name(scratch.name + ".wal").unlink(missing_ok=True)
    return out


COMMANDS_FOLDER = "commands"  # the commands stage's own landing folder, warehouse and outputs under work/


def user_commands(scale: str, seed: int, jobs: int) -> list[tuple[str, list[str]]]:
    """(name, argument list) of the commands a user types for raw → report, in order: ``keytech
    build`` (validate, land, dbt build, checks), ``keytech estimate`` (every spec, the placebo
    included, in ``jobs`` worker processes, with the bench's seed and placebo draws) and ``keytech
    report``. xl raw folders end in 2024: the build gets that panel end year, as the build stage."""
    from keytech.synth.config import LAST_YEAR, SCALES

    last = SCALES[scale].last_year
    build = ["build"] + ([] if last == LAST_YEAR else ["--panel-end-year", str(last)])
    estimate = ["estimate", "--jobs", str(jobs), "--seed", str(seed), "--placebo-draws", str(PLACEBO_DRAWS)]
    return [("build", build), ("estimate", estimate), ("report", ["report"])]


def _keytech_command() -> list[str]:
    """The ``keytech`` console script beside this interpreter (what a user runs), else the module."""
    script = Path(sys.executable).parent / "keytech"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "keytech.cli"]


def _stage_commands(work: Path, scale: str, seed: int, jobs: int = 1) -> dict:
    """Raw → report as a user runs it: the :func:`user_commands`, each a process of its own, on the
    bench's raw folder into a landing folder, warehouse and output folder of their own (under
    ``work/commands``, removed afterwards). ``seconds`` = the sum of the three commands' wall
    times, interpreter start-up included: issue 17's end-to-end figure. The build starts from the
    saved dbt parse the build stage left, as every build after a project's first does."""
    import shutil

    folder = work / COMMANDS_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = dict(os.environ, **stage_env(work))
    env.update({"KEYTECH_LANDING_DIR": str(folder / "landing"), "KEYTECH_DB": str(folder / "warehouse.duckdb"),
                "KEYTECH_OUTPUT_DIR": str(folder / "output")})
    commands = user_commands(scale, seed, jobs)
    seconds: dict[str, float] = {}
    result: dict = {"jobs": jobs, "command_seconds": seconds,
                    "commands": [f"keytech {' '.join(arguments)}" for _, arguments in commands]}
    try:
        for name, arguments in commands:
            command = _keytech_command() + arguments
            start = time.perf_counter()
            completed = subprocess.run(command, env=env, capture_output=True, text=True)
            seconds[name] = time.perf_counter() - start
            failed_specs = re.search(r"keytech estimate: (\d+) requested spec\(s\) failed", completed.stderr or "")
            if name == "estimate" and completed.returncode == 1 and failed_specs:
                # the run went through and was stored; some specs cannot be estimated on this
                # data (tiny scale): recorded, and the report still runs, as for a user
                result["estimate_failed_specs"] = int(failed_specs.group(1))
                result["note"] = (f"keytech estimate: {failed_specs.group(1)} spec(s) failed on this data (exit 1); "
                                  "the run was stored and the report ran")
            elif completed.returncode != 0:
                tail = (completed.stdout + completed.stderr)[-1500:]
                return {**result, "status": "error",
                        "note": f"`keytech {' '.join(arguments)}` exited with {completed.returncode}: {tail}"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {**result, "seconds": sum(seconds.values())}


STAGE_FUNCS = {
    "synth": _stage_synth, "validate": _stage_validate, "excel_read": _stage_excel_read, "build": _stage_build, "checks": _stage_checks,
    "estimation": _stage_estimation, "placebo": _stage_placebo, "report": _stage_report,
    "ipc_compare": _stage_ipc_compare, "ipc_floor": _stage_ipc_floor, "fit_anchor": _stage_fit_anchor,
    "commands": _stage_commands,
}


def run_worker(stage: str, work: Path, scale: str, seed: int, result_file: Path, only: list[str] | None = None,
               jobs: int = 1) -> int:
    """Run one stage in this (fresh) process; write its result with wall time and peak memory."""
    start = time.perf_counter()
    load_start = os.getloadavg()[0]
    try:
        if stage == "estimation":
            result = _stage_estimation(work, scale, seed, only, jobs)
        elif stage == "commands":
            result = _stage_commands(work, scale, seed, jobs)
        else:
            result = STAGE_FUNCS[stage](work, scale, seed, only) if only else STAGE_FUNCS[stage](work, scale, seed)
        result.setdefault("status", "ok")
    except ImportError as exc:
        result = {"status": "not available", "note": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # recorded, the run goes on
        result = {"status": "error", "note": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc()[-3000:]}
    result["wall_seconds"] = time.perf_counter() - start
    result["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]  # at start, at end
    self_rss, child_rss = _max_rss_bytes()
    result["max_rss_self_bytes"], result["max_rss_children_bytes"] = self_rss, child_rss
    if stage == "estimation":  # the spec workers of --jobs are the forkserver's children: they report it
        from keytech.estimation.orchestration import schedule

        result["max_rss_spec_workers_bytes"] = schedule.WORKER_PEAK_RSS_BYTES[0]
        child_rss = max(child_rss, schedule.WORKER_PEAK_RSS_BYTES[0])
    result["peak_rss_bytes"] = max(self_rss, child_rss)
    result_file.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------------ the run
def _machine() -> dict:
    import keytech

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "threads": keytech.thread_settings()}  # the stages' processes inherit them
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) * 1024 / GIB, 1)
                break
    except OSError:
        pass
    try:
        import dbt.version
        import duckdb

        info["duckdb"] = duckdb.__version__
        info["dbt_core"] = dbt.version.__version__
    except Exception:
        pass
    try:
        from keytech import paths

        info["git"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=paths.project_root(),
                                     capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        pass
    return info


def _run_stage(stage: str, work: Path, scale: str, seed: int, log, only: list[str] | None = None,
               jobs: int = 1) -> dict:
    result_file = work / f".stage-{stage}.json"
    result_file.unlink(missing_ok=True)
    env = dict(os.environ, **stage_env(work))
    command = [sys.executable, "-m", "keytech.bench", "--worker", stage, "--scale", scale, "--seed", str(seed),
               "--work", str(work), "--result", str(result_file)] + (["--only", ",".join(only)] if only else [])
    if jobs != 1:
        command += ["--jobs", str(jobs)]
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - start
    if result_file.is_file():
        result = json.loads(result_file.read_text(encoding="utf-8"))
        result_file.unlink()
    else:
        result = {"status": "error", "note": f"stage process exited with {completed.returncode} (killed? out of memory?)"}
    result["process_seconds"] = elapsed
    return result


def _run_estimation_one_process(work: Path, scale: str, seed: int, log, jobs: int = 1) -> dict:
    """The estimation suite without the placebo as ``keytech estimate`` runs it: one process, one
    ``run_estimation`` over every spec (so ``mt_*`` take their members from earlier in the run),
    permutation draws shared by ``jobs`` forked workers. Per group: the sum of its specs' timings
    stored with the run. When the process fails, the suite is run again one group per process
    (:func:`_run_estimation_by_group`) to show which group fails."""
    try:
        groups = estimation_groups()
    except ImportError as exc:
        return {"status": "not available", "note": f"{type(exc).__name__}: {exc}"}
    log.write(f"\n----- estimation: every spec except the placebo in one process (jobs {jobs}) -----\n")
    log.flush()
    result = _run_stage("estimation", work, scale, seed, log, jobs=jobs)
    if result.get("status") != "ok":
        print(f"[bench]   one-process estimation failed ({(result.get('note') or '?')[:120]}); "
              "again one group per process", flush=True)
        outcome = _run_estimation_by_group(work, scale, seed, log, jobs)
        outcome["one_process_failure"] = result.get("note")
        return outcome
    timings = result.get("spec_seconds") or {}
    result["processes"] = "one"
    # what `keytech estimate` pays: the run plus one import of the estimation libraries
    result["run_seconds"] = result["seconds"]
    result["seconds"] = result["seconds"] + (result.get("import_seconds") or 0.0)
    result["groups"] = {group: {"status": "ok", "specs": len(ids), "seconds": sum(timings.get(i, 0.0) for i in ids)}
                        for group, ids in groups.items()}
    for group, r in result["groups"].items():
        print(f"[bench]   {group}: {r['seconds']:.1f} s (sum of its specs' timings)", flush=True)
    result["seconds_all_groups_ok"] = result["seconds"]
    return result


def _run_estimation_by_group(work: Path, scale: str, seed: int, log, jobs: int = 1) -> dict:
    """The estimation suite without the placebo, one registry group per process (a crash in one
    group — e.g. a native-code abort — costs only that group; each group's time and memory shows)."""
    try:
        groups = estimation_groups()
    except ImportError as exc:
        return {"status": "not available", "note": f"{type(exc).__name__}: {exc}"}
    results = {}
    for group, ids in groups.items():
        log.write(f"\n----- estimation group {group} ({len(ids)} specs) -----\n")
        log.flush()
        results[group] = _run_stage("estimation", work, scale, seed, log, only=ids, jobs=jobs)
        results[group].pop("spec_seconds", None)
        results[group]["specs"] = len(ids)
        shown = results[group].get("seconds")
        print(f"[bench]   {group}: {results[group].get('status')}"
              + (f", {shown:.1f} s" if isinstance(shown, (int, float)) else "")
              + (f" — {results[group]['note'][:120]}" if results[group].get("note") else ""), flush=True)
    failed = [g for g, r in results.items() if r.get("status") != "ok"]
    outcome = {
        "processes": "group",
        "jobs": jobs,
        "groups": results,
        "specs": sum(len(ids) for ids in groups.values()),
        "peak_rss_bytes": max((r.get("peak_rss_bytes") or 0 for r in results.values()), default=0) or None,
        # one process would import the libraries once: the groups' estimation times plus one import
        "import_seconds": max((r.get("import_seconds") or 0 for r in results.values()), default=0),
        "seconds_groups_ok": sum(r.get("seconds") or 0 for r in results.values()),
    }
    for key in ("fits", "pyfixest_fits", "permutation_fits", "cpu_seconds"):
        outcome[key] = sum(r.get(key) or 0 for r in results.values())
    outcome["seconds_per_fit"] = outcome["seconds_groups_ok"] / outcome["fits"] if outcome["fits"] else None
    outcome["seconds_all_groups_ok"] = None if failed else outcome["seconds_groups_ok"] + outcome["import_seconds"]
    if failed:
        outcome["status"] = "error"
        outcome["note"] = "failed group(s): " + ", ".join(f"{g} ({results[g].get('note', '?')[:80]})" for g in failed)
    else:
        outcome["status"] = "ok"
        outcome["seconds"] = outcome["seconds_all_groups_ok"]
    return outcome


def end_to_end_seconds(stages: dict) -> float | None:
    """Raw → report added up from the stages: the sum of the ``END_TO_END_STAGES``' times, each a
    process of its own as the commands are; None unless every one of them ran and succeeded."""
    times = [stages.get(name, {}).get("seconds") if stages.get(name, {}).get("status") == "ok" else None
             for name in END_TO_END_STAGES]
    return None if any(t is None for t in times) else float(sum(times))


def end_to_end(stages: dict) -> tuple[float | None, str | None]:
    """(seconds, basis) of raw → report: measured by the ``commands`` stage (the three commands a
    user types) when it ran and succeeded, else :func:`end_to_end_seconds`, the stages added up
    (which counts the placebo after the other specs, where ``keytech estimate`` runs it in the same
    pool, and leaves out the commands' own start-up)."""
    commands = stages.get("commands", {})
    if commands.get("status") == "ok" and commands.get("seconds") is not None:
        return float(commands["seconds"]), "commands"
    total = end_to_end_seconds(stages)
    return total, None if total is None else "sum of stages"


def evaluate(stages: dict) -> dict:
    """Target -> {value, limit, passed} from the stage results (missing values: passed None)."""
    values = {
        "synth": stages.get("synth", {}).get("seconds"),
        "excel_read": stages.get("excel_read", {}).get("seconds"),
        "dbt_build": (stages.get("build", {}).get("timings") or {}).get("dbt_build"),
        "checks": stages.get("checks", {}).get("seconds"),
        "estimation": stages.get("estimation", {}).get("seconds"),
        "placebo": stages.get("placebo", {}).get("seconds"),
        "ipc_sql_over_floor": stages.get("ipc_floor", {}).get("sql_over_floor"),
        "peak_memory": max((s.get("peak_rss_bytes") or 0 for s in stages.values()), default=None) or None,
    }
    values["end_to_end"], basis = end_to_end(stages)
    out = {}
    for name, (unit, limit) in TARGETS.items():
        value = values[name]
        out[name] = {"unit": unit, "limit": limit, "value": value,
                     "passed": None if value is None else bool(value <= limit)}
    out["end_to_end"].update(basis=basis, sum_of_stages=end_to_end_seconds(stages))
    return out


def _fmt_seconds(value) -> str:
    return "—" if value is None else f"{value:,.1f} s"


def _fmt_ratio(value) -> str:
    return "—" if value is None else f"{value:,.1f}×"


def _fmt_bytes(value) -> str:
    return "—" if not value else f"{value / GIB:,.2f} GiB"


def render_markdown(report: dict) -> str:
    stages = report["stages"]
    threads = report["machine"].get("threads") or {}
    lines = [
        f"# Benchmark — scale `{report['scale']}`, {report['started_at']} UTC",
        "",
        f"Machine: {report['machine'].get('cpu', '?')}, {report['machine'].get('cpus')} CPUs, "
        f"{report['machine'].get('memory_gib', '?')} GiB; Python {report['machine'].get('python')}, "
        f"demeaner/BLAS threads {threads.get('demeaner') or 'default'}/{threads.get('blas') or 'default'}, "
        f"BLAS kernels {threads.get('blas_core') or 'default'}, "
        f"DuckDB {report['machine'].get('duckdb', '?')}, dbt-core {report['machine'].get('dbt_core', '?')}; "
        f"code {report['machine'].get('git', '?')}. Synthetic data (seed {report['seed']}).",
        "",
    ]
    rows = stages.get("synth", {}).get("rows") or stages.get("validate", {}).get("rows") or {}
    if rows:
        lines += ["Raw rows: " + ", ".join(f"{t} {n:,}" for t, n in rows.items()) + ".", ""]
    lines += ["## Targets", "", "| target | measured | limit | result |", "|---|---|---|---|"]
    for name, t in report["targets"].items():
        fmt = {"bytes": _fmt_bytes, "ratio": _fmt_ratio}.get(t["unit"], _fmt_seconds)
        verdict = {True: "pass", False: "**miss**", None: "not measured"}[t["passed"]]
        shown = f"{name} ({t['basis']})" if t.get("basis") else name
        lines.append(f"| {shown} | {fmt(t['value'])} | {fmt(t['limit'])} | {verdict} |")
    lines += ["", "## Stages", "", "| stage | status | time | peak memory | notes |", "|---|---|---|---|---|"]
    for name, s in stages.items():
        notes = []
        if name == "build" and s.get("timings"):
            notes.append(", ".join(f"{k} {v:.1f} s" for k, v in s["timings"].items()))
            if s.get("dbt_test_seconds") is not None:
                notes.append(f"dbt tests {s['dbt_test_seconds']:.1f} s over {s.get('dbt_nodes')} nodes")
            if s.get("dbt_slowest_models"):
                notes.append("slowest models: " + ", ".join(f"{m} {t:.1f} s" for m, t in list(s["dbt_slowest_models"].items())[:4]))
        if name == "excel_read" and s.get("status") == "ok":
            notes.append(f"{s['rows']:,}-row .xlsx ({s['file_bytes'] / 2**20:.1f} MiB): read {s['read_seconds']:.1f} s, "
                         f"landed (read + checks) {s['seconds']:.1f} s")
        if name == "checks" and "passed" in s:
            notes.append("checks passed" if s["passed"] else "checks FAILED")
        if name == "estimation" and s.get("processes"):
            notes.append((f"one run (keytech estimate --jobs {s.get('jobs', 1)})" if s["processes"] == "one"
                          else f"one process per group (--jobs {s.get('jobs', 1)})")
                         + (f", CPU {s['cpu_seconds']:.1f} s" if s.get("cpu_seconds") else ""))
        if name == "estimation" and s.get("groups"):
            notes.append("by group: " + ", ".join(
                f"{g} {r['seconds']:.1f} s" if r.get("status") == "ok" else f"{g} {r.get('status')}"
                for g, r in s["groups"].items()))
        if name in ("estimation", "placebo") and s.get("specs"):
            notes.append(f"{s['specs']} spec(s)" + (f", {s['draws']} draws" if s.get("draws") else ""))
        if name == "ipc_compare" and s.get("status") == "ok":
            notes.append(f"pandas row-by-row {s['pandas_seconds']:.1f} s for {s['subset_rows']:,} rows")
            ratio = s.get("speed_ratio_sql_vs_pandas")
            if ratio:
                verdict = f"SQL {ratio:.1f}× faster" if ratio >= 1 else f"SQL {1 / ratio:.1f}× slower"
                notes.append(f"SQL IPC models {s['sql_seconds_all_rows']:.1f} s for {s['landed_patent_rows']:,} rows "
                             f"= {s['sql_seconds_scaled_to_subset']:.2f} s scaled to the subset; {verdict}")
        if name == "fit_anchor" and s.get("status") == "ok":
            notes.append(f"one pyfixest 3-FE fit of {s['rows']:,} rows (median of {s['fits']})")
        if name == "estimation" and s.get("specs") and stages.get("fit_anchor", {}).get("seconds"):
            anchor = stages["fit_anchor"]["seconds"]
            notes.append(f"{s.get('seconds', 0) / s['specs']:.2f} s per spec = {s.get('seconds', 0) / s['specs'] / anchor:.0f}× "
                         "the anchor fit")
            if s.get("seconds_per_fit"):
                notes.append(f"{s['fits']:,} model fits ({s['pyfixest_fits']:,} pyfixest, {s['permutation_fits']:,} "
                             f"permutation re-estimations): {s['seconds_per_fit'] * 1e3:.1f} ms per fit = "
                             f"{s['seconds_per_fit'] / anchor:.2f}× the anchor fit")
        if name == "ipc_floor" and s.get("status") == "ok":
            notes.append(f"bare exact join of {s['ipc_tokens']:,} IPC tokens of {s['patent_rows']:,} patent rows")
            if s.get("sql_over_floor"):
                notes.append(f"SQL patent/IPC models {s['sql_seconds']:.1f} s = {s['sql_over_floor']:.0f}× the floor "
                             "(target ≤ 10×)")
            if s.get("write_floor_seconds"):
                notes.append(f"writing their {len(s['write_floor_tables'])} tables' rows alone (a copy) "
                             f"{s['write_floor_seconds']:.1f} s = {s['write_floor_seconds'] / s['seconds']:.0f}× the "
                             "floor" + (f"; SQL = {s['sql_over_write_floor']:.1f}× that"
                                        if s.get("sql_over_write_floor") else ""))
        if name == "commands" and s.get("command_seconds"):
            notes.append(", ".join(f"keytech {n} {t:.1f} s" for n, t in s["command_seconds"].items())
                         + f" (estimate --jobs {s.get('jobs', 1)})")
            summed = report["targets"].get("end_to_end", {}).get("sum_of_stages")
            if summed is not None:
                notes.append(f"the stages {' + '.join(END_TO_END_STAGES)} add up to {summed:.1f} s")
        if s.get("note"):
            notes.append(s["note"].splitlines()[0][:200])
        seconds = s.get("seconds", s.get("pandas_seconds"))
        lines.append(f"| {name} | {s.get('status')} | {_fmt_seconds(seconds)} | {_fmt_bytes(s.get('peak_rss_bytes'))} | "
                     f"{'; '.join(notes)} |")
    lines += ["", "Peak memory: the larger of the stage process's and its largest child's maximum RSS "
              "(dbt runs as a child of the build stage). Times are wall-clock inside the stage.", ""]
    return "\n".join(lines)


def run(scale: str, out: Path, skip_synth: bool, seed: int, stages: tuple[str, ...] = STAGES,
        jobs: int = 1, estimation_processes: str = "one") -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = work_dir(out, scale)
    work.mkdir(parents=True, exist_ok=True)
    if skip_synth:
        if not is_synthetic(work / "raw"):
            raise SystemExit(f"--skip-synth: no earlier raw folder at {work / 'raw'}; run without it first.")
        stages = tuple(s for s in stages if s != "synth")
    report = {"scale": scale, "seed": seed, "started_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
              "machine": _machine(), "work_dir": str(work), "stages": {}}
    with open(out / "bench.log", "w", encoding="utf-8") as log:
        for stage in stages:
            print(f"[bench] {stage} …", flush=True)
            log.write(f"\n===== {stage} =====\n")
            log.flush()
            if stage == "estimation" and estimation_processes == "group":
                result = _run_estimation_by_group(work, scale, seed, log, jobs)
            elif stage == "estimation":
                result = _run_estimation_one_process(work, scale, seed, log, jobs)
            else:
                result = _run_stage(stage, work, scale, seed, log, jobs=jobs if stage == "commands" else 1)
            report["stages"][stage] = result
            shown = result.get("seconds", result.get("pandas_seconds"))
            print(f"[bench] {stage}: {result.get('status')}"
                  + (f", {shown:.1f} s" if isinstance(shown, (int, float)) else "")
                  + (f", peak {_fmt_bytes(result.get('peak_rss_bytes'))}" if result.get("peak_rss_bytes") else "")
                  + (f" — {result['note'].splitlines()[0][:160]}" if result.get("note") else ""), flush=True)
            if stage in ("synth", "build") and result.get("status") != "ok":
                print(f"[bench] {stage} failed; later stages need it, stopping (see {out / 'bench.log'}).", flush=True)
                break
    report["targets"] = evaluate(report["stages"])
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "bench.md").write_text(render_markdown(report), encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keytech.bench", description=__doc__.split("\n\n")[0],
                                     epilog="Example: python -m keytech.bench --scale small")
    parser.add_argument("--scale", choices=["tiny", "small", "paper", "xl"], default="paper",
                        help="synthetic scale (default paper: ~3,500 firms, 2008-2022; xl: ~5,300 firms, "
                             "~8M patent rows)")
    parser.add_argument("--skip-synth", action="store_true", help="reuse the raw folder of an earlier run")
    parser.add_argument("--out", default=None, help="output folder (default output/bench)")
    parser.add_argument("--seed", type=int, default=SEED, help="synthetic-data and placebo seed")
    parser.add_argument("--stages", nargs="+", choices=STAGES, help="run only these stages (in pipeline order)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="worker processes of the estimation stage (keytech estimate --jobs: the specs "
                             "in N processes, one registry group each at a time; default: the machine's CPUs, "
                             f"{os.cpu_count()} here; results do not depend on it)")
    parser.add_argument("--estimation-processes", choices=["one", "group"], default="one",
                        help="one: the estimation stage is one run_estimation over every spec but the placebo, "
                             "as keytech estimate runs it (default); group: one registry group per process")
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.worker:
        only = args.only.split(",") if args.only else None
        return run_worker(args.worker, Path(args.work), args.scale, args.seed, Path(args.result), only, args.jobs or 1)
    from keytech import paths

    out = Path(args.out).resolve() if args.out else paths.output_dir() / "bench"
    stages = tuple(s for s in STAGES if not args.stages or s in args.stages)
    report = run(args.scale, out, args.skip_synth, args.seed, stages, jobs=args.jobs or os.cpu_count() or 1,
                 estimation_processes=args.estimation_processes)
    print((out / "bench.md").read_text(encoding="utf-8"))
    print(f"Written {out / 'bench.json'} and {out / 'bench.md'}")
    # a missed target is a finding, recorded above; a stage that crashed is a failure of the bench
    errors = [name for name, s in report["stages"].items() if s.get("status") == "error"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
