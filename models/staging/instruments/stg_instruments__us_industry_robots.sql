{{ config(meta={'vendor_labels': vendor_labels('us_industry_robots')}) }}

with source as (
    select * from {{ source('instruments', 'us_industry_robots') }}
),

final as (
    select
        trim(IndustryCode) as ifr_industry_code,
        IndustryName as ifr_industry_name,
        cast(Year as integer) as year,
        cast(RobotsPerThousandWorkers as double) as us_robots_per_1000_workers,
        _source_file,
        _source_row
    from source
)

select * from final
