"""The `keytech` command line. Run `keytech --help` or `keytech <command> --help`.

Each command is one handler, ``cmd_<name>(args) -> exit code``, registered by the ``@command``
decorator just above it with its one-line help, its examples and its options (``option(...)``
takes what ``argparse.add_argument`` takes). ``build_parser`` assembles the parser from the
registered commands, in the order they are defined here (the order ``keytech --help`` lists them).
Handlers hold no SQL of their own and no dbt calls: the work is done by the modules they import
(``keytech.build``, ``keytech.warehouse_summary``, ``keytech.dbt_docs``, ...). Adding a command is
one decorated function here.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from keytech import paths
from keytech.synthetic import SYNTHETIC_BANNER, is_synthetic


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MISSING = 0, 1, 2, 3


class UserError(RuntimeError):
    """A mistake the user can fix; printed without a traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, flush=True)


# --------------------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Command:
    """One ``keytech <name>`` command: its handler, help line, examples and options."""

    name: str
    help: str
    example: str  # shown under "Example:" in `keytech <name> --help`; several lines allowed
    handler: Callable[[argparse.Namespace], int]
    options: tuple[tuple[tuple, dict], ...]


COMMANDS: dict[str, Command] = {}  # in definition order: the order of `keytech --help`


def option(*flags: str, **settings) -> tuple[tuple, dict]:
    """One option or positional argument of a command, as ``argparse.add_argument`` takes it."""
    return flags, settings


def command(name: str, help: str, example: str, *options: tuple[tuple, dict]):
    """Register the decorated function as the handler of ``keytech <name>`` with its options."""

    def register(handler: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"keytech command {name!r} is defined twice")
        COMMANDS[name] = Command(name, help, example, handler, options)
        return handler

    return register


def _positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# ------------------------------------------------------------------------------------------ synth
@command(
    "synth", "Write deterministic synthetic raw data with planted effects (and _truth.json).",
    "keytech synth --scale tiny --seed 1 --out /tmp/raw",
    option("--scale", choices=["tiny", "small", "paper", "xl"], default="small",
           help="tiny (tests), small (demo), paper (~3,500 firms, 1.7M patent rows) or xl "
                "(~5,300 firms, ~8M patent rows; docs/performance.md)"),
    option("--seed", type=int, default=20250101, help="random seed; same seed, same files"),
    option("--out", help="output folder (default: the raw folder, data/raw)"),
)
def cmd_synth(args) -> int:
    from keytech.synth import generate

    out = Path(args.out) if args.out else paths.raw_dir()
    start = time.perf_counter()
    truth = generate(args.scale, args.seed, out, progress=not args.quiet)
    rows = truth.get("rows", {})
    _say(args, f"Wrote synthetic raw data ({args.scale}, seed {args.seed}) to {out} "
               f"in {time.perf_counter() - start:.1f} s")
    for table, count in rows.items():
        _say(args, f"  {table:18} {count:>10,} rows")
    _say(args, SYNTHETIC_BANNER)
    return EXIT_OK


# --------------------------------------------------------------------------------------- validate
@command(
    "validate", "Check a raw folder against the input contract; report every problem at once.",
    "keytech validate --raw-dir /data/csmar_2024",
    option("--raw-dir", help="raw folder (default data/raw or KEYTECH_RAW_DIR)"),
)
def cmd_validate(args) -> int:
    from keytech.ingest import validate

    raw = Path(args.raw_dir) if args.raw_dir else paths.raw_dir()
    from keytech.contract import load_contract
    from keytech.inputs import enabled_by

    problems, reports = validate(raw)
    contract = load_contract()
    for report in reports:
        extra = f", {report.description_rows_skipped} description row(s) skipped" if report.description_rows_skipped else ""
        if report.format == "absent":
            _say(args, f"  -- {report.table:24} {'absent':>10} (optional) → skipped: {enabled_by(contract[report.table])}")
            continue
        _say(args, f"  ok {report.file:24} {report.data_rows:>10,} rows ({report.format}"
                   f"{', ' + report.encoding if report.encoding else ''}{extra}) → enables "
                   f"{enabled_by(contract[report.table])}")
    for problem in problems:
        _say(args, "  " + problem.render())
    _say(args, f"{raw} satisfies the input contract.")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ build
