{#- A table, not a view (issue 17): the city-name resolution is read by about a dozen models and
    tests; as a view each read recomputed it (≈ 0.06 s each even at tiny scale). -#}
{{ config(materialized='table') }}

{#- One row per city or county name a record may print and year, resolved to the panel
    prefecture valid for that year. Names by priority (the best wins; a name resolving to
    two cities at its best priority in a year is ambiguous there and left out):
      1-3  the current official names and their short forms (int_city_names_unioned,
           every year)
      4    a prefecture-level name in use in that year (seeds/city_name_history.csv:
           襄樊市 before 2010, 巢湖市 until 2011, 铜仁地区 until 2011, 莱芜市 until 2018)
      5    a county-level name in use in that year, mapped to its prefecture (浦东新区)
      6    a historical name printed outside its years of use, when it names one panel
           city over all years from var city_history_first_year (int_city_names_unioned
           priority 4/5; e.g. 襄樊 in a 2012 extract)
    The mapping rule for abolished, renamed and split units is python/keytech/geography.py
    (seed regenerated with keytech.geography.write_city_name_history). -#}

with names as (
    select * from {{ ref('int_city_names_unioned') }}
),

history as (
    select * from {{ ref('city_name_history') }}
),

years as (
    select unnest(
        generate_series(
            {{ var('city_history_first_year') }},
            {{ var('panel_end_year') }} + 5
        )
    ) as year
),

current_names as (
    select
        names.lookup_name,
        years.year,
        names.city_code,
        names.match_priority,
        names.match_type
    from names
    cross join years
    where names.match_priority <= 3
),

year_valid_history as (
    select
        {{ clean_place_name('history.lookup_name') }} as lookup_name,
        years.year,
        history.city_code,
        case history.division_level when 'prefecture' then 4 else 5 end
            as match_priority,
        'history_' || history.division_level as match_type
    from history
    inner join years
        on years.year >= history.valid_from
        and years.year < history.valid_until
),

other_year_history as (
    select
        names.lookup_name,
        years.year,
        names.city_code,
        6 as match_priority,
        'history_other_year' as match_type
    from names
    cross join years
    where names.match_priority > 3
),

candidates as (
    select * from current_names
    union all
    select * from year_valid_history
    union all
    select * from other_year_history
),

best as (
    select *
    from candidates
    where length(lookup_name) >= 2
    qualify match_priority = min(match_priority) over (partition by lookup_name, year)
),

final as (
    select
        lookup_name,
        year,
        min(city_code) as city_code,
        min(match_priority) as match_priority,
        min(match_type) as match_type
    from best
    group by lookup_name, year
    having count(distinct city_code) = 1
)

select * from final
