"""`keytech diff`: what changed between two builds, or between two estimation runs.

Builds (``diff_builds(old, new)``): both warehouses are attached read-only to one in-memory DuckDB
connection and every public mart is compared set-based by its key (``MART_KEYS``): rows added,
removed, and changed (same key, a different value in any column both versions have), with example
keys, and per column the number of changed rows; columns added or removed are listed. The panel's
sample funnel (``marts.rpt_sample_funnel``) is shown side by side. Runs (``diff_runs(a, b)``):
``results.estimates`` of two runs joined on (spec_id, term): estimate, standard error and N of
each, with a flag where the sign of the estimate flips or the estimate crosses the 5% level.

Each diff is rendered for the console and as Markdown/HTML (``render_markdown``/``render_html``) and
appended to ``results.diffs`` (one row per compared object, the detail as JSON) in the warehouse
given by ``store_in``. No data-diff library is used: DuckDB's set operations over two attached
databases do the comparison in one pass per mart (data-diff tools target two *servers* and hash
segments; here both sides are local files).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from keytech.sql_literals import sql_string
from keytech.warehouse import PUBLIC_MARTS

MART_KEYS: dict[str, tuple[str, ...]] = {
    "dim_firms": ("stkcd",),
    "dim_cities": ("city_code",),
    "fct_patents": ("patent_id",),
    "fct_patent_ipc_codes": ("patent_id", "ipc_position"),
    "fct_firm_years": ("stkcd", "year"),
    "rpt_analysis_panel": ("stkcd", "year"),
    "rpt_analysis_panel_window2022": ("stkcd", "year"),
    "rpt_sample_funnel": ("step_order",),
    "rpt_patent_reconciliation": ("disposition", "reason"),
}
EXAMPLES = 5
SIGNIFICANCE = 0.05
DIFFS_DDL = """
create table if not exists results.diffs (
    diff_id text,
    created_at timestamp,
    kind text,
    old text,
    new text,
    object text,
    added bigint,
    removed bigint,
    changed bigint,
    details_json text
)"""


@dataclass
class MartDiff:
    mart: str
    key: list[str]
    old_rows: int | None
    new_rows: int | None
    added: int = 0
    removed: int = 0
    changed: int = 0
    added_examples: list[str] = field(default_factory=list)
    removed_examples: list[str] = field(default_factory=list)
    changed_examples: list[str] = field(default_factory=list)
    column_changes: dict[str, int] = field(default_factory=dict)
    columns_added: list[str] = field(default_factory=list)
    columns_removed: list[str] = field(default_factory=list)
    note: str = ""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(con, catalog: str, table: str) -> list[str]:
    return [r[0] for r in con.execute(
        "select column_name from information_schema.columns where table_catalog = ? and table_schema = 'marts' "
        "and table_name = ? order by ordinal_position", [catalog, table]).fetchall()]


def _diff_mart(con, mart: str) -> MartDiff:
    old_cols, new_cols = _columns(con, "old", mart), _columns(con, "new", mart)
    if not old_cols or not new_cols:
        return MartDiff(mart, list(MART_KEYS.get(mart, ())), None if not old_cols else
                        con.execute(f"select count(*) from old.marts.{mart}").fetchone()[0],
                        None if not new_cols else con.execute(f"select count(*) from new.marts.{mart}").fetchone()[0],
                        note="missing in the " + ("old" if not old_cols else "new") + " warehouse")
    common = [c for c in new_cols if c in old_cols]
    key = [k for k in MART_KEYS.get(mart, ()) if k in common] or common
    keyexpr = lambda alias: "concat_ws('/', " + ", ".join(f"{alias}.{_q(k)}" for k in key) + ")"  # noqa: E731
    on = " and ".join(f"o.{_q(k)} is not distinct from n.{_q(k)}" for k in key)
    values = [c for c in common if c not in key]
    differs = " or ".join(f"o.{_q(c)} is distinct from n.{_q(c)}" for c in values) or "false"
    counts = ", ".join(f"count(*) filter (where o.{_q(c)} is distinct from n.{_q(c)})" for c in values)
    row = con.execute(
        f"""
        with o as (select *, true as _in_old from old.marts.{mart}),
        n as (select *, true as _in_new from new.marts.{mart}),
        joined as (
            select {keyexpr('o')} as old_key, {keyexpr('n')} as new_key,
                   coalesce(o._in_old, false) as in_old, coalesce(n._in_new, false) as in_new,
                   ({differs}) as is_changed
            from o full outer join n on {on}
        )
        select
            (select count(*) from old.marts.{mart}), (select count(*) from new.marts.{mart}),
            count(*) filter (where in_new and not in_old),
            count(*) filter (where in_old and not in_new),
            count(*) filter (where in_old and in_new and is_changed),
            list(new_key order by new_key) filter (where in_new and not in_old)[1:{EXAMPLES}],
            list(old_key order by old_key) filter (where in_old and not in_new)[1:{EXAMPLES}],
            list(new_key order by new_key) filter (where in_old and in_new and is_changed)[1:{EXAMPLES}]
        from joined
        """
    ).fetchone()
    column_counts = {}
    if values:
        sums = con.execute(
            f"select {counts} from old.marts.{mart} as o inner join new.marts.{mart} as n on {on}").fetchone()
        column_counts = {c: int(v) for c, v in zip(values, sums) if v}
    return MartDiff(mart, key, row[0], row[1], row[2], row[3], row[4], row[5] or [], row[6] or [], row[7] or [],
                    column_counts, [c for c in new_cols if c not in old_cols], [c for c in old_cols if c not in new_cols])


def diff_builds(old: str | Path, new: str | Path, marts: tuple[str, ...] = PUBLIC_MARTS) -> dict:
    """Compare the public marts of two warehouses (see the module docstring)."""
    old, new = Path(old), Path(new)
    for path in (old, new):
        if not path.is_file():
            raise FileNotFoundError(f"no warehouse at {path}")
    con = duckdb.connect()
    try:
        con.execute(f"attach {sql_string(old)} as old (read_only)")
        con.execute(f"attach {sql_string(new)} as new (read_only)")
        results = [_diff_mart(con, mart) for mart in marts]
        funnel = []
        if _columns(con, "old", "rpt_sample_funnel") and _columns(con, "new", "rpt_sample_funnel"):
            funnel = con.execute(
                "select coalesce(n.step_order, o.step_order), coalesce(n.step, o.step), o.firm_years_kept, "
                "n.firm_years_kept, o.firms_kept, n.firms_kept from old.marts.rpt_sample_funnel o "
                "full outer join new.marts.rpt_sample_funnel n on o.step_order = n.step_order order by 1").fetchall()
    finally:
        con.close()
    return {"kind": "builds", "old": str(old), "new": str(new), "marts": [asdict(r) for r in results],
            "funnel": [dict(zip(("step_order", "step", "old_firm_years", "new_firm_years", "old_firms", "new_firms"), f))
                       for f in funnel]}


def diff_runs(run_a: str, run_b: str, db_path: str | Path) -> dict:
    """Compare two estimation runs spec by spec (see the module docstring)."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        known = {r[0] for r in con.execute("select run_id from results.runs").fetchall()}
        for run in (run_a, run_b):
            if run not in known:
                raise ValueError(f"no run {run!r} in results.runs of {db_path}; `keytech report` lists the runs")
        rows = con.execute(
            f"""
            with a as (select * from results.estimates where run_id = ?),
                 b as (select * from results.estimates where run_id = ?)
            select coalesce(a.spec_id, b.spec_id) as spec_id, coalesce(a.term, b.term) as term,
                   a.estimate, b.estimate, a.std_error, b.std_error, a.nobs, b.nobs, a.p_value, b.p_value
            from a full outer join b on a.spec_id = b.spec_id and a.term = b.term
            where coalesce(a.term, b.term) not in ('(error)', '(not estimable)')
            order by 1, 2
            """, [run_a, run_b]).fetchall()
    finally:
        con.close()
    specs = []
    for spec_id, term, ea, eb, sa, sb, na, nb, pa, pb in rows:
        sign = ea is not None and eb is not None and (ea > 0) != (eb > 0) and ea != 0 and eb != 0
        sig = pa is not None and pb is not None and (pa < SIGNIFICANCE) != (pb < SIGNIFICANCE)
        specs.append({"spec_id": spec_id, "term": term, "estimate_a": ea, "estimate_b": eb, "se_a": sa, "se_b": sb,
                      "nobs_a": na, "nobs_b": nb, "p_a": pa, "p_b": pb,
                      "only_in": "a" if eb is None and sb is None else ("b" if ea is None and sa is None else ""),
                      "sign_change": bool(sign), "significance_change": bool(sig)})
    return {"kind": "runs", "old": run_a, "new": run_b, "specs": specs}


