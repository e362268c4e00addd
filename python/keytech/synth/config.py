"""Sizes, planted rates and the calendar of the synthetic world."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FIRST_YEAR = 2008
LAST_YEAR = 2022
YEARS = np.arange(FIRST_YEAR, LAST_YEAR + 1)
EXTRACTION_DATE = f"{LAST_YEAR}-12-31"  # of the 2022 scales; ScaleConfig.extraction_date
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
    # Multiplier on every planted patent rate (key, non-key, utility model, design: exp(g_t) times
    # this); 1 at the demo and paper scales, whose draws it leaves untouched.
    patent_volume: float = 1.0
    # Home city of a firm drawn ∝ exp(firm_city_concentration × city size); pilot cities drawn with
    # loading pilot_size_selection on city size (keytech.synth.endogeneity, unless its rates set
    # size_selection). Listed firms crowd into the big cities, which are also the likely pilot
    # cities, so about 70% of the sample firm-years are in pilot cities (most, as in the paper) and
    # Table 4's PSM samples (6)/(7) come near the paper's 44-45% of column (5)'s N: 42%/53% on the
    # demo (issue 11; docs/estimator-conventions.md). Was 1.0 and 0.9: half treated, 52%/79%.
    # 1.5 gave 38%/46% but too few control cities for the Table 5 similarity halves. Only
    # ``small`` (the demo's scale) uses 1.2 and 2.0; ``tiny`` and ``paper`` keep 1.0 and 0.9, the
    # worlds their tests are calibrated on (with 1.2/2.0 tiny's alt_no_pilot_mention sample is
    # empty and the paper-scale IV world's interactive-FE fit does not converge; the small spill
    # world of test_endogeneity_synthetic keeps them too).
    firm_city_concentration: float = 1.0
    pilot_size_selection: float = 0.9
    # Calendar (issue 17): firm-years, yearbook, IV series and patent applications run FIRST_YEAR ..
    # last_year, the extract is taken on December 31 of last_year; later_year_effects are g_t for
    # the years after 2022 (Rates.year_effects covers 2008-2022). 2022 and () at tiny, small and
    # paper. _truth.json records the calendar as "years" / "extraction_date" (and
    # "year_effects_after_2022" when there are any), not under "scale_config" (CALENDAR_FIELDS), so
    # the truth of the 2022 scales is unchanged.
    last_year: int = LAST_YEAR
    later_year_effects: tuple[float, ...] = ()

    @property
    def years(self) -> np.ndarray:
        return np.arange(FIRST_YEAR, self.last_year + 1)

    @property
    def extraction_date(self) -> str:
        return f"{self.last_year}-12-31"


CALENDAR_FIELDS = ("last_year", "later_year_effects")


SCALES: dict[str, ScaleConfig] = {
    "tiny": ScaleConfig("tiny", n_firms=80, n_cities=40, pilot_factor=40 / 300, patents_format="csv"),
    "small": ScaleConfig("small", n_firms=500, n_cities=120, pilot_factor=0.4, patents_format="csv",
                         firm_city_concentration=1.2, pilot_size_selection=2.0),
    "paper": ScaleConfig("paper", n_firms=3500, n_cities=300, pilot_factor=1.0, patents_format="parquet"),
    # Past paper scale (issue 17, docs/performance.md "Growth curve"): about every A-share listed
    # firm (≈ 5,300) over the 2008-2024 (g_t flat after 2022) and ≈ 8M landed patent rows
    # (2.6 times the paper world's patents per firm-year; 3.0 gave 9.1M rows over 2008-2024).
    "xl": ScaleConfig("xl", n_firms=5300, n_cities=300, pilot_factor=1.0, patents_format="parquet",
                      patent_volume=2.6, last_year=2024, later_year_effects=(1.05, 1.04)),
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

