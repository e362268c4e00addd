-- Table 1 of Pi & Luo (units 涉及单位个数 and cities 涉及城市数 per wave): the seed pilot_waves
-- holds the published counts 46/31, 64/32, 97/30, 99/23, i.e. 306 units and 116 cities overall.
-- (The landed pilot list is compared with the seed in assert_pilot_wave_counts_match_published.)

with waves as (
    select * from {{ ref('pilot_waves') }}
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
)

select * from wave_failures
union all
select * from total_failures
