{{ config(materialized='table') }}

{#- One row per landed yearbook row, with the city code its printed name resolves to
    (int_city_names_by_year: the name valid in the row's year). When two rows resolve to the same city and year (a merged
    or renamed city printed under both names, e.g. 莱芜市 and 济南市 before 2019), the row
    with the better name match wins (official name first), then the lower _source_row;
    the other is quarantined. Unknown names are quarantined too. -#}

with city_years as (
    select * from {{ ref('stg_yearbook__city_years') }}
),

city_names as (
    select * from {{ ref('int_city_names_by_year') }}
),

matched as (
    select
        city_years.*,
        city_names.city_code,
        city_names.match_type as city_match_type,
        city_names.match_priority as city_match_priority
    from city_years
    left join city_names
        on {{ city_name_matches('city_years.city_name_raw', year='city_years.year') }}
),

ranked as (
    select
        *,
        case
            when city_code is not null
                then {{ best_city_match_rank('city_code, year', priority='city_match_priority') }}
        end as city_year_rank
    from matched
),

final as (
    select
        *,
        coalesce(city_year_rank = 1, false) as is_kept
    from ranked
)

select * from final
