{#- One row per city and IFR industry class: base-year employment and its share of the city's
    employment over all classes (the Bartik shares of IV2). Rows of a city printed under a
    worse name match than its best are ignored (merged / renamed cities). -#}

with employment as (
    select * from {{ ref('stg_instruments__industry_employments') }}
),

city_names as (
    select * from {{ ref('int_city_names_unioned') }}
),

matched as (
    select
        employment.*,
        city_names.city_code,
        city_names.match_priority,
        min(city_names.match_priority) over (partition by city_names.city_code)
            as best_priority
    from employment
    inner join city_names
        on {{ city_name_matches('employment.city_name_raw') }}
    where employment.year = {{ var('iv_base_year', 2009) }}
),

by_industry as (
    select
        city_code,
        ifr_industry_code,
        {{ ordered_sum('employment_10k') }} as employment_10k
    from matched
    where match_priority = best_priority
    group by city_code, ifr_industry_code
),

final as (
    select
        city_code,
        ifr_industry_code,
        employment_10k,
        employment_10k
        / nullif({{ ordered_sum('employment_10k') }} over (partition by city_code), 0)
            as employment_share
    from by_industry
)

select * from final
