-- Pilot coverage by wave.
-- For each MIIT wave: the cities whose first pilot came in that wave (this data) next to the paper's
-- Table 1 (seed pilot_waves), the year Policy switches on, and how many firm-years of the analysis
-- panel are treated by those cities. Sources: marts.dim_cities, marts.rpt_analysis_panel,
-- seeds.pilot_waves.
-- Run:  .venv/bin/keytech sql analysis/pilot_coverage_by_wave.sql
with cities as (
    select first_pilot_wave as wave,
           count(*)                   as new_cities,
           sum(n_pilot_units)         as pilot_units_in_new_cities,
           min(first_treated_year)    as policy_from_year,
           string_agg(city_name, '、' order by city_code) as city_names
    from {{ ref('dim_cities') }}
    where first_pilot_wave is not null
    group by first_pilot_wave
),
panel as (
    select c.first_pilot_wave as wave,
           count(distinct p.stkcd)                 as sample_firms,
           count(*)                                as sample_firm_years,
           count(*) filter (where p.policy = 1)    as treated_firm_years
    from {{ ref('rpt_analysis_panel') }} as p
    join {{ ref('dim_cities') }} as c using (city_code)
    where c.first_pilot_wave is not null
    group by c.first_pilot_wave
)
select
    w.wave,
    w.announcement_date,
    w.new_pilot_cities        as paper_new_cities,
    cities.new_cities         as data_new_cities,
    w.pilot_units             as paper_pilot_units,
    cities.pilot_units_in_new_cities,
    cities.policy_from_year,
    panel.sample_firms,
    panel.sample_firm_years,
    panel.treated_firm_years,
    cities.city_names
from {{ ref('pilot_waves') }} as w
left join cities using (wave)
left join panel using (wave)
order by w.wave
