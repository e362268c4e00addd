with firm_years as (
    select * from {{ ref('int_firm_years_city_matched') }}
),

pilot_projects as (
    select * from {{ ref('int_pilot_projects_city_matched') }}
),

kept_firm_years as (
    select *
    from firm_years
    where is_kept
),

pilot_firms as (
    select distinct stkcd
    from pilot_projects
    where stkcd is not null
),

firm_attributes as (
    select
        stkcd,
        arg_max(short_name, year) filter (where short_name is not null) as short_name,
        arg_max(industry_code, year) filter (where industry_code is not null)
            as industry_code,
        arg_max(industry_section, year) filter (where industry_code is not null)
            as industry_section,
        arg_max(listing_date, year) filter (where listing_date is not null)
            as listing_date,
        arg_max(establishment_date, year) filter (where establishment_date is not null)
            as establishment_date,
        max(delisting_date) as delisting_date,
        bool_or(listing_status = '终止上市') as has_delisted_status,
        arg_max(city_code, year) filter (where city_code is not null) as city_code,
        min(year) as first_year,
        max(year) as last_year,
        count(*) as n_firm_years
    from kept_firm_years
    group by stkcd
),

final as (
    select
        firm_attributes.stkcd,
        firm_attributes.short_name,
        firm_attributes.industry_code,
        firm_attributes.industry_section,
        firm_attributes.listing_date,
        firm_attributes.establishment_date,
        firm_attributes.has_delisted_status
        or firm_attributes.delisting_date is not null as is_delisted,
        firm_attributes.delisting_date,
        coalesce(firm_attributes.industry_section = 'J', false) as is_financial,
        pilot_firms.stkcd is not null as is_pilot_firm,
        firm_attributes.first_year,
        firm_attributes.last_year,
        firm_attributes.n_firm_years,
        firm_attributes.city_code
    from firm_attributes
    left join pilot_firms
        on firm_attributes.stkcd = pilot_firms.stkcd
)

select * from final
