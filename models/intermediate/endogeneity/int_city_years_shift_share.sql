{#- One row per city and year: IV1, the shift-share instrument = the city's base-year robot
    density (robots per 10,000 manufacturing employees) times national internet users that
    year (CNNIC, in 100 million persons). -#}

with densities as (
    select * from {{ ref('int_city_robot_densities_matched') }}
),

internet as (
    select * from {{ ref('stg_instruments__national_internet_users') }}
),

final as (
    select
        densities.city_code,
        internet.year,
        densities.robot_density_base,
        internet.internet_users_10k as national_internet_users_10k,
        densities.robot_density_base * internet.internet_users_10k / 10000 as iv1
    from densities
    cross join internet
)

select * from final
