{#- One row per prefecture-level city and year (panel_start_year..panel_end_year): the
    instruments, spatial exposure and agglomeration used by Table 4 and the spillover checks.

    IV2 (hypothetical pilots): for each pilot wave w (var pilot_wave_years) the cities not yet
    picked are ranked by their Bartik robot exposure in year w (descending, ties by city code)
    and the top n_w become hypothetical pilots of wave w, n_w being the real number of cities
    whose first pilot came in wave w (dim_cities). Their hypothetical first treated year is w + 1
    (the Policy timing rule) and iv2 = 1 from then on. -#}
{%- set waves = var('pilot_wave_years', [2015, 2016, 2017, 2018]) -%}

with cities as (
    select * from {{ ref('dim_cities') }}
),

shift_share as (
    select * from {{ ref('int_city_years_shift_share') }}
),

bartik as (
    select * from {{ ref('int_city_years_bartik_exposures') }}
),

agglomeration as (
    select * from {{ ref('int_city_years_agglomeration') }}
),

distances as (
    select * from {{ ref('int_city_pairs_distances') }}
),

pilot_projects as (
    select * from {{ ref('int_pilot_projects_city_matched') }}
),

years as (
    select unnest(range(
        {{ var('panel_start_year') }}, {{ var('panel_end_year') }} + 1
    )) as year
),

grid as (
    select
        cities.city_code,
        cities.province_code,
        cities.first_treated_year,
        years.year
    from cities
    cross join years
),

new_pilot_cities as (
    select
        first_pilot_wave as wave,
        count(*) as n_new_cities
    from cities
    where first_pilot_wave is not null
    group by first_pilot_wave
),
{%- for wave in waves %}

ranked_{{ wave }} as (
    select
        bartik.city_code,
        row_number() over (
            order by bartik.bartik_exposure desc, bartik.city_code
        ) as exposure_rank
    from bartik
    {%- for earlier in waves[:loop.index0] %}
    left join picked_{{ earlier }}
        on bartik.city_code = picked_{{ earlier }}.city_code
    {%- endfor %}
    where
        bartik.year = {{ wave }}
        and bartik.bartik_exposure is not null
        {%- for earlier in waves[:loop.index0] %}
        and picked_{{ earlier }}.city_code is null
        {%- endfor %}
),

picked_{{ wave }} as (
    select
        ranked_{{ wave }}.city_code,
        {{ wave }} as hypothetical_wave
    from ranked_{{ wave }}
    inner join new_pilot_cities
        on new_pilot_cities.wave = {{ wave }}
    where ranked_{{ wave }}.exposure_rank <= new_pilot_cities.n_new_cities
),
{%- endfor %}

hypothetical_pilots as (
    {%- for wave in waves %}
    select * from picked_{{ wave }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
),

nearest_treated as (
    select
        grid.city_code,
        grid.year,
        min(distances.distance_km) as dist_nearest_treated_km,
        bool_or(distances.is_same_province) as has_treated_other_city_in_province
    from grid
    inner join distances
        on grid.city_code = distances.city_code
    inner join cities as other_cities
        on distances.other_city_code = other_cities.city_code
    where other_cities.first_treated_year <= grid.year
    group by grid.city_code, grid.year
),

nearest_pilot_city as (
    select
        distances.city_code,
        min(distances.distance_km) as dist_nearest_pilot_city_km
    from distances
    inner join cities as other_cities
        on distances.other_city_code = other_cities.city_code
    where other_cities.is_pilot_city
    group by distances.city_code
),

pilot_waves_per_city as (
    select
        city_code,
        count(distinct wave) as n_pilot_waves
    from pilot_projects
    where city_code is not null
    group by city_code
),

agglomeration_base as (
    select
        city_code,
        arg_min(
            agglomeration_lq,
            abs(year - {{ var('iv_base_year', 2009) }}) * 2
            + (year > {{ var('iv_base_year', 2009) }})::integer
        ) as agglomeration_lq_base
    from agglomeration
    group by city_code
),

final as (
    select
        grid.city_code,
        grid.year,
        grid.province_code,
        grid.first_treated_year,
        coalesce(grid.year >= grid.first_treated_year, false) as is_treated_city_year,
        shift_share.robot_density_base,
        shift_share.national_internet_users_10k,
        shift_share.iv1,
        bartik.bartik_exposure,
        hypothetical_pilots.hypothetical_wave,
        hypothetical_pilots.hypothetical_wave + 1 as hypothetical_first_treated_year,
        case
            when bartik.bartik_exposure is null then null
            when grid.year >= hypothetical_pilots.hypothetical_wave + 1 then 1
            else 0
        end as iv2,
        nearest_treated.dist_nearest_treated_km,
        coalesce(nearest_treated.has_treated_other_city_in_province, false)
            as has_treated_other_city_in_province,
        nearest_pilot_city.dist_nearest_pilot_city_km,
        coalesce(pilot_waves_per_city.n_pilot_waves, 0) as n_pilot_waves,
        coalesce(pilot_waves_per_city.n_pilot_waves, 0) > 1 as has_later_added_pilots,
        agglomeration.agglomeration_lq,
        agglomeration_base.agglomeration_lq_base
    from grid
    left join shift_share
        on grid.city_code = shift_share.city_code and grid.year = shift_share.year
    left join bartik
        on grid.city_code = bartik.city_code and grid.year = bartik.year
    left join hypothetical_pilots
        on grid.city_code = hypothetical_pilots.city_code
    left join nearest_treated
        on grid.city_code = nearest_treated.city_code and grid.year = nearest_treated.year
    left join nearest_pilot_city
        on grid.city_code = nearest_pilot_city.city_code
    left join pilot_waves_per_city
        on grid.city_code = pilot_waves_per_city.city_code
    left join agglomeration
        on grid.city_code = agglomeration.city_code and grid.year = agglomeration.year
    left join agglomeration_base
        on grid.city_code = agglomeration_base.city_code
)

select * from final
