"""Shared fixtures of the test suite.

Fixture API (use these instead of building your own warehouse when the data fits):

* ``minimal_raw`` (function scope): a minimal hand-written raw folder that satisfies the contract
  (``MINIMAL_RAW``, written by ``write_raw``).
* ``tiny_demo_warehouse`` (session scope): ``keytech synth --scale tiny --seed 20250101`` (the demo
  seed) → build → checks → estimation of ``_report_support.STABLE_SPECS`` (30 placebo draws,
  seed 3), built once per pytest session (per xdist worker: see below). A dict with ``root``,
  ``raw``, ``landing``, ``db``, ``out``, ``run_id``, ``check`` (the check record) and ``manifest``
  (the build's landing manifest). It is SHARED: open ``db`` with ``duckdb.connect(...,
  read_only=True)``; a test that writes to the warehouse (or rebuilds it) works on a copy,
  ``copy_warehouse(tiny_demo_warehouse, tmp_path)``, never on ``db`` itself.
* ``minimal_warehouse`` (session scope): ``MINIMAL_RAW`` (city yearbook in GBK, as ``minimal_raw``)
  built once with the default build options. A dict with ``root``, ``raw``, ``landing``, ``db`` and
  ``manifest``; shared and read-only like ``tiny_demo_warehouse``.
* ``manifest`` (session scope): the dbt manifest (``manifest.json``) of the ``minimal_warehouse``
  build: every node, source, test and unit test of the project.
* ``copy_warehouse(built, folder)``: a private copy of a built warehouse file (a file copy, no
  rebuild) in ``folder``; returns its path.

Parallel runs (``make test`` runs pytest-xdist, ``-n 2 --dist loadfile``): every test module is
one unit of work on one worker, so its module fixtures are built once; all modules with a test that
uses a shared session fixture (``SHARED_SESSION_FIXTURES``) form one unit, so the shared warehouse
is built once per run too; a module with independent expensive module fixtures may split itself
(``XDIST_SPLIT_FIXTURES``, see ``units_of_work``). The workers compute the units from the
fixtures and leave them in the run's basetemp for the controller (``UnitOfWorkScheduling``). ``HEAVY_MODULES`` lists the slowest units first so that the two workers finish close
together; a module not listed runs after them. ``pytest`` without ``-n`` runs serially as before.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# One OpenBLAS thread, as `make test` runs (the Makefile exports it) and as keytech/__init__.py
# sets (also for numpy/scipy imported before keytech). Set here too so that the subprocesses tests
# start inherit it. With OpenBLAS's default threads, a plain `pytest` under load spent ≈ 5× the
# CPU on the IV world's Table 4 (docs/performance.md, "make test (issue 17, branch h17k)").
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# and one thread for pyfixest's Rust demeaner, as keytech/__init__.py sets it (results independent
# of the machine's cores), also for a test that runs pyfixest before importing keytech
os.environ.setdefault("RAYON_NUM_THREADS", "1")
# and the same OpenBLAS kernels on every AVX2 machine (OPENBLAS_CORETYPE, keytech/__init__.py):
# importing keytech sets it, before any test module imports numpy
import keytech  # noqa: E402,F401

# Session fixtures whose users are kept on one xdist worker (one build per run).
SHARED_SESSION_FIXTURES = ("tiny_demo_warehouse", "minimal_warehouse")  # `manifest` uses the latter

# Units of work (module names, or a shared fixture's name for its modules) slowest first, as
# measured with `pytest --durations` (make test schedules them first; see the docstring).
HEAVY_MODULES = (  # seconds per unit at load ≈ 7–20 unless said (2026-12-03, h17e; docs/performance.md)
    "test_reliability[tiny_built]",          # ~850 s: 4 full builds + killed, select, disk-full builds
    "test_incremental",                      # ~560 s: one test, 5 dbt builds
    "test_endogeneity_synthetic[iv_world]",  # paper-scale firms, key-tech patents only (h17k): ≈ 60 s CPU
    "minimal_warehouse",                     # ~330 s: e2e (tiny, seed 7) + diff + --fc-index sa (select) + dbt unit tests, manifest
    "tiny_demo_warehouse",                   # ~320 s: report, export, doctor, vendor deliveries
    "test_optional_inputs",                  # ~230 s: 2 builds
    "test_demo_command",                     # ~200 s: keytech demo (every spec)
    "test_endogeneity_synthetic[world]",     # small world, key-tech patents only (h17k): ≈ 30 s CPU
    "test_mechanisms_recovery",              # ~150 s
    "test_concordance_edition",
    "test_endogeneity",
    "test_city_names_by_year",
    "test_reliability[bad_warehouse]",
    "test_patent_forms_build",
)

MINIMAL_RAW = {
    "firm_info.csv": (
        "Stkcd,Accper,Stknme,Nnindcd,Provnm,Ctnm,Estbdt,Listdt,Statco,Delistdt,Stflg,Ownership\n"
        "证券代码,统计截止日期,证券简称,行业代码,省份,城市,成立日期,上市日期,上市状态,退市日期,ST标识,股权性质\n"
        "没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位,没有单位\n"
        "000001,2015-12-31,甲公司,C39,广东,深圳,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "000001,2016-12-31,甲公司,C39,广东,深圳,2000-01-01,2005-06-01,正常上市,,,民营企业\n"
        "600001,2015-12-31,乙公司,C35,江苏省,南京市,1998-03-01,2001-02-01,正常上市,,ST,国有企业\n"
    ),
    "balance_sheet.csv": (
        "Stkcd,Accper,Typrep,A001000000,A002000000\n"
        "1,2015-12-31,A,1000000000,400000000\n"
        "1,2016-12-31,A,1100000000,420000000\n"
        "600001,2015-12-31,A,2000000000,900000000\n"
    ),
    "income_statement.csv": (
        "Stkcd,Accper,Typrep,B001101000,B002000000\n"
        "000001,2015-12-31,A,800000000,50000000\n"
        "000001,2016-12-31,A,850000000,52000000\n"
        "600001,2015-12-31,A,1500000000,-1000000\n"
    ),
    "cash_flow.csv": (
        "Stkcd,Accper,Typrep,C001000000\n"
        "000001,2015-12-31,A,60000000\n"
        "000001,2016-12-31,A,61000000\n"
        "600001,2015-12-31,A,70000000\n"
    ),
    "patents.csv": (
        "Scode,ApplyNo,ApplyDate,PatentType,IPC,Applicants,GrantDate,CitedTimes\n"
        "000001,CN201510000001.1,2015-03-01,发明,H04L 27/26;G06F17/30,甲公司,2017-05-01,3\n"
        "000001,CN201510000001.1,2015-03-01,发明,H04L 27/26;G06F17/30,甲公司,2017-05-01,3\n"
        "600001,CN201520000002.X,2015/04/02,实用新型,A47J27/00,乙公司;某大学,,0\n"
    ),
    "city_yearbook.csv": (
        "城市,年份,人均地区生产总值(元),年末户籍人口(万人),互联网宽带接入用户数(万户),"
        "地方一般公共预算支出(万元),当年实际使用外资金额(万美元)\n"
        "单位,年,元,万人,万户,万元,万美元\n"
        "深圳,2015,150000,350,500,35000000,650000\n"
        "南京市,2015,120000,650,300,11000000,330000\n"
    ),
    "pilot_list.csv": (
        "Wave,AnnounceDate,ProjectName,UnitName,Province,City,Category,Stkcd\n"
        "2015,2015-07-21,某智能工厂试点示范,丙公司,广东省,深圳市,流程制造,\n"
    ),
}


def write_raw(folder: Path, files: dict[str, str] | None = None, encodings: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or MINIMAL_RAW).items():
        encoding = (encodings or {}).get(name, "utf-8")
        (folder / name).write_bytes(text.encode(encoding))
    return folder


@pytest.fixture
def minimal_raw(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw", encodings={"city_yearbook.csv": "gbk"})


@pytest.fixture(scope="session")
def tiny_demo_warehouse(tmp_path_factory) -> dict:
    """The shared tiny demo-seed warehouse (see the module docstring). Read-only for tests."""
    from _report_support import tiny_warehouse

    return tiny_warehouse(tmp_path_factory)


@pytest.fixture(scope="session")
def minimal_warehouse(tmp_path_factory) -> dict:
    """``MINIMAL_RAW`` built once with the default options (see the module docstring). Read-only."""
    from keytech.build import BuildOptions, build_warehouse

    root = Path(tmp_path_factory.mktemp("minimal_warehouse"))
    raw = write_raw(root / "raw", encodings={"city_yearbook.csv": "gbk"})
    db, landing = root / "warehouse.duckdb", root / "landing"
    outcome = build_warehouse(BuildOptions(raw_dir=raw, landing_dir=landing, warehouse=db, quiet=True))
    return {"root": root, "raw": raw, "landing": landing, "db": db, "manifest": outcome["manifest"]}


@pytest.fixture(scope="session")
def manifest(minimal_warehouse) -> dict:
    """The dbt manifest of the project as it is: the one dbt wrote for the ``minimal_warehouse``
    build (a manifest holds every node, source, test and unit test of the project, whatever the
    command selects); read by test_declared_marts, test_dbt_layers and test_dbt_unit_tests. (It
    came from a `dbt parse` of its own, a full parse of the project, until issue 17.)"""
    from keytech import paths

    target = paths.dbt_artifacts_dir(minimal_warehouse["db"]) / "target" / "manifest.json"
    return json.loads(target.read_text(encoding="utf-8"))


def copy_warehouse(built: dict, folder: Path) -> Path:
    """A private copy of ``built["db"]`` in ``folder`` (created), for a test that writes to it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(built["db"]).name
    shutil.copyfile(built["db"], target)
    return target


