{{ config(meta={'vendor_labels': vendor_labels('pilot_list')}) }}

with source as (
    select * from {{ source('miit', 'pilot_list') }}
),

final as (
    select
        cast(Wave as integer) as wave,
        {{ parse_vendor_date('AnnounceDate') }} as announcement_date,
        ProjectName as project_name,
        UnitName as unit_name,
        Province as province_name_raw,
        City as city_name_raw,
        Category as category,
        {{ clean_stock_code('Stkcd') }} as stkcd,
        nullif(upper(trim(Industry)), '') as industry_code,
        _source_file,
        _source_row
    from source
)

select * from final
