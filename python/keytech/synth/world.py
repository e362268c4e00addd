"""The world being generated (``World``) and stage 1: cities and pilot waves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from keytech import paths
from keytech.synth.common import stage_rng
from keytech.synth.config import Rates, ScaleConfig
from keytech.synth.vocab import BIG_CITIES, FORCED_CITIES


@dataclass
class World:
    """The world being generated. Each stage adds its attributes:

    * ``plant_cities``: ``cities`` (one row per city: names as each source prints them, size, first
      wave and first treated year), ``waves``;
    * ``plant_firms``: ``firms`` (one row per firm), ``fy`` (one row per firm-year; later stages add
      planted status columns such as ``policy``, ``n_key``, ``missing_firm_control``), ``movers``;
    * ``plant_pilot_list``: ``pilot_list``; ``plant_firm_info``: ``firm_info``;
      ``plant_financials``: ``statements`` (per table); ``plant_yearbook``: ``yearbook`` (as printed)
      and ``yearbook_true``;
    * ``plant_patents``: ``patent_table`` (``keytech.synth.patents.PatentTable``: the rows as arrays,
      turned into strings per block; ``patents`` builds the whole frame) and the planted status of
      each written row (``patents_kind``, ``patents_origin``, ``patents_duplicate``);
    * the plug-ins: ``endog`` / ``endogeneity_rates`` and ``mech``;
    * the ``*_mess`` / ``*_truth`` attributes: what ``_truth.json`` records.
    """

    cfg: ScaleConfig
    rates: Rates
    seed: int
    truth: dict = field(default_factory=dict)
    plugins: tuple = ()  # the plug-in worlds taking part (keytech.synth.plugin.Plugin), in order

    @property
    def patents(self) -> pd.DataFrame:
        """The whole patents table as written, built from ``patent_table`` on every access (for
        tests and small scales: at ``xl`` it takes several GiB; the writer goes block by block)."""
        return self.patent_table.frame()


def plant_cities(w: World) -> None:
    rng = stage_rng(w.seed, 1)
    seeds = pd.read_csv(paths.seeds_dir() / "cn_prefecture_cities.csv", dtype=str, keep_default_na=False)
    names = seeds["city_name"].to_numpy()
    n = min(w.cfg.n_cities, len(seeds))
    forced = np.flatnonzero(np.isin(names, FORCED_CITIES))
    rest = np.setdiff1d(np.arange(len(seeds)), forced)
    weight = np.where(np.char.endswith(names[rest].astype(str), "市"), 1.0, 0.3)
    pick = rng.choice(rest, n - len(forced), replace=False, p=weight / weight.sum())
    idx = np.sort(np.concatenate([forced, pick]))
    cities = seeds.iloc[idx].reset_index(drop=True)
    size = rng.normal(0, 1, n)
    size[np.isin(cities["city_name"], BIG_CITIES)] += 2.0
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



def _short_city(name: str) -> str:
    return name[:-1] if name.endswith("市") and len(name) > 2 else name


def _short_province(name: str) -> str:
    for suffix in ("维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "省", "市"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
