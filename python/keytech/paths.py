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


def landing_dir() -> Path:
    return _from_env("KEYTECH_LANDING_DIR", project_root() / "data" / "landing")


def warehouse_path() -> Path:
    return _from_env("KEYTECH_DB", project_root() / "data" / "warehouse.duckdb")


def dbt_artifacts_dir(warehouse: str | Path | None = None) -> Path:
    """Where dbt writes ``target/`` and ``logs/`` for builds of ``warehouse``: the project root for
    the project's default warehouse (``data/warehouse.duckdb``), else a ``<name>.dbt`` folder beside
    the warehouse — so builds of different warehouses (tests, benchmarks, two sessions with
    different ``KEYTECH_DB``) never share or overwrite dbt's run results, manifest and log."""
    w = Path(warehouse) if warehouse is not None else warehouse_path()
    default = project_root() / "data" / "warehouse.duckdb"
    if w.resolve() == default.resolve():
        return project_root()
    return w.parent / f"{w.name}.dbt"


def output_dir() -> Path:
    return _from_env("KEYTECH_OUTPUT_DIR", project_root() / "output")


def seeds_dir() -> Path:
    return project_root() / "seeds"
