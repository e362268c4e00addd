{#- The rows of int_firms_summarised, unchanged: the intermediate feeds both this mart and the
    intermediates that need the same firms, so that no intermediate reads a mart. -#}

with firms as (
    select * from {{ ref('int_firms_summarised') }}
)

select * from firms
