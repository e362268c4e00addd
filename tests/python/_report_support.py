"""One tiny synthetic warehouse (synth → build → checks → estimate) shared by the report, export,
doctor and vendor-delivery tests of a pytest session (conftest.py's ``tiny_demo_warehouse``
fixture; conftest.py's docstring says how to use it). Built lazily in a session temp folder; the
default data/ paths are never touched."""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[str, dict] = {}
STABLE_SPECS = ["table3", "event_study", "placebo", "robust_cluster_firm", "robust_staggered_dcdh",
                "robust_staggered_sunab"]


def tiny_warehouse(tmp_path_factory) -> dict:
    if "built" in _CACHE:
        return _CACHE["built"]
    from keytech.build import BuildOptions, build_warehouse
    from keytech.estimation import run_estimation
    from keytech.quality import run_checks
    from keytech.synth import generate

    root = Path(tmp_path_factory.mktemp("report_tiny"))
    raw, landing, db, out = root / "raw", root / "landing", root / "warehouse.duckdb", root / "output"
    generate("tiny", 20250101, raw, progress=False)  # the demo seed: every spec estimates
    outcome = build_warehouse(BuildOptions(raw_dir=raw, landing_dir=landing, warehouse=db, quiet=True))
    record = run_checks(db, out / "checks")
    # a stable subset (specs under development elsewhere must not break these tests); the report
    # shows the other published specs as "not run"
    run_id = run_estimation(only=STABLE_SPECS, placebo_draws=30, seed=3, db_path=db, progress=False, render=False,
                            out_dir=out, synthetic=True)
    _CACHE["built"] = {"root": root, "raw": raw, "landing": landing, "db": db, "out": out,
                       "run_id": run_id, "check": record, "manifest": outcome["manifest"]}
    return _CACHE["built"]


def env_for(built: dict) -> dict[str, str]:
    """Environment variables pointing keytech at the shared tiny warehouse."""
    return {
        "KEYTECH_RAW_DIR": str(built["raw"]),
        "KEYTECH_LANDING_DIR": str(built["landing"]),
        "KEYTECH_DB": str(built["db"]),
        "KEYTECH_OUTPUT_DIR": str(built["out"]),
    }
