"""The dbt unit tests (models/**/_*__unit_tests.yml: SQL logic on hand-made rows) run here, once per
`make test`, since `keytech build` leaves them out of its data builds (build.DATA_BUILD_EXCLUDE,
issue 17). dbt needs the tested models' parents in the warehouse (for their column types), so they
run on a copy of the shared minimal warehouse; every unit test of the manifest must run and pass."""

from __future__ import annotations

import json

from conftest import copy_warehouse

from keytech import paths
from keytech.build import DATA_BUILD_EXCLUDE, BuildOptions, run_dbt


def test_keytech_build_leaves_the_unit_tests_out(minimal_warehouse):
    results = json.loads((paths.dbt_artifacts_dir(minimal_warehouse["db"]) / "target" / "run_results.json")
                         .read_text(encoding="utf-8"))["results"]
    kinds = {r["unique_id"].split(".")[0] for r in results}
    assert {"model", "test", "seed"} <= kinds and "unit_test" not in kinds
    assert DATA_BUILD_EXCLUDE == ("--exclude-resource-type", "unit_test")


def test_every_dbt_unit_test_passes(minimal_warehouse, manifest, tmp_path):
    db = copy_warehouse(minimal_warehouse, tmp_path)
    building = paths.building_path(db)  # the file name builds use: dbt reuses their saved parse
    db.rename(building)
    options = BuildOptions(raw_dir=minimal_warehouse["raw"], landing_dir=minimal_warehouse["landing"],
                           warehouse=db, quiet=True)
    completed = run_dbt(["test", "--select", "test_type:unit"], building, options, quiet=True)
    target = paths.dbt_artifacts_dir(db) / "target" / "run_results.json"
    results = json.loads(target.read_text(encoding="utf-8"))["results"]
    expected = {uid for uid in manifest.get("unit_tests", {})}
    assert len(expected) >= 16
    assert {r["unique_id"] for r in results} == expected
    failed = [(r["unique_id"], r["status"], r.get("message")) for r in results if r["status"] != "pass"]
    assert not failed and completed.returncode == 0, (failed, (completed.stdout or "")[-3000:])
