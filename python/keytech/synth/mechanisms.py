"""Synthetic data for the mechanism, heterogeneity and extension analyses (issue 5).

A plug-in world of :mod:`keytech.synth` (``PLUGIN``, see :mod:`keytech.synth.plugin`); everything
planted here is recorded in ``_truth.json`` under ``mechanisms``. The stages, in generation order:

``plan(w)`` (after the financial statements and the yearbook, before the patents)
    * **Technology similarity.** Half of the cities are *high-similarity* cities: each gets a shared
      set of "home" technology buckets (IPC subclasses), and most firms located there draw their
      patents from that shared set (:func:`home_buckets`), so that the Jaffe similarity of their
      patent pools is high. Firms elsewhere keep their own buckets. The high cities are drawn by
      **matched pairs within treatment cohorts** (:func:`_assign_high_similarity`): the cities of a
      cohort (first treated year; never-treated cities are one cohort) are ranked by their
      analysis-sample firm-years (:func:`planted_sample`) and paired in that order, and one city of
      each pair is high; of ``similarity_rerandomization_draws`` random orientations of the pairs the
      one whose high cities hold closest to half of the sample firm-years and half of the treated
      sample firm-years is kept (rerandomisation; the shares are recorded in the truth). Why: the
      similarity split is a comparison *between cities* (about 45 treated cities at ``small``, a few
      of them holding much of the sample), so with independent coin flips per city (the design
      until this change) the two halves could differ widely in treated cities and firm-years — on
      seed 7 the planted-high cities held a third of the sample firm-years, so the estimation
      sample's median split of the measured similarity was only half planted-high — and the planted
      contrast sat below the noise of that comparison.
    * **Market exploration.** After treatment (Policy = 1, non-pilot firm) the firm's sales rise by
      ``sales_log_effect`` log points and the log deviations of sales and inventories from the
      firm's own log-linear trend shrink by ``volatility_shrink``: inventory-adjusted output becomes
      less volatile (lower ``volatility_*``) and sales higher.
    * **Moderators.** A firm type ``T`` (1 = "favourable") is the upper half of a composite of the
      firm's mean FC index (low), WW index (low) and city-industry HHI (high) computed from the
      generated statements with the formulas of the dbt models; the subsidy and annual-report
      keyword tables below are generated with more R&D / patent subsidies and more 参访 / 标准化
      mentions for ``T = 1``.
    * **Key-tech effect heterogeneity.** The treatment effect on the key-tech invention rate is
      ``beta_key × scale`` with ``scale = 1 + 2 a_sim (H_sim − mean H_sim) + 2 a_type (T − mean T)``
      (``H_sim`` = high-similarity city; means over treated firm-years 2010-2019): larger where
      similarity is high and for low-constraint, high-concentration, high-subsidy firms. ``scale``
      has mean 1 over treated firm-years 2010-2019, so the average effect stays ``beta_key``. The
      non-key rate is not moderated (``beta_nonkey`` applies to everyone). With ``a_sim = 1.0`` and
      ``a_type = 0.7`` the high-minus-low similarity difference is ``2 a_sim beta_key = 0.50`` log
      points (0.25 with the former ``a_sim = 0.5``, at the noise floor of the ``small`` demo) and the
      favourable-minus-unfavourable type difference ``0.35``: with ``beta_key = 0.25`` the effect is
      about 0.5 in high- and 0 in low-similarity cities on average, and by cell (H_sim, T) about
      (1, 1) 0.68, (1, 0) 0.33, (0, 1) 0.18, (0, 0) −0.17 (additive form: unfavourable firms in
      low-similarity cities get a small negative effect; ``mean_log_rate_effect_by_cell`` in the truth).
      On ``ln(1 + count)`` (demo: about 4.4 key-tech inventions per sample firm-year, 29 % zeros)
      these log-rate differences show at roughly 0.65-0.8 of their size.

``recode(w)`` (after the patents)
    * **Fields and width.** A share ``recode_share`` of the treated firm-years' key-tech
      inventions get their key-tech IPC codes redrawn from listed concordance codes of the target
      SEI industries (high-end equipment 2, new energy 6, new-energy vehicles 5, energy saving 7;
      ``field_weights``). Counts, years, applicants and key-tech status do not change; the field
      mix shifts towards the targets and the firm's applications move outside its existing pool
      (Width1, Width2, Width4 up). Both copies of an exact-duplicate row are recoded identically.
    * **Joint applications** rise with the key-tech rate (the joint probability is constant).

``write_tables(w, out)`` writes the two optional raw tables of the contract:
``subsidy_detail.csv`` (CSMAR-style government-subsidy items) and ``annual_report_keywords.csv``
(firm-year counts of 参访 and 标准化).

All randomness comes from ``numpy.random.default_rng([seed, stage])`` with stages 51-55.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from keytech import paths
from keytech.ipc import normalise_ipc_code
from keytech.synth.columns import frame
from keytech.synth.common import fmt
from keytech.synth.patents import load_concordance
from keytech.synth.plugin import Plugin
from keytech.synth.truth import sample_filters
from keytech.synth.vocab import MODES_2016
from keytech.synth.writers import write_csv

TABLES = ("subsidy_detail", "annual_report_keywords")
KEYWORDS = ("参访", "标准化")

_RD_ITEMS = ["研发项目补助", "科技创新专项资金", "技术研究开发经费", "科研项目经费", "企业技术中心研发补助",
             "关键技术攻关项目资金", "研发费用补助"]
_PATENT_ITEMS = ["专利资助", "知识产权专项资金", "专利申请补贴", "发明专利奖励", "知识产权示范企业奖励"]
_OTHER_ITEMS = ["稳岗补贴", "税收返还", "环保专项补助", "出口奖励资金", "土地使用补偿", "人才引进补贴",
                "技改项目补助", "上市奖励", "节能减排补助", "社保补贴"]


@dataclass(frozen=True)
class MechanismRates:
    """Planted mechanism parameters (recorded in ``_truth.json``)."""

    similarity_rerandomization_draws: int = 1000  # pair orientations drawn; the best balanced is kept
    p_city_cluster_home: float = 0.9  # firms in high-similarity cities using the city's buckets
    key_scale_similarity: float = 1.0  # a_sim (0.5 until the matched-pair design; see the docstring)
    key_scale_type: float = 0.7  # a_type
    recode_share: float = 0.35
    field_weights: dict = field(default_factory=lambda: {2: 0.5, 6: 0.2, 5: 0.15, 7: 0.15})
    sales_log_effect: float = 0.08
    volatility_shrink: float = 0.6
    subsidy_items_mean: tuple[float, float] = (1.5, 3.0)  # Poisson mean of items for T = 0, 1
    p_rd_item: tuple[float, float] = (0.2, 0.5)
    p_patent_item: tuple[float, float] = (0.05, 0.25)
    visit_mean: tuple[float, float] = (0.6, 2.2)
    p_pilot_mention_firm: float = 0.35  # firms whose annual reports mention a pilot category
    standard_mean: tuple[float, float] = (2.0, 5.5)


RATES = MechanismRates()


def _treat(w) -> np.ndarray:
    fy, cities, firms = w.fy, w.cities, w.firms
    c = fy["city"].to_numpy()
    year = fy["year"].to_numpy()
    ft = cities["first_treated_year"].to_numpy()[c]
    pilot = firms["pilot"].to_numpy()[fy["firm"].to_numpy()]
    return (ft > 0) & (year >= ft) & ~pilot


def _consolidated(w) -> pd.DataFrame:
    """Consolidated (A) statement values aligned with ``w.fy`` rows, as floats."""
    out = {}
    for table, cols in (("balance_sheet", ["A001000000", "A002000000", "A001123000", "A002201000"]),
                        ("income_statement", ["B001101000", "B001100000"]),
                        ("cash_flow", ["C001000000", "C003006000", "CashDividends"])):
        st = w.statements[table]
        a = st[st["Typrep"] == "A"]
        for col in cols:
            out[col] = pd.to_numeric(a[col].replace("", np.nan), errors="coerce").to_numpy()
    return pd.DataFrame(out)


def _set_consolidated(w, table: str, col: str, values: np.ndarray, rows: np.ndarray) -> None:
    st = w.statements[table]
    idx = st.index[st["Typrep"] == "A"][rows]
    st.loc[idx, col] = fmt(values[rows])


def _detrend(log_v: np.ndarray, firm: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Fitted values of a per-firm OLS of log_v on t (NaN where log_v is NaN)."""
    df = pd.DataFrame({"y": log_v, "f": firm, "t": t.astype(float)}).dropna()
    g = df.groupby("f")
    tm, ym = g["t"].transform("mean"), g["y"].transform("mean")
    sxy = ((df["t"] - tm) * (df["y"] - ym)).groupby(df["f"]).sum()
    sxx = ((df["t"] - tm) ** 2).groupby(df["f"]).sum()
    slope = (sxy / sxx.replace(0, np.nan)).fillna(0.0)
    fit = ym + df["f"].map(slope) * (df["t"] - tm)
    out = np.full(len(log_v), np.nan)
    out[df.index.to_numpy()] = fit.to_numpy()
    return out


