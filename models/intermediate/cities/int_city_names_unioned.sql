{#- A table, not a view (issue 17): the city-name resolution is read by about a dozen models and
    tests; as a view each read recomputed it (≈ 0.06 s each even at tiny scale). -#}
{{ config(materialized='table') }}

{#- One row per name a vendor may print for a prefecture-level city, mapped to its code:
      1 official        the official name, e.g. 深圳市, 延边朝鲜族自治州
      2 suffix_removed  the official name without 市 / 地区 / 盟 / 自治州, e.g. 深圳, 延边朝鲜族
      3 short_form      for 自治州 also without the ethnic names, bare and with 州,
                        e.g. 延边, 延边州, 黔东南州
      4 history_prefecture  a prefecture-level name in use in any year since var
                        city_history_first_year (seeds/city_name_history.csv,
                        derived from the division-code history: 襄樊市, 毕节地区, 巢湖, 莱芜
                        ...), with the panel city it belongs to
      5 history_county  a county-level name in use since var city_history_first_year
                        (浦东新区), mapped to its prefecture
    A name that resolves to more than one city at its best priority is ambiguous and
    left out (rows printing it stay unmatched and are quarantined). The year-aware
    resolution used for firm, yearbook and pilot rows is int_city_names_by_year; this
    name-only table serves inputs without a meaningful year (the base-year instrument
    tables). -#}

with cities as (
    select * from {{ ref('cn_prefecture_cities') }}
),

history as (
    select * from {{ ref('city_name_history') }}
    where valid_until > {{ var('city_history_first_year') }}
),

official as (
    select
        city_name as lookup_name,
        city_code,
        1 as match_priority,
        'official' as match_type
    from cities
),

suffix_removed as (
    select
        regexp_replace(city_name, '(自治州|地区|盟|市)$', '') as lookup_name,
        city_code,
        2 as match_priority,
        'suffix_removed' as match_type
    from cities
),

autonomous_prefectures as (
    select
        city_code,
        regexp_replace(
            regexp_replace(city_name, '自治州$', ''),
            '((朝鲜|土家|苗|藏|羌|彝|布依|侗|哈尼|壮|傣|白|景颇|傈僳|回|蒙古|柯尔克孜|哈萨克)族?)+$',
            ''
        ) as base_name
    from cities
    where city_name like '%自治州'
),

short_forms as (
    select
        base_name as lookup_name,
        city_code,
        3 as match_priority,
        'short_form' as match_type
    from autonomous_prefectures
    union all
    select
        base_name || '州' as lookup_name,
        city_code,
        3 as match_priority,
        'short_form' as match_type
    from autonomous_prefectures
),

history_names as (
    select
        {{ clean_place_name('lookup_name') }} as lookup_name,
        city_code,
        case division_level when 'prefecture' then 4 else 5 end as match_priority,
        'history_' || division_level as match_type
    from history
),

candidates as (
    select * from official
    union all
    select * from suffix_removed
    union all
    select * from short_forms
    union all
    select * from history_names
),

usable as (
    select *
    from candidates
    where length(lookup_name) >= 2
),

best as (
    select *
    from usable
    qualify match_priority = min(match_priority) over (partition by lookup_name)
),

unambiguous as (
    select
        lookup_name,
        min(city_code) as city_code,
        min(match_priority) as match_priority,
        min(match_type) as match_type
    from best
    group by lookup_name
    having count(distinct city_code) = 1
),

final as (
    select * from unambiguous
)

select * from final
