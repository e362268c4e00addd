"""End-to-end: tiny synthetic raw data → landing → dbt build → checks, then independent checks of
the marts against the generator's truth and the plain-Python IPC matcher."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from keytech import paths
from keytech.build import BuildOptions, build_warehouse
from keytech.ipc import Concordance, normalise_ipc_list
from keytech.marts import panel_variables
from keytech.synth import generate

pytestmark = pytest.mark.slow

PANEL_COLUMNS = {  # the variable lists from their one owner, macros/panel_variables.sql
    "stkcd", "year", "city_code", "province_code", "industry_code", "ln_apply_inv_zl", "ln_apply_inv_nozl",
    "policy", *(column for columns in panel_variables().values() for column in columns),
}
PATENT_COLUMNS = {
    "patent_id", "stkcd", "application_date", "application_year", "patent_type", "is_invention",
    "n_ipc_codes", "n_applicants", "is_joint", "is_granted", "grant_year", "citations", "is_key_tech",
}
IPC_COLUMNS = {
    "patent_id", "ipc_position", "ipc_raw", "ipc_code", "ipc_subclass", "ipc_class", "is_key_tech",
    "match_level",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    raw = root / "raw"
    truth = generate("tiny", 7, raw, progress=False)
    warehouse = root / "warehouse.duckdb"
    build_warehouse(BuildOptions(raw_dir=raw, landing_dir=root / "landing", warehouse=warehouse, quiet=True))
    return {"root": root, "raw": raw, "truth": truth, "db": warehouse, "landing": root / "landing"}


def _query(db: Path, sql: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _columns(db: Path, table: str) -> set[str]:
    return {r[0] for r in _query(db, f"select column_name from information_schema.columns "
                                     f"where table_schema = 'marts' and table_name = '{table}'")}


def test_public_marts_exist_with_their_columns(built):
    db = built["db"]
    assert PANEL_COLUMNS <= _columns(db, "rpt_analysis_panel")
    assert PATENT_COLUMNS <= _columns(db, "fct_patents")
    assert IPC_COLUMNS <= _columns(db, "fct_patent_ipc_codes")
    for mart in ("dim_firms", "dim_cities", "fct_firm_years", "rpt_sample_funnel",
                 "rpt_patent_reconciliation", "rpt_analysis_panel_window2022"):
        assert _columns(db, mart), f"marts.{mart} missing"
    schemas = {r[0] for r in _query(db, "select distinct table_schema from information_schema.tables")}
    assert {"staging", "intermediate", "marts"} <= schemas


def test_reconciliation_total_equals_raw_patent_rows(built):
    (total,) = _query(built["db"], "select sum(raw_rows) from marts.rpt_patent_reconciliation")[0]
    assert total == built["truth"]["rows"]["patents"]
    by = dict(_query(built["db"], "select disposition, sum(raw_rows) from marts.rpt_patent_reconciliation group by 1"))
    planted = built["truth"]["patents"]
    assert by["merged_duplicate"] == planted["exact_duplicate_rows"]
    assert by["unmatched_firm"] == planted["unmatched_firm_rows"]
    assert by["outside_window"] == planted["out_of_window_rows"]
    (kept,) = _query(built["db"], "select count(*) from marts.fct_patents")[0]
    assert by["kept"] == kept


def test_key_tech_flags_equal_plain_python_matcher(built):
    seeds = paths.seeds_dir()
    concordance = Concordance.from_csv(seeds / "sei_ipc_concordance.csv", seeds / "ipc_revision_supplement.csv")
    rows = _query(built["db"], "select ipc_code, match_level, is_key_tech from marts.fct_patent_ipc_codes")
    assert rows
    mismatches = [(code, level, key) for code, level, key in rows
                  if concordance.match(code).match_level != level or concordance.match(code).is_key_tech != key]
    assert not mismatches[:10]
    levels = {level for _, level, _ in rows}
    assert {"exact", "main_group", "supplement", "none"} <= levels


def test_ipc_tokens_equal_plain_python_normalisation(built):
    landed = built["landing"] / "patents.parquet"
    con = duckdb.connect(str(built["db"]), read_only=True)
    try:
        sql_codes = {}
        for patent_id, position, code in con.execute(
                "select patent_id, ipc_position, ipc_code from marts.fct_patent_ipc_codes").fetchall():
            sql_codes.setdefault(patent_id, []).append((position, code))
        patents = con.execute(
            f"select p.patent_id, l.IPC from marts.fct_patents p join read_parquet('{landed}') l "
            "on p._source_file = l._source_file and p._source_row = l._source_row "
            "where p.is_invention"
        ).fetchall()
    finally:
        con.close()
    assert patents
    for patent_id, raw in patents:
        expected = [(t.position, t.code) for t in normalise_ipc_list(raw) if t.code is not None]
        assert sorted(sql_codes.get(patent_id, [])) == expected, (patent_id, raw)


def test_patent_counts_equal_truth(built):
    truth = built["truth"]
    by_year = dict(_query(built["db"], "select application_year, count(*) from marts.fct_patents "
                                       "where is_invention and is_key_tech group by 1"))
    assert {str(k): v for k, v in by_year.items()} == {
        k: v for k, v in truth["key_inventions_by_year"].items() if v}


def test_funnel_reconciles_with_panel(built):
    funnel = _query(built["db"], "select step_order, firm_years_kept, firm_years_dropped "
                                 "from marts.rpt_sample_funnel order by step_order")
    for (_, kept_before, _), (_, kept_after, dropped) in zip(funnel, funnel[1:]):
        assert kept_before - dropped == kept_after
    (panel_rows,) = _query(built["db"], "select count(*) from marts.rpt_analysis_panel")[0]
    assert funnel[-1][1] == panel_rows > 0


def test_policy_timing_matches_truth(built):
    first = dict(_query(built["db"], "select city_code, first_treated_year from marts.dim_cities "
                                     "where first_treated_year is not null"))
    truth_cities = built["truth"]["pilot"]["cities"]
    assert first == {c["city_code"]: int(c["first_treated_year"]) for c in truth_cities}


def test_policy_timing_on_a_hand_made_city(minimal_warehouse: dict):
    db = minimal_warehouse["db"]  # MINIMAL_RAW built with the default options (conftest.py)
    # 深圳 had its first pilot announced on 2015-07-21: treated from 2016.
    assert _query(db, "select first_treated_year, n_pilot_units from marts.dim_cities where city_code = '440300'") == [(2016, 1)]
    policy = dict(_query(db, "select year, policy from marts.fct_firm_years where stkcd = '000001'"))
    assert policy == {2015: 0, 2016: 1}
    (nanjing,) = _query(db, "select first_treated_year from marts.dim_cities where city_code = '320100'")[0]
    assert nanjing is None


def test_fc_index_method_sa_equals_the_hadlock_pierce_formula(built, tmp_path: Path):
    """`keytech build --fc-index sa`: fc_index is the SA index recomputed here from fct_firm_years
    (−0.737·Size + 0.043·Size² − 0.040·Age, Size = ln assets in million yuan, Age from lnage).
    Built on a copy of ``built`` with ``--select int_firm_year_financial_indices+`` (issue 17: one
    dbt build less of the whole project): the var fc_index_method is read by that model only
    (models/intermediate/mechanisms/int_firm_year_financial_indices.sql), so the selection — the
    model and everything downstream of it, dbt tests included — is every node the option changes."""
    import shutil

    import numpy as np

    from keytech.build import read_build_state

    db = tmp_path / "sa.duckdb"
    shutil.copyfile(built["db"], db)
    build_warehouse(BuildOptions(raw_dir=built["raw"], landing_dir=tmp_path / "landing", warehouse=db, quiet=True,
                                 fc_index_method="sa", select="int_firm_year_financial_indices+"))
    assert read_build_state(db) is None  # the selection was built (a partial build clears the state)
    rows = _query(db, "select f.size, f.lnage, i.fc_index from marts.fct_firm_years f "
                      "join intermediate.int_firm_year_financial_indices i using (stkcd, year)")
    size = np.array([r[0] for r in rows], dtype=float)
    lnage = np.array([r[1] for r in rows], dtype=float)
    fc = np.array([np.nan if r[2] is None else r[2] for r in rows], dtype=float)
    ok = (size > 0) & np.isfinite(lnage)
    assert ok.sum() > 100
    s = np.log(size[ok] / 1e6)
    assert np.allclose(fc[ok], -0.737 * s + 0.043 * s ** 2 - 0.040 * (np.exp(lnage[ok]) - 1), atol=1e-8)
    assert np.isnan(fc[~ok]).all()
    # the default composite lies in [0, 1]; the SA index of listed firms is negative
    default = [r[0] for r in _query(built["db"], "select fc_index from intermediate.int_firm_year_financial_indices "
                                                 "where fc_index is not null")]
    assert default and min(default) >= 0 and max(default) <= 1
    assert np.nanmax(fc) < 0


def test_dbt_artifacts_live_beside_a_non_default_warehouse(built):
    """Builds of different warehouses do not share dbt's target/ and logs/ (paths.dbt_artifacts_dir);
    the project's default warehouse keeps them in the project root."""
    artifacts = paths.dbt_artifacts_dir(built["db"])
    assert artifacts == built["db"].parent / "warehouse.duckdb.dbt"
    results = json.loads((artifacts / "target" / "run_results.json").read_text(encoding="utf-8"))
    assert len(results["results"]) > 100
    assert (artifacts / "target" / "manifest.json").is_file()
    assert (artifacts / "logs" / "dbt.log").is_file()
    assert paths.dbt_artifacts_dir(paths.project_root() / "data" / "warehouse.duckdb") == paths.project_root()