def _plant_market(w, treat: np.ndarray, r: MechanismRates) -> dict:
    fin = _consolidated(w)
    f = w.fy["firm"].to_numpy()
    t = w.fy["year"].to_numpy()
    stats = {}
    for table, col, effect in (("income_statement", "B001101000", r.sales_log_effect),
                               ("balance_sheet", "A001123000", 0.0)):
        v = fin[col].to_numpy()
        lv = np.log(np.where(v > 0, v, np.nan))
        fit = _detrend(lv, f, t)
        rows = np.flatnonzero(treat & np.isfinite(lv) & np.isfinite(fit))
        new = v.copy()
        new[rows] = np.exp(fit[rows] + (1 - r.volatility_shrink) * (lv[rows] - fit[rows]) + effect)
        if col == "B001101000":  # total operating revenue keeps its ratio to operating revenue
            tot = fin["B001100000"].to_numpy()
            ok = rows[np.isfinite(tot[rows])]
            new_tot = tot.copy()
            new_tot[ok] = tot[ok] * new[ok] / v[ok]
            _set_consolidated(w, table, "B001100000", new_tot, ok)
        _set_consolidated(w, table, col, new, rows)
        stats[col] = int(len(rows))
    return stats


def firm_year_indices(fin: pd.DataFrame, firm: np.ndarray, year: np.ndarray, city: np.ndarray,
                      industry: np.ndarray) -> pd.DataFrame:
    """WW index, FC index and city-industry HHI per firm-year with the dbt models' formulas
    (see models/intermediate/mechanisms/int_firm_year_financial_indices.sql)."""
    d = pd.DataFrame({"firm": firm, "year": year, "city": city, "ind": industry,
                      "assets": fin["A001000000"], "liab": fin["A002000000"], "ltd": fin["A002201000"],
                      "sale": fin["B001101000"], "ocf": fin["C001000000"], "div": fin["C003006000"],
                      "cash_div": fin["CashDividends"]})
    d = d.sort_values(["firm", "year"])
    prev = d.groupby("firm")["sale"].shift(1)
    prev_year = d.groupby("firm")["year"].shift(1)
    d["sg"] = np.where(prev_year == d["year"] - 1, d["sale"] / prev - 1, np.nan)
    d["isg"] = d.groupby(["ind", "year"])["sg"].transform("mean")
    # WW's dividend dummy: cash dividends > 0, falling back to C003006000 > 0 where empty (as dbt)
    divpos = np.where(d["cash_div"].notna(), d["cash_div"] > 0, d["div"] > 0)
    d["ww"] = (-0.091 * d["ocf"] / d["assets"] - 0.062 * divpos + 0.021 * d["ltd"] / d["assets"]
               - 0.044 * np.log(d["assets"]) + 0.102 * d["isg"] - 0.035 * d["sg"])
    comp = pd.DataFrame({"size": -np.log(d["assets"]), "div": -(d["div"] / d["assets"]),
                         "lev": d["liab"] / d["assets"], "cf": -(d["ocf"] / d["assets"])})
    ranks = comp.groupby(d["year"]).rank(pct=True)
    d["fc"] = ranks.mean(axis=1)
    share = d["sale"] / d.groupby(["city", "ind", "year"])["sale"].transform("sum")
    d["hhi"] = (share ** 2).groupby([d["city"], d["ind"], d["year"]]).transform("sum")
    return d.sort_index()