def _parse_limits(items: list[str] | None) -> dict:
    """``--limit NAME=VALUE`` options → {name: float}; names checked against keytech.limits."""
    from keytech.limits import DEFAULT_LIMITS

    limits: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in DEFAULT_LIMITS:
            raise UserError(f"--limit {item!r}: expected NAME=VALUE with NAME one of "
                            f"{', '.join(sorted(DEFAULT_LIMITS))} (docs/reliability: limits)", EXIT_USAGE)
        try:
            limits[name] = float(value)
        except ValueError:
            raise UserError(f"--limit {item!r}: {value!r} is not a number", EXIT_USAGE) from None
    return limits


@command(
    "build", "Validate and land the raw folder, run `dbt build`, then the data checks.",
    "keytech build                       # data/raw → data/warehouse.duckdb\n"
    "  KEYTECH_RAW_DIR=/data/licensed keytech build --strict-ipc\n"
    "  keytech build --select marts.panel.rpt_analysis_panel+   # the panel and what follows, on a copy\n"
    "  keytech build --limit unparseable_ipc_share=0.03 --wait 600\n"
    "The new warehouse replaces the old one only after dbt's tests, the limits and the data checks\n"
    "pass; otherwise the old one stays byte-identical (README, 'Reliability').",
    option("--raw-dir", help="raw folder (default data/raw or KEYTECH_RAW_DIR)"),
    option("--strict-ipc", action="store_true", help="match IPC codes exactly (no inheritance from ancestors)"),
    option("--no-ipc-supplement", action="store_true", help="do not use the H01L/H10 revision supplement"),
    option("--fc-index", choices=["rank_composite", "sa"], default="rank_composite",
           help="financing-constraint index behind the het_fc_* splits: rank_composite (default; mean of "
                "five within-year percentile ranks) or sa (Hadlock & Pierce 2010 SA index); docs/variables.md"),
    option("--panel-end-year", type=int, default=None,
           help="last panel year (dbt var panel_end_year; default dbt_project.yml's 2022); 2024 for a "
                "`keytech synth --scale xl` raw folder (docs/performance.md)"),
    option("--delisting-flag", choices=["delisted_or_star_st", "delisted_only", "st_years", "st_firms"],
           default="delisted_or_star_st",
           help="reading of the paper's 'firms with a delisting flag' (退市标识) filter: delisted_or_star_st "
                "(default: firms delisted by the window end or *ST in a window year; plain ST years kept), "
                "delisted_only, st_years (also drop every ST/*ST firm-year) or st_firms (also drop firms "
                "ever ST/*ST in the window); docs/variables.md"),
    option("--select", help="dbt selection rebuilt on a copy of the current warehouse, e.g. "
                            "'marts.panel.rpt_analysis_panel+' (default: everything); a selection that "
                            "matches nothing is refused"),
    option("--incremental", action="store_true",
           help="refresh the existing warehouse: rebuild only what the changed raw tables feed "
                "(falls back to a full build when models, seeds or options changed)"),
    option("--skip-checks", action="store_true",
           help="skip the limits and the Great Expectations checks (the new warehouse is swapped in "
                "after dbt's tests alone; estimation refuses to run until `keytech check` passes)"),
    option("--limit", action="append", metavar="NAME=VALUE",
           help="raise (or lower) one limit on a silent share, e.g. --limit unparseable_ipc_share=0.05; "
                "repeatable. Limits and defaults: README, 'Reliability'"),
    option("--wait", type=float, default=0, metavar="SECONDS",
           help="when another build of the same warehouse runs, wait up to SECONDS for it "
                "(default 0: exit at once, naming the holder)"),
    option("--concordance", metavar="PATH",
           help="another edition of the SEI-IPC concordance (CSV with ipc_code,sei_rule_id like "
                "seeds/sei_ipc_concordance.csv, e.g. a later CNIPA revision) instead of the versioned "
                "seed; the edition used is recorded in the landing manifest, build state and report"),
)
def cmd_build(args) -> int:
    from keytech.build import BuildOptions, build_warehouse

    warehouse = paths.warehouse_path()
    options = BuildOptions(
        raw_dir=Path(args.raw_dir) if args.raw_dir else paths.raw_dir(),
        landing_dir=paths.landing_dir(warehouse),
        warehouse=warehouse,
        ipc_matching="strict" if args.strict_ipc else "hierarchical",
        use_ipc_supplement=not args.no_ipc_supplement,
        fc_index_method=args.fc_index,
        delisting_flag_rule=getattr(args, "delisting_flag", "delisted_or_star_st"),
        panel_end_year=getattr(args, "panel_end_year", None),
        select=args.select,
        quiet=not args.verbose,
        incremental=getattr(args, "incremental", False),
        checks=not args.skip_checks,
        limits=None if args.skip_checks else _parse_limits(getattr(args, "limit", None)),
        lock_wait=float(getattr(args, "wait", 0) or 0),
        concordance=Path(args.concordance) if getattr(args, "concordance", None) else None,
    )
    _say(args, f"[1/3] Validating {options.raw_dir} and landing it in {options.landing_dir} …")
    if options.incremental:
        _say(args, "[2/3] dbt build of what the changed tables feed, on a copy of the warehouse …")
    elif options.select:
        _say(args, f"[2/3] dbt build --select {options.select} on a copy of the warehouse …")
    else:
        _say(args, "[2/3] dbt build (models + dbt tests) into a new file …")
    if options.checks:
        _say(args, "[3/3] limits on dropped/quarantined/merged shares and Great Expectations checks on the "
                   "new file; swapped in only when everything passes …")
    outcome = build_warehouse(options)
    timing = outcome["timings"]
    if options.incremental:
        _say(args, f"      {outcome['mode']}: {outcome['reason']}")
    _say(args, f"      landed in {timing['validate_and_land']:.1f} s; dbt build {timing['dbt_build']:.1f} s "
               f"→ {outcome['warehouse']}")
    if args.skip_checks:
        _say(args, "      Checks skipped (--skip-checks): estimation will refuse to run until `keytech check` passes.")
    elif outcome.get("checks"):
        record = outcome["checks"]
        _say(args, f"      limits within bounds; all checks passed (fingerprint {record['data_fingerprint']}); "
                   f"report: {record['html_path']}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ check
@command("check", "Run the Great Expectations suites on the marts and record the result.", "keytech check")
def cmd_check(args) -> int:
    from keytech.quality import failures, run_checks

    record = run_checks()
    if record["passed"]:
        _say(args, f"      all checks passed (fingerprint {record['data_fingerprint']}); "
                   f"report: {record['html_path']}")
        return EXIT_OK
    print("Data checks FAILED:", file=sys.stderr)
    for line in failures(record):
        print("  " + line, file=sys.stderr)
    print(f"See {record['html_path']}. Fix the data (or the expectation in python/keytech/quality.py "
          "if it is wrong) and run `keytech build` again.", file=sys.stderr)
    return EXIT_FAILED


# --------------------------------------------------------------------------------------- estimate
def _run_seed(seed: int | None) -> int:
    from keytech.estimation.core.results import DEFAULT_SEED

    return DEFAULT_SEED if seed is None else seed


@command(
    "estimate", "Run the specification registry on the marts; store results and tables.",
    "keytech estimate --list\n  keytech estimate --only table3 event_study\n  keytech estimate --placebo-draws 1000 --seed 7\n"
    "  keytech estimate --only table5 het --permutation-draws 20   # quick look at the p-values",
    option("--only", nargs="+", metavar="SPEC", help="spec ids or groups (table3, event_study, robust, placebo)"),
    option("--list", action="store_true", help="list the specifications and exit"),
    option("--force", action="store_true", help="run even when the last data checks failed"),
    option("--placebo-draws", type=int, default=500, help="placebo reassignments (default 500)"),
    option("--seed", type=int, default=None,
           help="the run's one random seed (default 20240601, keytech.estimation.core.results.DEFAULT_SEED): seeds "
                "the placebo draws, the Callaway-Sant'Anna cluster bootstrap and the permutation tests (PSM "
                "shares ties and draws nothing); stored in results.runs and in each stochastic spec's diagnostics "
                "(keytech demo passes its --seed)"),
    option("--permutation-draws", type=_positive_int, metavar="N",
           help="reshuffles of every between-group permutation test (the empirical p of b_high - b_low "
                "in Table 5 and the heterogeneity splits), replacing options.permutation.draws of the "
                "registry (default: the registry's value, 999 for Table 5, 199 for the heterogeneity splits); each "
                "draw re-estimates both groups (~28 ms on the demo warehouse), so "
                "the time of those specs grows linearly with N"),
    option("--jobs", type=_positive_int, default=1, metavar="N",
           help="worker processes (default 1: one process): the specs run in N processes, one registry group "
                "at a time each (the multiple-testing families after their members); a selection of one group "
                "shares the draws of each permutation test among N forked processes instead; the stored results "
                "are bit-identical for every N, only the wall time changes; use at most the idle cores"),
)
def cmd_estimate(args) -> int:
    from keytech import estimation, tables

    if args.list:
        for spec_id, description in estimation.list_specs():
            print(f"{spec_id:32} {description}")
        return EXIT_OK
    run_id = estimation.run_estimation(
        only=args.only or None, force=args.force, placebo_draws=args.placebo_draws,
        seed=_run_seed(args.seed), progress=not args.quiet, permutation_draws=args.permutation_draws,
        jobs=args.jobs, render=tables.render_tables,
    )
    _say(args, tables.table3_vs_paper(run_id, synthetic=is_synthetic()))
    _say(args, f"Run {run_id} stored in results.estimates; tables in {paths.output_dir() / 'tables'}, "
               f"figures in {paths.output_dir() / 'figures'}.")
    outcome = estimation.orchestration.runner.run_outcome(run_id)
    for spec_id, reason in outcome["skipped"].items():
        _say(args, f"  skipped {spec_id}: {reason}")
    for spec_id in outcome["not_estimable"]:
        _say(args, f"  not estimable on this data: {spec_id} (reason in results.estimates, term '(not estimable)')")
    if outcome["failures"]:
        print(f"keytech estimate: {len(outcome['failures'])} requested spec(s) failed: "
              f"{', '.join(outcome['failures'])}; details in results.estimates (term '(error)').", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------- summary
@command("summary", "Print the sample funnel, mart counts and an example query.", "keytech summary")
def cmd_summary(args) -> int:
    from keytech.warehouse_summary import render_summary, summarise_warehouse

    print(render_summary(summarise_warehouse(paths.warehouse_path())))
    if is_synthetic():
        print(SYNTHETIC_BANNER)
    return EXIT_OK


# -------------------------------------------------------------------------------------------- sql
@command(
    "sql", "Run one read-only query (SELECT, WITH, EXPLAIN, DESCRIBE, SHOW) on the warehouse and print "
           "the result; the connection is read-only and cannot attach, copy or read other files.",
    "keytech sql \"select * from marts.rpt_sample_funnel order by step_order\"\n"
    "  keytech sql analysis/pilot_coverage_by_wave.sql",
    option("query", help="SQL, e.g. select * from marts.rpt_sample_funnel, or an analysis file "
                         "(analysis/*.sql; {{ ref('x') }} is resolved)"),
    option("--limit", type=int, default=50, help="rows to print (default 50)"),
)
def cmd_sql(args) -> int:
    import duckdb

    from keytech.analyses import AnalysisError, read_query
    from keytech.warehouse import UnsafeQuery, check_read_only_query, connect_query_only

    with connect_query_only() as con:
        try:
            query = check_read_only_query(read_query(args.query, con))
            relation = con.sql(query)
        except (AnalysisError, UnsafeQuery) as exc:
            raise UserError(str(exc)) from exc
        except duckdb.Error as exc:
            raise UserError(f"Query failed: {exc}") from exc
        if relation is None:
            return EXIT_OK
        frame = relation.limit(args.limit).df()
    import pandas as pd

    with pd.option_context("display.max_columns", 50, "display.width", 200):
        print(frame.to_string(index=False))
    return EXIT_OK


# ----------------------------------------------------------------------------------- contract-doc
@command(
    "contract-doc", "Regenerate docs/input-contract.md and the dbt sources "
                    "(models/staging/*/_*__sources.yml) from python/keytech/contract.yml.",
    "keytech contract-doc",
    option("--out", help="output file of the document (default docs/input-contract.md)"),
)
def cmd_contract_doc(args) -> int:
    from keytech.contract import render_dbt_sources, render_markdown

    target = Path(args.out) if args.out else paths.project_root() / "docs" / "input-contract.md"
    target.write_text(render_markdown(), encoding="utf-8")
    _say(args, f"Wrote {target}")
    for relative, text in render_dbt_sources().items():  # the dbt sources, from the same contract
        (paths.project_root() / relative).write_text(text, encoding="utf-8")
        _say(args, f"Wrote {relative}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- report
@command(
    "report", "Write the replication report: one self-contained HTML page (paper vs this run).",
    "keytech report                      # → output/report/index.html\n"
    "  keytech report --run 20250101T120000-abc123 --out /tmp/report",
    option("--run", help="estimation run id (default: the latest in results.runs)"),
    option("--out", help="output folder (default output/report)"),
)
def cmd_report(args) -> int:
    from keytech.report import build_report

    if getattr(args, "run", None):
        from keytech.estimation.orchestration import store

        known = set(store.read_runs(paths.warehouse_path())["run_id"])
        if args.run not in known:
            raise LookupError(f"no run {args.run!r} in results.runs"
                              + ("" if known else " (there are no estimation runs yet: `keytech estimate`)"))
    _say(args, "Writing the replication report (paper vs this run, figures, data quality) …")
    target = build_report(run_id=getattr(args, "run", None), out_dir=getattr(args, "out", None))
    _say(args, f"Report: {target}")
    if getattr(args, "quiet", False):
        print(target)
    return EXIT_OK


# ----------------------------------------------------------------------------------------- export
@command(
    "export", "Export the analysis panel or estimation results as Parquet, CSV or Stata .dta.",
    "keytech export --what panel --format dta        # Stata, with variable and value labels\n"
    "  keytech export --what results --format csv --all-runs\n"
    "  keytech export --what panel --panel rpt_analysis_panel_window2022 --format parquet --out /tmp/",
    option("--what", choices=["panel", "results"], default="panel", help="what to export (default panel)"),
    option("--format", choices=["parquet", "csv", "dta"], default="parquet", help="file format (default parquet)"),
    option("--out", help="output file or folder (default output/export/)"),
    option("--panel", choices=["rpt_analysis_panel", "rpt_analysis_panel_window2022"],
           default="rpt_analysis_panel", help="which panel mart for --what panel"),
    option("--run", help="run id for --what results (default: the latest run)"),
    option("--all-runs", action="store_true", help="every run for --what results"),
)
def cmd_export(args) -> int:
    from keytech.export import export

    try:
        target, rows = export(args.what, args.format, out=args.out, panel=args.panel, run_id=args.run,
                              all_runs=args.all_runs)
    except LookupError as exc:
        raise UserError(f"{exc.args[0] if exc.args else exc}", EXIT_MISSING) from exc
    _say(args, f"Wrote {rows:,} rows to {target}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------- diff
@command(
    "diff", "What changed between two builds (per public mart: rows added/removed/changed by key, "
            "column change counts, the sample funnel side by side) or two estimation runs "
            "(estimate, SE, N; sign and 5%-significance changes).",
    "keytech diff                                  # previous build (kept by the swap) vs the current one\n"
    "  keytech diff /backup/warehouse_2024.duckdb data/warehouse.duckdb\n"
    "  keytech diff --runs 20260101T120000-ab12cd 20260201T090000-ef34ab",
    option("old", nargs="?", help="old warehouse (default: the previous build, <warehouse>.previous.duckdb)"),
    option("new", nargs="?", help="new warehouse (default: data/warehouse.duckdb or KEYTECH_DB)"),
    option("--runs", nargs=2, metavar=("A", "B"), help="compare two estimation runs of the warehouse instead"),
    option("--out", help="folder for diff.md and diff.html (default output/diff)"),
)
def cmd_diff(args) -> int:
    from keytech import diff
    from keytech.build import previous_warehouse_path

    current = paths.warehouse_path()
    if args.runs:
        result = diff.diff_runs(args.runs[0], args.runs[1], current)
        store_in = current
    else:
        new = Path(args.new) if args.new else current
        old = Path(args.old) if args.old else previous_warehouse_path(new)
        if not old.is_file():
            raise UserError(f"no previous build at {old}: name the old warehouse, e.g. `keytech diff OLD.duckdb` "
                           "(every `keytech build` keeps the one it replaces there)", EXIT_MISSING)
        result = diff.diff_builds(old, new)
        store_in = new
    diff_id = diff.store(result, store_in)
    out = Path(args.out) if args.out else paths.output_dir() / "diff"
    out.mkdir(parents=True, exist_ok=True)
    markdown = diff.render_markdown(result)
    (out / "diff.md").write_text(markdown, encoding="utf-8")
    (out / "diff.html").write_text(diff.render_html(result), encoding="utf-8")
    _say(args, markdown)
    _say(args, f"Stored as {diff_id} in results.diffs of {store_in}; {out / 'diff.md'} and {out / 'diff.html'}.")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- doctor
@command(
    "doctor", "Check the environment, the raw folder, the warehouse and the last checks; say what to do next.",
    "keytech doctor\n  keytech doctor --raw-dir /data/csmar_2024",
    option("--raw-dir", help="raw folder (default data/raw or KEYTECH_RAW_DIR)"),
)
def cmd_doctor(args) -> int:
    from keytech.doctor import diagnose, next_step

    findings = diagnose(raw_dir=args.raw_dir)
    for finding in findings:
        if finding.status != "ok" or not args.quiet:
            print(finding.render())
    failed = [f for f in findings if f.status == "fail"]
    print(("\n" if not args.quiet else "") + next_step(findings))
    return EXIT_FAILED if failed else EXIT_OK


# ------------------------------------------------------------------------------------------- docs
@command(
    "docs", "Build the dbt docs site (models, columns, lineage, exposures) into output/dbt-docs/.",
    "keytech docs                        # → output/dbt-docs/static_index.html\n  make docs",
    option("--out", help="output folder (default output/dbt-docs)"),
)
def cmd_docs(args) -> int:
    from keytech.dbt_docs import DbtDocsFailed, generate_dbt_docs

    target = Path(args.out) if args.out else paths.output_dir() / "dbt-docs"
    try:
        page = generate_dbt_docs(target, verbose=args.verbose, say=lambda message: _say(args, message))
    except DbtDocsFailed as exc:
        raise UserError(str(exc)) from exc
    _say(args, f"dbt docs: {page} (open it in a browser; "
               f"`dbt docs serve --target-path {target}` also works)")
    return EXIT_OK


# ------------------------------------------------------------------------------------------- demo
def _step_args(args, command: str, **overrides) -> argparse.Namespace:
    """The options ``keytech <command>`` gets when typed without any (its parser's defaults), with
    the demo's ``--quiet`` and ``overrides`` — so every option of a step, including one added
    later, reaches the demo with its documented default."""
    step = build_parser().parse_args([command])
    step.quiet, step.verbose = args.quiet, False
    for name, value in overrides.items():
        setattr(step, name, value)
    return step


@command(
    "demo", "Synthetic data → build → checks → summary → Table 3 next to the paper → report.", "keytech demo",
    option("--scale", choices=["tiny", "small", "paper"], default="small", help="synthetic scale"),
    option("--seed", type=int, default=20250101, help="random seed"),
    option("--jobs", type=_positive_int, default=1, metavar="N",
           help="worker processes of the estimation step (keytech estimate --jobs; make demo passes the "
                "machine's cores, at most 4); the stored results are the same for any N"),
)
def cmd_demo(args) -> int:
    _say(args, SYNTHETIC_BANNER + "\n")
    cmd_synth(_step_args(args, "synth", scale=args.scale or "small", seed=args.seed))
    code = cmd_build(_step_args(args, "build"))
    if code != EXIT_OK:
        return code
    cmd_summary(_step_args(args, "summary"))
    try:
        from keytech import estimation  # noqa: F401
    except ImportError:
        return EXIT_OK
    code = cmd_estimate(_step_args(args, "estimate", seed=args.seed, jobs=args.jobs))  # every specification
    report_code = cmd_report(_step_args(args, "report"))  # the report also shows failed specs
    return code or report_code


# ----------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keytech",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent(
            """\
            KeyTech Panel: raw vendor extracts → clean firm-year panel (dbt on DuckDB) → the
            specifications of Pi & Luo's intelligent-manufacturing pilot study.

            Typical flow:
              keytech synth --scale small      # synthetic raw data into data/raw (or bring your own)
              keytech build                    # validate, land, dbt build, checks
              keytech estimate                 # every specification → results.estimates + tables
              keytech report                   # paper vs this run → output/report/index.html
            Help: keytech doctor (what is missing, what to run next); keytech <command> --help.

            Locations: raw folder data/raw (KEYTECH_RAW_DIR), warehouse data/warehouse.duckdb
            (KEYTECH_DB), outputs output/ (KEYTECH_OUTPUT_DIR)."""
        ),
        epilog="Exit codes: 0 ok, 1 failed (validation, build or checks), 2 usage error, 3 missing prerequisite.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="show dbt's own output and tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, epilog="Example:\n  " + cmd.example,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=cmd.handler)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="print only errors")
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show dbt's own output and tracebacks")
        for flags, settings in cmd.options:
            p.add_argument(*flags, **settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return _run(args)
    except BrokenPipeError:  # `keytech sql … | head`
        return EXIT_OK


def _run(args) -> int:
    """One top-level handler: every error becomes a message saying what to do (the traceback only
    with -v) and an exit code — 1 failed, 3 missing prerequisite, 130 interrupted."""
    import duckdb
    import yaml

    from keytech.build import BuildFailed
    from keytech.contract import ContractError
    from keytech.ingest import ValidationFailed
    from keytech.warehouse import WarehouseMissing, WarehouseUnreadable, explain_open_error

    try:
        from keytech.estimation import ChecksNotPassed, RegistryError
        from keytech.estimation.orchestration.schedule import WorkerDied

        user_errors: tuple = (ValidationFailed, BuildFailed, ContractError, UserError, ChecksNotPassed,
                              RegistryError, WarehouseUnreadable, WorkerDied)
    except ImportError:
        user_errors = (ValidationFailed, BuildFailed, ContractError, UserError, WarehouseUnreadable)

    def fail(message: str, code: int) -> int:
        if args.verbose:
            raise
        print(message, file=sys.stderr)
        return code

    try:
        return args.func(args)
    except user_errors as exc:
        return fail(str(exc), getattr(exc, "code", EXIT_FAILED))
    except (WarehouseMissing, FileNotFoundError) as exc:
        return fail(str(exc), EXIT_MISSING)
    except LookupError as exc:  # an unknown run id, spec or table named by the user
        text = exc.args[0] if exc.args else str(exc)
        return fail(f"{text}. List the estimation runs with: keytech sql \"select run_id, started_at from "
                    "results.runs order by started_at\"", EXIT_FAILED)
    except duckdb.CatalogException as exc:
        return fail(f"The warehouse {paths.warehouse_path()} lacks a table this command needs "
                    f"({str(exc).splitlines()[0]}). Is KEYTECH_DB a KeyTech warehouse? Run `keytech build` "
                    "(and `keytech estimate` for results).", EXIT_MISSING)
    except duckdb.Error as exc:
        return fail(explain_open_error(paths.warehouse_path(), exc) if isinstance(exc, duckdb.IOException)
                    else f"DuckDB error: {exc}", EXIT_FAILED)
    except yaml.YAMLError as exc:
        return fail(f"A YAML file is not valid: {exc}. Fix it (it must be UTF-8 YAML) and run again.", EXIT_FAILED)
    except UnicodeDecodeError as exc:
        return fail(f"A text file is not UTF-8 ({exc.reason} at byte {exc.start}; it looks {exc.encoding}-"
                    "incompatible, e.g. GBK): save it as UTF-8 and run again.", EXIT_FAILED)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        hint = " Free some disk space and run again." if exc.errno == 28 else \
            " Check that the folder exists and is writable." if exc.errno in (13, 30) else ""
        return fail(f"{exc.strerror or exc}{where}.{hint}", EXIT_FAILED)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still a message, with the way to the traceback
        return fail(f"Unexpected error ({type(exc).__name__}): {exc}\nRun with -v for the traceback and "
                    "report it with the command you ran.", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
