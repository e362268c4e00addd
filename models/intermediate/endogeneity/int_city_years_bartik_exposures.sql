{#- One row per city and year: Bartik robot exposure = sum over IFR classes j of the city's
    base-year employment share s_cj times US robots per 1,000 workers in j and year t
    (Acemoglu & Restrepo 2020 style; only the industry structure is local). -#}

with shares as (
    select * from {{ ref('int_city_industry_shares') }}
),

us_robots as (
    select * from {{ ref('stg_instruments__us_industry_robots') }}
),

final as (
    select
        shares.city_code,
        us_robots.year,
        {{ ordered_sum('shares.employment_share * us_robots.us_robots_per_1000_workers') }}
            as bartik_exposure,
        count(*) as n_industries
    from shares
    inner join us_robots
        on shares.ifr_industry_code = us_robots.ifr_industry_code
    group by shares.city_code, us_robots.year
)

select * from final
