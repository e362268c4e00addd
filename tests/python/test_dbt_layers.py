"""The dbt layer rules of docs/architecture.md ("dbt layer rules", issue 13): the dbt sources are
generated from the input contract, intermediates read only staging and intermediates, the panel's
variable lists and the city-name matching each have one owner (a macro)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keytech import paths
from keytech.contract import load_contract, load_dbt_sources, render_dbt_sources

ROOT = paths.project_root()


# ------------------------------------------------------------------------------- contract → sources
def test_dbt_sources_are_generated_from_the_contract():
    generated = render_dbt_sources()
    committed = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
                 for p in ROOT.glob("models/staging/*/_*__sources.yml")}
    assert sorted(committed) == sorted(generated), "a sources file that the contract does not generate"
    for relative, text in generated.items():
        assert committed[relative] == text, f"{relative}: run `keytech contract-doc` after editing contract.yml"


def test_every_contract_table_is_one_source_table_with_the_contract_columns():
    contract = load_contract()
    seen = {}
    for relative, text in render_dbt_sources().items():
        for source in yaml.safe_load(text)["sources"]:
            for table in source["tables"]:
                seen[table["name"]] = [c["name"] for c in table["columns"]]
    assert seen == {name: [c.name for c in t.columns] + ["_source_file", "_source_row"]
                    for name, t in contract.items()}


def test_dbt_sources_block_must_name_every_table_once(monkeypatch):
    from keytech import contract as module

    sources = load_dbt_sources()
    assert sum(len(s.tables) for s in sources.values()) == len(load_contract())
    fewer = {name: t for name, t in load_contract().items() if name != "patents"}
    with pytest.raises(module.ContractError, match="unknown tables \\['patents'\\]"):
        load_dbt_sources(fewer)


def _column_rule(manifest: dict, rule: str) -> set[tuple[str, str]]:
    """(tested node, column) of every column the manifest's generic tests hold to ``rule``
    (not_null or unique): dbt's own column tests, and our merged tests (macros/tests) —
    column_checks lists columns per rule, primary_key (a test, or column_checks' primary_key
    rule) holds its key columns not null (and unique when it is one column)."""
    out = set()
    for n in manifest["nodes"].values():
        if n["resource_type"] != "test" or not n.get("test_metadata"):
            continue
        node = n["attached_node"] if n.get("attached_node") else tuple(n["depends_on"]["nodes"])[0]
        name, kwargs = n["test_metadata"]["name"], n["test_metadata"].get("kwargs") or {}
        if name == rule:
            out.add((node, n["column_name"]))
        elif name == "column_checks":
            out |= {(node, column) for column in kwargs.get(rule) or ()}
            key = kwargs.get("primary_key") or ()
            if rule == "not_null" or len(key) == 1:
                out |= {(node, column) for column in key}
        elif name == "primary_key" and (rule == "not_null" or len(kwargs["columns"]) == 1):
            out |= {(node, column) for column in kwargs["columns"]}
    return out


def test_must_be_filled_columns_have_a_not_null_source_test(manifest):
    """At least as strict as the contract: every `not_null: true` column and both lineage columns of
    every contract table carry a not_null test on the source (one column_checks test per table)."""
    tested = _column_rule(manifest, "not_null")
    by_table = {s["name"]: uid for uid, s in manifest["sources"].items()}
    expected = {(by_table[name], c.name) for name, t in load_contract().items() for c in t.columns if c.not_null}
    expected |= {(uid, lineage) for uid in by_table.values() for lineage in ("_source_file", "_source_row")}
    assert expected and expected <= tested, sorted(expected - tested)


# ------------------------------------------------------------------------- one owner per concept
def _sql_files():
    for folder in ("models", "macros", "tests/data_tests", "analysis"):
        yield from (ROOT / folder).rglob("*.sql")


def _documented_columns(model: str) -> list[str]:
    for path in (ROOT / "models").rglob("_*.yml"):
        for entry in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("models") or ():
            if entry["name"] == model:
                return [c["name"] for c in entry.get("columns") or ()]
    raise AssertionError(f"{model} has no YAML")


def test_panel_variable_lists_have_one_owner():
    """macros/panel_variables.sql owns the outcomes, controls and winsorised set: no other SQL lists
    them, and every listed variable is a documented column of fct_firm_years and both panels."""
    from keytech.marts import panel_variables

    lists = panel_variables()
    assert set(lists) == {"outcomes", "controls", "winsorised", "unwinsorised"}
    assert set(lists["winsorised"]) == set(lists["controls"]) - {"ifdome"}  # the dummy is not winsorised
    owner = ROOT / "macros" / "panel_variables.sql"
    for path in _sql_files():
        text = path.read_text(encoding="utf-8").replace(" ", "").replace("\n", "")
        for role in ("outcomes", "controls", "winsorised"):
            listed = ",".join(f"'{c}'" for c in lists[role][:3])
            assert path == owner or listed not in text, f"{path.relative_to(ROOT)} lists the panel's {role}"
    for model in ("fct_firm_years", "rpt_analysis_panel", "rpt_analysis_panel_window2022"):
        documented = _documented_columns(model)
        for columns in lists.values():
            assert set(columns) <= set(documented), (model, set(columns) - set(documented))


def test_city_names_are_matched_by_one_macro():
    """Printed city and province names are matched to the name tables only through
    macros/city_matching.sql; only the name tables themselves define lookup_name."""
    name_tables = {"int_city_names_unioned.sql", "int_city_names_by_year.sql", "int_province_names_unioned.sql"}
    users = set()
    for path in _sql_files():
        text = path.read_text(encoding="utf-8")
        if path.name == "city_matching.sql" or path.name in name_tables:
            continue
        assert "lookup_name" not in text, f"{path.relative_to(ROOT)} matches names itself: use city_name_matches()"
        if "city_name_matches(" in text or "province_name_matches(" in text:
            users.add(path.stem)
    assert {"int_pilot_projects_city_matched", "int_firm_years_city_matched", "int_city_years_matched",
            "int_city_industry_shares", "int_city_robot_densities_matched"} <= users


# -------------------------------------------------------------------------------- DAG straight
def test_intermediates_read_only_staging_seeds_and_intermediates(manifest):
    """staging → intermediate → marts: no intermediate model depends on a mart (a mart may read
    marts: e.g. fct_firm_year_mechanisms reads fct_firm_years)."""
    layer = {uid: n["fqn"][1] for uid, n in manifest["nodes"].items()
             if n["resource_type"] == "model" and n["package_name"] == "keytech"}
    assert {"staging", "intermediate", "marts"} <= set(layer.values())
    wrong = sorted((manifest["nodes"][uid]["name"], manifest["nodes"][parent]["name"])
                   for uid, folder in layer.items() if folder == "intermediate"
                   for parent in manifest["nodes"][uid]["depends_on"]["nodes"] if layer.get(parent) == "marts")
    assert not wrong, f"intermediates reading marts: {wrong}"
    staging_reads = sorted(manifest["nodes"][uid]["name"] for uid, folder in layer.items() if folder == "staging"
                           for parent in manifest["nodes"][uid]["depends_on"]["nodes"] if parent in layer)
    assert not staging_reads, f"staging models reading models: {staging_reads}"


# models whose grain and column tests are on the mart that selects them unchanged (issue 17: an
# expensive invariant is tested once, on the mart that owns it) → that mart; the mart reads the
# model directly or through other models of this list (fct_patent_ipc_codes selects
# int_patent_ipc_codes_attributed, which selects int_patent_ipc_codes_flagged)
TESTED_ON_THEIR_MART = {"int_patent_ipc_codes_flagged": "fct_patent_ipc_codes",
                        "int_patent_ipc_codes_attributed": "fct_patent_ipc_codes",
                        "int_patents_key_tech_flagged": "fct_patents"}
# lookups such a mart, or a model between it and the model it selects, may join besides the rows
# it selects, each with a primary key on the join column, so the join keeps the rows and grain
# (int_patent_ipc_codes_attributed adds what each code implies)
MART_LOOKUPS = {"int_patent_ipc_codes_attributed": {"int_ipc_codes_matched": ["ipc_code"]}}


def _is_grain_test(node: dict) -> bool:
    """A primary_key or unique_combination_of_columns test (macros/tests), or a column_checks test
    with a primary_key or unique_combination rule (issue 17: one test node per model)."""
    metadata = node.get("test_metadata") or {}
    if metadata.get("name") == "column_checks":
        kwargs = metadata.get("kwargs") or {}
        return bool(kwargs.get("primary_key") or kwargs.get("unique_combination"))
    return metadata.get("name") in ("primary_key", "unique_combination_of_columns")


def test_every_model_has_a_grain_test(manifest):
    """Every model has a grain test, primary_key or unique_combination_of_columns (macros/tests)
    or column_checks with a primary_key or unique_combination rule, except the intermediates
    whose rows a mart selects unchanged (TESTED_ON_THEIR_MART): that mart has it, and it and every
    model between it and the one tested there read nothing else but the rows they select and
    lookups with a primary key on the join column (MART_LOOKUPS).
    (dbt-project-evaluator's fct_missing_primary_key_tests, enforced here without the package:
    the evaluator counts every column_checks test as a grain test, this test does not.)"""
    grain = {n["attached_node"] for n in manifest["nodes"].values()
             if n["resource_type"] == "test" and _is_grain_test(n)}
    nodes = {n["name"]: uid for uid, n in manifest["nodes"].items()
             if n["resource_type"] == "model" and n["package_name"] == "keytech"}
    missing = sorted(name for name, uid in nodes.items() if uid not in grain and name not in TESTED_ON_THEIR_MART)
    assert not missing, f"no primary_key test: {missing}"
    def primary_key_of(node: dict) -> tuple | None:
        metadata = node.get("test_metadata") or {}
        kwargs = metadata.get("kwargs") or {}
        if metadata.get("name") == "primary_key":
            return tuple(kwargs["columns"])
        if metadata.get("name") == "column_checks" and kwargs.get("primary_key"):
            return tuple(kwargs["primary_key"])
        return None

    primary_keys = {(n["attached_node"], primary_key_of(n)) for n in manifest["nodes"].values()
                    if n["resource_type"] == "test" and primary_key_of(n)}
    for model, mart in TESTED_ON_THEIR_MART.items():
        assert nodes[mart] in grain, mart
        node = mart  # from the mart down to the model, one selected model at a time
        while node != model:
            lookups = MART_LOOKUPS.get(node, {})
            assert all((nodes[name], tuple(key)) in primary_keys for name, key in lookups.items())
            parents = manifest["nodes"][nodes[node]]["depends_on"]["nodes"]
            selected = [manifest["nodes"][uid]["name"] for uid in parents if uid not in {nodes[n] for n in lookups}]
            assert len(selected) == 1 and sorted(parents) == sorted(
                [nodes[selected[0]], *(nodes[name] for name in lookups)]), (node, parents)
            assert selected[0] == model or TESTED_ON_THEIR_MART.get(selected[0]) == mart, (node, selected)
            node = selected[0]


def test_merged_column_tests_name_documented_columns(manifest):
    """Every column a column_checks or primary_key test names is a documented column of the
    model, seed or source it tests (a renamed column must not leave a rule behind)."""
    documented = {uid: set(n.get("columns") or {})
                  for uid, n in (*manifest["nodes"].items(), *manifest["sources"].items())
                  if n["resource_type"] in ("model", "seed", "source")}
    for n in manifest["nodes"].values():
        name = (n.get("test_metadata") or {}).get("name")
        if n["resource_type"] != "test" or name not in ("column_checks", "primary_key"):
            continue
        node = n["attached_node"] or tuple(n["depends_on"]["nodes"])[0]
        kwargs = n["test_metadata"]["kwargs"]
        named = set(kwargs.get("columns") or ()) | set(kwargs.get("not_null") or ()) | set(kwargs.get("unique") or ())
        named |= set(kwargs.get("primary_key") or ())
        named |= {c["column"] for key in ("accepted_values", "accepted_range", "relationships")
                  for c in kwargs.get(key) or ()}
        # unique_combination may hold SQL expressions (e.g. coalesce(value, '')): bare names only
        named |= {c for key in kwargs.get("unique_combination") or () for c in key if c.isidentifier()}
        assert named and named <= documented[node], (n["name"], sorted(named - documented[node]))


def test_evaluator_conventions_are_declared():
    """dbt-project-evaluator's vars name our own grain tests and our prefixes (make evaluate)."""
    project = yaml.safe_load((ROOT / "dbt_project.yml").read_text(encoding="utf-8"))
    variables = project["vars"]
    for macro in ("primary_key", "unique_combination_of_columns", "column_checks"):
        assert [f"keytech.test_{macro}"] in variables["primary_key_test_macros"]
        assert (ROOT / "macros" / "tests" / f"{macro}.sql").read_text(
            encoding="utf-8").count(f"{{% test {macro}(") == 1
    prefixes = {"staging": variables["staging_prefixes"], "intermediate": variables["intermediate_prefixes"],
                "marts": variables["marts_prefixes"]}
    for path in (ROOT / "models").rglob("*.sql"):
        folder = path.relative_to(ROOT / "models").parts[0]
        assert path.stem.startswith(tuple(prefixes[folder])), f"{path.relative_to(ROOT)}: prefix for {folder}"
