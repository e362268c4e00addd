"""Print the findings of dbt-project-evaluator from the scratch warehouse `make evaluate` builds.

Usage: python tests/tools/evaluator_findings.py target/evaluator.duckdb

Every ``fct_*`` model of the evaluator (except the two coverage summaries, which are one row of
percentages, not findings) lists one finding per row. Findings that docs/architecture.md
("dbt-project-evaluator") documents as accepted are in ACCEPTED with the reason; every other row is
printed as an open finding and makes the exit code 1.
"""

from __future__ import annotations

import sys

import duckdb

SUMMARIES = {"fct_documentation_coverage", "fct_test_coverage"}

# evaluator table → {the finding's first column (or its first two joined by " | "), or "*" for
# every row: why it stays}; the same
# list, with the reasons in full, is in docs/architecture.md ("dbt-project-evaluator")
ACCEPTED: dict[str, dict[str, str]] = {
    "fct_sources_without_freshness": {
        "*": "licensed batch extracts with no load timestamp: freshness cannot be measured"},
    "fct_public_models_without_contract": {
        "*": "access: public marks the marts the data gate and fingerprint cover (keytech/marts.py), "
             "not a cross-project interface; no enforced contract (column types in YAML) yet"},
    "fct_exposures_dependent_on_private_models": {
        "replication_report": "the report reads the seeds pilot_waves, sei_industries and "
                              "paper_published_numbers; dbt has no access level for seeds"},
    "fct_model_fanout": {
        "fct_firm_years": "the firm-year fact feeds the report-shaped marts (panel window 2022, "
                          "endogeneity panel, mechanisms, sample funnel), each read by Python"},
    "fct_rejoining_of_upstream_concepts": {
        "fct_firm_years": "the in-between models (fct_city_year_similarity, rpt_analysis_panel) are "
                          "marts read by analysts and the estimation layer, not only by dbt",
        "int_pilot_projects_city_matched": "the in-between fct_city_year_exposures is the instruments "
                                           "mart analysts read (Table 4)"},
    "fct_missing_primary_key_tests": {
        name: "grain tested once, on the mart that selects it unchanged (fct_patents / fct_patent_ipc_codes); "
              "test_dbt_layers enforces it"
        for name in ("int_patents_key_tech_flagged", "int_patent_ipc_codes_flagged",
                     "int_patent_ipc_codes_attributed")},
    "fct_exposure_parents_materializations": {
        "model | fct_patents": "a view of the incremental table int_patents_key_tech_flagged (no second write)"},
    "fct_too_many_joins": {
        "fct_firm_year_mechanisms": "one left join per mechanism input (similarity, key-tech profiles, "
                                    "financial indices, subsidies, keywords, pool growth, patent counts, "
                                    "first years) onto the firm-year grid",
        "rpt_quarantine": "one CTE per input whose rejections it lists (7 parents, threshold 7); "
                          "the landed patent columns come from stg_cnrds__patents since "
                          "int_patents_dispositioned is narrow (issue 17)"},
}


def findings(db: str) -> dict[str, list[tuple]]:
    with duckdb.connect(db, read_only=True) as con:
        tables = [r[0] for r in con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_name like 'fct\\_%' escape '\\' order by table_name").fetchall()]
        out = {}
        for qualified in tables:
            name = qualified.split(".")[1]
            if name in SUMMARIES:
                continue
            out[name] = con.execute(f"select * from {qualified}").fetchall()
    return out


def main(argv: list[str]) -> int:
    db = argv[1] if len(argv) > 1 else "target/evaluator.duckdb"
    found = findings(db)
    accepted_rows: dict[tuple[str, str], list[str]] = {}  # (table, reason) → first columns
    open_rows = []
    for name, rows in found.items():
        for row in rows:
            accepted = ACCEPTED.get(name, {})
            reason = (accepted.get(str(row[0])) or accepted.get(" | ".join(str(v) for v in row[:2]))
                      or accepted.get("*"))
            if reason:
                accepted_rows.setdefault((name, reason), []).append(" / ".join(str(v) for v in row[:3]))
            else:
                open_rows.append(f"{name}: {' | '.join(str(v) for v in row)}")
    for (name, reason), rows in accepted_rows.items():
        print(f"  accepted  {name} ({len(rows)}): {reason}")
        for row in rows:
            print(f"              {row}")
    for row in open_rows:
        print(f"  OPEN      {row}")
    n_accepted = sum(len(rows) for rows in accepted_rows.values())
    print(f"dbt-project-evaluator: {n_accepted + len(open_rows)} finding(s) in "
          f"{sum(1 for rows in found.values() if rows)} of {len(found)} checks; {n_accepted} accepted "
          f"(docs/architecture.md), {len(open_rows)} open")
    return 1 if open_rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
