"""Deterministic synthetic raw data for KeyTech Panel.

``generate(scale, seed, out_dir)`` writes one raw file per table of the input contract
(``contract.yml``) into ``out_dir`` plus ``_truth.json``, the planted truth: every rate parameter,
the pilot cities and their first treated years, pilot firms, row counts per file, every planted
mess and the true key-tech / non-key invention counts per year.

The files imitate the vendors' exports, with their mess (each planted mess is counted in
``_truth.json``):

* ``city_yearbook.csv`` in GBK with the Chinese yearbook headers and one unit row under the header;
* CSMAR tables (``firm_info``, ``balance_sheet``, ``income_statement``, ``cash_flow``) with two
  description rows under the header (Chinese field names, units), some with a UTF-8 BOM, stock codes
  without leading zeros in the statements, consolidated (A) and parent (B) statements;
* ``patents`` (CNRDS style) with messy IPC strings (spaces, full-width characters, lower case,
  edition suffixes, repeated codes), exact duplicate rows, junk IPC strings, unmatched firms and
  applications outside 2008-2022; Parquet at paper scale;
* ``pilot_list`` with one row per pilot unit.

Determinism: all randomness comes from ``numpy.random.default_rng([seed, stage])``; CSV numbers are
pre-formatted as text; Parquet is written by pyarrow without pandas metadata. Same seed, same
library versions → byte-identical files.

The key-tech status of every planted invention is decided by ``keytech.ipc.Concordance``
(hierarchical mode, supplement on) and verified over the pool of codes used before formatting.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from keytech import paths, synth_endogeneity, synth_mechanisms
from keytech.ipc import Concordance, normalise_ipc_code

FIRST_YEAR = 2008
LAST_YEAR = 2022
YEARS = np.arange(FIRST_YEAR, LAST_YEAR + 1)
EXTRACTION_DATE = "2022-12-31"
GENERATOR_VERSION = 1
SHARE_REGISTERED_ELSEWHERE = 0.08  # firms whose office city differs from the registered city

# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleConfig:
    """Size of a synthetic world. Pilot counts are the paper's (``seeds/pilot_waves.csv``) times
    ``pilot_factor`` (at least 2 new cities per wave)."""

    name: str
    n_firms: int
    n_cities: int
    pilot_factor: float
    patents_format: str  # "csv" or "parquet"
    # shares of firms listed before 2008, 2008-2014, 2015-2021
    listing_shares: tuple[float, float, float] = (0.43, 0.29, 0.28)
    share_delisted: float = 0.04
    share_financial: float = 0.03
    share_movers: float = 0.03
    share_st_firms: float = 0.07
    share_listed_units: float = 0.12  # pilot units that are listed firms or their subsidiaries


SCALES: dict[str, ScaleConfig] = {
    "tiny": ScaleConfig("tiny", n_firms=80, n_cities=40, pilot_factor=40 / 300, patents_format="csv"),
    "small": ScaleConfig("small", n_firms=500, n_cities=120, pilot_factor=0.4, patents_format="csv"),
    "paper": ScaleConfig("paper", n_firms=3500, n_cities=300, pilot_factor=1.0, patents_format="parquet"),
}


@dataclass(frozen=True)
class Rates:
    """Planted data-generating parameters (all recorded in ``_truth.json``)."""

    beta_key: float = 0.25  # multiplicative effect exp(beta_key) on key-tech invention rate
    beta_nonkey: float = 0.0  # effect on non-key invention rate
    beta_utility: float = 0.0
    beta_design: float = 0.0
    beta_pilot_firm: float = 0.5  # pilot firms' own key-tech effect after announcement (dropped)
    key_log_mean: float = 0.05  # mu of a_i (log rate of key inventions in 2008, median firm)
    firm_sigma: float = 1.15  # sd of firm effect a_i
    city_size_loading: float = 0.15  # a_i += loading * city size (selection on levels)
    nonmanufacturing_shift: float = -1.0
    share_non_innovators: float = 0.12
    non_innovator_shift: float = -3.0
    firm_year_noise_sd: float = 0.25  # iid log-rate noise per firm-year
    nonkey_log_ratio: float = 0.45  # log(non-key / key) at the median
    nonkey_sigma: float = 0.5
    utility_log_ratio: float = 1.55
    utility_sigma: float = 0.6
    design_log_ratio: float = 0.3
    design_sigma: float = 0.9
    year_effects: tuple[float, ...] = (
        0.0, 0.10, 0.22, 0.35, 0.47, 0.57, 0.66, 0.75, 0.84, 0.91, 0.97, 1.01, 1.05, 1.07, 1.06,
    )  # g_t for 2008..2022, common to all outcomes
    p_joint_invention: float = 0.12
    p_joint_utility: float = 0.05
    p_joint_design: float = 0.02
    p_third_applicant: float = 0.2
    p_grant_invention: float = 0.62
    invention_grant_lag_years: tuple[float, float] = (1.0, 6.0)  # 1 + gamma(2, 0.6), clipped
    p_grant_utility: float = 0.95
    p_grant_design: float = 0.97
    citations_per_year_invention: float = 0.35
    citations_per_year_utility: float = 0.12
    # IPC: number of codes on an invention (1..6) and match-level mix of key-tech codes
    n_codes_probs: tuple[float, ...] = (0.32, 0.25, 0.18, 0.12, 0.08, 0.05)
    key_level_probs: dict = field(
        default_factory=lambda: {
            "exact": 0.62, "main_group": 0.15, "subclass": 0.08, "class": 0.07, "supplement": 0.08,
        }
    )
    nonkey_level_probs: dict = field(default_factory=lambda: {"no_rows": 0.75, "excluded": 0.25})
    p_home_bucket: float = 0.7
    p_key_secondary_code: float = 0.5  # secondary codes of key patents drawn from the key pool
    # Planted missingness (issue 11): the paper's Table 3 loses 1.7% of its rows from column 2 to 3
    # (firm controls) and 4.8% from 3 to 4 (city controls). Firm controls: consolidated-statement
    # values (1% of firm-years, one of five items, four of which feed a control) plus an empty
    # Ownership (ifdome) in this share of firm-years; city controls: one of the five yearbook
    # series behind them empty in this share of city-years; with the 0.4% noise in all seven
    # series about 5% of city-years lack a city control.
    p_missing_ownership: float = 0.009
    p_missing_city_control: float = 0.038


# ----------------------------------------------------------------------------------------------
# Fixed vocabularies
# ----------------------------------------------------------------------------------------------

_SYLLABLES = list(
    "华宇科兴达瑞恒泰通明信德新联海天中金东方创安盛长鑫源隆远光博威鼎润富嘉康宏正和凯星晶耀力立诚永佳元汇昌启航锦峰荣亚特"
)
_IND_WORDS = [
    "科技", "电子", "股份", "机械", "药业", "电气", "材料", "化工", "智能", "精密",
    "重工", "汽车", "光电", "能源", "环保", "生物", "信息", "软件", "通信", "装备",
]
_UNIVERSITIES = [
    "清华大学", "北京大学", "浙江大学", "上海交通大学", "华中科技大学", "西安交通大学", "哈尔滨工业大学",
    "东南大学", "同济大学", "天津大学", "华南理工大学", "中南大学", "四川大学", "电子科技大学",
    "北京航空航天大学", "南京大学", "武汉大学", "大连理工大学", "山东大学", "吉林大学", "重庆大学",
    "中国科学院自动化研究所", "中国科学院化学研究所", "国家电网公司", "中国电力科学研究院",
]
_OWNERSHIP = (["国有企业", "民营企业", "外资企业", "其他"], [0.30, 0.55, 0.05, 0.10])
_CATEGORIES_2015 = [
    "流程制造试点示范", "离散制造试点示范", "智能装备和产品试点示范", "智能制造新业态新模式试点示范",
    "智能化管理试点示范", "智能服务试点示范",
]
_MODES_2016 = ["离散型智能制造", "流程型智能制造", "网络协同制造", "大规模个性化定制", "远程运维服务"]
_PRODUCTS = [
    "汽车零部件", "高端数控机床", "工程机械", "家用电器", "光伏组件", "锂离子电池", "纺织服装", "中成药",
    "钢铁", "石油化工", "轨道交通装备", "船舶", "航空零部件", "电子元器件", "家具", "乳制品", "卫浴",
    "风电装备", "输变电装备", "农业机械", "集成电路", "新型显示", "稀土材料", "水泥", "造纸",
]
_PROJECT_SUFFIX = {
    "流程制造试点示范": "智能工厂试点示范", "离散制造试点示范": "数字化车间试点示范",
    "智能装备和产品试点示范": "智能装备试点示范", "智能制造新业态新模式试点示范": "新模式试点示范",
    "智能化管理试点示范": "智能化管理试点示范", "智能服务试点示范": "智能服务试点示范",
    "离散型智能制造": "离散型智能制造试点示范", "流程型智能制造": "流程型智能制造试点示范",
    "网络协同制造": "网络协同制造试点示范", "大规模个性化定制": "大规模个性化定制试点示范",
    "远程运维服务": "远程运维服务试点示范",
}
_JUNK_IPC = ["N/A", "待定", "12345", "无", "见说明书", "--", "0"]
_UNMATCHED_SCODES = ["430047", "831010", "900957", "200011", "839999", "400002"]
_BIG_CITIES = ["北京市", "上海市", "深圳市", "广州市", "杭州市", "苏州市", "南京市", "成都市", "武汉市"]
_FORCED_CITIES = ["北京市", "上海市", "深圳市", "广州市", "杭州市", "襄阳市", "毕节市"]
# (city, old printed names, last year the old name is printed)
_OLD_NAMES = {"襄阳市": (("襄樊市", "襄樊"), 2009), "毕节市": (("毕节地区",), 2010)}

# Real IPC subclasses of everyday mechanical/consumer technology; those with any concordance row are
# filtered out at run time (the matcher decides).
_NONKEY_SUBCLASSES = [
    "A21B", "A23G", "A41B", "A41D", "A42B", "A43B", "A44B", "A45C", "A45D", "A46B", "A47B", "A47C",
    "A47F", "A47G", "A47J", "A47K", "A47L", "A63B", "A63H", "B05C", "B08B", "B25B", "B25H", "B26B",
    "B26D", "B27M", "B31B", "B41F", "B42D", "B43K", "B44C", "B60N", "B62B", "B62J", "B65D", "B65F",
    "D03D", "D04B", "D05B", "D06F", "E01C", "E01D", "E03C", "E03D", "E04F", "E05B", "E05D", "E06B",
    "F16B", "F16K", "F16M", "F24C", "F26B", "G07D", "G09D", "G10K",
]
_SUPPLEMENT_CODES = [
    "H01L21/02", "H01L21/027", "H01L21/28", "H01L21/30", "H01L21/56", "H01L21/66", "H01L21/67",
    "H01L21/677", "H01L21/683", "H01L23/00", "H01L23/31", "H01L23/367", "H01L23/48", "H01L23/488",
    "H01L23/544", "H01L25/00", "H01L25/075", "H01L25/16", "H01L27/02", "H01L27/12", "H01L27/146",
    "H01L27/15", "H01L27/32", "H01L29/06", "H01L29/417", "H01L29/66", "H01L29/739", "H01L29/78",
    "H01L29/786", "H01L31/0216", "H01L31/02", "H01L31/18", "H01L33/00", "H01L33/48", "H01L33/50",
    "H01L33/62", "H01L35/32", "H01L43/08", "H01L51/50", "H01L51/52", "H01L51/56",
]
_SUBCLASS_CODES = [  # G16H (pure subclass rule): codes absent from the table
    "G16H10/20", "G16H10/40", "G16H10/60", "G16H10/65", "G16H20/10", "G16H20/13", "G16H20/17",
    "G16H20/30", "G16H20/40", "G16H20/60", "G16H20/70", "G16H30/20", "G16H30/40", "G16H40/20",
    "G16H40/40", "G16H40/60", "G16H40/63", "G16H40/67", "G16H50/20", "G16H50/30", "G16H50/50",
    "G16H50/70", "G16H70/20", "G16H70/60", "G16H80/00",
]
_CLASS_CODES = [  # C08C and G16Z have no rows; their classes C08 and G16 are listed
    "C08C1/02", "C08C1/04", "C08C1/14", "C08C2/02", "C08C2/04", "C08C2/06", "C08C3/00", "C08C4/00",
    "C08C19/00", "C08C19/02", "C08C19/20", "C08C19/22", "C08C19/25", "C08C19/28", "C08C19/30",
    "C08C19/36", "C08C19/44", "G16Z99/00",
]
_EDITIONS = ["(2006.01)", "(2013.01)", "(2020.01)", "(2012.01)"]
_STYLES = ("canonical", "spaced", "edition", "lower", "fullwidth", "zero_padded")
_STYLE_PROBS = (0.55, 0.22, 0.08, 0.04, 0.05, 0.06)
_SEPARATORS = (";", "; ", "；", " ; ")
_SEP_PROBS = (0.70, 0.15, 0.10, 0.05)

_FULLWIDTH = str.maketrans({chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)})

# CSMAR description rows (row 1: Chinese field names, row 2: units)
_CSMAR_DESC = {
    "firm_info": (
        ["证券代码", "统计截止日期", "证券简称", "行业代码", "所属省份", "所属城市", "成立日期", "上市日期",
         "上市状态", "退市日期", "ST标识", "股权性质", "办公地所在城市"],
        ["没有单位"] * 13,
    ),
    "balance_sheet": (
        ["证券代码", "会计期间", "报表类型", "资产总计", "负债合计", "存货净额", "固定资产净额", "长期借款"],
        ["没有单位", "没有单位", "没有单位", "元", "元", "元", "元", "元"],
    ),
    "income_statement": (
        ["证券代码", "会计期间", "报表类型", "营业收入", "营业总收入", "净利润"],
        ["没有单位", "没有单位", "没有单位", "元", "元", "元"],
    ),
    "cash_flow": (
        ["证券代码", "会计期间", "报表类型", "经营活动产生的现金流量净额", "购建固定资产、无形资产和其他长期资产支付的现金",
         "分配股利、利润或偿付利息支付的现金", "现金分红总额"],
        ["没有单位", "没有单位", "没有单位", "元", "元", "元", "元"],
    ),
}
_COLUMNS = {
    "firm_info": ["Stkcd", "Accper", "Stknme", "Nnindcd", "Provnm", "Ctnm", "Estbdt", "Listdt", "Statco",
                  "Delistdt", "Stflg", "Ownership", "OfficeCity"],
    "balance_sheet": ["Stkcd", "Accper", "Typrep", "A001000000", "A002000000", "A001123000", "A001212000",
                      "A002201000"],
    "income_statement": ["Stkcd", "Accper", "Typrep", "B001101000", "B001100000", "B002000000"],
    "cash_flow": ["Stkcd", "Accper", "Typrep", "C001000000", "C002006000", "C003006000", "CashDividends"],
    "patents": ["Scode", "ApplyNo", "ApplyDate", "PatentType", "IPC", "Applicants", "GrantDate", "CitedTimes"],
    "pilot_list": ["Wave", "AnnounceDate", "ProjectName", "UnitName", "Province", "City", "Category", "Stkcd",
                   "Industry"],
}
_YEARBOOK_HEADER = [
    "城市", "年份", "人均地区生产总值(元)", "年末户籍人口(万人)", "互联网宽带接入用户数(万户)",
    "地方一般公共预算支出(万元)", "当年实际使用外资金额(万美元)", "第二产业从业人员(万人)", "从业人员合计(万人)",
]
_YEARBOOK_UNITS = ["单位", "", "元", "万人", "万户", "万元", "万美元", "万人", "万人"]
_FILE_ENCODING = {
    "firm_info": "utf-8-sig", "balance_sheet": "utf-8-sig", "income_statement": "utf-8",
    "cash_flow": "utf-8", "patents": "utf-8", "pilot_list": "utf-8", "city_yearbook": "gbk",
}
_DESCRIPTION_ROWS = {"firm_info": 2, "balance_sheet": 2, "income_statement": 2, "cash_flow": 2,
                     "city_yearbook": 1, "patents": 0, "pilot_list": 0}
TABLES = ("firm_info", "balance_sheet", "income_statement", "cash_flow", "patents", "city_yearbook",
          "pilot_list") + synth_endogeneity.TABLES + synth_mechanisms.TABLES


def _rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stage])


def _short_city(name: str) -> str:
    return name[:-1] if name.endswith("市") and len(name) > 2 else name


def _short_province(name: str) -> str:
    for suffix in ("维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "省", "市"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _fmt(values: np.ndarray, decimals: int = 2) -> np.ndarray:
    """Format floats as fixed-decimal text; NaN becomes the empty string."""
    values = np.asarray(values, dtype=float)
    out = np.empty(len(values), dtype=object)
    ok = ~np.isnan(values)
    spec = f"{{:.{decimals}f}}"
    out[ok] = [spec.format(v) for v in values[ok]]
    out[~ok] = ""
    return out


def _dates(years: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random day within each year, as datetime64[D]."""
    years = np.asarray(years)
    start = (years - 1970).astype("datetime64[Y]").astype("datetime64[D]")
    length = np.where((years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0)), 366, 365)
    return start + (rng.random(len(years)) * length).astype(int)


