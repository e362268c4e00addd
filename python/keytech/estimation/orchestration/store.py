"""Results store: ``results.runs`` and ``results.estimates`` in the warehouse file.

The marts are read read-only; this module is the only place the estimation layer opens the
warehouse read-write, and it only creates/appends to tables in the ``results`` schema.

Compare runs in SQL, e.g.::

    select r.run_id, r.started_at, e.estimate, e.std_error, e.nobs
    from results.estimates e join results.runs r using (run_id)
    where e.spec_id = 'table3_col5' and e.term = 'policy'
    order by r.started_at;
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from keytech import warehouse
from keytech.estimation.core.results import SpecResult, clean_float, jsonable

RUNS_DDL = """
create table if not exists results.runs (
    run_id text primary key,
    started_at timestamp,
    finished_at timestamp,
    data_fingerprint text,
    code_version text,
    parameters_json text
)"""

ESTIMATES_DDL = """
create table if not exists results.estimates (
    run_id text,
    spec_id text,
    term text,
    estimate double,
    std_error double,
    t_stat double,
    p_value double,
    ci_low double,
    ci_high double,
    nobs bigint,
    adj_r2 double,
    fixed_effects text,
    vcov text,
    sample text,
    diagnostics_json text
)"""

ESTIMATE_COLUMNS = [
    "run_id", "spec_id", "term", "estimate", "std_error", "t_stat", "p_value", "ci_low", "ci_high",
    "nobs", "adj_r2", "fixed_effects", "vcov", "sample", "diagnostics_json",
]


# Honest DiD sensitivity (keytech.estimation.inference.honest_did): one row per (spec, target, restriction,
# value). restriction: 'original' (CI under exact parallel trends), 'SD' (FLCI under Delta^SD(M),
# value = M), 'RM' (ARP C-LF set under Delta^RM(Mbar), value = Mbar), 'SD_breakdown' /
# 'RM_breakdown' (value = the breakdown M / Mbar, null when the CI at 0 already includes 0;
# upper = the smallest value tried at which the CI includes 0).
HONEST_DID_DDL = """
create table if not exists results.honest_did (
    run_id text,
    spec_id text,
    target text,
    restriction text,
    value double,
    ci_low double,
    ci_high double,
    method text,
    upper double,
    open_end boolean,
    pre_periods text,
    post_periods text
)"""


def ensure_schema(con) -> None:
    con.execute("create schema if not exists results")
    con.execute(RUNS_DDL)
    con.execute(ESTIMATES_DDL)
    con.execute(HONEST_DID_DDL)


def split_honest_did(run_id: str, results: list[SpecResult]) -> tuple[list[SpecResult], list[tuple]]:
    """Take the Honest DiD rows out of the specs' diagnostics (they keep the breakdown summary)."""
    import dataclasses

    out, rows = [], []
    for r in results:
        hd = r.diagnostics.get("honest_did") if r.diagnostics else None
        if not isinstance(hd, dict) or "rows" not in hd:
            out.append(r)
            continue
        pre, post = json.dumps(hd.get("pre_periods")), json.dumps(hd.get("post_periods"))
        for x in hd["rows"]:
            rows.append((run_id, r.spec_id, x["target"], x["restriction"], clean_float(x.get("value")),
                         clean_float(x.get("lb")), clean_float(x.get("ub")), x.get("method"),
                         clean_float(x.get("upper")), x.get("open_end"), pre, post))
        diag = dict(r.diagnostics)
        diag["honest_did"] = {k: v for k, v in hd.items() if k != "rows"} | {"table": "results.honest_did"}
        out.append(dataclasses.replace(r, diagnostics=diag))
    return out, rows


def estimate_rows(run_id: str, results: list[SpecResult]) -> list[tuple]:
    """One row per (spec, term). Spec-level diagnostics go on the spec's main term; other terms
    carry their own diagnostics (if any)."""
    rows = []
    for r in results:
        for t in r.terms:
            if t.term == r.main_term:
                diag = dict(r.diagnostics)
                if t.diagnostics:
                    diag["term"] = t.diagnostics
            else:
                diag = t.diagnostics
            rows.append(
                (
                    run_id, r.spec_id, t.term, clean_float(t.estimate), clean_float(t.std_error),
                    clean_float(t.t_stat), clean_float(t.p_value), clean_float(t.ci_low),
                    clean_float(t.ci_high), r.nobs, clean_float(r.adj_r2), r.fixed_effects, r.vcov,
                    r.sample, json.dumps(jsonable(diag), ensure_ascii=False) if diag else None,
                )
            )
    return rows


