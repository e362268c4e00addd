{{ config(materialized='table') }}

{#- The firm-years of the panel window with the panel variables and the sample flags: the
    rows of marts.fct_firm_years (which selects this model unchanged; column meanings there),
    kept here so that intermediates (int_firm_year_financial_indices) read no mart. -#}
{%- set variables = panel_variables() -%}

with firm_years as (
    select * from {{ ref('int_firm_years_city_matched') }}
),

firms as (
    select * from {{ ref('int_firms_summarised') }}
),

cities as (
    select * from {{ ref('int_cities_treatment_timed') }}
),

financials as (
    select * from {{ ref('int_financials_joined') }}
),

city_years as (
    select * from {{ ref('int_city_years_matched') }}
),

patent_counts as (
    select * from {{ ref('int_firm_year_patent_counts') }}
),

panel_firm_years as (
    select *
    from firm_years
    where
        is_kept
        and year between {{ var('panel_start_year') }} and {{ var('panel_end_year') }}
),

kept_city_years as (
    select *
    from city_years
    where is_kept
),

joined as (
    select
        panel_firm_years.stkcd,
        panel_firm_years.year,
        panel_firm_years.city_code,
        cities.province_code,
        panel_firm_years.industry_code,
        panel_firm_years.industry_section,
        panel_firm_years.is_st,
        coalesce(panel_firm_years.st_flag = '*ST', false) as is_star_st,
        panel_firm_years.is_state_owned,
        panel_firm_years.ownership,
        firms.establishment_date,
        firms.listing_date,
        firms.is_pilot_firm,
        firms.is_delisted,
        firms.delisting_date,
        cities.first_treated_year,
        financials.total_assets,
        financials.total_liabilities,
        financials.operating_revenue,
        financials.net_profit,
        financials.operating_cash_flow,
        financials.capital_expenditure,
        financials.dividends_interest_paid,
        financials.cash_dividends_paid,
        financials.long_term_borrowings,
        financials.fixed_assets,
        financials.inventories,
        kept_city_years.gdp_per_capita,
        kept_city_years.population_10k,
        kept_city_years.internet_users_10k,
        kept_city_years.budget_expenditure_10k_yuan,
        kept_city_years.fdi_used_10k_usd,
        {%- for outcome in variables['outcomes'] %}
        coalesce(patent_counts.{{ outcome }}, 0) as {{ outcome }}{{ ',' if not loop.last }}
        {%- endfor %}
    from panel_firm_years
    left join firms
        on panel_firm_years.stkcd = firms.stkcd
    left join cities
        on panel_firm_years.city_code = cities.city_code
    left join financials
        on panel_firm_years.stkcd = financials.stkcd
        and panel_firm_years.year = financials.year
    left join kept_city_years
        on panel_firm_years.city_code = kept_city_years.city_code
        and panel_firm_years.year = kept_city_years.year
    left join patent_counts
        on panel_firm_years.stkcd = patent_counts.stkcd
        and panel_firm_years.year = patent_counts.year
),

variables as (
    select
        *,
        case
            when city_code is null then null
            when first_treated_year is not null and year >= first_treated_year then 1
            else 0
        end as policy,
        net_profit / nullif(total_assets, 0) as roa,
        case
            when year - year(establishment_date) + 1 >= 1
                then ln(year - year(establishment_date) + 1)
        end as lnage,
        total_assets / nullif(operating_revenue, 0) as ki,
        case
            when ownership is not null then cast(is_state_owned as integer)
        end as ifdome,
        total_assets as size,
        total_liabilities / nullif(total_assets, 0) as kd,
        gdp_per_capita as meangdp,
        internet_users_10k / nullif(population_10k, 0) * 10000 as infor,
        budget_expenditure_10k_yuan * 10000 as finsgov,
        fdi_used_10k_usd * 10000 as fdi,
        operating_revenue as sale
    from joined
),

with_share as (
    -- the industry total is summed in exact decimal arithmetic: a double sum depends on the
    -- (thread-dependent) order of addition, which made saleshare differ in its last bits between
    -- builds of the same data
    select
        *,
        case
            when industry_code is not null
                then sale / nullif(
                    sum(sale::decimal(38, 4)) over (partition by industry_code, year), 0
                )::double
        end as saleshare
    from variables
),

ingredients as (
    select
        *,
        (
            city_code is null
            or province_code is null
            or industry_code is null
            or policy is null
        ) as has_missing_identifiers,
        year between {{ var('sample_start_year') }} and {{ var('sample_end_year') }}
            as is_in_sample_window
    from with_share
),

flagged as (
    -- the sample filters of the 2010-2019 window (macros/analysis_panel.sql)
    select
        *,
        {{ sample_flag_columns(var('sample_end_year')) | indent(8) }}
    from ingredients
),

final as (
    select
        stkcd,
        year,
        city_code,
        province_code,
        industry_code,
        industry_section,
        {%- for outcome in variables['outcomes'] %}
        {{ outcome }},
        {%- endfor %}
        policy,
        first_treated_year,
        {%- for column in variables['controls'] + variables['unwinsorised'] %}
        {{ column }},
        {%- endfor %}
        total_liabilities,
        net_profit,
        operating_cash_flow,
        capital_expenditure,
        dividends_interest_paid,
        cash_dividends_paid,
        long_term_borrowings,
        fixed_assets,
        inventories,
        coalesce(is_pilot_firm, false) as is_pilot_firm,
        listing_date,
        is_delisted,
        delisting_date,
        is_st,
        is_star_st,
        has_missing_identifiers,
        is_listed_under_min_years,
        is_delisting_flagged,
        is_financial,
        is_missing_data_firm,
        is_in_sample_window,
        is_in_sample_window
        and not (
            coalesce(is_pilot_firm, false)
            or is_listed_under_min_years
            or is_delisting_flagged
            or is_financial
            or is_missing_data_firm
        ) as is_in_analysis_sample
    from flagged
)

select * from final
