with cities as (
    select * from {{ ref('cn_prefecture_cities') }}
),

pilot_projects as (
    select * from {{ ref('int_pilot_projects_city_matched') }}
),

city_pilots as (
    select
        city_code,
        min(announcement_date) as first_announcement_date,
        -- ties on the date (two waves announced the same day) go to the lower wave, not to
        -- whichever row a thread saw first
        arg_min(wave, case when announcement_date is not null then (announcement_date, wave) end)
            as first_pilot_wave,
        count(distinct (wave, unit_name)) as n_pilot_units
    from pilot_projects
    where city_code is not null
    group by city_code
),

final as (
    select
        cities.city_code,
        cities.city_name,
        cities.province_code,
        cities.province_name,
        cities.longitude,
        cities.latitude,
        city_pilots.first_announcement_date,
        city_pilots.first_pilot_wave,
        year(city_pilots.first_announcement_date) + 1 as first_treated_year,
        coalesce(city_pilots.n_pilot_units, 0) as n_pilot_units,
        city_pilots.city_code is not null as is_pilot_city
    from cities
    left join city_pilots
        on cities.city_code = city_pilots.city_code
)

select * from final
