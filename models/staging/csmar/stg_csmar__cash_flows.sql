{{ config(meta={'vendor_labels': vendor_labels('cash_flow')}) }}

with source as (
    select * from {{ source('csmar', 'cash_flow') }}
),

final as (
    select
        {{ clean_stock_code('Stkcd') }} as stkcd,
        {{ parse_vendor_date('Accper') }} as report_date,
        upper(Typrep) as report_type,
        cast(C001000000 as double) as operating_cash_flow,
        cast(C002006000 as double) as capital_expenditure,
        cast(C003006000 as double) as dividends_interest_paid,
        cast(CashDividends as double) as cash_dividends_paid,
        _source_file,
        _source_row
    from source
)

select * from final