def test_a_new_warehouse_reuses_the_saved_parse(built, tmp_path, monkeypatch):
    """Issue 17: dbt's partial parsing survives a change of warehouse (build.run_dbt): a warehouse
    in another folder, with its own landing folder and no dbt artifacts yet, starts from the parse
    the build of ``built`` saved, and dbt accepts it (no full parse); the manifest it writes
    reads the new folder's landing files and has the same nodes. dbt says "Partial parsing
    enabled" at debug level, which run_dbt's file log (info) leaves out unless DBT_LOG_LEVEL_FILE
    asks for it: the documented way back to the debug log."""
    from keytech.build import run_dbt

    monkeypatch.setenv("DBT_LOG_LEVEL_FILE", "debug")

    folder = tmp_path / "other"
    folder.mkdir()
    options = BuildOptions(raw_dir=built["raw"], landing_dir=folder / "landing", warehouse=folder / "warehouse.duckdb",
                           quiet=True)
    completed = run_dbt(["parse"], folder / "warehouse.duckdb.building", options, quiet=True)
    assert completed.returncode == 0, completed.stdout[-2000:]
    log = (folder / "warehouse.duckdb.dbt" / "logs" / "dbt.log").read_text(encoding="utf-8")
    assert "Partial parsing enabled" in log and "Unable to do partial parsing" not in log, log[-3000:]
    theirs = json.loads((paths.dbt_artifacts_dir(built["db"]) / "target" / "manifest.json").read_text(encoding="utf-8"))
    ours = json.loads((folder / "warehouse.duckdb.dbt" / "target" / "manifest.json").read_text(encoding="utf-8"))
    assert set(ours["nodes"]) == set(theirs["nodes"]) and set(ours["sources"]) == set(theirs["sources"])
    locations = {s.get("meta", {}).get("external_location") or s["config"].get("meta", {}).get("external_location")
                 for s in ours["sources"].values()}
    assert all(loc and "read_parquet('landing/" in loc for loc in locations), locations


