{{ config(meta={'vendor_labels': vendor_labels('subsidy_detail')}) }}

with source as (
    select * from {{ source('subsidies', 'subsidy_detail') }}
),

parsed as (
    select
        {{ clean_stock_code('Stkcd') }} as stkcd,
        {{ parse_vendor_date('Accper') }} as report_date,
        {{ strip_whitespace('Item') }} as item_name,
        cast(Amount as double) as amount,
        _source_file,
        _source_row
    from source
),

final as (
    select
        stkcd,
        report_date,
        year(report_date) as year,
        item_name,
        amount,
        _source_file,
        _source_row
    from parsed
    where month(report_date) = 12 and day(report_date) = 31
)

select * from final
