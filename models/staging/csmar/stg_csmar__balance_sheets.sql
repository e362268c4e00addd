{{ config(meta={'vendor_labels': vendor_labels('balance_sheet')}) }}

with source as (
    select * from {{ source('csmar', 'balance_sheet') }}
),

final as (
    select
        {{ clean_stock_code('Stkcd') }} as stkcd,
        {{ parse_vendor_date('Accper') }} as report_date,
        upper(Typrep) as report_type,
        cast(A001000000 as double) as total_assets,
        cast(A002000000 as double) as total_liabilities,
        cast(A001123000 as double) as inventories,
        cast(A001212000 as double) as fixed_assets,
        cast(A002201000 as double) as long_term_borrowings,
        _source_file,
        _source_row
    from source
)

select * from final
