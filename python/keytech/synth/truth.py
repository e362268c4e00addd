"""The planted truth (``_truth.json``) and the paper's sample filters as planted."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from keytech.synth.columns import CORE_TABLES
from keytech.synth.config import CALENDAR_FIELDS, FIRST_YEAR, GENERATOR_VERSION
from keytech.synth.world import World


def tables(w: World) -> tuple[str, ...]:
    """The raw tables of a world: the core's, then each plug-in's."""
    return CORE_TABLES + tuple(t for p in w.plugins for t in p.tables)


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


def build_truth(w: World, files: dict) -> dict:
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
        "seed": w.seed, "scale": w.cfg.name, "scale_config": {k: v for k, v in asdict(w.cfg).items() if k not in CALENDAR_FIELDS},
        "years": [FIRST_YEAR, w.cfg.last_year], "extraction_date": w.cfg.extraction_date,
        **({"year_effects_after_2022": list(w.cfg.later_year_effects)} if w.cfg.later_year_effects else {}),
        "rates": jsonable(asdict(w.rates)),
        "policy_rule": ("Policy_ct = 1 when year t > the announcement year of city c's first pilot "
                        "(treated from announcement year + 1); c is the firm's registered city in year t"),
        "key_tech_rule": ("invention is key-tech when any of its IPC codes matches "
                          "keytech.ipc.Concordance (hierarchical, supplement on)"),
        "rows": {t: files[t]["rows"] for t in tables(w)},
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
        # the plug-ins' slots, in reverse plug-in order (the order _truth.json has always had)
        **{p.name: p.truth(w) for p in reversed(w.plugins) if p.truth is not None},
    }


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj

