"""Declared marts (issue 13): every list of marts in Python comes from the marts' YAML
(keytech/marts.py), agrees with the dbt manifest and exposures.yml, and the data gate covers every
mart a spec reads — changing one row of the mechanisms or the endogeneity mart makes
`keytech estimate` refuse until `keytech check` passes again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pytest
import yaml

from keytech import marts, paths, quality, warehouse
from keytech.estimation import ChecksNotPassed, load_registry, run_estimation
from keytech.estimation.orchestration.registry import PANELS, RegistryError, parse_registry
from keytech.estimation.simulate import simulate_panel
from keytech.export import PANELS as EXPORT_PANELS
from keytech.report.collect import MARTS_SHOWN

ROOT = paths.project_root()


def _manifest_marts(manifest: dict) -> dict[str, dict]:
    return {n["name"]: n for n in manifest["nodes"].values()
            if n["resource_type"] == "model" and "/marts/" in "/" + n["original_file_path"]}


def test_derived_lists_agree_with_the_dbt_manifest(manifest):
    nodes = _manifest_marts(manifest)
    assert {m.name for m in marts.declared_marts()} == set(nodes)
    assert set(warehouse.PUBLIC_MARTS) == {n for n, node in nodes.items() if node.get("access") == "public"}
    for flag in marts.FLAGS:
        from_manifest = {n for n, node in nodes.items() if (node["config"].get("meta") or {}).get("keytech", {}).get(flag)}
        assert set(marts.marts_with(flag)) == from_manifest, flag
    assert set(PANELS) == set(marts.marts_with("estimation"))
    assert set(EXPORT_PANELS) == set(marts.marts_with("export_panel"))
    assert set(MARTS_SHOWN) == set(marts.marts_with("report"))


def test_every_estimation_mart_is_public_checked_and_an_exposure_input():
    estimation = set(marts.marts_with("estimation"))
    assert estimation >= {"rpt_analysis_panel", "rpt_endogeneity_panel", "fct_firm_year_mechanisms"}
    assert estimation <= set(warehouse.PUBLIC_MARTS)
    assert set(quality.SUITES) == set(marts.marts_with("gx_suite"))
    exposures = yaml.safe_load((ROOT / "models" / "exposures.yml").read_text(encoding="utf-8"))["exposures"]
    layer = next(e for e in exposures if e["name"] == "estimation_layer")
    refs = {d.split("'")[1] for d in layer["depends_on"]}
    assert estimation <= refs, f"add to exposures.yml estimation_layer.depends_on: {sorted(estimation - refs)}"
    # every spec reads declared marts only (the registry refuses others)
    used = {m for s in load_registry().specs for m in (s.panel, *s.extra_marts)}
    assert used <= estimation


def test_a_spec_reading_an_undeclared_mart_is_a_registry_error():
    raw = yaml.safe_load((ROOT / "python" / "keytech" / "specs.yml").read_text(encoding="utf-8"))
    spec = next(s for s in raw["specs"] if s["id"] == "table3_col1")
    raw["specs"] = [dict(spec, extra_marts=["rpt_quarantine"])]
    with pytest.raises(RegistryError, match="rpt_quarantine.*not declared for estimation"):
        parse_registry(raw)


def test_an_undeclared_flag_is_refused(tmp_path):
    (tmp_path / "models" / "marts").mkdir(parents=True)
    (tmp_path / "models" / "marts" / "_m.yml").write_text(
        "version: 2\nmodels:\n  - name: fct_x\n    config:\n      meta:\n        keytech: {estimaton: true}\n")
    with pytest.raises(ValueError, match="estimaton"):
        marts.declared_marts(tmp_path)


def _warehouse_with_every_estimation_mart(path: Path) -> None:
    """rpt_analysis_panel, the 2022 panel, a mechanisms mart and an endogeneity panel (simulated,
    only the columns the specs below need) and a passing check on their fingerprint."""
    panel = simulate_panel(seed=3, n_cities=30, firms_per_city=5.0, beta_key=0.2)
    mechanisms = panel[["stkcd", "year"]].assign(fc_index=(panel["roa"].rank(pct=True)))
    con = duckdb.connect(str(path))
    try:
        con.execute("create schema marts")
        for name, frame in (("rpt_analysis_panel", panel), ("rpt_analysis_panel_window2022", panel),
                            ("rpt_endogeneity_panel", panel.assign(has_later_added_pilots=False)),
                            ("fct_firm_year_mechanisms", mechanisms)):
            con.register("frame", frame)
            con.execute(f"create table marts.{name} as select * from frame")
            con.unregister("frame")
        con.execute("create schema results")
        con.execute("create table results.check_runs (check_run_id text, checked_at timestamp, passed boolean, "
                    "data_fingerprint text, details_json text)")
        con.execute("insert into results.check_runs values ('ok', timestamp '2030-01-01', true, ?, '{}')",
                    [warehouse.mart_fingerprint(con)])
    finally:
        con.close()


@pytest.mark.parametrize("mart, spec_id", [("fct_firm_year_mechanisms", "het_fc_low_key"),
                                           ("rpt_endogeneity_panel", "alt_no_later_pilots")])
def test_changing_one_row_of_a_mart_a_spec_reads_closes_the_gate(tmp_path, mart, spec_id):
    db = tmp_path / "w.duckdb"
    _warehouse_with_every_estimation_mart(db)
    spec = load_registry().get(spec_id)
    assert mart in (spec.panel, *spec.extra_marts)
    run_estimation([spec_id], False, 0, 1, db_path=db, progress=False, render=False)  # gate open
    with duckdb.connect(str(db)) as con:
        column = "fc_index" if mart == "fct_firm_year_mechanisms" else "apply_inv_zl"
        con.execute(f"update marts.{mart} set {column} = {column} + 1 where rowid = 0")
    with pytest.raises(ChecksNotPassed, match="keytech check"):
        run_estimation([spec_id], False, 0, 1, db_path=db, progress=False, render=False)
