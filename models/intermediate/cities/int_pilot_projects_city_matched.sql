{#- A table, not a view (issue 17): the city-name resolution is read by about a dozen models and
    tests; as a view each read recomputed it (≈ 0.06 s each even at tiny scale). -#}
{{ config(materialized='table') }}

{#- One row per landed pilot-list row with the city code its printed city resolves to
    and a check of the printed province. Rows with an unknown city cannot treat any
    city: they are quarantined (and so visible), never silently dropped. -#}

with pilot_projects as (
    select * from {{ ref('stg_miit__pilot_projects') }}
),

city_names as (
    select * from {{ ref('int_city_names_by_year') }}
),

cities as (
    select * from {{ ref('cn_prefecture_cities') }}
),

province_names as (
    select * from {{ ref('int_province_names_unioned') }}
),

matched as (
    select
        pilot_projects.*,
        city_names.city_code,
        city_names.match_type as city_match_type,
        cities.province_code,
        province_names.province_code as printed_province_code
    from pilot_projects
    left join city_names
        on {{ city_name_matches('pilot_projects.city_name_raw', year='pilot_projects.wave') }}
    left join cities
        on city_names.city_code = cities.city_code
    left join province_names
        on {{ province_name_matches('pilot_projects.province_name_raw') }}
),

final as (
    select
        * exclude (printed_province_code),
        {{ is_province_consistent('province_name_raw', 'printed_province_code', 'province_code') }}
            as is_province_consistent
    from matched
)

select * from final
