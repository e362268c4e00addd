{#- One row per name a vendor may print for a province: the official name (广东省,
    广西壮族自治区, 北京市) and the short form without 省 / 市 / 自治区 and the ethnic name of
    an autonomous region (广东, 广西, 北京, 内蒙古). Used to check that the province printed
    beside a city agrees with the city's province. -#}

with cities as (
    select * from {{ ref('cn_prefecture_cities') }}
),

provinces as (
    select distinct
        province_code,
        province_name
    from cities
),

official as (
    select
        province_name as lookup_name,
        province_code
    from provinces
),

short_forms as (
    select
        regexp_replace(province_name, '(壮族|回族|维吾尔)?(省|市|自治区)$', '')
            as lookup_name,
        province_code
    from provinces
),

final as (
    select * from official
    union
    select * from short_forms
)

select * from final