def store(diff: dict, db_path: str | Path) -> str:
    """Append the diff to ``results.diffs`` of ``db_path`` (one row per mart or spec/term)."""
    diff_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    con = duckdb.connect(str(db_path))
    try:
        con.execute("create schema if not exists results")
        con.execute(DIFFS_DDL)
        if diff["kind"] == "builds":
            rows = [(diff_id, now, "builds", diff["old"], diff["new"], m["mart"], m["added"], m["removed"], m["changed"],
                     json.dumps(m, ensure_ascii=False, default=str)) for m in diff["marts"]]
            rows.append((diff_id, now, "builds", diff["old"], diff["new"], "rpt_sample_funnel (side by side)", None,
                         None, None, json.dumps(diff["funnel"], ensure_ascii=False, default=str)))
        else:
            rows = [(diff_id, now, "runs", diff["old"], diff["new"], f"{s['spec_id']}:{s['term']}", None, None,
                     int(s["sign_change"] or s["significance_change"]), json.dumps(s, default=str))
                    for s in diff["specs"]]
        if rows:
            con.executemany("insert into results.diffs values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        con.close()
    return diff_id


def _num(value, digits: int = 4) -> str:
    return "—" if value is None else (f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}")


def render_markdown(diff: dict) -> str:
    lines = [f"# keytech diff: {diff['kind']}", "", f"- old: `{diff['old']}`", f"- new: `{diff['new']}`", ""]
    if diff["kind"] == "builds":
        lines += ["| mart | key | rows old | rows new | added | removed | changed | columns changed | examples |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in diff["marts"]:
            cols = ", ".join(f"{c} {n}" for c, n in sorted(m["column_changes"].items(), key=lambda x: -x[1])[:6])
            if m["columns_added"] or m["columns_removed"]:
                cols += f" (+{', '.join(m['columns_added'])} −{', '.join(m['columns_removed'])})"
            ex = "; ".join(filter(None, [
                "added " + ", ".join(m["added_examples"]) if m["added_examples"] else "",
                "removed " + ", ".join(m["removed_examples"]) if m["removed_examples"] else "",
                "changed " + ", ".join(m["changed_examples"]) if m["changed_examples"] else ""])) or m["note"]
            lines.append(f"| {m['mart']} | {', '.join(m['key'])} | {_num(m['old_rows'])} | {_num(m['new_rows'])} | "
                         f"{m['added']:,} | {m['removed']:,} | {m['changed']:,} | {cols} | {ex} |")
        if diff["funnel"]:
            lines += ["", "## Sample funnel side by side", "",
                      "| # | step | firm-years old | firm-years new | firms old | firms new |", "|---|---|---|---|---|---|"]
            lines += [f"| {f['step_order']} | {f['step']} | {_num(f['old_firm_years'])} | {_num(f['new_firm_years'])} | "
                      f"{_num(f['old_firms'])} | {_num(f['new_firms'])} |" for f in diff["funnel"]]
    else:
        lines += ["| spec | term | estimate A | estimate B | SE A | SE B | N A | N B | flags |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in diff["specs"]:
            flags = ", ".join(filter(None, ["SIGN CHANGE" if s["sign_change"] else "",
                                            "SIGNIFICANCE CHANGE (5%)" if s["significance_change"] else "",
                                            f"only in {s['only_in'].upper()}" if s["only_in"] else ""]))
            lines.append(f"| {s['spec_id']} | {s['term']} | {_num(s['estimate_a'])} | {_num(s['estimate_b'])} | "
                         f"{_num(s['se_a'])} | {_num(s['se_b'])} | {_num(s['nobs_a'])} | {_num(s['nobs_b'])} | {flags} |")
    return "\n".join(lines) + "\n"


def render_html(diff: dict) -> str:
    """The Markdown tables as a self-contained HTML page."""
    body = []
    for line in render_markdown(diff).splitlines():
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            body.append(f"<p>{html.escape(line[2:])}</p>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            tag = "th" if not body or not body[-1].startswith("<tr") else "td"
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    rows, out, in_table = body, [], False
    for item in rows:
        if item.startswith("<tr") and not in_table:
            out.append("<table>")
            in_table = True
        if not item.startswith("<tr") and in_table:
            out.append("</table>")
            in_table = False
        out.append(item)
    if in_table:
        out.append("</table>")
    return ("<!doctype html><html lang='en'><meta charset='utf-8'><title>keytech diff</title><style>"
            "body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style>" + "".join(out) + "</html>")