def test_funnel_equals_the_generators_planted_filters(built):
    """Issue 11: the warehouse funnel (SQL, macros/analysis_panel.sql) equals the firm filters
    the generator applies to its own records (keytech.synth.sample_filters), step by step."""
    funnel = _query(built["db"], "select step, filter_level, firm_years_kept from marts.rpt_sample_funnel "
                                 "order by step_order")
    truth = built["truth"]["analysis_sample"]["funnel"]
    assert [step for step, _, _ in funnel] == [
        "all_firm_years", "pilot_firms", "listed_under_min_years", "delisting_flag", "financial_firms",
        "missing_data_firms"]
    assert {level for step, level, _ in funnel[1:]} == {"firm"}
    expected = [truth["firm_years_2010_2019"], *[truth[f"after_{step}"] for step, _, _ in funnel[1:]]]
    assert [kept for _, _, kept in funnel] == expected


def test_panel_keeps_firm_years_with_missing_controls(built):
    """Missing controls stay NULL in rpt_analysis_panel (no row is dropped for them): the panel
    holds every firm-year of the kept firms, including the planted missing controls."""
    db = built["db"]
    (n_null_roa, n_null_city) = _query(
        db, "select count(*) filter (where roa is null or ifdome is null), "
            "count(*) filter (where ln_meangdp is null or infor is null or ln_finsgov is null "
            "or ln_fdi is null) from marts.rpt_analysis_panel")[0]
    assert n_null_roa > 0 and n_null_city > 0
    (n_panel,) = _query(db, "select count(*) from marts.rpt_analysis_panel")[0]
    assert n_panel == built["truth"]["analysis_sample"]["firm_years"]


