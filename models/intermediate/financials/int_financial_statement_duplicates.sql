{#- One row per consolidated annual statement row that repeats a firm-year already
    reported in the same statement (only the first by _source_row is used). Feeds
    rpt_quarantine. -#}

with balance_sheets as (
    {{ consolidated_annual_rows(ref('stg_csmar__balance_sheets')) }}
),

income_statements as (
    {{ consolidated_annual_rows(ref('stg_csmar__income_statements')) }}
),

cash_flows as (
    {{ consolidated_annual_rows(ref('stg_csmar__cash_flows')) }}
),

unioned as (
    select 'balance_sheet' as source_table, stkcd, year, report_date, statement_rank,
        _source_file, _source_row
    from balance_sheets
    union all
    select 'income_statement' as source_table, stkcd, year, report_date, statement_rank,
        _source_file, _source_row
    from income_statements
    union all
    select 'cash_flow' as source_table, stkcd, year, report_date, statement_rank,
        _source_file, _source_row
    from cash_flows
),

final as (
    select *
    from unioned
    where statement_rank > 1
)

select * from final