def planted_sample(w) -> np.ndarray:
    """The analysis-sample firm-years as planted (``keytech.synth.truth.sample_filters``), per ``w.fy``
    row."""
    in_window, drops = sample_filters(w)
    return in_window & ~np.logical_or.reduce([drop for _, drop in drops])


def _assign_high_similarity(w, rng, r: "MechanismRates", treat: np.ndarray) -> tuple[np.ndarray, dict]:
    """Planted high-similarity cities: matched pairs within treatment cohorts, rerandomised for
    balance (see the module docstring). Returns (high per city, balance record for the truth)."""
    nc = len(w.cities)
    keep = planted_sample(w)
    city = w.fy["city"].to_numpy()
    weight = np.bincount(city[keep], minlength=nc).astype(float)
    weight_treated = np.bincount(city[keep & treat], minlength=nc).astype(float)
    cohort = w.cities["first_treated_year"].to_numpy()
    pairs, singles = [], []
    for k in np.unique(cohort):
        members = np.flatnonzero(cohort == k)
        members = members[np.lexsort((members, -weight[members]))]  # by sample firm-years, descending
        for j in range(0, len(members), 2):
            if j + 1 < len(members):
                pairs.append(members[j:j + 2])
            else:
                singles.append(members[j])
    pairs = np.array(pairs, dtype=int).reshape(-1, 2)
    singles = np.array(singles, dtype=int)
    draws = max(1, int(r.similarity_rerandomization_draws))
    flip = rng.random((draws, len(pairs))) < 0.5  # True: the second city of the pair is high
    coin = rng.random((draws, len(singles))) < 0.5
    share = {}
    score = np.zeros(draws)
    for name, wv in (("sample_firm_years", weight), ("treated_sample_firm_years", weight_treated)):
        total = wv.sum()
        hw = np.where(flip, wv[pairs[:, 1]], wv[pairs[:, 0]]).sum(axis=1) + (coin * wv[singles]).sum(axis=1)
        share[name] = hw / total if total > 0 else np.full(draws, 0.5)
        score += np.abs(share[name] - 0.5)
    b = int(np.argmin(score))  # first best draw
    high = np.zeros(nc, dtype=bool)
    high[np.where(flip[b], pairs[:, 1], pairs[:, 0])] = True
    high[singles[coin[b]]] = True
    balance = {f"share_{k}_in_high_cities": float(round(v[b], 6)) for k, v in share.items()}
    balance.update({"pairs": int(len(pairs)), "unpaired_cities": int(len(singles)), "draws": draws})
    return high, balance


