-- Table 1 of Pi & Luo (units 涉及单位个数, cities 涉及城市数 and announcement date per wave), two
-- checks in one test (issue 17: one node instead of two; each returns (wave, failure) rows):
-- 1. the seed pilot_waves holds the published counts 46/31, 64/32, 97/30, 99/23, i.e. 306 units
--    and 116 cities overall;
-- 2. every wave of the landed pilot list has one announcement date, equal to the published date
--    of the seed, and no wave is unknown.
-- (The landed pilot list's counts are compared with the seed in
-- assert_pilot_wave_counts_match_published, which only warns unless expect_complete_pilot_list.)

with waves as (
    select * from {{ ref('pilot_waves') }}
),

pilot_projects as (
    select * from {{ ref('stg_miit__pilot_projects') }}
),

published as (
    select * from (
        values (2015, 46, 31), (2016, 64, 32), (2017, 97, 30), (2018, 99, 23)
    ) as t (wave, pilot_units, new_pilot_cities)
),

wave_failures as (
    select
        coalesce(waves.wave, published.wave) as wave,
        'seed pilot_waves differs from the published Table 1' as failure
    from waves
    full outer join published
        on waves.wave = published.wave
    where
        waves.wave is null
        or published.wave is null
        or waves.pilot_units <> published.pilot_units
        or waves.new_pilot_cities <> published.new_pilot_cities
),

total_failures as (
    select
        null::integer as wave,
        'seed totals are not 306 units / 116 cities' as failure
    from waves
    having sum(pilot_units) <> 306 or sum(new_pilot_cities) <> 116
),

landed_waves as (
    select
        wave,
        count(distinct announcement_date) as n_dates,
        min(announcement_date) as announcement_date
    from pilot_projects
    group by wave
),

date_failures as (
    select
        landed_waves.wave,
        'landed wave ' || landed_waves.wave || ': ' || landed_waves.n_dates
        || ' announcement date(s), first ' || coalesce(cast(landed_waves.announcement_date as varchar), 'none')
        || '; published ' || coalesce(cast(waves.announcement_date as varchar), 'no such wave') as failure
    from landed_waves
    left join waves
        on landed_waves.wave = waves.wave
    where
        landed_waves.n_dates <> 1
        or waves.wave is null
        or landed_waves.announcement_date <> waves.announcement_date
)

select * from wave_failures
union all
select * from total_failures
union all
select * from date_failures
