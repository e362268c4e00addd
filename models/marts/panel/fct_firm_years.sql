{#- The rows of int_firm_years_panel_variables, unchanged: the intermediate feeds both this mart and the
    intermediates that need the same firm-years, so that no intermediate reads a mart. -#}

with firm_years as (
    select * from {{ ref('int_firm_years_panel_variables') }}
)

select * from firm_years
