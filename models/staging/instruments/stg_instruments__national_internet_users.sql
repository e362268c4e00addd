{{ config(meta={'vendor_labels': vendor_labels('national_internet_users')}) }}

with source as (
    select * from {{ source('instruments', 'national_internet_users') }}
),

final as (
    select
        cast(Year as integer) as year,
        cast(InternetUsers as double) as internet_users_10k,
        _source_file,
        _source_row
    from source
)

select * from final
