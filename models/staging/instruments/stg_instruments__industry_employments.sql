{{ config(meta={'vendor_labels': vendor_labels('industry_employment')}) }}

with source as (
    select * from {{ source('instruments', 'industry_employment') }}
),

final as (
    select
        CityName as city_name_raw,
        cast(Year as integer) as year,
        trim(IndustryCode) as ifr_industry_code,
        cast(Employment as double) as employment_10k,
        _source_file,
        _source_row
    from source
)

select * from final
