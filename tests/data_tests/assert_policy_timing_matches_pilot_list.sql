-- Policy timing is consistent with the landed pilot list: a city's first_treated_year
-- is the year of its earliest announcement date + 1, and policy = 1 exactly when
-- year >= first_treated_year (0 otherwise, also for never-treated cities).
with pilot_projects as (
    select * from {{ ref('int_pilot_projects_city_matched') }}
),

cities as (
    select * from {{ ref('dim_cities') }}
),

firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

expected_cities as (
    select
        city_code,
        year(min(announcement_date)) + 1 as expected_first_treated_year
    from pilot_projects
    where city_code is not null
    group by city_code
),

city_failures as (
    select
        cities.city_code,
        null::integer as year,
        'first_treated_year differs from the pilot list' as failure
    from cities
    left join expected_cities
        on cities.city_code = expected_cities.city_code
    where
        cities.first_treated_year
        is distinct from expected_cities.expected_first_treated_year
),

firm_year_failures as (
    select
        firm_years.city_code,
        firm_years.year,
        'policy inconsistent with first_treated_year' as failure
    from firm_years
    left join expected_cities
        on firm_years.city_code = expected_cities.city_code
    where
        firm_years.city_code is not null
        and firm_years.policy is distinct from case
            when firm_years.year >= expected_cities.expected_first_treated_year then 1
            else 0
        end
)

select * from city_failures
union all
select * from firm_year_failures
