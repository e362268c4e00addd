{#- One row per listed firm-year (fct_firm_years' rows: int_firm_years_panel_variables, 2008-2022,
    unwinsorised): market
    uncertainty (volatility_pre/current/post), the WW index (Whited & Wu 2006), the FC index
    and the city-industry revenue HHI. Definitions and citations in docs/variables.md
    ("Mechanisms" and "Heterogeneity"). -#}
{%- set window = var('volatility_window_years') | int -%}
{%- if window < 3 or window % 2 == 0 -%}
    {{ exceptions.raise_compiler_error("var volatility_window_years must be odd and >= 3") }}
{%- endif -%}
{%- set half = (window - 1) // 2 -%}
{%- set fc_method = var('fc_index_method') -%}
{%- if fc_method not in ['rank_composite', 'sa'] -%}
    {{ exceptions.raise_compiler_error(
        "var fc_index_method must be 'rank_composite' or 'sa', not '" ~ fc_method ~ "'") }}
{%- endif -%}

with firm_years as (
    select * from {{ ref('int_firm_years_panel_variables') }}
),

lagged as (
    select
        firm_years.stkcd,
        firm_years.year,
        firm_years.city_code,
        firm_years.industry_code,
        firm_years.size as total_assets,
        firm_years.total_liabilities,
        firm_years.sale,
        firm_years.inventories,
        firm_years.operating_cash_flow,
        firm_years.dividends_interest_paid,
        firm_years.cash_dividends_paid,
        firm_years.long_term_borrowings,
        firm_years.lnage,
        previous_year.sale as sale_lag,
        previous_year.inventories as inventories_lag
    from firm_years
    left join firm_years as previous_year
        on firm_years.stkcd = previous_year.stkcd
        and firm_years.year - 1 = previous_year.year
),

adjusted_output as (
    select
        *,
        -- production = sales + change in inventories (inventory-adjusted output)
        sale + inventories - inventories_lag as adjusted_output,
        case when sale_lag > 0 then sale / sale_lag - 1 end as sales_growth
    from lagged
),

output_growth as (
    select
        adjusted_output.*,
        case
            when adjusted_output.adjusted_output > 0 and previous_year.adjusted_output > 0
                then ln(adjusted_output.adjusted_output / previous_year.adjusted_output)
        end as adjusted_output_growth
    from adjusted_output
    left join adjusted_output as previous_year
        on adjusted_output.stkcd = previous_year.stkcd
        and adjusted_output.year - 1 = previous_year.year
),

volatility as (
    select
        *,
        case
            when count(adjusted_output_growth) over backward = {{ window }}
                then stddev_samp(adjusted_output_growth) over backward
        end as volatility_pre,
        case
            when count(adjusted_output_growth) over centred = {{ window }}
                then stddev_samp(adjusted_output_growth) over centred
        end as volatility_current,
        case
            when count(adjusted_output_growth) over forward = {{ window }}
                then stddev_samp(adjusted_output_growth) over forward
        end as volatility_post,
        {{ ordered_avg('sales_growth') }} over (partition by industry_code, year)
            as industry_sales_growth
    from output_growth
    window
        backward as (
            partition by stkcd order by year
            range between {{ window - 1 }} preceding and current row
        ),
        centred as (
            partition by stkcd order by year
            range between {{ half }} preceding and {{ half }} following
        ),
        forward as (
            partition by stkcd order by year
            range between current row and {{ window - 1 }} following
        )
),

dividend_dummy as (
    select
        *,
        -- WW's DIVPOS: cash dividends paid > 0 (Whited & Wu 2006). The optional cash_flow column
        -- CashDividends holds them; where it is empty the dummy falls back to C003006000
        -- (dividends, profit distribution or interest paid) > 0, recorded in ww_dividend_source;
        -- both empty: 0 ('missing'), as before the cash-dividend column existed.
        case
            when cash_dividends_paid is not null
                then case when cash_dividends_paid > 0 then 1 else 0 end
            when dividends_interest_paid > 0 then 1
            else 0
        end as ww_dividend_dummy,
        case
            when cash_dividends_paid is not null then 'cash_dividends'
            when dividends_interest_paid is not null then 'dividends_interest_paid'
            else 'missing'
        end as ww_dividend_source
    from volatility
),

indices as (
    select
        *,
        -0.091 * operating_cash_flow / total_assets
        - 0.062 * ww_dividend_dummy
        + 0.021 * long_term_borrowings / total_assets
        - 0.044 * ln(total_assets)
        + 0.102 * industry_sales_growth
        - 0.035 * sales_growth as ww_index,
        {%- if fc_method == 'sa' %}
        -- SA index (Hadlock & Pierce 2010): −0.737 Size + 0.043 Size² − 0.040 Age, Size = ln of
        -- total assets in million yuan, Age = years since establishment (exp(lnage) − 1)
        case
            when total_assets > 0 and lnage is not null
                then -0.737 * ln(total_assets / 1e6)
                    + 0.043 * ln(total_assets / 1e6) * ln(total_assets / 1e6)
                    - 0.040 * (exp(lnage) - 1)
        {%- else %}
        case
            when total_assets > 0 and total_liabilities is not null and lnage is not null
                and dividends_interest_paid is not null and operating_cash_flow is not null
                then (
                    percent_rank() over (partition by year order by -ln(total_assets))
                    + percent_rank() over (partition by year order by -lnage)
                    + percent_rank() over (
                        partition by year order by -dividends_interest_paid / total_assets
                    )
                    + percent_rank() over (
                        partition by year order by total_liabilities / total_assets
                    )
                    + percent_rank() over (
                        partition by year order by -operating_cash_flow / total_assets
                    )
                ) / 5
        {%- endif %}
        end as fc_index_unfiltered,
        case
            when sale > 0 and city_code is not null and industry_code is not null
                then sale / {{ ordered_sum('sale') }}
                    over (partition by city_code, industry_code, year)
        end as city_industry_sale_share
    from dividend_dummy
    where total_assets > 0 or total_assets is null
),

concentration as (
    select
        *,
        {{ ordered_sum('city_industry_sale_share * city_industry_sale_share') }}
            over (partition by city_code, industry_code, year) as hhi_unfiltered
    from indices
),

final as (
    select
        stkcd,
        year,
        adjusted_output,
        round(adjusted_output_growth, 10) as adjusted_output_growth,
        round(volatility_pre, 10) as volatility_pre,
        round(volatility_current, 10) as volatility_current,
        round(volatility_post, 10) as volatility_post,
        round(sales_growth, 10) as sales_growth,
        round(industry_sales_growth, 10) as industry_sales_growth,
        round(ww_index, 10) as ww_index,
        ww_dividend_source,
        round(fc_index_unfiltered, 10) as fc_index,
        case
            when city_industry_sale_share is not null then round(hhi_unfiltered, 10)
        end as hhi_city_industry
    from concentration
)

select * from final
