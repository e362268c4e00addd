"""The replication report: published-number seed, term matching, the page on a tiny synthetic
warehouse (sections, tables, inline figures, self-contained), graceful degradation, the CLI, and
the example analyses in analysis/."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from _report_support import env_for
from keytech import paths
from keytech.report import SECTION_IDS, build_report, paper

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tiny_demo_warehouse) -> dict:
    return tiny_demo_warehouse


@pytest.fixture(scope="module")
def page(built) -> str:
    target = build_report(db_path=built["db"], out_dir=built["out"] / "report", raw_dir=built["raw"],
                          landing_dir=built["landing"])
    assert target == built["out"] / "report" / "index.html"
    return target.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ published numbers


def test_seed_covers_tables_3_to_7_with_their_columns():
    seed = paper.load_published()
    columns = seed.groupby("paper_table")["paper_column"].nunique().to_dict()
    assert columns == {"table3": 5, "table4": 7, "table5": 5, "table6": 6, "table7": 4}
    assert not seed.duplicated(["paper_table", "paper_column", "term"]).any()
    assert (seed["spec_id"] == seed["paper_table"] + "_col" + seed["paper_column"].str.strip("()")).all()
    # Table 4's IV diagnostics for both 2SLS columns, as published
    diag = seed.set_index(["spec_id", "term"])
    assert diag.loc[("table4_col3", "kp_rk_lm"), "estimate"] == 21.355
    assert diag.loc[("table4_col5", "kp_rk_lm"), "p_value"] == 0.0027
    assert diag.loc[("table4_col3", "kp_rk_wald_f"), "estimate"] == 40.199
    assert diag.loc[("table4_col5", "stock_yogo_15"), "estimate"] == 8.96
    assert diag.loc[("table6_col6", "policy_x_ln_sale"), "estimate"] == 0.1073
    assert diag.loc[("table5_col2", "p_difference"), "estimate"] == 0.051


def test_seed_agrees_with_the_registry_paper_blocks():
    from keytech.estimation.orchestration.registry import load_registry

    seed = paper.load_published().set_index(["spec_id", "term"])
    checked = 0
    for spec in load_registry().specs:
        if spec.paper is None or (spec.id, "policy") not in seed.index:
            continue
        row = seed.loc[(spec.id, "policy")]
        assert row["estimate"] == pytest.approx(spec.paper.coef), spec.id
        assert row["std_error"] == pytest.approx(spec.paper.se), spec.id
        if spec.paper.nobs is not None:
            assert int(row["nobs"]) == spec.paper.nobs, spec.id
        if spec.paper.stars is not None:
            assert int(row["stars"]) == spec.paper.stars, spec.id
        checked += 1
    assert checked >= 5  # Table 3 at least


def _estimates(rows: list[dict]) -> pd.DataFrame:
    base = {"run_id": "r", "estimate": None, "std_error": None, "p_value": None, "nobs": 100, "adj_r2": 0.5,
            "diagnostics_json": None}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_term_matching_and_diagnostics_lookup():
    assert paper.match_term("policy", ["Intercept", "policy"]) == "policy"
    assert paper.match_term("policy_x_ln_sale", ["policy", "policy:ln_sale", "ln_sale"]) == "policy:ln_sale"
    assert paper.match_term("iv1", ["iv1_robot_internet", "roa"]) == "iv1_robot_internet"
    assert paper.match_term("policy", ["d_treat"], treatment="d_treat") == "d_treat"
    assert paper.match_term("ln_sale", ["policy"]) is None
    est = _estimates([
        {"spec_id": "table4_col3", "term": "policy", "estimate": 0.4, "std_error": 0.2, "p_value": 0.04,
         "diagnostics_json": json.dumps({"first_stage": {"kp_rk_lm": {"stat": 12.5, "p_value": 0.0004}, "kp_rk_wald_f": 30.1},
                                         "stock_yogo_15": 8.96})},
        {"spec_id": "table4_col1", "term": "(error)", "diagnostics_json": json.dumps({"error": "boom"})},
    ])
    cell = paper.run_cell(est, "table4_col3", "policy")
    assert (cell.status, cell.estimate, cell.std_error, cell.nobs) == ("ok", 0.4, 0.2, 100)
    lm = paper.run_cell(est, "table4_col3", "kp_rk_lm")
    assert (lm.status, lm.estimate, lm.p_value) == ("ok", 12.5, 0.0004)
    assert paper.run_cell(est, "table4_col3", "kp_rk_wald_f").estimate == 30.1
    assert paper.run_cell(est, "table4_col3", "first_stage_f").status == "no_term"
    assert paper.run_cell(est, "table4_col2", "iv1").status == "not_run"
    err = paper.run_cell(est, "table4_col1", "policy")
    assert err.status == "error" and "boom" in err.message


# ---------------------------------------------------------------------------------------- page


def test_page_has_every_section_table_and_figure(page: str, built):
    for section_id in SECTION_IDS:
        assert f"<section id='{section_id}'>" in page, section_id
    assert "id='synthetic-banner'" in page and "not findings" in page
    for table_id in ("funnel-table", "descriptives-table", "rollout-table", "patents-table", "quality-table",
                     "paper-table3", "paper-table4", "paper-table5", "paper-table6", "paper-table7", "other-specs-table"):
        assert f"id='{table_id}'" in page, table_id
    figures = re.findall(r'data-figure="([a-z-]+)"', page)
    assert {"event-study", "placebo", "rollout", "patents-by-field", "funnel"} <= set(figures)
    # provenance of the run that was estimated
    assert built["run_id"] in page and built["check"]["data_fingerprint"] in page
    # published numbers with stars and SE in parentheses, beside this run's
    assert "0.1287</span><span class='stars'>***</span>" in page and "(0.0423)" in page
    assert "21.355 [0.0000]" in page  # Table 4 diagnostics
    # the publication tables in the paper's (wide) layout, one per paper table
    start = page.index("<section id='publication-tables'>")
    pub = page[start:page.index("</section>", start)]
    captions = re.findall(r"<caption>([^<]*)</caption>", pub)
    for n in (3, 4, 5, 6, 7):
        assert any(c.startswith(f"Table {n}.") for c in captions), (n, captions)
    assert any(c.startswith("Heterogeneity") for c in captions)
    assert "<th>(3) IV1 2SLS</th>" in pub and "KP rk LM [p]" in pub and "not available" not in pub
    # every analysis-panel variable in the descriptives
    with duckdb.connect(str(built["db"]), read_only=True) as con:
        cols = [r[0] for r in con.execute("describe marts.rpt_analysis_panel").fetchall()]
    for col in cols:
        if col not in ("stkcd", "city_code", "province_code", "industry_code"):
            assert f"<code>{col}</code>" in page, col


def test_page_is_self_contained_and_ids_are_unique(page: str):
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page), "external resource referenced"
    assert "<link rel='stylesheet'" not in page and "<script src" not in page
    ids = re.findall(r"""\bid=['"]([^'"]+)['"]""", page)
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, sorted(duplicates)[:10]


def test_paper_tables_show_not_run_for_a_missing_spec(built, tmp_path: Path):
    db = tmp_path / "copy.duckdb"
    shutil.copy(built["db"], db)
    with duckdb.connect(str(db)) as con:
        con.execute("delete from results.estimates where spec_id = 'table3_col2'")
    html = build_report(db_path=db, out_dir=tmp_path / "report", raw_dir=built["raw"],
                        landing_dir=built["landing"]).read_text()
    table3 = html.split("id='paper-table3'")[1].split("</table>")[0]
    row = next(r for r in table3.split("<tr") if "table3_col2" in r)
    assert "not run" in row and "0.0977" in row  # the paper's number is still shown
    assert "not run" not in next(r for r in table3.split("<tr") if "table3_col1" in r)


# the spec ids issue 11 added: each must have a line on the page once it has estimates
ISSUE_11_SPECS = (
    "robust_registration_place", "alt_no_pilot_mention", "coop_joint_grants", "coop_dynamics_apply",
    "coop_dynamics_grants", "spill_industry", "spill_industry_treated",
    *(f"het_{k}_similarity_{a}_{b}" for k in ("visit", "standard") for a in ("high", "low") for b in ("high", "low")),
    *(f"table7_ln_col{i}" for i in range(1, 5)),
)


def test_every_spec_id_with_estimates_has_a_line_on_the_page(built, tmp_path: Path):
    """Every spec id in results.estimates shows on the page (paper tables or 'Other specifications'):
    the tiny run estimates a stable subset, so the other registry specs get one stand-in row each
    (a copy of table3_col1's policy row under their id) and the report is rebuilt."""
    from keytech.estimation.orchestration.registry import load_registry

    db = tmp_path / "copy.duckdb"
    shutil.copy(built["db"], db)
    registry = [s.id for s in load_registry().specs]
    assert set(ISSUE_11_SPECS) <= set(registry)
    with duckdb.connect(str(db)) as con:
        have = {r[0] for r in con.execute("select distinct spec_id from results.estimates").fetchall()}
        template = con.execute("select * from results.estimates where spec_id = 'table3_col1' "
                               "and term = 'policy' limit 1").df()
        for sid in registry:
            if sid not in have:
                con.execute("insert into results.estimates select * replace (? as spec_id) from template", [sid])
        stored = {r[0] for r in con.execute("select distinct spec_id from results.estimates").fetchall()}
    assert set(registry) <= stored
    html = build_report(db_path=db, out_dir=tmp_path / "report", raw_dir=built["raw"],
                        landing_dir=built["landing"]).read_text()
    missing = sorted(sid for sid in stored if f"<code>{sid}</code>" not in html)
    assert not missing, missing
    other = html.split("id='other-specs-table'")[1].split("</table>")[0]
    for sid in ISSUE_11_SPECS:
        assert f"<code>{sid}</code>" in other, sid
    # which input gave the WW index's dividend dummy (the generator fills CashDividends everywhere)
    with duckdb.connect(str(db), read_only=True) as con:
        n_ww = con.execute("select count(*) from marts.fct_firm_year_mechanisms where ww_index is not null").fetchone()[0]
    note = html.split("id='ww-dividend-source'")[1].split("</p>")[0]
    assert f"cash dividends (CashDividends, the paper's definition): {n_ww:,} firm-years" in note and "fallback" not in note


def test_report_without_truth_or_runs_degrades_gracefully(built, tmp_path: Path):
    db = tmp_path / "copy.duckdb"
    shutil.copy(built["db"], db)
    with duckdb.connect(str(db)) as con:
        con.execute("drop table results.estimates")
        con.execute("drop table results.runs")
    empty_raw = tmp_path / "raw"
    empty_raw.mkdir()
    html = build_report(db_path=db, out_dir=tmp_path / "report", raw_dir=empty_raw, landing_dir=tmp_path / "nolanding").read_text()
    assert "synthetic-banner" not in html
    assert "No estimation run" in html
    for section_id in SECTION_IDS:
        assert f"<section id='{section_id}'>" in html
    assert html.count("not run") >= 25  # every published row of Tables 3-7


def test_cli_report_and_quiet_prints_only_the_path(built, monkeypatch, tmp_path, capsys):
    from keytech.cli import main

    for key, value in env_for(built).items():
        monkeypatch.setenv(key, value)
    assert main(["report", "--out", str(tmp_path / "r"), "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "index.html")
    monkeypatch.setenv("KEYTECH_DB", str(tmp_path / "absent.duckdb"))
    assert main(["report", "--out", str(tmp_path / "r2")]) == 3  # missing prerequisite
    assert "keytech build" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- analyses


@pytest.mark.parametrize("sql_file", sorted(p.name for p in (paths.project_root() / "analysis").glob("*.sql")))
def test_every_analysis_runs_on_the_warehouse(built, sql_file: str):
    from keytech.analyses import read_query

    with duckdb.connect(str(built["db"]), read_only=True) as con:
        frame = con.sql(read_query(str(paths.project_root() / "analysis" / sql_file), con)).df()
    assert len(frame) > 0, sql_file


def test_keytech_docs_builds_the_static_site_with_exposures(built, monkeypatch, tmp_path):
    from keytech.cli import main

    for key, value in env_for(built).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "dbt-docs"
    assert main(["docs", "--out", str(out), "-q"]) == 0
    page = (out / "static_index.html").read_text(encoding="utf-8")
    for node in ("exposure.keytech.estimation_layer", "exposure.keytech.replication_report",
                 "seed.keytech.paper_published_numbers", "model.keytech.rpt_analysis_panel"):
        assert node in page, node
    catalog = (out / "catalog.json").read_text(encoding="utf-8")
    assert "rpt_analysis_panel" in catalog  # the catalog came from the tiny warehouse
    _assert_catalog_is_the_warehouse(json.loads(catalog), built["db"])

    # issue 17: a second `keytech docs` (a new folder: no parse of its own there) starts from the
    # parse the first one saved (build.run_dbt) and dbt accepts it; "Partial parsing enabled" is
    # logged at debug level only
    monkeypatch.setenv("DBT_LOG_LEVEL_FILE", "debug")
    log = paths.dbt_artifacts_dir(built["db"]) / "logs" / "dbt.log"
    before = log.stat().st_size if log.is_file() else 0
    again = tmp_path / "dbt-docs-again"
    assert main(["docs", "--out", str(again), "-q"]) == 0
    with log.open("rb") as handle:
        handle.seek(before)
        second_run = handle.read().decode("utf-8", errors="replace")
    assert "Partial parsing enabled" in second_run and "Unable to do partial parsing" not in second_run, \
        second_run[-3000:]
    # the catalog query filtered by the project's macro (macros/catalog_relations.sql), not by
    # dbt-duckdb's one OR term per relation
    assert ") as catalog_relations (relation_schema, relation_name)" in second_run
    first, second = (json.loads((folder / "catalog.json").read_text(encoding="utf-8")) for folder in (out, again))
    assert second["nodes"] == first["nodes"] and second["sources"] == first["sources"]
    first, second = (json.loads((folder / "manifest.json").read_text(encoding="utf-8")) for folder in (out, again))
    assert set(second["nodes"]) == set(first["nodes"]) and set(second["exposures"]) == set(first["exposures"])


def _assert_catalog_is_the_warehouse(catalog: dict, db: Path) -> None:
    """The docs catalog (dbt's catalog query, filtered by macros/catalog_relations.sql) holds every
    table and view of the warehouse's model and seed schemas with exactly DuckDB's own columns:
    names, positions and types as duckdb_columns() lists them."""
    schemas = ("seeds", "staging", "intermediate", "marts")
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "select schema_name, table_name, column_name, column_index, data_type from duckdb_columns() "
            "where database_name = current_database() and list_contains(?, schema_name)", [list(schemas)]).fetchall()
    finally:
        con.close()
    expected: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
    for schema, table, column, index, data_type in rows:
        expected.setdefault((schema, table), {})[column] = (index, data_type)
    found = {(node["metadata"]["schema"], node["metadata"]["name"]):
             {name: (column["index"], column["type"]) for name, column in node["columns"].items()}
             for node in catalog["nodes"].values()}
    in_schemas = {key: columns for key, columns in found.items() if key[0] in schemas}
    assert len(expected) > 60
    assert in_schemas == expected
