{#- Generic test: the column rules of one model, seed or source table in one node (issue 17:
    dbt spends ~30 ms of fixed cost per test node, while the SQL of a column rule takes a few ms).
    Same semantics as dbt's built-in tests and our accepted_range, rule by rule:

      not_null:        [col, ...]                 the column is never null
      unique:          [col, ...]                 non-null values occur once (nulls ignored)
      accepted_values: [{column, values, quote}]  non-null values are in the list (quote
                                                  defaults to true, as in dbt)
      accepted_range:  [{column, min_value, max_value}]  non-null values within the inclusive
                                                  bounds (either optional)

    The not_null, accepted_values and accepted_range rules are tallied in a single scan; each
    unique rule is one grouped scan. Returns one row per broken (column, rule): column_name, rule
    (with its arguments), failing_rows (rows that break it; for unique, the rows whose value
    repeats) and example_value (the smallest offending value as text; null for not_null).
    `keytech build` prints these rows when the test fails (keytech.build._failed_nodes).

    data_tests:
      - column_checks:
          arguments:
            not_null: [stkcd, year]
            accepted_values:
              - {column: patent_type, values: [invention, utility_model, design]}
            accepted_range:
              - {column: year, min_value: 2008, max_value: 2022}
-#}
{% test column_checks(model, not_null=none, unique=none, accepted_values=none, accepted_range=none) %}

{%- set rules = [] -%}
{%- for column in not_null or [] -%}
    {%- do rules.append({"column": column, "rule": "not_null", "fails": column ~ " is null"}) -%}
{%- endfor -%}
{%- for check in accepted_values or [] -%}
    {%- set listed = [] -%}
    {%- for value in check["values"] -%}
        {%- do listed.append("'" ~ value ~ "'" if check.get("quote", true) else value | string) -%}
    {%- endfor -%}
    {%- do rules.append({"column": check["column"],
                         "rule": "accepted_values: " ~ check["values"] | join(", "),
                         "fails": check["column"] ~ " not in (" ~ listed | join(", ") ~ ")"}) -%}
{%- endfor -%}
{%- for check in accepted_range or [] -%}
    {%- set bounds = [] -%}
    {%- set outside = [] -%}
    {%- if check.get("min_value") is not none -%}
        {%- do bounds.append(">= " ~ check["min_value"]) -%}
        {%- do outside.append(check["column"] ~ " < " ~ check["min_value"]) -%}
    {%- endif -%}
    {%- if check.get("max_value") is not none -%}
        {%- do bounds.append("<= " ~ check["max_value"]) -%}
        {%- do outside.append(check["column"] ~ " > " ~ check["max_value"]) -%}
    {%- endif -%}
    {%- do rules.append({"column": check["column"], "rule": "accepted_range: " ~ bounds | join(", "),
                         "fails": check["column"] ~ " is not null and (" ~ (outside or ["false"]) | join(" or ") ~ ")"}) -%}
{%- endfor -%}

{%- if rules %}
with tallies as (
    select
        {% for r in rules -%}
        sum(case when {{ r.fails }} then 1 else 0 end) as failing_{{ loop.index }},
        min(case when {{ r.fails }} then cast({{ r.column }} as {{ dbt.type_string() }}) end) as example_{{ loop.index }}
        {{- "," if not loop.last }}
        {% endfor %}
    from {{ model }}
)
{%- endif %}

{% for r in rules -%}
select
    '{{ r.column }}' as column_name,
    '{{ r.rule | replace("'", "''") }}' as rule,
    failing_{{ loop.index }} as failing_rows,
    example_{{ loop.index }} as example_value
from tallies
where failing_{{ loop.index }} > 0
union all
{% endfor -%}
{%- for column in unique or [] %}
select
    '{{ column }}' as column_name,
    'unique' as rule,
    sum(n_records) as failing_rows,
    min(cast(value_field as {{ dbt.type_string() }})) as example_value
from (
    select {{ column }} as value_field, count(*) as n_records
    from {{ model }}
    where {{ column }} is not null
    group by {{ column }}
    having count(*) > 1
) as repeated_{{ loop.index }}
having count(*) > 0
union all
{%- endfor %}
select
    cast(null as {{ dbt.type_string() }}) as column_name,
    cast(null as {{ dbt.type_string() }}) as rule,
    cast(null as {{ dbt.type_bigint() }}) as failing_rows,
    cast(null as {{ dbt.type_string() }}) as example_value
where false

{% endtest %}
