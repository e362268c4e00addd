{#- One row per ordered pair of distinct prefecture-level cities: great-circle (haversine)
    distance between their coordinates in seeds/cn_prefecture_cities.csv, earth radius
    6,371.0088 km (IUGG mean radius). -#}

with cities as (
    select * from {{ ref('cn_prefecture_cities') }}
),

pairs as (
    select
        origin.city_code,
        destination.city_code as other_city_code,
        origin.province_code = destination.province_code as is_same_province,
        radians(origin.latitude) as lat1,
        radians(destination.latitude) as lat2,
        radians(destination.latitude - origin.latitude) as dlat,
        radians(destination.longitude - origin.longitude) as dlon
    from cities as origin
    inner join cities as destination
        on origin.city_code <> destination.city_code
),

final as (
    select
        city_code,
        other_city_code,
        is_same_province,
        2 * 6371.0088 * asin(sqrt(least(1.0,
            pow(sin(dlat / 2), 2) + cos(lat1) * cos(lat2) * pow(sin(dlon / 2), 2)
        ))) as distance_km
    from pairs
)

select * from final