def _date_str(d: np.ndarray) -> np.ndarray:
    out = np.datetime_as_string(d, unit="D").astype(object)
    out[np.isnat(d)] = ""
    return out


# ----------------------------------------------------------------------------------------------
# Stage 1: cities and pilot waves
# ----------------------------------------------------------------------------------------------


@dataclass
class World:
    cfg: ScaleConfig
    rates: Rates
    seed: int
    truth: dict = field(default_factory=dict)


def _cities(w: World) -> None:
    rng = _rng(w.seed, 1)
    seeds = pd.read_csv(paths.seeds_dir() / "cn_prefecture_cities.csv", dtype=str, keep_default_na=False)
    names = seeds["city_name"].to_numpy()
    n = min(w.cfg.n_cities, len(seeds))
    forced = np.flatnonzero(np.isin(names, _FORCED_CITIES))
    rest = np.setdiff1d(np.arange(len(seeds)), forced)
    weight = np.where(np.char.endswith(names[rest].astype(str), "市"), 1.0, 0.3)
    pick = rng.choice(rest, n - len(forced), replace=False, p=weight / weight.sum())
    idx = np.sort(np.concatenate([forced, pick]))
    cities = seeds.iloc[idx].reset_index(drop=True)
    size = rng.normal(0, 1, n)
    size[np.isin(cities["city_name"], _BIG_CITIES)] += 2.0
    cities["size"] = size
    # how each source prints the city: with or without 市 (consistent per city and source)
    for source in ("firm", "yearbook", "pilot"):
        strip = rng.random(n) < 0.4
        cities[f"print_{source}"] = [
            _short_city(c) if s else c for c, s in zip(cities["city_name"], strip)
        ]
        pstrip = rng.random(n) < 0.5
        cities[f"prov_{source}"] = [
            _short_province(p) if s else p for p, s in zip(cities["province_name"], pstrip)
        ]

    waves = pd.read_csv(paths.seeds_dir() / "pilot_waves.csv", dtype={"wave": int})
    f = w.cfg.pilot_factor
    wave_rows = []
    for _, r in waves.iterrows():
        new = int(r["new_pilot_cities"]) if f == 1.0 else max(2, int(round(r["new_pilot_cities"] * f)))
        units = int(r["pilot_units"]) if f == 1.0 else max(new + 1, int(round(r["pilot_units"] * f)))
        wave_rows.append({"wave": int(r["wave"]), "announce_date": r["announcement_date"],
                          "units": units, "new_cities": new})
    # pilot cities: bigger cities more likely (selection on levels), order within waves random
    first_wave = np.full(n, 0, dtype=int)
    for wr in wave_rows:
        avail = np.flatnonzero(first_wave == 0)
        p = np.exp(0.9 * cities["size"].to_numpy()[avail])
        chosen = rng.choice(avail, wr["new_cities"], replace=False, p=p / p.sum())
        first_wave[chosen] = wr["wave"]
    cities["first_wave"] = first_wave
    cities["first_treated_year"] = np.where(first_wave > 0, first_wave + 1, 0)
    w.cities = cities
    w.waves = wave_rows


