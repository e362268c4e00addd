"""What `keytech summary` shows: the sample funnel, the row counts of the main marts, the
key-technology share and the raw patent rows by disposition, read from a built warehouse.

:func:`summarise_warehouse` runs the queries; :func:`render_summary` lays the result out as the
text the command prints. Both are usable without the CLI (e.g. in a notebook).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# the marts whose row counts the summary lists, in this order
COUNTED_MARTS = ("dim_firms", "dim_cities", "fct_patents", "fct_patent_ipc_codes", "fct_firm_years",
                 "rpt_analysis_panel")

EXAMPLE_QUERY = ("select year, avg(apply_inv_zl) as key_tech, avg(apply_inv_nozl) as non_key, avg(policy) as "
                 "policy from marts.rpt_analysis_panel group by year order by year")


@dataclass(frozen=True)
class WarehouseSummary:
    warehouse: Path
    # (step_order, step, firms_kept, firm_years_kept, firm_years_dropped) of marts.rpt_sample_funnel
    funnel: list[tuple]
    # mart name → rows, for COUNTED_MARTS
    mart_rows: dict[str, int]
    # share of invention applications that are key technology (None: no invention applications)
    key_tech_share: float | None
    # (disposition, raw rows) of marts.rpt_patent_reconciliation, largest first
    patent_dispositions: list[tuple[str, int]]


def summarise_warehouse(db: Path) -> WarehouseSummary:
    """Read the summary from the warehouse ``db`` (opened read-only through keytech.warehouse)."""
    from keytech.warehouse import connect

    with connect(db) as con:
        funnel = con.execute(
            "select step_order, step, firms_kept, firm_years_kept, firm_years_dropped "
            "from marts.rpt_sample_funnel order by step_order").fetchall()
        counts = {name: con.execute(f"select count(*) from marts.{name}").fetchone()[0] for name in COUNTED_MARTS}
        share = con.execute(
            "select avg(case when is_key_tech then 1.0 else 0.0 end) from marts.fct_patents where is_invention"
        ).fetchone()[0]
        recon = con.execute(
            "select disposition, sum(raw_rows) from marts.rpt_patent_reconciliation group by 1 order by 2 desc"
        ).fetchall()
    return WarehouseSummary(warehouse=db, funnel=funnel, mart_rows=counts, key_tech_share=share,
                            patent_dispositions=recon)


def render_summary(summary: WarehouseSummary) -> str:
    """The summary as the text `keytech summary` prints (without the synthetic-data banner)."""
    lines = ["", "Sample funnel (2010–2019):", f"  {'step':42} {'firms':>7} {'firm-years':>11} {'dropped':>9}"]
    for _, step, firms, years, dropped in summary.funnel:
        lines.append(f"  {step:42} {firms:>7,} {years:>11,} {dropped:>9,}")
    lines += ["", "Mart row counts:"]
    for name, count in summary.mart_rows.items():
        lines.append(f"  marts.{name:26} {count:>10,}")
    share = summary.key_tech_share
    lines += ["", f"Key-technology share of invention applications: {share:.1%}"] if share is not None else [""]
    lines.append("Raw patent rows by disposition: "
                 + ", ".join(f"{d} {n:,}" for d, n in summary.patent_dispositions))
    lines += ["", f"Warehouse: {summary.warehouse}", f"Try:  .venv/bin/keytech sql \"{EXAMPLE_QUERY}\""]
    return "\n".join(lines)