def write_run(db_path: str | Path | None, run: dict[str, Any], results: list[SpecResult]) -> None:
    """Append one run and its estimates (single transaction)."""
    with warehouse.connect(db_path, read_only=False) as con:
        ensure_schema(con)
        con.execute("begin transaction")
        try:
            con.execute(
                "insert into results.runs values (?, ?, ?, ?, ?, ?)",
                [
                    run["run_id"], run["started_at"], run["finished_at"], run["data_fingerprint"],
                    run["code_version"], json.dumps(jsonable(run["parameters"]), ensure_ascii=False),
                ],
            )
            results, hd_rows = split_honest_did(run["run_id"], results)
            if hd_rows:
                con.executemany(f"insert into results.honest_did values ({', '.join('?' * 12)})", hd_rows)
            rows = estimate_rows(run["run_id"], results)
            if rows:
                con.executemany(
                    f"insert into results.estimates ({', '.join(ESTIMATE_COLUMNS)}) values ({', '.join('?' * len(ESTIMATE_COLUMNS))})",
                    rows,
                )
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise


def read_runs(db_path: str | Path | None = None) -> pd.DataFrame:
    with warehouse.connect(db_path) as con:
        if not warehouse.table_exists(con, "results", "runs"):
            return pd.DataFrame(columns=["run_id", "started_at", "finished_at", "data_fingerprint", "code_version", "parameters_json"])
        return con.execute("select * from results.runs order by started_at").df()


def read_estimates(db_path: str | Path | None = None, run_id: str | None = None) -> pd.DataFrame:
    with warehouse.connect(db_path) as con:
        if not warehouse.table_exists(con, "results", "estimates"):
            return pd.DataFrame(columns=ESTIMATE_COLUMNS)
        if run_id is None:
            return con.execute("select * from results.estimates").df()
        return con.execute("select * from results.estimates where run_id = ?", [run_id]).df()


def latest_run_id(db_path: str | Path | None = None) -> str | None:
    runs = read_runs(db_path)
    return None if runs.empty else str(runs.iloc[-1]["run_id"])


def estimates_for_display(db_path: str | Path | None = None, run_id: str | None = None) -> tuple[pd.DataFrame, dict[str, str], dict[str, Any]]:
    """Estimates to show for ``run_id`` (default: the latest run).

    Specs the chosen run did not estimate are filled from the most recent earlier run on the
    *same data fingerprint*, so ``keytech estimate --only placebo`` after a full run still gives
    complete tables. Returns (estimates, {spec_id: run_id it came from}, run record).
    """
    runs = read_runs(db_path)
    if runs.empty:
        raise LookupError("no estimation runs in results.runs; run `keytech estimate` first")
    if run_id is None:
        run_id = str(runs.iloc[-1]["run_id"])
    if run_id not in set(runs["run_id"]):
        raise LookupError(f"no run {run_id!r} in results.runs")
    run = runs.loc[runs["run_id"] == run_id].iloc[-1].to_dict()
    same = runs.loc[(runs["data_fingerprint"] == run["data_fingerprint"]) & (runs["started_at"] <= run["started_at"])]
    order = list(same["run_id"])[::-1]  # newest first, starting with run_id
    if run_id in order:
        order.remove(run_id)
    order.insert(0, run_id)
    est = read_estimates(db_path)
    source: dict[str, str] = {}
    parts = []
    for rid in order:
        sub = est.loc[est["run_id"] == rid]
        new = [s for s in sub["spec_id"].unique() if s not in source]
        for s in new:
            source[s] = rid
        parts.append(sub.loc[sub["spec_id"].isin(new)])
    out = pd.concat(parts, ignore_index=True) if parts else est.iloc[0:0]
    return out, source, run


def read_honest_did(db_path: str | Path | None, source: dict[str, str]) -> pd.DataFrame:
    """Rows of ``results.honest_did`` for each spec from the run its estimates came from
    (``source``: {spec_id: run_id}, as from :func:`estimates_for_display`)."""
    cols = ["run_id", "spec_id", "target", "restriction", "value", "ci_low", "ci_high", "method", "upper",
            "open_end", "pre_periods", "post_periods"]
    keep = [(s, r) for s, r in source.items()]
    if not keep:
        return pd.DataFrame(columns=cols)
    with warehouse.connect(db_path) as con:
        if not warehouse.table_exists(con, "results", "honest_did"):
            return pd.DataFrame(columns=cols)
        df = con.execute("select * from results.honest_did").df()
    if df.empty:
        return df
    mask = pd.Series(False, index=df.index)
    for s, r in keep:
        mask |= (df["spec_id"] == s) & (df["run_id"] == r)
    return df.loc[mask].reset_index(drop=True)