def plan(w) -> None:
    """Stage before the patents: similarity cities, market effects, firm type, key-effect scale."""
    r = RATES
    rng = np.random.default_rng([w.seed, 51])
    firms, fy = w.firms, w.fy
    treat = _treat(w)
    high, balance = _assign_high_similarity(w, rng, r, treat)
    market = _plant_market(w, treat, r)

    fin = _consolidated(w)
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    idx = firm_year_indices(fin, f, year, fy["city"].to_numpy(), firms["industry"].to_numpy()[f])
    window = (year >= 2010) & (year <= 2019)
    firm_mean = idx.loc[window].groupby("firm")[["ww", "fc", "hhi"]].mean()

    def z(s: pd.Series) -> pd.Series:
        return (s - s.mean()) / (s.std() or 1.0)

    composite = (z(-firm_mean["fc"]) + z(-firm_mean["ww"]) + z(firm_mean["hhi"])).reindex(range(len(firms)))
    composite = composite.fillna(composite.median())
    firm_type = (composite > composite.median()).to_numpy().astype(int)

    h_sim = high[fy["city"].to_numpy()].astype(int)
    # centred on the treated firm-years of 2010-2019, so the mean scale there is exactly 1
    tw = treat & window
    t_f = firm_type[f]
    scale = (1 + 2 * r.key_scale_similarity * (h_sim - (h_sim[tw].mean() if tw.any() else 0.5))
             + 2 * r.key_scale_type * (t_f - (t_f[tw].mean() if tw.any() else 0.5)))
    w.mech = {
        "high_similarity_city": high, "similarity_balance": balance, "firm_type": firm_type,
        "key_scale": scale, "treat": treat, "market_rows": market,
    }


