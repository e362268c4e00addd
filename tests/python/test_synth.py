"""Tests of the deterministic synthetic data generator (tiny scale only; fast)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from keytech import paths
from keytech.ipc import Concordance, normalise_ipc_list
from keytech.synth import SCALES, TABLES, build_world, generate
from keytech.synth.endogeneity import SEED_INDEPENDENT_FILES

CONTRACT = yaml.safe_load((Path(paths.__file__).parent / "contract.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_tiny_1")
    truth = generate("tiny", 1, out, progress=False)
    return out, truth


@pytest.fixture(scope="module")
def concordance() -> Concordance:
    s = paths.seeds_dir()
    return Concordance.from_csv(s / "sei_ipc_concordance.csv", s / "ipc_revision_supplement.csv")


def _sha(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _read(out: Path, truth: dict, table: str) -> pd.DataFrame:
    info = truth["files"][table]
    path = out / info["file"]
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    skip = list(range(1, 1 + info["description_rows"]))
    return pd.read_csv(path, encoding=info["encoding"], dtype=str, keep_default_na=False, skiprows=skip)


def _contract_names(table: str) -> list[str]:
    return [c["name"] for c in CONTRACT["tables"][table]["columns"]]


def test_deterministic_same_seed_identical_files(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    generate("tiny", 1, again, progress=False)
    assert _sha(out) == _sha(again)
    assert set(_sha(out)) == {f"{t}.csv" for t in TABLES} | {"_truth.json"}


def test_different_seed_different_files(tiny, tmp_path):
    out, _ = tiny
    other = tmp_path / "other"
    generate("tiny", 2, other, progress=False)
    a, b = _sha(out), _sha(other)
    for name in a:
        if name in SEED_INDEPENDENT_FILES:  # real published data (CNNIC), same for every seed
            assert a[name] == b[name], name
            continue
        assert a[name] != b[name], name


def test_scales_defined():
    assert set(SCALES) == {"tiny", "small", "paper", "xl"}
    assert SCALES["paper"].patents_format == "parquet"
    assert SCALES["xl"].patents_format == "parquet" and SCALES["xl"].n_firms == 5300
    assert all(SCALES[s].patent_volume == 1.0 for s in ("tiny", "small", "paper"))
    assert SCALES["tiny"].patents_format == "csv"
    with pytest.raises(ValueError):
        generate("huge", 1, "/nonexistent", progress=False)


def test_truth_row_counts_match_files(tiny):
    out, truth = tiny
    for table in TABLES:
        df = _read(out, truth, table)
        assert len(df) == truth["rows"][table], table
        assert truth["files"][table]["rows"] == truth["rows"][table]


def test_columns_are_contract_names_or_aliases(tiny):
    out, truth = tiny
    for table in TABLES:
        df = _read(out, truth, table)
        if table == "city_yearbook":
            cols = CONTRACT["tables"][table]["columns"]
            assert list(df.columns) == [c["aliases"][0] for c in cols]
        else:
            assert list(df.columns) == _contract_names(table), table


def test_truth_keys(tiny):
    _, truth = tiny
    for key in ("seed", "scale", "rates", "pilot", "rows", "patents", "key_inventions_by_year",
                "nonkey_inventions_by_year", "mechanisms", "analysis_sample"):
        assert key in truth
    assert truth["mechanisms"]["key_effect"]["mean_scale_treated_2010_2019"] is not None  # keytech.synth.mechanisms
    assert truth["rates"]["beta_key"] > 0 and truth["rates"]["beta_nonkey"] == 0
    p = truth["patents"]
    for key in ("exact_duplicate_rows", "junk_ipc_rows", "unmatched_firm_rows", "out_of_window_rows"):
        assert p[key] > 0, key
    assert set(truth["key_inventions_by_year"]) == {str(y) for y in range(2008, 2023)}


def test_pilot_waves_and_timing(tiny):
    out, truth = tiny
    pilot = _read(out, truth, "pilot_list")
    seeds = pd.read_csv(paths.seeds_dir() / "pilot_waves.csv", dtype=str)
    cities = set(pd.read_csv(paths.seeds_dir() / "cn_prefecture_cities.csv", dtype=str)["city_name"])

    def canon(name: str) -> str:
        return name if name in cities else name + "市"

    seen: set[str] = set()
    waves = {w["wave"]: w for w in truth["pilot"]["waves"]}
    assert sorted(waves) == [2015, 2016, 2017, 2018]
    for _, s in seeds.iterrows():
        wave = int(s["wave"])
        rows = pilot[pilot["Wave"] == str(wave)]
        assert set(rows["AnnounceDate"]) == {s["announcement_date"]}
        assert waves[wave]["announce_date"] == s["announcement_date"]
        assert len(rows) == waves[wave]["units"]
        wave_cities = {canon(c) for c in rows["City"]}
        assert all(c in cities for c in wave_cities)
        new = wave_cities - seen
        assert len(new) == waves[wave]["new_cities"] >= 2
        seen |= wave_cities
        cat = set(rows["Category"])
        assert len(cat & ({"离散型智能制造", "流程型智能制造", "网络协同制造", "大规模个性化定制", "远程运维服务"}
                          if wave > 2015 else {"流程制造试点示范", "离散制造试点示范", "智能装备和产品试点示范",
                                               "智能制造新业态新模式试点示范", "智能化管理试点示范", "智能服务试点示范"})) == len(cat)
    assert len(seen) == truth["pilot"]["n_pilot_cities"]
    assert truth["pilot"]["never_treated_cities"] > 0
    for c in truth["pilot"]["cities"]:
        assert c["first_treated_year"] == c["first_wave"] + 1
    # listed units: stock codes are firms of firm_info and are the recorded pilot firms
    firm_info = _read(out, truth, "firm_info")
    stk = sorted(set(pilot.loc[pilot["Stkcd"] != "", "Stkcd"]))
    assert stk == truth["pilot"]["pilot_firm_stkcds"]
    assert len(stk) >= 2 and set(stk) <= set(firm_info["Stkcd"])
    assert pilot.duplicated(["Wave", "ProjectName", "UnitName"]).sum() == 0


def test_policy_timing_rule_in_world():
    w = build_world("tiny", 1)
    fy, cities = w.fy, w.cities
    first = cities["first_wave"].to_numpy()[fy["city"].to_numpy()]
    expected = ((first > 0) & (fy["year"].to_numpy() > first)).astype(int)
    assert (fy["policy"].to_numpy() == expected).all()
    # announcement year itself is untreated
    assert ((fy["year"].to_numpy() == first) & (fy["policy"].to_numpy() == 1)).sum() == 0


def test_planted_key_status_matches_matcher(concordance):
    w = build_world("tiny", 1)
    df = w.patents
    kind = w.patents_kind
    inv = np.flatnonzero(kind <= 1)
    junk = 0
    for i in inv:
        tokens = normalise_ipc_list(df.at[i, "IPC"])
        codes = [t.code for t in tokens if t.code is not None]
        if not codes:
            junk += 1
            assert kind[i] == 1, df.at[i, "IPC"]
            continue
        is_key = any(concordance.match(c).is_key_tech for c in codes)
        assert is_key == (kind[i] == 0), (df.at[i, "IPC"], kind[i])
    assert junk >= 5
    designs = df["PatentType"].to_numpy() == "外观设计"
    assert (df.loc[designs, "IPC"] == "").all()


def test_key_counts_by_year_from_files(tiny, concordance):
    out, truth = tiny
    pat = _read(out, truth, "patents").drop_duplicates()
    firms = set(_read(out, truth, "firm_info")["Stkcd"])
    pat = pat[pat["Scode"].isin(firms) & (pat["PatentType"] == "发明")]
    year = pat["ApplyDate"].str[:4].astype(int)
    pat = pat[(year >= 2008) & (year <= 2022)]
    cache: dict[str, bool] = {}

    def key(ipc: str) -> bool:
        if ipc not in cache:
            cache[ipc] = any(concordance.match(t.code).is_key_tech for t in normalise_ipc_list(ipc) if t.code)
        return cache[ipc]

    is_key = pat["IPC"].map(key)
    y = pat["ApplyDate"].str[:4]
    got_key = y[is_key].value_counts().sort_index().to_dict()
    got_nonkey = y[~is_key].value_counts().sort_index().to_dict()
    assert got_key == truth["key_inventions_by_year"]
    assert got_nonkey == truth["nonkey_inventions_by_year"]


def test_mess_present(tiny):
    out, truth = tiny
    # GBK yearbook with Chinese headers and a unit row
    raw = (out / "city_yearbook.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    lines = raw.decode("gbk").splitlines()
    assert lines[0].startswith("城市,年份,人均地区生产总值(元)")
    assert lines[1].startswith("单位")
    yb = _read(out, truth, "city_yearbook")
    assert (yb == "").to_numpy().sum() > 0
    names = set(yb["城市"])
    assert any(n.endswith("市") for n in names) and any(not n.endswith("市") for n in names)
    assert names & {"襄樊市", "襄樊", "毕节地区"}
    # CSMAR description rows, BOM
    for table in ("firm_info", "balance_sheet", "income_statement", "cash_flow"):
        text = (out / f"{table}.csv").read_text(encoding="utf-8-sig").splitlines()
        assert text[1].startswith("证券代码,")
        assert text[2].startswith("没有单位,")
    assert (out / "firm_info.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert not (out / "cash_flow.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    # firm_info mess
    fi = _read(out, truth, "firm_info")
    assert {"ST", "*ST"} <= set(fi["Stflg"])
    assert (fi["Statco"] == "终止上市").sum() == len(truth["firms"]["delisted_stkcds"]) > 0
    assert (fi.loc[fi["Statco"] == "终止上市", "Delistdt"] != "").all()
    assert fi["Nnindcd"].str.startswith("J").any()
    assert (fi["Ctnm"] == "未知市").sum() == truth["firms"]["unknown_city_rows"] >= 3
    assert fi["Ctnm"].isin(["襄樊市", "襄樊"]).any()
    assert fi["Provnm"].str.endswith("省").any() and (~fi["Provnm"].str.endswith("省")).any()
    assert (fi["Estbdt"] == "").any() and (fi["Ownership"] == "").any()
    assert (fi["Listdt"].str[:4].astype(int) >= 2015).any()
    assert set(fi["Ownership"]) - {""} <= {"国有企业", "民营企业", "外资企业", "其他"}
    assert len(truth["firms"]["movers"]) >= 2
    assert fi["Stkcd"].str.fullmatch(r"\d{6}").all()
    # financial statements
    bs = _read(out, truth, "balance_sheet")
    assert set(bs["Typrep"]) == {"A", "B"}
    assert (bs["Stkcd"].str.len() < 6).any()
    assert bs["Accper"].str.endswith("-12-31").all()
    for table in ("balance_sheet", "income_statement", "cash_flow"):
        df = _read(out, truth, table)
        assert (df[df["Typrep"] == "A"].iloc[:, 3:] == "").to_numpy().any(), table
    # patents
    pat = _read(out, truth, "patents")
    assert pat.duplicated().sum() == truth["patents"]["exact_duplicate_rows"] >= 5
    assert pat.duplicated(["Scode", "ApplyNo"]).sum() == pat.duplicated().sum()
    ipc = pat["IPC"]
    assert ipc.str.contains(r"[\uFF01-\uFF5E]").any()
    assert ipc.str.contains("；").any()
    assert ipc.str.contains(r"[A-H]\d\d[A-Z] \d").any()
    assert ipc.str.contains(r"\(20\d\d\.\d\d\)").any()
    assert ipc.str.contains(r"[a-h]\d\d[a-z]\d").any()
    assert ipc.isin(["N/A", "待定", "12345", "无", "见说明书", "--", "0"]).sum() == truth["patents"]["junk_ipc_rows"]
    rep = ipc.map(lambda s: len(normalise_ipc_list(s)) < len([x for x in re.split("[;,]", s.replace("；", ";")) if x.strip()]))
    assert rep.sum() >= truth["patents"]["repeated_code_rows"] > 0
    firms = set(fi["Stkcd"])
    dedup = pat.drop_duplicates()
    assert (~dedup["Scode"].isin(firms)).sum() == truth["patents"]["unmatched_firm_rows"]
    assert (dedup["ApplyDate"].str[:4].astype(int) < 2008).sum() == truth["patents"]["out_of_window_rows"]
    assert dedup["Applicants"].str.contains(";").any()
    assert set(pat["PatentType"]) == {"发明", "实用新型", "外观设计"}
    granted = pat[pat["GrantDate"] != ""]
    assert (granted["GrantDate"] <= "2022-12-31").all() and (granted["GrantDate"] > granted["ApplyDate"]).all()
    assert pat["CitedTimes"].str.fullmatch(r"\d+").all()
    assert pat["ApplyNo"].str.fullmatch(r"CN\d{12}\.[\dX]").all()


def test_truth_json_is_written(tiny):
    out, truth = tiny
    assert json.loads((out / "_truth.json").read_text(encoding="utf-8")) == truth


def _synth_imports() -> dict[str, list[tuple[str, str, bool]]]:
    """Per module of keytech.synth: (imported keytech.synth module, imported name, at module level)."""
    pkg = Path(paths.__file__).parent / "synth"
    modules = {p.stem for p in pkg.glob("*.py")}
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for path in sorted(pkg.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges += [(a.name.removeprefix("keytech.synth.") or "__init__", "", id(node) in top)
                          for a in node.names if a.name == "keytech.synth" or a.name.startswith("keytech.synth.")]
            elif isinstance(node, ast.ImportFrom) and node.module and (
                    node.module == "keytech.synth" or node.module.startswith("keytech.synth.")):
                for a in node.names:
                    if node.module == "keytech.synth":  # a submodule, or a name of the package itself
                        target = a.name if a.name in modules else "__init__"
                    else:
                        target = node.module.removeprefix("keytech.synth.")
                    edges.append((target, a.name, id(node) in top))
        out[path.stem] = edges
    return out


def test_synth_package_has_no_import_circle():
    """Module-level imports inside keytech.synth form no circle; only the generator (and the package's
    __init__) import the plug-in worlds; no plug-in reaches back into the generator at run time (the
    former synth_mechanisms imported keytech.synth lazily); no module imports another's private name."""
    imports = _synth_imports()
    assert {"generator", "mechanisms", "endogeneity", "plugin", "world", "patents"} <= set(imports)
    graph = {m: {t for t, _, top in edges if top and t != m} for m, edges in imports.items()}

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return seen + (nxt,)
            if nxt not in seen:
                found = cycle_from(start, nxt, seen + (nxt,))
                if found:
                    return found
        return None

    for module in graph:
        assert cycle_from(module, module, (module,)) is None, cycle_from(module, module, (module,))
    plugins = {"mechanisms", "endogeneity"}
    for module, edges in imports.items():
        targets = {t for t, _, _ in edges}
        if module not in ("generator", "__init__"):
            assert not targets & plugins, f"keytech.synth.{module} imports a plug-in: {targets & plugins}"
        if module in plugins:
            assert not targets & {"generator", "__init__"}, f"plug-in {module} imports the generator"
        private = [f"{t}.{n}" for t, n, _ in edges if n.startswith("_") and n != "__init__"]
        assert not private, f"keytech.synth.{module} imports private names {private}"
    # the plug-ins are the generator's, in the order that keeps the files byte-identical
    from keytech.synth import PLUGINS

    assert [p.name for p in PLUGINS] == ["endogeneity", "mechanisms"]


def test_generator_columns_come_from_the_contract():
    """The generator's headers, CSMAR label/unit rows and yearbook header are the contract's (names,
    first aliases); a frame with a column the contract lacks, or without one it has, is refused."""
    from keytech.synth import columns

    for table, spec in CONTRACT["tables"].items():
        assert columns.names(table) == [c["name"] for c in spec["columns"]]
    assert columns.labels("balance_sheet")[3] == "资产总计"
    assert columns.csmar_units("balance_sheet")[:4] == ["没有单位", "没有单位", "没有单位", "元"]
    assert columns.yearbook_units()[:3] == ["单位", "", "元"]
    assert len(columns.yearbook_units()) == len(columns.names("city_yearbook"))
    full = {c: ["x"] for c in columns.names("national_internet_users")}
    assert list(columns.frame("national_internet_users", full).columns) == ["Year", "InternetUsers"]
    with pytest.raises(ValueError, match="NotInContract"):
        columns.frame("national_internet_users", {**full, "NotInContract": ["x"]})
    with pytest.raises(ValueError, match="InternetUsers"):
        columns.frame("national_internet_users", {"Year": ["x"]})