def _drop_singletons(df, fe: list[str]):
    """Iteratively drop observations alone in any FE group (plain pandas; independent of pyfixest)."""
    while fe:
        alone = False
        for col in fe:
            size = df.groupby(col)[col].transform("size")
            alone = alone | (size == 1)
        if not alone.any():
            break
        df = df.loc[~alone]
    return df


def test_table3_nobs_fall_column_by_column_as_recounted_from_the_panel(built, tmp_path):
    """Issue 11: each Table 3 column drops only the rows missing its own variables. The stored
    nobs equal an independent recount on the panel (complete cases on the column's outcome,
    regressors and FE, then iterated singleton removal), and the planted missing firm and city
    controls make N fall from column 2 to 3 and from 3 to 4."""
    import duckdb
    import pandas as pd

    from keytech.estimation import run_estimation

    db = built["db"]
    run_id = run_estimation(only=["table3"], force=True, db_path=db, progress=False, render=False,
                            out_dir=tmp_path)
    stored = dict(_query(db, f"select spec_id, nobs from results.estimates where run_id = '{run_id}' "
                             "and term = 'policy'"))
    con = duckdb.connect(str(db), read_only=True)
    try:
        panel = con.execute("select * from marts.rpt_analysis_panel").df()
    finally:
        con.close()
    panel["ind_year"] = panel["industry_code"].astype(str) + "_" + panel["year"].astype(str)
    panel["prov_year"] = panel["province_code"].astype(str) + "_" + panel["year"].astype(str)
    firm = ["roa", "lnage", "ki", "ifdome", "ln_size", "kd"]
    city = ["ln_meangdp", "infor", "ln_finsgov", "ln_fdi"]
    columns = {
        "table3_col1": ([], []),
        "table3_col2": ([], ["stkcd", "year"]),
        "table3_col3": (firm, ["stkcd", "year"]),
        "table3_col4": (firm + city, ["stkcd", "year"]),
        "table3_col5": (firm + city, ["stkcd", "ind_year", "prov_year"]),
    }
    recount = {}
    for spec_id, (controls, fe) in columns.items():
        used = panel.dropna(subset=["ln_apply_inv_zl", "policy", *controls, *fe, "city_code"])
        recount[spec_id] = len(_drop_singletons(used, fe))
    assert stored == recount
    n = [recount[f"table3_col{k}"] for k in range(1, 6)]
    assert n[0] == len(panel)
    assert n[0] >= n[1] > n[2] > n[3] >= n[4], n


def test_width2_is_the_difference_of_key_tech_pools(built):
    """Issue 11 §2: Width2_t = |key-tech IPC4 pool up to t \\ pool up to t-3|, recomputed in
    pandas from fct_patents and fct_patent_ipc_codes for every firm-year of fct_firm_years
    (null when the firm has no firm-year 3 years earlier)."""
    import duckdb
    import pandas as pd

    con = duckdb.connect(str(built["db"]), read_only=True)
    try:
        codes = con.execute(
            "select p.stkcd, p.application_year as year, c.ipc_subclass from marts.fct_patents p "
            "join marts.fct_patent_ipc_codes c using (patent_id) where p.is_key_tech and c.is_key_tech").df()
        firm_years = con.execute("select stkcd, year from marts.fct_firm_years").df()
        mart = con.execute("select stkcd, year, width2 from marts.fct_firm_year_mechanisms").df()
    finally:
        con.close()
    first_year_of_firm = firm_years.groupby("stkcd")["year"].min()
    pools: dict[str, dict[str, int]] = {}
    for row in codes.itertuples():
        firm = pools.setdefault(row.stkcd, {})
        firm[row.ipc_subclass] = min(firm.get(row.ipc_subclass, 9999), int(row.year))

    def pool(stkcd: str, up_to: int) -> set[str]:
        return {code for code, first in pools.get(stkcd, {}).items() if first <= up_to}

    expected = {}
    for row in firm_years.itertuples():
        t = int(row.year)
        if t - 3 < first_year_of_firm[row.stkcd]:
            expected[(row.stkcd, t)] = None
        else:
            expected[(row.stkcd, t)] = len(pool(row.stkcd, t) - pool(row.stkcd, t - 3))
    got = {(r.stkcd, int(r.year)): (None if pd.isna(r.width2) else int(r.width2)) for r in mart.itertuples()}
    assert got == expected
    assert sum(v for v in expected.values() if v) > 0


