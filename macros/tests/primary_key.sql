{#- Generic test: the grain of a model, seed or source table. One query checks that the key
    columns are never null and that their combination is unique (dbt's not_null and unique on
    each key column, or not_null on each column plus unique_combination_of_columns, in one node).
    Returns one row per failing key value with the rule it breaks: 'not_null: <column>' (the first
    key column that is null) or 'unique' (the key occurs n_rows > 1 times).

    data_tests:
      - primary_key:
          arguments:
            columns: [stkcd, year]

    dbt-project-evaluator counts it as a primary-key test (var primary_key_test_macros in
    dbt_project.yml); tests/python/test_dbt_layers.py requires one on every model.
-#}
{% test primary_key(model, columns) %}

select
    {% for column in columns -%}
    {{ column }},
    {% endfor -%}
    count(*) as n_rows,
    case
        {% for column in columns -%}
        when {{ column }} is null then 'not_null: {{ column }}'
        {% endfor -%}
        else 'unique'
    end as rule
from {{ model }}
group by {{ columns | join(', ') }}
having
    count(*) > 1
    {% for column in columns -%}
    or {{ column }} is null
    {% endfor %}

{% endtest %}
