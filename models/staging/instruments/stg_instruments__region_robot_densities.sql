{{ config(meta={'vendor_labels': vendor_labels('region_robot_density')}) }}

with source as (
    select * from {{ source('instruments', 'region_robot_density') }}
),

final as (
    select
        CityName as city_name_raw,
        cast(Year as integer) as year,
        cast(RobotDensity as double) as robot_density,
        _source_file,
        _source_row
    from source
)

select * from final