def test_joint_grants_and_new_spec_ids_run(built, tmp_path):
    """Issue 11 §4: grant_inv_zl_joint (fct_firm_year_mechanisms) equals a count of joint, granted
    key-tech inventions from fct_patents, and the new cooperation and activity × similarity specs
    run on the warehouse and are stored in results.estimates."""
    from keytech.estimation import run_estimation

    db = built["db"]
    expected = dict(((s, int(y)), int(n)) for s, y, n in _query(
        db, "select stkcd, application_year, count(*) from marts.fct_patents "
            "where is_invention and is_key_tech and is_joint and is_granted group by 1, 2"))
    got = {(s, int(y)): int(n) for s, y, n in _query(
        db, "select stkcd, year, grant_inv_zl_joint from marts.fct_firm_year_mechanisms "
            "where grant_inv_zl_joint > 0")}
    in_firm_years = {(s, int(y)) for s, y in _query(db, "select stkcd, year from marts.fct_firm_years")}
    assert got == {k: v for k, v in expected.items() if k in in_firm_years} and got
    ids = ["coop_joint_grants", "coop_dynamics_apply", "coop_dynamics_grants",
           *[f"het_{a}_similarity_{x}_{y}" for a in ("visit", "standard") for x in ("high", "low")
             for y in ("high", "low")]]
    run_id = run_estimation(only=ids, force=True, db_path=db, progress=False, render=False, out_dir=tmp_path)
    stored = _query(db, f"select spec_id, term, nobs from results.estimates where run_id = '{run_id}'")
    assert {s for s, _, _ in stored} == set(ids)
    # the cooperation specs are estimated on the tiny panel; a quarter-sample cell of the joint
    # split with three-way FE can be all singletons at this scale (its estimator is checked on a
    # hand-made panel in test_mechanisms.py)
    coop = [(s, term, n) for s, term, n in stored if s.startswith("coop_")]
    assert not [s for s, term, _ in coop if term == "(error)"]
    assert all(n > 0 for _, _, n in coop)


def test_near_far_split_at_the_critical_distance_or_the_documented_fallback(built, tmp_path):
    """Issue 11 §4: spill_near / spill_far split the controls at the critical distance of the
    distance-band regression (spill_distance, same bands and alpha) and store it; when no band is
    significant they use the median of the control firm-years' distance and say so."""
    import json

    import duckdb

    from keytech.estimation import run_estimation

    db = built["db"]
    run_id = run_estimation(only=["spill_near", "spill_far", "spill_distance"], force=True, db_path=db,
                            progress=False, render=False, out_dir=tmp_path)
    diag = {s: json.loads(d) for s, d in _query(
        db, f"select spec_id, diagnostics_json from results.estimates where run_id = '{run_id}' "
            "and term in ('policy')")}
    crit = diag["spill_distance"]["critical_distance_km"]
    con = duckdb.connect(str(db), read_only=True)
    try:
        median = con.execute("select median(dist_nearest_pilot_city_km) from marts.rpt_endogeneity_panel "
                             "where is_ever_treated = 0").fetchone()[0]
    finally:
        con.close()
    for side in ("spill_near", "spill_far"):
        d = diag[side]
        assert d["critical_distance_km"] == crit
        if crit is None:
            assert d["threshold_km"] == pytest.approx(median) and "fallback" in d["threshold_rule"]
        else:
            assert d["threshold_km"] == pytest.approx(crit) and "critical" in d["threshold_rule"]


