{#- Generic test: a boolean SQL expression holds on every row (optionally only where
    `where_clause` holds). Null counts as a failure unless the expression handles it.
    -#}
{% test expression_is_true(model, expression, where_clause=none) %}

select *
from {{ model }}
where
    not coalesce(({{ expression }}), false)
    {% if where_clause %}and ({{ where_clause }}){% endif %}

{% endtest %}