def key_log_shift(w, f: np.ndarray, year: np.ndarray, c: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """Added to the log key-tech rate in ``keytech.synth.patents.plant_patents``: beta_key × treat × (scale − 1)."""
    m = getattr(w, "mech", None)
    if m is None:
        return 0.0
    return w.rates.beta_key * treat * (m["key_scale"] - 1.0)


def home_buckets(w, pool, home_key: np.ndarray, home_nk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Firms in high-similarity cities take their city's shared home buckets (probability
    ``p_city_cluster_home``). Called in ``keytech.synth.patents.plant_patents`` after its own draws (its stream is
    unchanged)."""
    m = getattr(w, "mech", None)
    if m is None:
        return home_key, home_nk
    rng = np.random.default_rng([w.seed, 54])
    nc = len(w.cities)
    key_b = np.flatnonzero(np.isin(pool.b_level, [0]))  # 'exact' buckets: one per listed subclass
    nk_b = np.flatnonzero(np.isin(pool.b_level, [len(pool.key_levels)]))  # 'no_rows' buckets
    city_key = key_b[rng.integers(0, len(key_b), (nc, home_key.shape[1]))]
    city_nk = nk_b[rng.integers(0, len(nk_b), (nc, home_nk.shape[1]))]
    city0 = w.firms["city0"].to_numpy()
    take = m["high_similarity_city"][city0] & (rng.random(len(city0)) < RATES.p_city_cluster_home)
    home_key, home_nk = home_key.copy(), home_nk.copy()
    home_key[take] = city_key[city0[take]]
    home_nk[take] = city_nk[city0[take]]
    m["firms_on_city_buckets"] = int(take.sum())
    return home_key, home_nk


def _target_codes() -> dict[int, np.ndarray]:
    """Listed concordance codes mapped to exactly one SEI industry, per industry."""
    s = paths.seeds_dir()
    conc = pd.read_csv(s / "sei_ipc_concordance.csv", dtype={"ipc_code": str, "sei_rule_id": int})
    cat = pd.read_csv(s / "sei_catalogue.csv", dtype=str)[["sei_rule_id", "sei_code"]]
    cat["sei_rule_id"] = cat["sei_rule_id"].astype(int)
    sub = pd.read_csv(s / "sei_subindustries.csv", dtype=str)[["sei_code", "sei_industry_code"]]
    m = conc.merge(cat, on="sei_rule_id").merge(sub, on="sei_code")
    m = m[m["ipc_code"].str.contains("/", regex=False)]
    inds = m.groupby("ipc_code")["sei_industry_code"].agg(lambda v: sorted(set(v)))
    single = inds[inds.map(len) == 1].map(lambda v: int(v[0]))
    return {k: np.array(sorted(single.index[single == k])) for k in sorted(set(single))}


def recode(w) -> None:
    """Stage after the patents: redraw the key-tech codes of a share of treated key inventions."""
    r = RATES
    m = getattr(w, "mech", None)
    if m is None:
        return
    rng = np.random.default_rng([w.seed, 53])
    pat = w.patent_table  # per planted application (duplicate rows repeat one)
    conc = load_concordance()
    targets = _target_codes()
    fields = np.array(sorted(r.field_weights))
    weights = np.array([r.field_weights[k] for k in fields], dtype=float)
    weights /= weights.sum()
    fy = w.fy
    treated = np.unique(fy["firm"].to_numpy()[m["treat"]].astype(np.int64) * 10_000
                        + fy["year"].to_numpy()[m["treat"]])
    # key inventions of listed firms (planted in window) in a treated firm-year, in ApplyNo order
    # (the 12-digit number orders the text); an application's year is its ApplyDate's
    year = pat.apply_d.astype("datetime64[Y]").astype(np.int64) + 1970
    cand = np.flatnonzero((pat.kind == 0) & (w.patent_rows["origin"] == 0)
                          & np.isin(pat.firm.astype(np.int64) * 10_000 + year, treated))
    if len(np.unique(pat.number)) != len(pat.number):
        raise AssertionError("synthetic patents: application numbers are not unique")
    cand = cand[np.argsort(pat.number[cand], kind="stable")]
    chosen = cand[rng.random(len(cand)) < r.recode_share]
    # in the written order of their first rows
    first_pos = np.full(len(pat.number), len(pat.src), dtype=np.int64)
    np.minimum.at(first_pos, pat.src, np.arange(len(pat.src)))
    chosen = chosen[np.argsort(first_pos[chosen], kind="stable")]
    new_ipc: list[str] = []
    by_field = {int(k): 0 for k in fields}
    for ipc in pat.ipc(chosen):
        codes = [normalise_ipc_code(t) for t in re.split(r"\s*[;；]\s*", ipc) if t.strip()]
        codes = list(dict.fromkeys(c for c in codes if c))
        k = int(rng.choice(fields, p=weights))
        out = []
        for code in codes:
            if conc.match(code).is_key_tech:
                code = str(rng.choice(targets[k]))
            out.append(code)
        out = list(dict.fromkeys(out))
        new_ipc.append(";".join(out))
        by_field[k] += 1
    pat.set_ipc(chosen, new_ipc)
    m["recoded"] = {"treated_key_inventions": int(len(cand)), "recoded": int(len(new_ipc)),
                    "recoded_rows_incl_duplicates": int(np.isin(pat.src, chosen).sum()),
                    "by_target_industry": by_field}


def write_tables(w, out: Path) -> dict:
    """Write subsidy_detail.csv and annual_report_keywords.csv; return their file entries."""
    m = getattr(w, "mech", None)
    if m is None:
        return {}
    r = RATES
    rng = np.random.default_rng([w.seed, 52])
    fy = w.fy
    f = fy["firm"].to_numpy()
    year = fy["year"].to_numpy()
    stk = w.firms["stkcd"].to_numpy()[f]
    T = m["firm_type"][f]
    assets = _consolidated(w)["A001000000"].to_numpy()
    assets = np.where(np.isfinite(assets), assets, np.nanmedian(assets))

    n_items = rng.poisson(np.where(T == 1, r.subsidy_items_mean[1], r.subsidy_items_mean[0]))
    row = np.repeat(np.arange(len(f)), n_items)
    u = rng.random(len(row))
    p_rd = np.where(T[row] == 1, r.p_rd_item[1], r.p_rd_item[0])
    p_pat = np.where(T[row] == 1, r.p_patent_item[1], r.p_patent_item[0])
    cat = np.where(u < p_rd, 0, np.where(u < p_rd + p_pat, 1, 2))
    names = np.empty(len(row), dtype=object)
    for k, items in enumerate((_RD_ITEMS, _PATENT_ITEMS, _OTHER_ITEMS)):
        sel = cat == k
        names[sel] = np.array(items, dtype=object)[rng.integers(0, len(items), sel.sum())]
    names = np.array([f"{y}年{n}" for y, n in zip(year[row], names)], dtype=object)
    amount = assets[row] * np.exp(rng.normal(math.log(4e-4), 1.0, len(row)))
    sub = frame("subsidy_detail", {"Stkcd": stk[row], "Accper": [f"{y}-12-31" for y in year[row]], "Item": names,
                        "Amount": fmt(amount)})
    dup = sub.groupby(["Stkcd", "Accper", "Item"]).cumcount()
    sub.loc[dup > 0, "Item"] = sub.loc[dup > 0, "Item"] + "（第" + (dup[dup > 0] + 1).astype(str) + "批）"

    lam = np.stack([np.where(T == 1, r.visit_mean[1], r.visit_mean[0]),
                    np.where(T == 1, r.standard_mean[1], r.standard_mean[0])], axis=1)
    counts = rng.poisson(lam)
    kw = frame("annual_report_keywords", {"Stkcd": np.repeat(stk, 2), "Year": np.repeat(year, 2).astype(str),
                       "Keyword": np.tile(np.array(KEYWORDS, dtype=object), len(f)),
                       "Count": counts.ravel().astype(str)})
    # pilot categories of the MIIT application form (spec alt_no_pilot_mention): a share of the
    # firms mention one in their annual reports (one row per firm-year, a random category of the
    # 2016 modes; count Poisson(1) for those firms, 0 for the others)
    mentions = rng.random(len(w.firms)) < r.p_pilot_mention_firm
    pilot_kw = frame("annual_report_keywords", {
        "Stkcd": stk, "Year": year.astype(str),
        "Keyword": np.array(MODES_2016, dtype=object)[rng.integers(0, len(MODES_2016), len(f))],
        "Count": np.where(mentions[f], rng.poisson(1.0, len(f)), 0).astype(str)})
    kw = pd.concat([kw, pilot_kw], ignore_index=True)
    m["pilot_mention_firms"] = int(mentions.sum())
    files = {}
    for name, df in (("subsidy_detail", sub), ("annual_report_keywords", kw)):
        write_csv(df, out / f"{name}.csv", "utf-8")
        files[name] = {"file": f"{name}.csv", "encoding": "utf-8", "description_rows": 0, "rows": len(df)}
    m["subsidy_items_by_category"] = {"rd": int((cat == 0).sum()), "patent": int((cat == 1).sum()),
                                      "other": int((cat == 2).sum())}
    return files


def truth(w) -> dict:
    """The ``mechanisms`` slot of ``_truth.json``."""
    m = getattr(w, "mech", None)
    if m is None:
        return {}
    fy = w.fy
    year = fy["year"].to_numpy()
    treat = m["treat"] & (year >= 2010) & (year <= 2019)
    scale = m["key_scale"]
    beta = w.rates.beta_key
    hs = m["high_similarity_city"][fy["city"].to_numpy()].astype(int)
    tt = m["firm_type"][fy["firm"].to_numpy()]
    return {
        "rates": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
                  for k, v in asdict(RATES).items()},
        "high_similarity_cities": sorted(w.cities.loc[m["high_similarity_city"], "city_code"].tolist()),
        "similarity_design": {
            "rule": ("matched pairs of cities within treatment cohorts (first treated year; never-treated "
                     "= one cohort), ranked by analysis-sample firm-years; one city of each pair (and an "
                     "unpaired city with probability 1/2) is high; of similarity_rerandomization_draws "
                     "random orientations the first minimising |share of sample firm-years in high "
                     "cities - 1/2| + |same for treated sample firm-years - 1/2| is kept"),
            **m.get("similarity_balance", {}),
        },
        "firms_on_city_buckets": m.get("firms_on_city_buckets"),
        "favourable_firm_type_share": float(np.mean(m["firm_type"])),
        "key_effect": {
            "formula": ("beta_key * (1 + 2*a_sim*(H_sim - mean H_sim) + 2*a_type*(T - mean T)) on the "
                        "log key-tech rate; means over treated firm-years 2010-2019"),
            "mean_log_rate_effect_by_cell": {
                f"H_sim={h},T={t}": (float(round(beta * scale[treat & (hs == h) & (tt == t)].mean(), 6))
                                     if (treat & (hs == h) & (tt == t)).any() else None)
                for h in (0, 1) for t in (0, 1)},
            "difference_high_minus_low_similarity": 2 * beta * RATES.key_scale_similarity,
            "difference_favourable_minus_unfavourable_type": 2 * beta * RATES.key_scale_type,
            "mean_scale_treated_2010_2019": float(round(scale[treat].mean(), 6)) if treat.any() else None,
            "beta_nonkey_all": w.rates.beta_nonkey,
        },
        "market": {"treated_rows_modified": m["market_rows"],
                   "sales_log_effect": RATES.sales_log_effect,
                   "volatility_shrink": RATES.volatility_shrink},
        "recoding": m.get("recoded", {}),
        "subsidy_items_by_category": m.get("subsidy_items_by_category", {}),
        "expected_signs": {
            "table5": "Policy larger in the high-similarity halves (IPC3, IPC4); joint applications > 0",
            "table6": "volatility_pre/current/post < 0 (current and post strongest), ln_sale > 0",
            "heterogeneity_key": "larger for low FC, low WW, high HHI, high R&D and patent subsidies, "
                                 "high 参访 and 标准化 counts",
            "heterogeneity_nonkey": "no difference (beta_nonkey for everyone)",
            "fields": "largest for SEI industry 2 (high-end equipment), then 6, 5, 7",
            "table7": "Width1, Width2, Width4 > 0",
        },
    }


PLUGIN = Plugin(
    name="mechanisms", tables=TABLES,
    stages=(("yearbook", "mechanisms plan", plan), ("patents", "mechanisms recode", recode)),
    key_log_shift=key_log_shift, home_buckets=home_buckets, write_tables=write_tables, truth=truth,
)
