{#- Generic test: the combination of the given columns (or SQL expressions) is unique.

    data_tests:
      - unique_combination_of_columns:
          arguments:
            combination_of_columns: [stkcd, year]
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

with validation as (
    select
        {{ combination_of_columns | join(',\n        ') }},
        count(*) as n_rows
    from {{ model }}
    group by all
    having count(*) > 1
)

select * from validation

{% endtest %}