def test_alt_no_pilot_mention_keeps_the_firms_that_never_mention_a_pilot_category(built, tmp_path):
    """Issue 11 §4: alt_no_pilot_mention runs column (5) on the firms whose annual reports never
    count a pilot category (read here from the raw annual_report_keywords.csv and the
    dbt var's keyword list); its nobs equal a recount on the panel (complete cases, singletons)."""
    import duckdb
    import pandas as pd
    import yaml

    from keytech.estimation import run_estimation

    db = built["db"]
    keywords = set(yaml.safe_load((paths.project_root() / "dbt_project.yml").read_text(encoding="utf-8"))
                   ["vars"]["pilot_mention_keywords"])
    raw = pd.read_csv(built["raw"] / "annual_report_keywords.csv", dtype=str)
    pilot_rows = raw[raw["Keyword"].isin(keywords)].assign(Count=lambda d: d["Count"].astype(int))
    per_firm = pilot_rows.groupby(pilot_rows["Stkcd"].str.zfill(6))["Count"].max()
    never = set(per_firm.index[per_firm == 0])
    assert never and len(never) < len(per_firm)
    run_id = run_estimation(only=["alt_no_pilot_mention"], force=True, db_path=db, progress=False,
                            render=False, out_dir=tmp_path)
    # the spec's N (every term carries it): on this tiny world the few never-mentioning firms leave
    # `policy` without variation after the fixed effects, so pyfixest drops that term as collinear
    ((nobs,),) = _query(db, f"select distinct nobs from results.estimates where run_id = '{run_id}' "
                            "and spec_id = 'alt_no_pilot_mention'")
    con = duckdb.connect(str(db), read_only=True)
    try:
        panel = con.execute("select * from marts.rpt_endogeneity_panel").df()
    finally:
        con.close()
    panel = panel[panel["stkcd"].isin(never)].assign(
        ind_year=lambda d: d["industry_code"].astype(str) + "_" + d["year"].astype(str),
        prov_year=lambda d: d["province_code"].astype(str) + "_" + d["year"].astype(str))
    controls = ["roa", "lnage", "ki", "ifdome", "ln_size", "kd", "ln_meangdp", "infor", "ln_finsgov", "ln_fdi"]
    fe = ["stkcd", "ind_year", "prov_year"]
    used = panel.dropna(subset=["ln_apply_inv_zl", "policy", *controls, *fe, "city_code"])
    assert nobs == len(_drop_singletons(used, fe)) > 0


def test_same_industry_exposure_of_control_firms_from_the_raw_pilot_list(built, tmp_path):
    """Issue 11 §4: control_same_industry_pilot (rpt_endogeneity_panel) is 1 exactly for firm-years
    of firms in never-treated cities whose CSRC industry had a pilot unit announced (raw
    pilot_list.csv Industry, the optional column the generator fills) before that year; and
    spill_industry runs on control firms only."""
    import pandas as pd

    from keytech.estimation import run_estimation

    db = built["db"]
    pilots = pd.read_csv(built["raw"] / "pilot_list.csv", dtype=str)
    assert pilots["Industry"].notna().all()
    first = pilots.assign(Wave=pilots["Wave"].astype(int)).groupby(pilots["Industry"].str.upper())["Wave"].min() + 1
    rows = _query(db, "select industry_code, year, first_treated_year, control_same_industry_pilot "
                      "from marts.rpt_endogeneity_panel")
    for industry, year, first_treated, got in rows:
        expected = int(first_treated is None and industry in first.index and year >= first[industry])
        assert got == expected, (industry, year, first_treated)
    assert any(r[3] == 1 for r in rows) and any(r[3] == 0 and r[2] is None for r in rows)
    run_id = run_estimation(only=["spill_industry"], force=True, db_path=db, progress=False, render=False,
                            out_dir=tmp_path)
    ((nobs, term),) = _query(db, f"select nobs, term from results.estimates where run_id = '{run_id}' "
                                 "and spec_id = 'spill_industry' and term = 'control_same_industry_pilot'")
    (n_control,) = _query(db, "select count(*) from marts.rpt_endogeneity_panel where first_treated_year is null")[0]
    assert 0 < nobs <= n_control


def test_registration_place_check_keeps_firms_operating_where_registered(built, tmp_path):
    """Issue 11 §4: is_registered_elsewhere (rpt_endogeneity_panel) is 1 exactly for the firms the
    generator gave another office city (truth), and robust_registration_place runs on the others."""
    from keytech.estimation import run_estimation

    db = built["db"]
    planted = set(built["truth"]["firms"]["registered_elsewhere_stkcds"])
    flags = dict(_query(db, "select distinct stkcd, is_registered_elsewhere from marts.rpt_endogeneity_panel"))
    assert {s for s, v in flags.items() if v == 1} == planted & set(flags)
    assert {s for s, v in flags.items() if v == 0} == set(flags) - planted
    run_id = run_estimation(only=["robust_registration_place"], force=True, db_path=db, progress=False,
                            render=False, out_dir=tmp_path)
    ((nobs,),) = _query(db, f"select nobs from results.estimates where run_id = '{run_id}' and term = 'policy'")
    (n_kept,) = _query(db, "select count(*) from marts.rpt_endogeneity_panel where is_registered_elsewhere = 0")[0]
    assert 0 < nobs <= n_kept
