"""Stages 2-4a: firms and firm-years (listing, industry, city, delisting, ST spells, movers), the
pilot list and the CSMAR firm_info table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from keytech import paths
from keytech.synth.columns import frame
from keytech.synth.common import date_str, normalised, random_dates, stage_rng
from keytech.synth.config import FIRST_YEAR, SHARE_REGISTERED_ELSEWHERE
from keytech.synth.vocab import (CATEGORIES_2015, IND_WORDS, MODES_2016, OLD_NAMES, OWNERSHIP, PRODUCTS,
                                 PROJECT_SUFFIX, SYLLABLES)
from keytech.synth.world import World


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
    _spill_full_boards(prefix, list_year)
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


# Where the latest-listed firms of a board with more than 998 firms move (a 3-digit serial per
# board): the sibling boards of the same exchange, as the real ones filled up (600 → 601/603/605,
# 000 → 001, 002 → 003, 300 → 301, 688 → 689). Only the xl scale gets there; smaller worlds keep
# their draws.
BOARD_OVERFLOW = {"600": ("601", "603", "605"), "601": ("603", "605"), "603": ("605",), "000": ("001",),
                  "002": ("003", "001"), "300": ("301",), "688": ("689",)}


def _spill_full_boards(prefix: np.ndarray, list_year: np.ndarray) -> None:
    for p in sorted(set(prefix)):
        members = np.flatnonzero(prefix == p)
        if len(members) <= 998:
            continue
        order = members[np.argsort(list_year[members], kind="stable")]
        for i in order[998:]:  # the latest listed move to the first sibling board with room
            for sibling in BOARD_OVERFLOW.get(p, ()):
                if (prefix == sibling).sum() < 998:
                    prefix[i] = sibling
                    break


def plant_firms(w: World) -> None:
    rng = stage_rng(w.seed, 2)
    cfg = w.cfg
    n = cfg.n_firms
    cities = w.cities
    nc = len(cities)
    ind = pd.read_csv(paths.seeds_dir() / "csrc_2012_industries.csv", dtype=str)

    # listing years
    shares = np.array(cfg.listing_shares)
    group = rng.choice(3, n, p=shares / shares.sum())
    early = rng.choice(np.arange(1991, 2008), n, p=normalised(np.linspace(0.4, 1.6, 17)))
    mid = rng.integers(2008, 2015, n)
    late = rng.integers(2015, 2022, n)
    list_year = np.where(group == 0, early, np.where(group == 1, mid, late))
    list_date = random_dates(list_year, rng)
    est_year = list_year - rng.integers(2, 20, n)
    est_date = random_dates(est_year, rng)

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
        np.where(manufacturing, rng.choice(c_codes, n, p=normalised(c_w)), rng.choice(other_codes, n)),
    )

    # home city: bigger cities host more firms
    p_city = normalised(np.exp(cfg.firm_city_concentration * cities["size"].to_numpy()))
    city = rng.choice(nc, n, p=p_city)
    xiangyang = int(np.flatnonzero(cities["city_name"] == "襄阳市")[0])
    city[0] = xiangyang  # one early-listed firm in 襄阳 prints the old name 襄樊 in 2008-2009
    list_year[0] = min(list_year[0], 2005)
    list_date[0] = random_dates(np.array([list_year[0]]), rng)[0]

    # delisting
    eligible = np.flatnonzero(list_year <= 2018)
    n_del = max(2, int(round(cfg.share_delisted * n)))
    delisted = np.zeros(n, bool)
    delisted[rng.choice(eligible[eligible != 0], n_del, replace=False)] = True
    delist_year = np.zeros(n, dtype=int)
    for i in np.flatnonzero(delisted):
        delist_year[i] = rng.integers(max(int(list_year[i]) + 2, 2010), cfg.last_year + 1)
    delist_date = np.where(delisted, random_dates(np.maximum(delist_year, 1970), rng), np.datetime64("NaT"))
    start = np.maximum(list_year, FIRST_YEAR)
    end = np.where(delisted, delist_year, cfg.last_year)

    stkcd = _stock_codes(list_year, financial, rng)
    # names: unique (two syllables × industry word)
    n_syl = len(SYLLABLES)
    space = n_syl * (n_syl - 1) * len(IND_WORDS)
    draw = rng.choice(space, n, replace=False)
    s1 = draw // ((n_syl - 1) * len(IND_WORDS))
    rem = draw % ((n_syl - 1) * len(IND_WORDS))
    s2 = rem // len(IND_WORDS)
    s2 = np.where(s2 >= s1, s2 + 1, s2)
    iw = rem % len(IND_WORDS)
    core = np.array([SYLLABLES[a] + SYLLABLES[b] for a, b in zip(s1, s2)], dtype=object)
    short = np.array([c + IND_WORDS[k] for c, k in zip(core, iw)], dtype=object)
    cname = cities["city_name"].to_numpy()
    full = np.array([f"{cname[c]}{s.removesuffix('股份')}股份有限公司" for c, s in zip(city, short)],
                    dtype=object)
    subsidiary = np.array([f"{cname[c]}{k}智能装备有限公司" for c, k in zip(city, core)], dtype=object)
    ownership = rng.choice(OWNERSHIP[0], n, p=OWNERSHIP[1])

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


# ----------------------------------------------------------------------------------------------
# Stage 3: pilot list
# ----------------------------------------------------------------------------------------------


def plant_pilot_list(w: World) -> None:
    rng = stage_rng(w.seed, 3)
    cities, firms, fy = w.cities, w.firms, w.fy
    nc = len(cities)
    size = cities["size"].to_numpy()
    first_wave = cities["first_wave"].to_numpy()
    rows = []
    pilot_firm = np.zeros(len(firms), bool)
    pilot_year = np.zeros(len(firms), int)
    syl = np.array(SYLLABLES)
    for wr in w.waves:
        wave = wr["wave"]
        new = np.flatnonzero(first_wave == wave)
        already = np.flatnonzero((first_wave > 0) & (first_wave <= wave))
        extra = wr["units"] - len(new)
        p = normalised(np.exp(0.8 * size[already]))
        unit_cities = np.concatenate([rng.permutation(new), rng.choice(already, extra, p=p)])
        n_units = len(unit_cities)
        categories = CATEGORIES_2015 if wave == 2015 else MODES_2016
        cat = rng.choice(categories, n_units)
        product = rng.choice(PRODUCTS, n_units)
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
                unit_names[u_i] = f"{cname[unit_cities[u_i]]}{syl[a]}{syl[b]}{rng.choice(IND_WORDS)}有限公司"
            rows.append({
                "Wave": str(wave), "AnnounceDate": wr["announce_date"],
                "ProjectName": f"{product[u_i]}{PROJECT_SUFFIX[cat[u_i]]}",
                "UnitName": unit_names[u_i],
                "Province": cities.at[unit_cities[u_i], "prov_pilot"],
                "City": cities.at[unit_cities[u_i], "print_pilot"],
                "Category": cat[u_i], "Stkcd": stk[u_i],
            })
    pilot = pd.DataFrame(rows)
    # optional Industry (CSRC 2012 division of the unit): the listed firm's for listed units, a
    # manufacturing division for the others (own stream: the draws above are unchanged)
    rng_ind = np.random.default_rng([w.seed, 31])
    industry_of = dict(zip(firms["stkcd"], firms["industry"]))
    manufacturing = np.sort(firms.loc[firms["manufacturing"], "industry"].unique())
    pilot["Industry"] = [industry_of[s] if s else str(rng_ind.choice(manufacturing)) for s in pilot["Stkcd"]]
    pilot = frame("pilot_list", dict(pilot.items()))
    # the key (Wave, ProjectName, UnitName) must be unique
    dup = pilot.duplicated(["Wave", "ProjectName", "UnitName"], keep="first")
    pilot.loc[dup, "ProjectName"] = pilot.loc[dup, "ProjectName"] + "（二期）"
    w.pilot_list = pilot
    w.firms["pilot"] = pilot_firm
    w.firms["pilot_year"] = pilot_year



def plant_firm_info(w: World) -> None:
    rng = stage_rng(w.seed, 4)
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
    for new_name, (olds, last) in OLD_NAMES.items():
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
    delist_str[last_row & dl] = date_str(firms["delist_date"].to_numpy()[f][last_row & dl])
    pre_last = np.r_[last_row[1:], False] & dl & (stflg == "*ST")
    statco[pre_last & (rng.random(nrow) < 0.5)] = "暂停上市"
    est = date_str(firms["est_date"].to_numpy()[f])
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
    w.firm_info = frame("firm_info", {
        "Stkcd": firms["stkcd"].to_numpy()[f], "Accper": [f"{y}-12-31" for y in year],
        "Stknme": stknme, "Nnindcd": firms["industry"].to_numpy()[f], "Provnm": provnm, "Ctnm": ctnm,
        "Estbdt": est, "Listdt": date_str(firms["list_date"].to_numpy()[f]), "Statco": statco,
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

