{{ config(meta={'vendor_labels': vendor_labels('annual_report_keywords')}) }}

with source as (
    select * from {{ source('annual_reports', 'annual_report_keywords') }}
),

final as (
    select
        {{ clean_stock_code('Stkcd') }} as stkcd,
        cast(Year as integer) as year,
        {{ strip_whitespace('Keyword') }} as keyword,
        cast(Count as integer) as keyword_count,
        _source_file,
        _source_row
    from source
)

select * from final
