-- Table 1 of Pi & Luo: the landed pilot list has, per wave, the published number of units
-- (rows of the list) and of cities first treated in that wave (dim_cities.first_pilot_wave), as
-- in seeds/pilot_waves.csv (306 units / 116 cities overall; the seed itself is checked by
-- assert_pilot_waves_match_published). A partial list (the synthetic data scale the
-- counts down) only warns; set the var expect_complete_pilot_list: true to make a mismatch an
-- error, as it must be on the full MIIT lists.
{{ config(severity=('error' if var('expect_complete_pilot_list', false) else 'warn')) }}

with waves as (
    select * from {{ ref('pilot_waves') }}
),

pilot_projects as (
    select * from {{ ref('stg_miit__pilot_projects') }}
),

cities as (
    select * from {{ ref('dim_cities') }}
),
landed_units as (
    select
        wave,
        count(*) as pilot_units
    from pilot_projects
    group by wave
),

landed_cities as (
    select
        first_pilot_wave as wave,
        count(*) as new_pilot_cities
    from cities
    where first_pilot_wave is not null
    group by first_pilot_wave
),

landed_failures as (
    select
        waves.wave,
        'landed wave ' || waves.wave || ': ' || coalesce(landed_units.pilot_units, 0)
        || ' units / ' || coalesce(landed_cities.new_pilot_cities, 0)
        || ' new cities, published ' || waves.pilot_units || ' / '
        || waves.new_pilot_cities as failure
    from waves
    left join landed_units
        on waves.wave = landed_units.wave
    left join landed_cities
        on waves.wave = landed_cities.wave
    where
        coalesce(landed_units.pilot_units, 0) <> waves.pilot_units
        or coalesce(landed_cities.new_pilot_cities, 0) <> waves.new_pilot_cities
)

select * from landed_failures
