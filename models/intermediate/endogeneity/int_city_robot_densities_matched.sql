{#- One row per city with a robot density in the base year (var iv_base_year, default 2009):
    printed names resolved like the yearbook's (int_city_names_unioned); when two rows resolve
    to the same city the better name match, then the lower _source_row, wins. -#}

with densities as (
    select * from {{ ref('stg_instruments__region_robot_densities') }}
),

city_names as (
    select * from {{ ref('int_city_names_unioned') }}
),

matched as (
    select
        densities.*,
        city_names.city_code,
        city_names.match_priority
    from densities
    inner join city_names
        on {{ city_name_matches('densities.city_name_raw') }}
    where densities.year = {{ var('iv_base_year', 2009) }}
),

ranked as (
    select
        *,
        {{ best_city_match_rank('city_code') }} as city_rank
    from matched
),

final as (
    select
        city_code,
        year as base_year,
        robot_density as robot_density_base
    from ranked
    where city_rank = 1
)

select * from final
