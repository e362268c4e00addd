"""Where things live. Every location can be overridden by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root: the nearest folder above this file or the working directory holding
    ``dbt_project.yml``. Set ``KEYTECH_PROJECT_DIR`` to point elsewhere."""
    env = os.environ.get("KEYTECH_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for folder in (start, *start.parents):
            if (folder / "dbt_project.yml").is_file():
                return folder
    raise FileNotFoundError(
        "Cannot find the KeyTech project (a folder with dbt_project.yml). "
        "Run from inside the repository or set KEYTECH_PROJECT_DIR."
    )


def _from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).resolve() if value else default


def raw_dir() -> Path:
    return _from_env("KEYTECH_RAW_DIR", project_root() / "data" / "raw")


def _is_default_warehouse(warehouse: Path) -> bool:
    return Path(warehouse).resolve() == (project_root() / "data" / "warehouse.duckdb").resolve()


def landing_dir(warehouse: str | Path | None = None) -> Path:
    """The landing area of ``warehouse`` (default: the current one). Each warehouse owns its own:
    ``data/landing`` for the project's default warehouse, ``<name>.landing/`` beside any other —
    so builds of two warehouses never land into (or read) the same folder. ``KEYTECH_LANDING_DIR``
    overrides it (the build then also locks that folder, see ``keytech.build``)."""
    value = os.environ.get("KEYTECH_LANDING_DIR")
    if value:
        return Path(value).resolve()
    w = Path(warehouse) if warehouse is not None else warehouse_path()
    if _is_default_warehouse(w):
        return project_root() / "data" / "landing"
    return w.parent / f"{w.name}.landing"


def warehouse_path() -> Path:
    return _from_env("KEYTECH_DB", project_root() / "data" / "warehouse.duckdb")


def dbt_artifacts_dir(warehouse: str | Path | None = None) -> Path:
    """Where dbt writes ``target/`` and ``logs/`` for builds of ``warehouse``: the project root for
    the project's default warehouse (``data/warehouse.duckdb``), else a ``<name>.dbt`` folder beside
    the warehouse — so builds of different warehouses (tests, benchmarks, two sessions with
    different ``KEYTECH_DB``) never share or overwrite dbt's run results, manifest and log."""
    w = Path(warehouse) if warehouse is not None else warehouse_path()
    if _is_default_warehouse(w):
        return project_root()
    return w.parent / f"{w.name}.dbt"


def building_path(warehouse: str | Path) -> Path:
    """Where a build writes the new warehouse before the swap."""
    w = Path(warehouse)
    return w.with_name(w.name + ".building")


def rejected_path(warehouse: str | Path) -> Path:
    """Where a build whose dbt tests, data checks or limits failed is kept for inspection."""
    w = Path(warehouse)
    return w.with_name(w.name + ".rejected")


def lock_path(warehouse: str | Path) -> Path:
    """The OS lock file of ``warehouse``: one build at a time (``keytech.build.warehouse_lock``)."""
    w = Path(warehouse)
    return w.with_name(w.name + ".lock")


def output_dir() -> Path:
    return _from_env("KEYTECH_OUTPUT_DIR", project_root() / "output")


def seeds_dir() -> Path:
    return project_root() / "seeds"
