-- Every wave of the landed pilot list has one announcement date, equal to the published
-- date of Table 1 (seeds/pilot_waves.csv), and no wave is unknown.
with pilot_projects as (
    select * from {{ ref('stg_miit__pilot_projects') }}
),

waves as (
    select * from {{ ref('pilot_waves') }}
),

landed_waves as (
    select
        wave,
        count(distinct announcement_date) as n_dates,
        min(announcement_date) as announcement_date
    from pilot_projects
    group by wave
)

select
    landed_waves.wave,
    landed_waves.n_dates,
    landed_waves.announcement_date as landed_date,
    waves.announcement_date as published_date
from landed_waves
left join waves
    on landed_waves.wave = waves.wave
where
    landed_waves.n_dates <> 1
    or waves.wave is null
    or landed_waves.announcement_date <> waves.announcement_date
