{{ config(materialized='table') }}

{#- One row per landed firm_info row, with the city code its printed city resolves to
    (int_city_names_by_year: the name valid in the row's year), the city's province, a check of the printed province, and
    the industry section of a valid CSRC 2012 division code. When a firm has two rows in
    the same fiscal year, the one with the latest fiscal year end (then the higher
    _source_row) is kept (is_kept) and the other quarantined. An unknown city or
    industry code leaves the column null (the firm-year is then flagged missing data)
    and the row is quarantined. -#}

with firm_years as (
    select * from {{ ref('stg_csmar__firm_years') }}
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

industries as (
    select * from {{ ref('csrc_2012_industries') }}
),

matched as (
    select
        firm_years.*,
        city_names.city_code,
        city_names.match_type as city_match_type,
        office_city_names.city_code as office_city_code,
        cities.province_code,
        province_names.province_code as printed_province_code,
        industries.industry_code as valid_industry_code,
        industries.section_code as industry_section
    from firm_years
    left join city_names
        on {{ city_name_matches('firm_years.city_name_raw', year='firm_years.fiscal_year') }}
    left join city_names as office_city_names
        on {{ city_name_matches('firm_years.office_city_name_raw', year='firm_years.fiscal_year',
                                names='office_city_names') }}
    left join cities
        on city_names.city_code = cities.city_code
    left join province_names
        on {{ province_name_matches('firm_years.province_name_raw') }}
    left join industries
        on firm_years.industry_code = industries.industry_code
),

ranked as (
    select
        *,
        row_number() over (
            partition by stkcd, fiscal_year
            order by fiscal_year_end_date desc, _source_file desc, _source_row desc
        ) as firm_year_rank
    from matched
),

final as (
    select
        stkcd,
        fiscal_year as year,
        fiscal_year_end_date,
        short_name,
        industry_code as industry_code_raw,
        valid_industry_code as industry_code,
        industry_section,
        province_name_raw,
        city_name_raw,
        city_code,
        city_match_type,
        office_city_name_raw,
        office_city_code,
        province_code,
        {{ is_province_consistent('province_name_raw', 'printed_province_code', 'province_code') }}
            as is_province_consistent,
        establishment_date,
        listing_date,
        listing_status,
        delisting_date,
        st_flag,
        is_st,
        ownership,
        is_state_owned,
        firm_year_rank,
        firm_year_rank = 1 as is_kept,
        _source_file,
        _source_row
    from ranked
)

select * from final