def _module(item) -> str:
    return Path(item.nodeid.split("::", 1)[0]).stem


def units_of_work(items: list) -> dict[str, str]:
    """Node id → unit of work. A module is one unit (its module fixtures are built once), named
    after the module, or after the shared session fixture (``SHARED_SESSION_FIXTURES``) that one of
    its tests uses. A module may split itself in units by module fixture: tests using a fixture
    named in its ``XDIST_SPLIT_FIXTURES`` form the unit ``<module>[<fixture>]``."""
    shared: dict[str, str] = {}
    for item in items:
        for name in SHARED_SESSION_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                shared.setdefault(_module(item), name)
    units = {}
    for item in items:
        module = _module(item)
        unit = shared.get(module, module)
        if module not in shared:
            split = [f for f in getattr(getattr(item, "module", None), "XDIST_SPLIT_FIXTURES", ())
                     if f in getattr(item, "fixturenames", ())]
            if split:
                unit = f"{module}[{split[0]}]"
        units[item.nodeid] = unit
    return units


def _rank(unit: str) -> int:
    return HEAVY_MODULES.index(unit) if unit in HEAVY_MODULES else len(HEAVY_MODULES)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Heavy units of work first (a stable sort: the order within a unit is kept); under xdist,
    hand the units to the controller's scheduler."""
    units = units_of_work(items)
    items.sort(key=lambda item: _rank(units[item.nodeid]))
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        target = Path(config.option.basetemp).parent / f"units-of-work-{worker}.json"
        partial = target.with_suffix(".part")
        partial.write_text(json.dumps(units), encoding="utf-8")
        os.replace(partial, target)


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist is pinned (requirements.lock); plain pytest runs without it
    LoadScopeScheduling = None

if LoadScopeScheduling is not None:
    class UnitOfWorkScheduling(LoadScopeScheduling):
        """``--dist loadfile`` by unit of work (``units_of_work``, as the workers computed it from
        the fixtures of each test), units sent in collection order: heaviest first."""

        def __init__(self, config, log=None):
            super().__init__(config, log)
            config.option.loadscopereorder = False
            self._units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._units is None:
                self._units = {}
                base = Path(self.config._tmp_path_factory.getbasetemp())
                for found in sorted(base.glob("units-of-work-*.json")):
                    self._units.update(json.loads(found.read_text(encoding="utf-8")))
            return self._units.get(nodeid) or nodeid.split("::", 1)[0]

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") == "loadfile":
            return UnitOfWorkScheduling(config, log)
        return None
