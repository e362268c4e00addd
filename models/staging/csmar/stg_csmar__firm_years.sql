{{ config(meta={'vendor_labels': vendor_labels('firm_info')}) }}

with source as (
    select * from {{ source('csmar', 'firm_info') }}
),

renamed as (
    select
        {{ clean_stock_code('Stkcd') }} as stkcd,
        {{ parse_vendor_date('Accper') }} as fiscal_year_end_date,
        year({{ parse_vendor_date('Accper') }}) as fiscal_year,
        Stknme as short_name,
        upper(Nnindcd) as industry_code,
        Provnm as province_name_raw,
        Ctnm as city_name_raw,
        OfficeCity as office_city_name_raw,
        {{ parse_vendor_date('Estbdt') }} as establishment_date,
        {{ parse_vendor_date('Listdt') }} as listing_date,
        Statco as listing_status,
        {{ parse_vendor_date('Delistdt') }} as delisting_date,
        upper(replace(Stflg, '＊', '*')) as st_flag,
        Ownership as ownership,
        _source_file,
        _source_row
    from source
),

final as (
    select
        *,
        coalesce(st_flag in ('ST', '*ST'), false) as is_st,
        coalesce(contains(ownership, '国有'), false) as is_state_owned
    from renamed
)

select * from final
