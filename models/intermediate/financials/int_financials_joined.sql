{{ config(materialized='table') }}

{#- One row per firm and fiscal year with the consolidated (Typrep = A) annual (report
    date December 31) items of the three statements. Staging keeps every report type and
    date; the filter lives here. A firm-year reported twice in one statement keeps its
    first row by _source_row (the others are quarantined). -#}

with balance_sheets as (
    {{ consolidated_annual_rows(ref('stg_csmar__balance_sheets')) }}
),

income_statements as (
    {{ consolidated_annual_rows(ref('stg_csmar__income_statements')) }}
),

cash_flows as (
    {{ consolidated_annual_rows(ref('stg_csmar__cash_flows')) }}
),

firm_year_keys as (
    select stkcd, year from balance_sheets where statement_rank = 1
    union
    select stkcd, year from income_statements where statement_rank = 1
    union
    select stkcd, year from cash_flows where statement_rank = 1
),

final as (
    select
        firm_year_keys.stkcd,
        firm_year_keys.year,
        balance_sheets.total_assets,
        balance_sheets.total_liabilities,
        balance_sheets.inventories,
        balance_sheets.fixed_assets,
        balance_sheets.long_term_borrowings,
        income_statements.operating_revenue,
        income_statements.total_operating_revenue,
        income_statements.net_profit,
        cash_flows.operating_cash_flow,
        cash_flows.capital_expenditure,
        cash_flows.dividends_interest_paid,
        cash_flows.cash_dividends_paid
    from firm_year_keys
    left join balance_sheets
        on firm_year_keys.stkcd = balance_sheets.stkcd
        and firm_year_keys.year = balance_sheets.year
        and balance_sheets.statement_rank = 1
    left join income_statements
        on firm_year_keys.stkcd = income_statements.stkcd
        and firm_year_keys.year = income_statements.year
        and income_statements.statement_rank = 1
    left join cash_flows
        on firm_year_keys.stkcd = cash_flows.stkcd
        and firm_year_keys.year = cash_flows.year
        and cash_flows.statement_rank = 1
)

select * from final
