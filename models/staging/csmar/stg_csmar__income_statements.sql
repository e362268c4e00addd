{{ config(meta={'vendor_labels': vendor_labels('income_statement')}) }}

with source as (
    select * from {{ source('csmar', 'income_statement') }}
),

final as (
    select
        {{ clean_stock_code('Stkcd') }} as stkcd,
        {{ parse_vendor_date('Accper') }} as report_date,
        upper(Typrep) as report_type,
        cast(B001101000 as double) as operating_revenue,
        cast(B001100000 as double) as total_operating_revenue,
        cast(B002000000 as double) as net_profit,
        _source_file,
        _source_row
    from source
)

select * from final