# ----------------------------------------------------------------------------------------------
# Stage 2: firms and firm-years
# ----------------------------------------------------------------------------------------------


def _stock_codes(list_year: np.ndarray, financial: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Realistic board prefixes by listing year; unique codes."""
    n = len(list_year)
    prefix = np.empty(n, dtype=object)
    u = rng.random(n)
    for i in range(n):
        y = list_year[i]
        if financial[i]:
            opts = ["600", "601", "000"]
        elif y < 2004:
            opts = ["000", "600", "600"]
        elif y < 2009:
            opts = ["002", "600", "601"]
        elif y < 2011:
            opts = ["002", "300", "601"]
        elif y < 2015:
            opts = ["002", "300", "603", "601"]
        elif y < 2019:
            opts = ["300", "603", "002"]
        else:
            opts = ["688", "300", "603"]
        prefix[i] = opts[int(u[i] * len(opts))]
    codes = np.empty(n, dtype=object)
    for p in sorted(set(prefix)):
        members = np.flatnonzero(prefix == p)
        if len(members) > 998:
            raise ValueError(f"too many firms for board {p}")
        serial = np.sort(rng.choice(np.arange(1, 999), len(members), replace=False))
        # earlier listing → lower serial
        order = members[np.argsort(list_year[members], kind="stable")]
        for i, s in zip(order, serial):
            codes[i] = f"{p}{s:03d}"
    return codes


def _firms(w: World) -> None:
    rng = _rng(w.seed, 2)
    cfg = w.cfg
    n = cfg.n_firms
    cities = w.cities
    nc = len(cities)
    ind = pd.read_csv(paths.seeds_dir() / "csrc_2012_industries.csv", dtype=str)

    # listing years
    shares = np.array(cfg.listing_shares)
    group = rng.choice(3, n, p=shares / shares.sum())
    early = rng.choice(np.arange(1991, 2008), n, p=_norm(np.linspace(0.4, 1.6, 17)))
    mid = rng.integers(2008, 2015, n)
    late = rng.integers(2015, 2022, n)
    list_year = np.where(group == 0, early, np.where(group == 1, mid, late))
    list_date = _dates(list_year, rng)
    est_year = list_year - rng.integers(2, 20, n)
    est_date = _dates(est_year, rng)

    # industries: mostly C manufacturing, ~3% financial (J)
    codes = ind["industry_code"].to_numpy()
    section = ind["section_code"].to_numpy()
    c_codes = codes[section == "C"]
    c_w = np.ones(len(c_codes))
    for heavy in ("C26", "C27", "C34", "C35", "C38", "C39", "C36", "C30"):
        c_w[c_codes == heavy] = 4.0
    other_codes = codes[(section != "C") & (section != "J")]
    j_codes = np.array(["J66", "J67", "J68", "J69"])
    # exact counts (so that every scale, tiny included, has financial firms)
    perm = rng.permutation(n - 1) + 1  # firm 0 is the 襄阳 firm, manufacturing
    n_fin = max(2, int(round(cfg.share_financial * n)))
    n_manu = int(round(0.70 * n))
    financial = np.zeros(n, bool)
    financial[perm[:n_fin]] = True
    manufacturing = np.zeros(n, bool)
    manufacturing[perm[n_fin:n_fin + n_manu - 1]] = True
    manufacturing[0] = True
    industry = np.where(
        financial,
        rng.choice(j_codes, n, p=[0.4, 0.35, 0.2, 0.05]),
        np.where(manufacturing, rng.choice(c_codes, n, p=_norm(c_w)), rng.choice(other_codes, n)),
    )

    # home city: bigger cities host more firms
    p_city = _norm(np.exp(1.0 * cities["size"].to_numpy()))
    city = rng.choice(nc, n, p=p_city)
    xiangyang = int(np.flatnonzero(cities["city_name"] == "襄阳市")[0])
    city[0] = xiangyang  # one early-listed firm in 襄阳 prints the old name 襄樊 in 2008-2009
    list_year[0] = min(list_year[0], 2005)
    list_date[0] = _dates(np.array([list_year[0]]), rng)[0]

    # delisting
    eligible = np.flatnonzero(list_year <= 2018)
    n_del = max(2, int(round(cfg.share_delisted * n)))
    delisted = np.zeros(n, bool)
    delisted[rng.choice(eligible[eligible != 0], n_del, replace=False)] = True
    delist_year = np.zeros(n, dtype=int)
    for i in np.flatnonzero(delisted):
        delist_year[i] = rng.integers(max(int(list_year[i]) + 2, 2010), 2023)
    delist_date = np.where(delisted, _dates(np.maximum(delist_year, 1970), rng), np.datetime64("NaT"))
    start = np.maximum(list_year, FIRST_YEAR)
    end = np.where(delisted, delist_year, LAST_YEAR)

    stkcd = _stock_codes(list_year, financial, rng)
    # names: unique (two syllables × industry word)
    n_syl = len(_SYLLABLES)
    space = n_syl * (n_syl - 1) * len(_IND_WORDS)
    draw = rng.choice(space, n, replace=False)
    s1 = draw // ((n_syl - 1) * len(_IND_WORDS))
    rem = draw % ((n_syl - 1) * len(_IND_WORDS))
    s2 = rem // len(_IND_WORDS)
    s2 = np.where(s2 >= s1, s2 + 1, s2)
    iw = rem % len(_IND_WORDS)
    core = np.array([_SYLLABLES[a] + _SYLLABLES[b] for a, b in zip(s1, s2)], dtype=object)
    short = np.array([c + _IND_WORDS[k] for c, k in zip(core, iw)], dtype=object)
    cname = cities["city_name"].to_numpy()
    full = np.array([f"{cname[c]}{s.removesuffix('股份')}股份有限公司" for c, s in zip(city, short)],
                    dtype=object)
    subsidiary = np.array([f"{cname[c]}{k}智能装备有限公司" for c, k in zip(city, core)], dtype=object)
    ownership = rng.choice(_OWNERSHIP[0], n, p=_OWNERSHIP[1])

    # firm-years
    n_years = end - start + 1
    fy_firm = np.repeat(np.arange(n), n_years)
    fy_year = np.concatenate([np.arange(s, e + 1) for s, e in zip(start, end)])
    fy_city = city[fy_firm].copy()

    # movers: change city once
    n_mov = max(2, int(round(cfg.share_movers * n)))
    can_move = np.flatnonzero((n_years >= 3) & (np.arange(n) != 0))
    movers = np.sort(rng.choice(can_move, n_mov, replace=False))
    mover_rows = []
    for i in movers:
        year = int(rng.integers(start[i] + 1, end[i] + 1))
        new_city = int(rng.choice(nc, p=p_city))
        while new_city == city[i]:
            new_city = int(rng.choice(nc, p=p_city))
        fy_city[(fy_firm == i) & (fy_year >= year)] = new_city
        mover_rows.append({"stkcd": stkcd[i], "year": year, "from": cname[city[i]], "to": cname[new_city]})

    # ST / *ST spells; delisted firms are *ST in their last two years
    stflg = np.full(len(fy_firm), "", dtype=object)
    n_st = max(2, int(round(cfg.share_st_firms * n)))
    st_firms = rng.choice(np.flatnonzero(~delisted), n_st, replace=False)
    firm_first_row = np.concatenate([[0], np.cumsum(n_years)[:-1]])
    for i in st_firms:
        length = int(rng.integers(1, 4))
        s = int(rng.integers(0, max(1, n_years[i] - length + 1)))
        rows = firm_first_row[i] + np.arange(s, min(s + length, n_years[i]))
        stflg[rows] = "*ST"
        stflg[rows[1:]] = "ST"
    for i in np.flatnonzero(delisted):
        last = firm_first_row[i] + n_years[i] - 1
        stflg[max(firm_first_row[i], last - 1): last + 1] = "*ST"

    w.firms = pd.DataFrame({
        "stkcd": stkcd, "short": short, "full": full, "subsidiary": subsidiary, "core": core,
        "industry": industry, "financial": financial, "manufacturing": manufacturing,
        "city0": city, "list_year": list_year, "list_date": list_date, "est_date": est_date,
        "delisted": delisted, "delist_year": delist_year, "delist_date": delist_date,
        "start": start, "end": end, "ownership": ownership,
    })
    w.fy = pd.DataFrame({"firm": fy_firm, "year": fy_year, "city": fy_city, "stflg": stflg})
    w.movers = mover_rows


def _norm(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    return p / p.sum()


# ----------------------------------------------------------------------------------------------
# Stage 3: pilot list
# ----------------------------------------------------------------------------------------------


def _pilots(w: World) -> None:
    rng = _rng(w.seed, 3)
    cities, firms, fy = w.cities, w.firms, w.fy
    nc = len(cities)
    size = cities["size"].to_numpy()
    first_wave = cities["first_wave"].to_numpy()
    rows = []
    pilot_firm = np.zeros(len(firms), bool)
    pilot_year = np.zeros(len(firms), int)
    syl = np.array(_SYLLABLES)
    for wr in w.waves:
        wave = wr["wave"]
        new = np.flatnonzero(first_wave == wave)
        already = np.flatnonzero((first_wave > 0) & (first_wave <= wave))
        extra = wr["units"] - len(new)
        p = _norm(np.exp(0.8 * size[already]))
        unit_cities = np.concatenate([rng.permutation(new), rng.choice(already, extra, p=p)])
        n_units = len(unit_cities)
        categories = _CATEGORIES_2015 if wave == 2015 else _MODES_2016
        cat = rng.choice(categories, n_units)
        product = rng.choice(_PRODUCTS, n_units)
        # listed units: firms located in the unit's city that year, listed before the announcement
        listed_year = fy[(fy["year"] == wave)]
        n_listed = max(1, int(round(w.cfg.share_listed_units * n_units)))
        stk = np.full(n_units, "", dtype=object)
        unit_names = np.empty(n_units, dtype=object)
        order = rng.permutation(n_units)
        done = 0
        for u_i in order:
            if done >= n_listed:
                break
            c = unit_cities[u_i]
            cand = listed_year.loc[listed_year["city"] == c, "firm"].to_numpy()
            cand = cand[~pilot_firm[cand] & ~firms["financial"].to_numpy()[cand]
                        & (firms["list_year"].to_numpy()[cand] < wave)]
            if len(cand) == 0:
                continue
            f = int(rng.choice(cand))
            pilot_firm[f] = True
            pilot_year[f] = wave
            stk[u_i] = firms.at[f, "stkcd"]
            unit_names[u_i] = firms.at[f, "full"] if rng.random() < 0.5 else firms.at[f, "subsidiary"]
            done += 1
        cname = cities["city_name"].to_numpy()
        for u_i in range(n_units):
            if unit_names[u_i] is None:
                a, b = rng.choice(len(syl), 2, replace=False)
                unit_names[u_i] = f"{cname[unit_cities[u_i]]}{syl[a]}{syl[b]}{rng.choice(_IND_WORDS)}有限公司"
            rows.append({
                "Wave": str(wave), "AnnounceDate": wr["announce_date"],
                "ProjectName": f"{product[u_i]}{_PROJECT_SUFFIX[cat[u_i]]}",
                "UnitName": unit_names[u_i],
                "Province": cities.at[unit_cities[u_i], "prov_pilot"],
                "City": cities.at[unit_cities[u_i], "print_pilot"],
                "Category": cat[u_i], "Stkcd": stk[u_i],
            })
    pilot = pd.DataFrame(rows, columns=_COLUMNS["pilot_list"][:-1])
    # optional Industry (CSRC 2012 division of the unit): the listed firm's for listed units, a
    # manufacturing division for the others (own stream: the draws above are unchanged)
    rng_ind = np.random.default_rng([w.seed, 31])
    industry_of = dict(zip(firms["stkcd"], firms["industry"]))
    manufacturing = np.sort(firms.loc[firms["manufacturing"], "industry"].unique())
    pilot["Industry"] = [industry_of[s] if s else str(rng_ind.choice(manufacturing)) for s in pilot["Stkcd"]]
    # the key (Wave, ProjectName, UnitName) must be unique
    dup = pilot.duplicated(["Wave", "ProjectName", "UnitName"], keep="first")
    pilot.loc[dup, "ProjectName"] = pilot.loc[dup, "ProjectName"] + "（二期）"
    w.pilot_list = pilot
    w.firms["pilot"] = pilot_firm
    w.firms["pilot_year"] = pilot_year


# ----------------------------------------------------------------------------------------------
# Stage 4: firm_info and financial statements
# ----------------------------------------------------------------------------------------------


def _firm_info(w: World) -> None:
    rng = _rng(w.seed, 4)
    firms, fy, cities = w.firms, w.fy, w.cities
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    c = fy["city"].to_numpy()
    nrow = len(fy)
    stflg = fy["stflg"].to_numpy()
    short = firms["short"].to_numpy()[f]
    stknme = np.where(stflg == "", short, stflg + short)
    ctnm = cities["print_firm"].to_numpy()[c].astype(object)
    provnm = cities["prov_firm"].to_numpy()[c].astype(object)
    # old city names in early years
    alias_rows = []
    for new_name, (olds, last) in _OLD_NAMES.items():
        ci = np.flatnonzero(cities["city_name"] == new_name)
        if len(ci) == 0:
            continue
        m = np.flatnonzero((c == ci[0]) & (year <= last))
        for j, r in enumerate(m):
            ctnm[r] = olds[j % len(olds)]
            alias_rows.append({"stkcd": firms.at[f[r], "stkcd"], "year": int(year[r]), "printed": ctnm[r]})
    # a few unknown cities (quarantine)
    n_unknown = max(3, int(round(0.0003 * nrow)))
    unknown = np.sort(rng.choice(np.flatnonzero(f != 0), n_unknown, replace=False))
    ctnm[unknown] = "未知市"
    provnm[unknown[::2]] = ""
    statco = np.full(nrow, "正常上市", dtype=object)
    delist_str = np.full(nrow, "", dtype=object)
    last_row = np.r_[f[1:] != f[:-1], True]
    dl = firms["delisted"].to_numpy()[f]
    statco[last_row & dl] = "终止上市"
    delist_str[last_row & dl] = _date_str(firms["delist_date"].to_numpy()[f][last_row & dl])
    pre_last = np.r_[last_row[1:], False] & dl & (stflg == "*ST")
    statco[pre_last & (rng.random(nrow) < 0.5)] = "暂停上市"
    est = _date_str(firms["est_date"].to_numpy()[f])
    own = firms["ownership"].to_numpy()[f].astype(object)
    n_miss = max(3, int(round(0.004 * nrow)))
    n_miss_own = max(3, int(round(w.rates.p_missing_ownership * nrow)))
    miss_est = rng.choice(nrow, n_miss, replace=False)
    miss_own = rng.choice(nrow, n_miss_own, replace=False)
    est[miss_est] = ""
    own[miss_own] = ""
    # optional OfficeCity (robust_registration_place): the registered city's standard name, except
    # for a share of firms that operate in another city in every year (own stream: draws above
    # are unchanged)
    rng_office = np.random.default_rng([w.seed, 41])
    elsewhere = rng_office.random(len(firms)) < SHARE_REGISTERED_ELSEWHERE
    other_city = (firms["city0"].to_numpy() + rng_office.integers(1, len(cities), len(firms))) % len(cities)
    office = np.where(elsewhere[f], cities["city_name"].to_numpy()[other_city[f]],
                      cities["city_name"].to_numpy()[c]).astype(object)
    w.registered_elsewhere = sorted(firms.loc[elsewhere, "stkcd"].tolist())
    w.firm_info = pd.DataFrame({
        "Stkcd": firms["stkcd"].to_numpy()[f], "Accper": [f"{y}-12-31" for y in year],
        "Stknme": stknme, "Nnindcd": firms["industry"].to_numpy()[f], "Provnm": provnm, "Ctnm": ctnm,
        "Estbdt": est, "Listdt": _date_str(firms["list_date"].to_numpy()[f]), "Statco": statco,
        "Delistdt": delist_str, "Stflg": stflg, "Ownership": own,
        "OfficeCity": office,
    })
    fy["unknown_city"] = False
    fy.loc[unknown, "unknown_city"] = True
    fy["missing_info"] = False
    fy.loc[np.union1d(miss_est, miss_own), "missing_info"] = True
    # ifdome is the row's own Ownership; lnage uses the firm's latest printed Estbdt (dim_firms),
    # so only an empty Ownership makes a firm control missing in that year
    fy["missing_ownership"] = False
    fy.loc[miss_own, "missing_ownership"] = True
    w.alias_rows = alias_rows
    w.info_mess = {"unknown_city_rows": int(n_unknown), "missing_estbdt_rows": int(n_miss),
                   "missing_ownership_rows": int(n_miss_own), "old_city_name_rows": len(alias_rows)}


def _financials(w: World) -> None:
    rng = _rng(w.seed, 5)
    firms, fy = w.firms, w.fy
    n = len(firms)
    f = fy["firm"].to_numpy()
    t = fy["year"].to_numpy() - FIRST_YEAR
    nrow = len(fy)
    a0 = np.exp(rng.normal(math.log(1.8e9), 1.1, n))  # ~3e9 mid-panel
    growth = rng.normal(0.08, 0.05, n)
    assets = a0[f] * np.exp(growth[f] * t + rng.normal(0, 0.08, nrow))
    lev = np.clip(rng.beta(4, 5, n)[f] * 0.8 + 0.1 + rng.normal(0, 0.03, nrow), 0.05, 0.95)
    turnover = np.clip(rng.uniform(0.3, 1.2, n)[f] * np.exp(rng.normal(0, 0.1, nrow)), 0.05, 3)
    revenue = assets * turnover
    margin = rng.normal(0.06, 0.03, n)[f] + rng.normal(0, 0.04, nrow)
    profit = revenue * margin
    inv_share = rng.uniform(0.05, 0.25, n)[f] * np.exp(rng.normal(0, 0.15, nrow))
    inventory = assets * inv_share
    fixed = assets * np.clip(rng.uniform(0.08, 0.4, n)[f] + rng.normal(0, 0.02, nrow), 0.01, 0.8)
    ltdebt = assets * np.where(rng.random(n)[f] < 0.25, 0.0, rng.uniform(0.0, 0.15, n)[f])
    total_rev = revenue * np.where(rng.random(nrow) < 0.8, 1.0, 1 + rng.uniform(0, 0.03, nrow))
    ocf = revenue * (margin + rng.normal(0.04, 0.06, nrow))
    capex = assets * np.clip(rng.normal(0.05, 0.02, nrow), 0.002, None)
    # C003006000 = interest paid + cash dividends; CashDividends = the dividend part alone (zero in
    # loss years), so WW's dividend dummy (cash dividends > 0) varies while C003006000 > 0 always
    cash_dividends = np.maximum(profit, 0) * rng.uniform(0, 0.4, nrow)
    dividends = np.maximum(0, assets * lev * 0.03 + cash_dividends)
    fin = {
        "A001000000": assets, "A002000000": assets * lev, "A001123000": inventory, "A001212000": fixed,
        "A002201000": ltdebt, "B001101000": revenue, "B001100000": total_rev, "B002000000": profit,
        "C001000000": ocf, "C002006000": capex, "C003006000": dividends, "CashDividends": cash_dividends,
    }
    # missing values in consolidated statements for a few firm-years
    n_miss = max(3, int(round(0.01 * nrow)))
    miss_rows = np.sort(rng.choice(nrow, n_miss, replace=False))
    miss_cols = rng.choice(["A001000000", "A002000000", "B001101000", "B002000000", "C001000000"], n_miss)
    cons = {k: v.copy() for k, v in fin.items()}
    for r, col in zip(miss_rows, miss_cols):
        cons[col][r] = np.nan
    parent_factor = rng.uniform(0.3, 0.9, n)[f]
    stk = firms["stkcd"].to_numpy()
    accper = np.array([f"{y}-12-31" for y in fy["year"].to_numpy()], dtype=object)
    w.statements = {}
    w.stripped_codes = {}
    for table in ("balance_sheet", "income_statement", "cash_flow"):
        cols = _COLUMNS[table][3:]
        # stock codes without leading zeros for some firms (per file)
        strip_firm = (rng.random(n) < 0.3) & np.array([s.startswith("0") for s in stk])
        code = np.where(strip_firm, [str(int(s)) for s in stk], stk)[f]
        a = {"Stkcd": code, "Accper": accper, "Typrep": np.full(nrow, "A", dtype=object)}
        b = {"Stkcd": code, "Accper": accper, "Typrep": np.full(nrow, "B", dtype=object)}
        for col in cols:
            a[col] = _fmt(cons[col])
            pb = fin[col] * parent_factor
            if col != "A001000000":
                pb = np.where(rng.random(nrow) < 0.02, np.nan, pb)
            b[col] = _fmt(pb)
        da, db = pd.DataFrame(a), pd.DataFrame(b)
        # interleave A and B rows per firm-year (CSMAR order)
        df = pd.concat([da, db], ignore_index=True)
        order = np.argsort(np.r_[np.arange(nrow) * 2, np.arange(nrow) * 2 + 1], kind="stable")
        w.statements[table] = df.iloc[order].reset_index(drop=True)
        w.stripped_codes[table] = int(2 * strip_firm[f].sum())
    fy["missing_fin"] = False
    fy.loc[miss_rows, "missing_fin"] = True
    # which firm controls the empty item removes: assets -> roa, ki, size, kd; liabilities -> kd;
    # revenue -> ki (and sale); profit -> roa; operating cash flow -> none
    fy["missing_firm_control"] = fy["missing_ownership"].to_numpy().copy()
    fy.loc[miss_rows[miss_cols != "C001000000"], "missing_firm_control"] = True
    fy["missing_assets"] = False
    fy.loc[miss_rows[miss_cols == "A001000000"], "missing_assets"] = True
    w.fin_missing = {"firm_years_with_missing_consolidated_values": int(n_miss)}


# ----------------------------------------------------------------------------------------------
# Stage 5: city yearbook
# ----------------------------------------------------------------------------------------------


def _yearbook(w: World) -> None:
    rng = _rng(w.seed, 6)
    cities = w.cities
    nc = len(cities)
    size = cities["size"].to_numpy()
    ny = len(YEARS)
    t = np.arange(ny)
    # common growth path (no city-specific trend tied to treatment)
    growth = np.cumsum(np.r_[0, np.linspace(0.10, 0.05, ny - 1)])
    gdppc0 = np.clip(np.exp(10.45 + 0.35 * size + rng.normal(0, 0.25, nc)), 12_000, 85_000)
    gdppc = gdppc0[:, None] * np.exp(growth[None, :] + rng.normal(0, 0.03, (nc, ny)))
    pop0 = np.clip(np.exp(5.8 + 0.55 * size + rng.normal(0, 0.3, nc)), 100, 3000)
    pop = pop0[:, None] * np.exp(0.004 * t[None, :] + rng.normal(0, 0.005, (nc, ny)))
    pen = (0.06 + 0.022 * t)[None, :] * np.exp(0.15 * size + rng.normal(0, 0.1, nc))[:, None]
    internet = pop * np.clip(pen, 0.01, 0.45)
    budget = gdppc * pop * np.clip(rng.normal(0.12, 0.03, nc), 0.05, 0.3)[:, None]
    fdi = np.exp(9.0 + 0.9 * size + rng.normal(0, 0.7, nc))[:, None] * np.exp(
        rng.normal(0.03, 0.08, (nc, ny)).cumsum(axis=1))
    fdi[rng.random(nc) < 0.05, :] = 0.0  # some cities report no FDI
    ind_emp = pop * np.clip(rng.normal(0.05, 0.02, nc), 0.01, 0.2)[:, None] * np.exp(rng.normal(0, 0.03, (nc, ny)))
    tot_emp = ind_emp * np.clip(rng.normal(2.4, 0.4, nc), 1.5, 4)[:, None]
    names = np.repeat(cities["print_yearbook"].to_numpy().astype(object), ny)
    years = np.tile(YEARS, nc)
    city_idx = np.repeat(np.arange(nc), ny)
    cname = cities["city_name"].to_numpy()
    old_rows = 0
    for new_name, (olds, last) in _OLD_NAMES.items():
        m = (cname[city_idx] == new_name) & (years <= last)
        names[m] = olds[0]
        old_rows += int(m.sum())
    values = {
        "GdpPerCapita": (gdppc.ravel(), 0), "Population": (pop.ravel(), 2),
        "InternetUsers": (internet.ravel(), 2), "BudgetExpenditure": (budget.ravel(), 0),
        "FdiUsed": (fdi.ravel(), 0), "IndustrialEmployment": (ind_emp.ravel(), 2),
        "TotalEmployment": (tot_emp.ravel(), 2),
    }
    n = nc * ny
    n_miss = max(4, int(round(0.004 * n * len(values))))
    cell_r = rng.integers(0, n, n_miss)
    cell_c = rng.integers(0, len(values), n_miss)
    # planted city-control missingness: one of the five series behind Meangdp, Infor, Finsgov, FDI
    n_ctrl = int(round(w.rates.p_missing_city_control * n))
    ctrl_r = rng.choice(n, n_ctrl, replace=False)
    ctrl_c = rng.integers(0, 5, n_ctrl)  # GdpPerCapita, Population, InternetUsers, Budget, Fdi
    cell_r = np.r_[cell_r, ctrl_r]
    cell_c = np.r_[cell_c, ctrl_c]
    raw = {k: v.copy() for k, (v, _) in values.items()}
    keys = list(values)
    for r, cidx in zip(cell_r, cell_c):
        raw[keys[cidx]][r] = np.nan
    out = {"城市": names, "年份": years.astype(str).astype(object)}
    for hdr, k in zip(_YEARBOOK_HEADER[2:], keys):
        out[hdr] = _fmt(raw[k], values[k][1])
    w.yearbook = pd.DataFrame(out)
    w.yearbook_true = pd.DataFrame({"city": city_idx, "year": years, **{k: v for k, (v, _) in values.items()}})
    missing_ctrl = np.zeros(n, bool)
    for r, cidx in zip(cell_r, cell_c):
        if keys[cidx] in ("GdpPerCapita", "Population", "InternetUsers", "BudgetExpenditure", "FdiUsed"):
            missing_ctrl[r] = True
    w.yearbook_missing_ctrl = missing_ctrl.reshape(nc, ny)
    w.yearbook_mess = {"missing_cells": int(len(set(zip(cell_r.tolist(), cell_c.tolist())))),
                       "old_city_name_rows": old_rows}


# ----------------------------------------------------------------------------------------------
# Stage 6: patents
# ----------------------------------------------------------------------------------------------


@dataclass
class CodePool:
    codes: np.ndarray  # object array of canonical codes
    level: np.ndarray  # intended match level per code ('exact' ... or 'no_rows'/'excluded')
    b_start: np.ndarray
    b_count: np.ndarray
    b_level: np.ndarray  # level index of each bucket
    key_levels: list
    nonkey_levels: list


def _load_concordance() -> Concordance:
    s = paths.seeds_dir()
    return Concordance.from_csv(s / "sei_ipc_concordance.csv", s / "ipc_revision_supplement.csv",
                                mode="hierarchical", use_supplement=True)


def _build_pool(conc: Concordance) -> CodePool:
    """Code buckets (deterministic, seed-independent). Key buckets per subclass and level; non-key
    buckets per subclass."""
    rules = conc.rules_by_code
    listed = sorted(c for c in rules if "/" in c)
    by_sub: dict[str, list[str]] = {}
    for c in listed:
        by_sub.setdefault(c[:4], []).append(c)
    buckets: list[tuple[str, list[str]]] = []  # (level, codes)
    mg_by_sub: dict[str, list[str]] = {}
    for sub, codes in by_sub.items():
        buckets.append(("exact", codes))
        for c in codes:
            if c.endswith("/00"):
                head = c[:-3]
                for sg in ("99", "98", "95", "89", "87", "85"):
                    cand = f"{head}/{sg}"
                    if cand not in rules:
                        mg_by_sub.setdefault(sub, []).append(cand)
                        break
    for sub, codes in mg_by_sub.items():
        buckets.append(("main_group", codes))
    buckets.append(("subclass", [c for c in _SUBCLASS_CODES if c not in rules]))
    buckets.append(("class", [c for c in _CLASS_CODES if c.startswith("C08C")]))
    buckets.append(("class", [c for c in _CLASS_CODES if c.startswith("G16Z")]))
    buckets.append(("supplement", list(_SUPPLEMENT_CODES)))
    # non-key: subclasses without any row (and not under a listed class nor in the supplement)
    sub_rows = conc._subclasses_with_rows
    classes = {c for c in rules if len(c) == 3}
    for sub in _NONKEY_SUBCLASSES:
        if sub in sub_rows or sub[:3] in classes or any(sub.startswith(p) for p in conc.supplement):
            continue
        codes = [f"{sub}{g}/{sg:02d}" for g in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)
                 for sg in (0, 2, 4, 6, 10, 12, 14, 16)]
        buckets.append(("no_rows", codes))
    # excluded: main groups absent under a subclass listed with groups
    listed_groups = {c.split("/")[0] for c in listed}
    for sub in sorted(conc._subclasses_with_groups):
        if sub[:3] in ("C08", "G16"):
            continue
        absent = [g for g in range(1, 100) if f"{sub}{g}" not in listed_groups][:6]
        codes = [f"{sub}{g}/{sg:02d}" for g in absent for sg in (0, 2, 4, 10)]
        if codes:
            buckets.append(("excluded", codes))
    key_levels = ["exact", "main_group", "subclass", "class", "supplement"]
    nonkey_levels = ["no_rows", "excluded"]
    all_levels = key_levels + nonkey_levels
    codes, level, start, count, blevel = [], [], [], [], []
    for lv, cs in buckets:
        start.append(len(codes))
        count.append(len(cs))
        blevel.append(all_levels.index(lv))
        codes.extend(cs)
        level.extend([lv] * len(cs))
    return CodePool(np.array(codes, dtype=object), np.array(level, dtype=object), np.array(start),
                    np.array(count), np.array(blevel), key_levels, nonkey_levels)


def _verify_codes(conc: Concordance, pool: CodePool, used: np.ndarray) -> dict[str, int]:
    """Match every used pool code; assert intended level. Returns counts per level."""
    counts: dict[str, int] = {}
    for i in used:
        code = pool.codes[i]
        lv = pool.level[i]
        got = conc.match(normalise_ipc_code(code)).match_level
        want = "none" if lv in ("no_rows", "excluded") else lv
        if got != want:
            raise AssertionError(f"planted code {code} intended {lv} but matcher says {got}")
        counts[lv] = counts.get(lv, 0) + 1
    return counts


def _variants(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_styles, n) object array of formatting variants; each normalises to the code."""
    out = np.empty((len(_STYLES), len(codes)), dtype=object)
    ed = rng.choice(_EDITIONS, len(codes))
    for j, c in enumerate(codes):
        head, _, rest = c.partition("/")
        sub, group = head[:4], head[4:]
        out[0, j] = c
        out[1, j] = f"{sub} {group}/{rest}"
        out[2, j] = f"{c}{ed[j]}" if j % 3 else f"{sub} {group}/{rest} {ed[j]}"
        out[3, j] = c.lower()
        out[4, j] = c.translate(_FULLWIDTH)
        out[5, j] = f"{sub}{group.zfill(4)}/{rest}"
        for k in range(len(_STYLES)):
            if normalise_ipc_code(out[k, j]) != c:
                raise AssertionError(f"style {_STYLES[k]} of {c} normalises differently: {out[k, j]}")
    return out


def _draw_codes(rng, pool: CodePool, firm_of: np.ndarray, home: np.ndarray, levels: list,
                level_probs: dict, p_home: float) -> np.ndarray:
    n = len(firm_of)
    if n == 0:
        return np.zeros(0, dtype=int)
    all_levels = pool.key_levels + pool.nonkey_levels
    lv_idx = [all_levels.index(lv) for lv in levels]
    probs = _norm([level_probs[lv] for lv in levels])
    lvl = rng.choice(len(levels), n, p=probs)
    # buckets of each level
    bl = [np.flatnonzero(pool.b_level == li) for li in lv_idx]
    rand_bucket = np.empty(n, dtype=int)
    for k, b in enumerate(bl):
        m = lvl == k
        rand_bucket[m] = b[rng.integers(0, len(b), m.sum())]
    home_bucket = home[firm_of, rng.integers(0, home.shape[1], n)]
    b = np.where(rng.random(n) < p_home, home_bucket, rand_bucket)
    return pool.b_start[b] + (rng.random(n) * pool.b_count[b]).astype(int)


def _home_buckets(rng, pool: CodePool, n_firms: int, levels: list, level_probs: dict, k: int = 3):
    all_levels = pool.key_levels + pool.nonkey_levels
    probs = _norm([level_probs[lv] for lv in levels])
    out = np.empty((n_firms, k), dtype=int)
    lvl = rng.choice(len(levels), (n_firms, k), p=probs)
    for j, lv in enumerate(levels):
        b = np.flatnonzero(pool.b_level == all_levels.index(lv))
        m = lvl == j
        out[m] = b[rng.integers(0, len(b), m.sum())]
    return out


def _patents(w: World) -> None:
    rng = _rng(w.seed, 7)
    r = w.rates
    firms, fy, cities = w.firms, w.fy, w.cities
    n = len(firms)
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    c = fy["city"].to_numpy()
    first_treated = cities["first_treated_year"].to_numpy()
    policy = ((first_treated[c] > 0) & (year >= first_treated[c])).astype(int)
    fy["policy"] = policy
    pilot = firms["pilot"].to_numpy()
    pilot_post = (pilot[f] & (year > firms["pilot_year"].to_numpy()[f])).astype(int)

    # firm effects: levels depend on city size (selection on levels), industry, innovator status
    z = rng.normal(0, 1, n)
    size0 = cities["size"].to_numpy()[firms["city0"].to_numpy()]
    a = (r.key_log_mean + r.firm_sigma * z + r.city_size_loading * size0
         + np.where(firms["manufacturing"].to_numpy(), 0.0, r.nonmanufacturing_shift)
         + np.where(rng.random(n) < r.share_non_innovators, r.non_innovator_shift, 0.0))
    g = np.array(r.year_effects)[year - FIRST_YEAR]
    eps = rng.normal(0, r.firm_year_noise_sd, (4, len(f)))
    treat = policy * (~pilot[f])
    lam_key = np.exp(a[f] + g + r.beta_key * treat + r.beta_pilot_firm * pilot_post + eps[0]
                     + synth_endogeneity.key_log_shift(w, f, year, c, treat)
                     + synth_mechanisms.key_log_shift(w, f, year, c, treat))
    d_nk = r.nonkey_log_ratio + r.nonkey_sigma * rng.normal(0, 1, n)
    lam_nonkey = np.exp(a[f] + d_nk[f] + g + r.beta_nonkey * treat + eps[1])
    d_um = r.utility_log_ratio + r.utility_sigma * rng.normal(0, 1, n)
    lam_um = np.exp(a[f] + d_um[f] + g + r.beta_utility * treat + eps[2])
    d_des = r.design_log_ratio + r.design_sigma * rng.normal(0, 1, n)
    lam_des = np.exp(a[f] + d_des[f] + g + r.beta_design * treat + eps[3])
    n_key = rng.poisson(lam_key)
    n_nonkey = rng.poisson(lam_nonkey)
    n_um = rng.poisson(lam_um)
    n_des = rng.poisson(lam_des)
    fy["n_key"], fy["n_nonkey"], fy["n_um"], fy["n_des"] = n_key, n_nonkey, n_um, n_des

    # one record per planted application: fy index, kind (0 key inv, 1 non-key inv, 2 UM, 3 design)
    fyi = np.concatenate([np.repeat(np.arange(len(f)), k) for k in (n_key, n_nonkey, n_um, n_des)])
    kind = np.concatenate([np.full(k.sum(), j) for j, k in enumerate((n_key, n_nonkey, n_um, n_des))])
    pf = f[fyi]
    pyear = year[fyi]

    # extras: out-of-window applications (2005-2007) of early-listed firms, unmatched firms
    n_total = len(fyi)
    n_oow = max(3, int(round(0.0002 * n_total)))
    early = np.flatnonzero(firms["list_year"].to_numpy() < 2005)
    oow_firm = rng.choice(early, n_oow)
    oow_year = rng.choice([2005, 2006, 2007], n_oow)
    oow_kind = rng.choice(4, n_oow, p=[0.15, 0.2, 0.45, 0.2])
    n_unm = max(3, int(round(0.0002 * n_total)))
    unm_code = rng.choice(_UNMATCHED_SCODES, n_unm)
    unm_year = rng.integers(2009, 2023, n_unm)
    unm_kind = rng.choice(4, n_unm, p=[0.15, 0.2, 0.45, 0.2])
    unm_firm = rng.integers(0, n, n_unm)  # borrow a firm's technology profile only

    all_firm = np.concatenate([pf, oow_firm, unm_firm])
    all_year = np.concatenate([pyear, oow_year, unm_year])
    all_kind = np.concatenate([kind, oow_kind, unm_kind])
    origin = np.concatenate([np.zeros(n_total, int), np.ones(n_oow, int), np.full(n_unm, 2)])
    N = len(all_firm)
    scode = firms["stkcd"].to_numpy()[all_firm].astype(object)
    scode[origin == 2] = unm_code

    # --- IPC codes
    conc = _load_concordance()
    pool = _build_pool(conc)
    home_key = _home_buckets(rng, pool, n, pool.key_levels, r.key_level_probs)
    home_nk = _home_buckets(rng, pool, n, pool.nonkey_levels, r.nonkey_level_probs)
    home_key, home_nk = synth_mechanisms.home_buckets(w, pool, home_key, home_nk)
    inv = all_kind <= 1
    um = all_kind == 2
    ncodes = np.zeros(N, dtype=int)
    ncodes[inv] = rng.choice(np.arange(1, 7), inv.sum(), p=_norm(r.n_codes_probs))
    ncodes[um] = rng.choice([1, 2, 3], um.sum(), p=[0.55, 0.3, 0.15])
    maxk = 6
    code_idx = np.full((N, maxk), -1, dtype=int)
    for j in range(maxk):
        has = ncodes > j
        if j == 0:
            keydraw = has & (all_kind == 0)
            # utility models: main code from the key pool 40% of the time
            keydraw |= has & um & (rng.random(N) < 0.4)
        else:
            keydraw = has & (all_kind == 0) & (rng.random(N) < r.p_key_secondary_code)
            keydraw |= has & um & (rng.random(N) < 0.4)
        nkdraw = has & ~keydraw
        code_idx[keydraw, j] = _draw_codes(rng, pool, all_firm[keydraw], home_key, pool.key_levels,
                                           r.key_level_probs, r.p_home_bucket)
        code_idx[nkdraw, j] = _draw_codes(rng, pool, all_firm[nkdraw], home_nk, pool.nonkey_levels,
                                          r.nonkey_level_probs, r.p_home_bucket)
    used = np.unique(code_idx[code_idx >= 0])
    level_counts = _verify_codes(conc, pool, used)
    main_levels = pd.Series(pool.level[code_idx[all_kind == 0, 0]]).value_counts()
    # sanity: key patents' main code is key; non-key inventions carry no key code
    is_keycode = np.isin(pool.level, pool.key_levels)
    assert is_keycode[code_idx[all_kind == 0, 0]].all()
    nk_codes = code_idx[all_kind == 1]
    assert not is_keycode[nk_codes[nk_codes >= 0]].any()

    # --- messy formatting (after verification; every variant normalises to the same code)
    var = _variants(pool.codes[used], rng)
    pos = np.full(len(pool.codes), -1, dtype=int)
    pos[used] = np.arange(len(used))
    row_style = rng.choice(len(_STYLES), N, p=_norm(_STYLE_PROBS))
    sep = rng.choice(np.array(_SEPARATORS, dtype=object), N, p=_norm(_SEP_PROBS))
    sep[row_style == 4] = "；"
    tokens = np.full((N, maxk + 1), "", dtype=object)
    for j in range(maxk):
        has = code_idx[:, j] >= 0
        st = np.where(rng.random(N) < 0.1, rng.integers(0, len(_STYLES), N), row_style)
        tokens[has, j] = var[st[has], pos[code_idx[has, j]]]
    # repeated codes: the main code again, in another style, at the end
    rep = (ncodes >= 1) & (ncodes < maxk) & (rng.random(N) < 0.03)
    rep_style = (row_style + 1 + rng.integers(0, len(_STYLES) - 1, N)) % len(_STYLES)
    tokens[rep, maxk] = var[rep_style[rep], pos[code_idx[rep, 0]]]
    ipc = tokens[:, 0].copy()
    for j in range(1, maxk + 1):
        m = tokens[:, j] != ""
        ipc[m] = ipc[m] + sep[m] + tokens[m, j]
    # junk IPC strings on a few non-key inventions
    nk_rows = np.flatnonzero((all_kind == 1) & (origin == 0))
    n_junk = max(5, int(round(0.0003 * len(nk_rows))))
    junk_rows = np.sort(rng.choice(nk_rows, n_junk, replace=False))
    ipc[junk_rows] = rng.choice(np.array(_JUNK_IPC, dtype=object), n_junk)

    # --- dates, numbers, applicants, grants, citations
    apply_d = _dates(all_year, rng)
    type_digit = np.array([1, 1, 2, 3])[all_kind]
    group_key = all_year * 10 + type_digit
    perm = rng.permutation(N)
    order = np.lexsort((perm, group_key))
    gk_sorted = group_key[order]
    first_of_group = np.r_[True, gk_sorted[1:] != gk_sorted[:-1]]
    grp_start = np.maximum.accumulate(np.where(first_of_group, np.arange(N), 0))
    rank = np.empty(N, dtype=np.int64)
    rank[order] = np.arange(N) - grp_start
    serial = 10000 + rank * 7 + rng.integers(0, 7, N)
    number = all_year.astype(np.int64) * 10**8 + type_digit * 10**7 + serial
    digits = np.stack([(number // 10**k) % 10 for k in range(11, -1, -1)], axis=1)
    weights = np.array([2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5])
    check = (digits * weights).sum(axis=1) % 11
    check_s = np.where(check == 10, "X", check.astype(str))
    apply_no = np.char.add(np.char.add(np.char.add("CN", number.astype(str)), "."), check_s).astype(object)

    p_joint = np.array([r.p_joint_invention, r.p_joint_invention, r.p_joint_utility, r.p_joint_design])[all_kind]
    joint = rng.random(N) < p_joint
    third = joint & (rng.random(N) < r.p_third_applicant)
    first_app = firms["full"].to_numpy()[all_firm].astype(object)
    unm_names = np.array([f"{code}号非上市公司有限公司" for code in unm_code], dtype=object)
    first_app[origin == 2] = unm_names
    uni = np.array(_UNIVERSITIES, dtype=object)
    partner = np.where(rng.random(N) < 0.5, uni[rng.integers(0, len(uni), N)],
                       firms["subsidiary"].to_numpy()[all_firm])
    partner2 = uni[rng.integers(0, len(uni), N)]
    partner2 = np.where(partner2 == partner, "中国科学院", partner2)
    applicants = first_app.copy()
    applicants[joint] = applicants[joint] + ";" + partner[joint]
    applicants[third] = applicants[third] + ";" + partner2[third]

    extraction = np.datetime64(EXTRACTION_DATE)
    lag_inv = np.clip(r.invention_grant_lag_years[0] + rng.gamma(2.0, 0.6, N),
                      r.invention_grant_lag_years[0], r.invention_grant_lag_years[1])
    lag_days = np.where(inv, lag_inv * 365.25,
                        np.where(um, rng.uniform(120, 400, N), rng.uniform(90, 300, N))).astype(int)
    p_grant = np.array([r.p_grant_invention, r.p_grant_invention, r.p_grant_utility, r.p_grant_design])[all_kind]
    grant_d = apply_d + lag_days
    granted = (rng.random(N) < p_grant) & (grant_d <= extraction)
    grant_d = np.where(granted, grant_d, np.datetime64("NaT"))
    age = (extraction - apply_d).astype(int) / 365.25
    quality = np.exp(rng.normal(0, 0.8, n))[all_firm]
    cite_rate = np.array([r.citations_per_year_invention, r.citations_per_year_invention,
                          r.citations_per_year_utility, 0.0])[all_kind]
    mean_cites = cite_rate * quality * np.maximum(age - 0.5, 0) * np.where(granted | um, 1.0, 0.4)
    cites = rng.poisson(rng.gamma(1.5, mean_cites / 1.5 + 1e-12))

    df = pd.DataFrame({
        "Scode": scode, "ApplyNo": apply_no, "ApplyDate": _date_str(apply_d),
        "PatentType": np.array(["发明", "发明", "实用新型", "外观设计"], dtype=object)[all_kind],
        "IPC": ipc, "Applicants": applicants, "GrantDate": _date_str(grant_d),
        "CitedTimes": cites.astype(np.int64),
    })
    # exact duplicate rows
    n_dup = max(5, int(round(0.003 * N)))
    dup_rows = np.sort(rng.choice(N, n_dup, replace=False))
    df = pd.concat([df, df.iloc[dup_rows]], ignore_index=False)
    sort_date = np.r_[apply_d, apply_d[dup_rows]].astype(np.int64)
    idx = np.r_[np.arange(N), dup_rows]
    order = np.lexsort((idx, sort_date, df["Scode"].to_numpy().astype(str)))
    df = df.iloc[order].reset_index(drop=True)
    w.patents = df
    # planted status aligned with the written rows (for tests): kind 0 key invention, 1 non-key
    # invention, 2 utility model, 3 design; origin 0 planted, 1 out of window, 2 unmatched firm
    w.patents_kind = np.r_[all_kind, all_kind[dup_rows]][order]
    w.patents_origin = np.r_[origin, origin[dup_rows]][order]
    w.patents_duplicate = np.r_[np.zeros(N, bool), np.ones(n_dup, bool)][order]

    # --- truth
    fullwidth = ipc[(row_style == 4) & (ncodes > 0)]
    w.patent_truth = {
        "rows_planted_in_window": int(n_total),
        "exact_duplicate_rows": int(n_dup),
        "junk_ipc_rows": int(n_junk),
        "junk_ipc_values": sorted(set(ipc[junk_rows].tolist())),
        "unmatched_firm_rows": int(n_unm),
        "unmatched_scodes": sorted(set(unm_code.tolist())),
        "out_of_window_rows": int(n_oow),
        "out_of_window_years": sorted(set(oow_year.tolist())),
        "repeated_code_rows": int(rep.sum()),
        "row_styles": {s: int(((row_style == k) & (ncodes > 0)).sum()) for k, s in enumerate(_STYLES)},
        "fullwidth_rows": int(len(fullwidth)),
        "joint_rows": int(joint.sum()),
        "by_type_after_dedup": {
            "invention_key": int((all_kind == 0).sum()), "invention_nonkey": int((all_kind == 1).sum()),
            "utility_model": int((all_kind == 2).sum()), "design": int((all_kind == 3).sum()),
        },
        "key_main_code_levels": {k: int(v) for k, v in main_levels.sort_index().items()},
        "distinct_codes_used_by_level": dict(sorted(level_counts.items())),
        "granted_rows": int(granted.sum()),
    }
    w.patent_rows = {"origin": origin, "kind": all_kind, "year": all_year, "firm": all_firm,
                     "joint": joint, "granted": granted, "junk": np.isin(np.arange(N), junk_rows)}


# ----------------------------------------------------------------------------------------------
# Stage 7: writing
# ----------------------------------------------------------------------------------------------


def _write_csv(df: pd.DataFrame, path: Path, encoding: str, desc: list[list[str]] | None = None,
               line_end: str = "\n") -> None:
    parts = []
    header = pd.DataFrame([list(df.columns)] + (desc or []), columns=df.columns)
    full = pd.concat([header, df.astype(object)], ignore_index=True)
    text = full.to_csv(index=False, header=False, lineterminator=line_end)
    parts.append(text)
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write("".join(parts))


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    arrays = []
    for col in df.columns:
        v = df[col].to_numpy()
        if col == "CitedTimes":
            arrays.append(pa.array(v.astype(np.int64), type=pa.int64()))
        else:
            v = v.astype(object)
            arrays.append(pa.array([x if x != "" else None for x in v], type=pa.string())
                          if col == "GrantDate" else pa.array(v, type=pa.string()))
    table = pa.Table.from_arrays(arrays, names=list(df.columns))
    pq.write_table(table, path, compression="zstd", row_group_size=500_000)


def _write(w: World, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for table in ("firm_info", "balance_sheet", "income_statement", "cash_flow"):
        df = w.firm_info if table == "firm_info" else w.statements[table]
        _write_csv(df, out / f"{table}.csv", _FILE_ENCODING[table], [list(x) for x in _CSMAR_DESC[table]])
        files[table] = {"file": f"{table}.csv", "encoding": _FILE_ENCODING[table], "description_rows": 2,
                        "rows": len(df)}
    _write_csv(w.yearbook, out / "city_yearbook.csv", "gbk", [_YEARBOOK_UNITS], line_end="\r\n")
    files["city_yearbook"] = {"file": "city_yearbook.csv", "encoding": "gbk", "description_rows": 1,
                              "rows": len(w.yearbook), "header": "contract Chinese aliases"}
    _write_csv(w.pilot_list, out / "pilot_list.csv", "utf-8")
    files["pilot_list"] = {"file": "pilot_list.csv", "encoding": "utf-8", "description_rows": 0,
                           "rows": len(w.pilot_list)}
    for stale in ("patents.csv", "patents.parquet"):
        (out / stale).unlink(missing_ok=True)
    if w.cfg.patents_format == "parquet":
        _write_parquet(w.patents, out / "patents.parquet")
        files["patents"] = {"file": "patents.parquet", "encoding": None, "description_rows": 0,
                            "rows": len(w.patents)}
    else:
        _write_csv(w.patents, out / "patents.csv", "utf-8")
        files["patents"] = {"file": "patents.csv", "encoding": "utf-8", "description_rows": 0,
                            "rows": len(w.patents)}
    files.update(synth_endogeneity.write_tables(w, out))
    files.update(synth_mechanisms.write_tables(w, out))
    return files


# ----------------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------------


def sample_filters(w: World) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """The paper's sample filters as planted, per ``w.fy`` row: (in the 2010-2019 window, the
    drop masks in funnel order). The analysis sample is the window minus every drop.

    Written from the generator's own records, independently of the SQL, with the warehouse's
    default readings (docs/variables.md): pilot firms; ① listed after 2014-12-31; ② delisted
    by 2019 or *ST in a window year (delisting_flag_rule delisted_or_star_st); ③ CSRC section J;
    ④ firms with a window year printed with an unknown city (未知市), or without total assets in
    every window year. Missing controls drop no rows here."""
    firms, fy = w.firms, w.fy
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    in_window = (year >= 2010) & (year <= 2019)
    n = len(firms)

    def any_in_window(mask: np.ndarray) -> np.ndarray:
        hit = np.zeros(n, bool)
        hit[f[in_window & mask]] = True
        return hit[f]

    delisted = firms["delisted"].to_numpy() & (firms["delist_year"].to_numpy() <= 2019)
    has_assets = any_in_window(~fy["missing_assets"].to_numpy())
    drops = [
        ("pilot_firms", firms["pilot"].to_numpy()[f]),
        ("listed_under_min_years", firms["list_date"].to_numpy()[f] > np.datetime64("2014-12-31")),
        ("delisting_flag", delisted[f] | any_in_window(fy["stflg"].to_numpy() == "*ST")),
        ("financial_firms", firms["financial"].to_numpy()[f]),
        ("missing_data_firms", any_in_window(fy["unknown_city"].to_numpy()) | ~has_assets),
    ]
    return in_window, drops


def planted_missing_controls(w: World) -> tuple[np.ndarray, np.ndarray]:
    """Per ``w.fy`` row: (a firm control is missing, a city control is missing) as planted."""
    fy = w.fy
    year = fy["year"].to_numpy()
    firm = fy["missing_firm_control"].to_numpy()
    city = w.yearbook_missing_ctrl[fy["city"].to_numpy(), year - FIRST_YEAR]
    return firm, city


def _truth(w: World, files: dict) -> dict:
    firms, fy, cities = w.firms, w.fy, w.cities
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    in_window, drops = sample_filters(w)
    keep = in_window.copy()
    funnel = {"firm_years_2010_2019": int(keep.sum())}
    for name, drop in drops:
        keep = keep & ~drop
        funnel[f"after_{name}"] = int(keep.sum())
    pr = w.patent_rows
    main = pr["origin"] == 0

    def by_year(mask):
        ys, cnt = np.unique(pr["year"][mask], return_counts=True)
        return {str(int(y)): int(c) for y, c in zip(ys, cnt)}

    miss_firm, miss_city = planted_missing_controls(w)
    missing_controls = {
        "planted_rates": {"p_missing_ownership": w.rates.p_missing_ownership,
                          "p_missing_city_control": w.rates.p_missing_city_control,
                          "p_missing_statement_value": 0.01},
        "sample_firm_years_missing_a_firm_control": int((keep & miss_firm).sum()),
        "sample_firm_years_missing_a_city_control_only": int((keep & miss_city & ~miss_firm).sum()),
        "share_lost_firm_controls": float(round((keep & miss_firm).sum() / max(keep.sum(), 1), 6)),
        "share_lost_city_controls_given_firm_controls": float(round(
            (keep & miss_city & ~miss_firm).sum() / max((keep & ~miss_firm).sum(), 1), 6)),
        "paper_shares": {"col2_to_col3": 0.017, "col3_to_col4": 0.048},
    }
    sample_key = fy["n_key"].to_numpy()[keep]
    sample_years = year[keep]
    sample = {
        "firm_years": int(keep.sum()),
        "firms": int(len(np.unique(f[keep]))),
        "treated_firm_years": int(fy["policy"].to_numpy()[keep].sum()),
        "missing_controls": missing_controls,
        "mean_key_inventions": float(round(sample_key.mean(), 6)) if keep.any() else None,
        "share_zero_key_inventions": float(round((sample_key == 0).mean(), 6)) if keep.any() else None,
        "key_inventions_by_year": {str(int(y)): int(sample_key[sample_years == y].sum())
                                   for y in np.unique(sample_years)},
        "nonkey_inventions_by_year": {str(int(y)): int(fy["n_nonkey"].to_numpy()[keep][sample_years == y].sum())
                                      for y in np.unique(sample_years)},
    }
    pilot_cities = cities[cities["first_wave"] > 0].sort_values(["first_wave", "city_code"])
    return {
        "generator": "keytech.synth", "generator_version": GENERATOR_VERSION,
        "seed": w.seed, "scale": w.cfg.name, "scale_config": asdict(w.cfg),
        "years": [FIRST_YEAR, LAST_YEAR], "extraction_date": EXTRACTION_DATE,
        "rates": _jsonable(asdict(w.rates)),
        "policy_rule": ("Policy_ct = 1 when year t > the announcement year of city c's first pilot "
                        "(treated from announcement year + 1); c is the firm's registered city in year t"),
        "key_tech_rule": ("invention is key-tech when any of its IPC codes matches "
                          "keytech.ipc.Concordance (hierarchical, supplement on)"),
        "rows": {t: files[t]["rows"] for t in TABLES},
        "files": files,
        "pilot": {
            "waves": w.waves,
            "n_pilot_cities": int(len(pilot_cities)),
            "cities": [{"city_code": r.city_code, "city_name": r.city_name, "first_wave": int(r.first_wave),
                        "first_treated_year": int(r.first_treated_year)} for r in pilot_cities.itertuples()],
            "never_treated_cities": int((cities["first_wave"] == 0).sum()),
            "pilot_firm_stkcds": sorted(firms.loc[firms["pilot"], "stkcd"].tolist()),
            "units_with_stkcd": int((w.pilot_list["Stkcd"] != "").sum()),
        },
        "cities": {"n": int(len(cities)), "codes": sorted(cities["city_code"].tolist())},
        "firms": {
            "n": int(len(firms)),
            "firm_years": int(len(fy)),
            "financial_stkcds": sorted(firms.loc[firms["financial"], "stkcd"].tolist()),
            "delisted_stkcds": sorted(firms.loc[firms["delisted"], "stkcd"].tolist()),
            "listed_after_2014_stkcds": sorted(
                firms.loc[firms["list_date"] > np.datetime64("2014-12-31"), "stkcd"].tolist()),
            "movers": w.movers,
            "registered_elsewhere_stkcds": w.registered_elsewhere,
            "st_firm_years": int((fy["stflg"] != "").sum()),
            "old_city_name_rows": w.alias_rows,
            **w.info_mess,
            **w.fin_missing,
            "stripped_stock_code_rows": w.stripped_codes,
        },
        "city_yearbook": w.yearbook_mess,
        "patents": w.patent_truth,
        "key_inventions_by_year": by_year(main & (pr["kind"] == 0)),
        "nonkey_inventions_by_year": by_year(main & (pr["kind"] == 1)),
        "junk_ipc_nonkey_by_year": by_year(main & pr["junk"]),
        "key_inventions_joint_by_year": by_year(main & (pr["kind"] == 0) & pr["joint"]),
        "utility_models_by_year": by_year(main & (pr["kind"] == 2)),
        "designs_by_year": by_year(main & (pr["kind"] == 3)),
        "analysis_sample": {
            "definition": (
                "firm-years 2010-2019 of firm_info, dropping whole firms in this order: pilot firms "
                "(Stkcd in pilot_list), firms listed after 2014-12-31, firms delisted by 2019 or *ST in "
                "a 2010-2019 year (plain ST years kept), CSRC section J, firms with a 2010-2019 year "
                "printed with an unknown city (未知市) or without total assets in every 2010-2019 year. "
                "Firm-years with missing controls stay in the sample (missing_controls: planted "
                "rates and the firm-years each regression column loses)"),
            "funnel": funnel, **sample},
        "mechanisms": synth_mechanisms.truth(w),
        "endogeneity": synth_endogeneity.truth(w),
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def build_world(scale: str, seed: int, rates: Rates | None = None, progress: bool = False) -> World:
    """Generate every table in memory (no files). ``generate`` writes them; tests may inspect the
    planted per-row status (``World.patents_kind`` etc.)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, not {scale!r}")
    w = World(SCALES[scale], rates or Rates(), int(seed))
    stages = [("cities and pilot waves", _cities),
              ("endogeneity inputs", synth_endogeneity.plant_selection), ("firms", _firms), ("pilot list", _pilots),
              ("firm_info", _firm_info), ("financial statements", _financials),
              ("city yearbook", _yearbook), ("mechanisms plan", synth_mechanisms.plan), ("patents", _patents),
              ("mechanisms recode", synth_mechanisms.recode)]
    with tqdm(total=len(stages), desc=f"synth {scale}", disable=not progress, unit="stage") as bar:
        for label, fn in stages:
            bar.set_postfix_str(label)
            fn(w)
            bar.update(1)
    return w


def generate(scale: str, seed: int, out_dir: str | Path, progress: bool = True,
             rates: Rates | None = None) -> dict:
    """Write a synthetic raw folder for ``scale`` (tiny, small, paper) and return the truth dict
    (also written to ``out_dir/_truth.json``). Deterministic for a seed."""
    w = build_world(scale, seed, rates, progress)
    out = Path(out_dir)
    with tqdm(total=1, desc=f"write {scale}", disable=not progress, unit="step") as bar:
        files = _write(w, out)
        truth = _jsonable(_truth(w, files))
        with open(out / "_truth.json", "w", encoding="utf-8", newline="\n") as handle:
            json.dump(truth, handle, ensure_ascii=False, indent=2, sort_keys=False)
            handle.write("\n")
        bar.update(1)
    return truth
