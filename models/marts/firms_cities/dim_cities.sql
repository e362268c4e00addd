{#- The rows of int_cities_treatment_timed, unchanged: the intermediate feeds both this mart and the
    intermediates that need the same cities, so that no intermediate reads a mart. -#}

with cities as (
    select * from {{ ref('int_cities_treatment_timed') }}
)

select * from cities
