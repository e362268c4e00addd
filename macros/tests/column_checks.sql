{#- Generic test: every row-level rule of one model, seed or source table in one node (issue 17:
    dbt spends ~30 ms of fixed cost per test node, while the SQL of a rule takes a few ms on small
    tables). Same semantics as dbt's built-in tests and our own generic tests, rule by rule:

      primary_key:        [col, ...]             the grain: key columns never null (rule
                                                 'primary_key: not_null') and their combination
                                                 unique among rows without a null key column
                                                 ('primary_key: unique'); together the same pass
                                                 or fail as primary_key.sql
      unique_combination: [[col or expr, ...], ...]  each combination occurs once, nulls grouped
                                                 together (as unique_combination_of_columns.sql)
      not_null:           [col, ...]             the column is never null
      unique:             [col, ...]             non-null values occur once (nulls ignored)
      accepted_values:    [{column, values, quote}]  non-null values are in the list (quote
                                                 defaults to true, as in dbt)
      accepted_range:     [{column, min_value, max_value}]  non-null values within the inclusive
                                                 bounds (either optional)
      relationships:      [{column, to, field}]  non-null values occur in `field` of `to` (a ref
                                                 or source, as dbt's relationships)
      expression_is_true: [{expression, where_clause}]  the boolean holds on every row (where
                                                 `where_clause` holds); null fails (as
                                                 expression_is_true.sql)
      equal_row_count:    [{compare_model, compare_where}]  as many rows as the other relation
                                                 (optionally filtered; as equal_row_count.sql)

    The not_null, accepted_values, accepted_range, expression_is_true and the primary key's
    not-null rules are tallied in a single scan; each unique, primary_key / unique_combination,
    relationships and equal_row_count rule is one more query. When the tested relation is a view
    and it would be read more than once, its rows (the columns the rules name) are computed once,
    as a materialized CTE (DuckDB, Postgres), instead of once per query. Returns one row per broken
    (column, rule): column_name (a key's columns joined by ', '), rule (with its arguments),
    failing_rows (rows that break it; for unique and the key rules, the rows whose value repeats;
    for equal_row_count, the difference in rows) and example_value (the smallest offending value
    as text; null for not_null and expression_is_true). `keytech build` prints these rows when the
    test fails (keytech.build._failed_nodes).

    data_tests:
      - column_checks:
          name: column_checks_fct_patents
          arguments:
            primary_key: [patent_id]
            not_null: [stkcd, year]
            accepted_values:
              - {column: patent_type, values: [invention, utility_model, design]}
            accepted_range:
              - {column: year, min_value: 2008, max_value: 2022}
            relationships:
              - {column: stkcd, to: "ref('dim_firms')", field: stkcd}

    dbt-project-evaluator counts it as a grain test (var primary_key_test_macros in
    dbt_project.yml); tests/python/test_dbt_layers.py requires a primary_key or
    unique_combination rule (or a separate grain test) on every model.
-#}
{% test column_checks(model, primary_key=none, unique_combination=none, not_null=none, unique=none,
                      accepted_values=none, accepted_range=none, relationships=none,
                      expression_is_true=none, equal_row_count=none) %}

{%- set string_type = dbt.type_string() -%}
{%- set rules = [] -%}
{%- if primary_key -%}
    {%- set null_keys = [] -%}
    {%- for column in primary_key -%}
        {%- do null_keys.append(column ~ " is null") -%}
    {%- endfor -%}
    {%- do rules.append({"column": primary_key | join(", "), "rule": "primary_key: not_null",
                         "fails": null_keys | join(" or "), "example": none}) -%}
{%- endif -%}
{%- for column in not_null or [] -%}
    {%- do rules.append({"column": column, "rule": "not_null", "fails": column ~ " is null", "example": none}) -%}
{%- endfor -%}
{%- for check in accepted_values or [] -%}
    {%- set listed = [] -%}
    {%- for value in check["values"] -%}
        {%- do listed.append("'" ~ value ~ "'" if check.get("quote", true) else value | string) -%}
    {%- endfor -%}
    {%- do rules.append({"column": check["column"],
                         "rule": "accepted_values: " ~ check["values"] | join(", "),
                         "fails": check["column"] ~ " not in (" ~ listed | join(", ") ~ ")",
                         "example": check["column"]}) -%}
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
                         "fails": check["column"] ~ " is not null and (" ~ (outside or ["false"]) | join(" or ") ~ ")",
                         "example": check["column"]}) -%}
{%- endfor -%}
{%- for check in expression_is_true or [] -%}
    {%- set where = " and (" ~ check["where_clause"] ~ ")" if check.get("where_clause") else "" -%}
    {%- do rules.append({"column": "", "rule": "expression_is_true: " ~ check["expression"]
                                                ~ (" where " ~ check["where_clause"] if check.get("where_clause") else ""),
                         "fails": "not coalesce((" ~ check["expression"] ~ "), false)" ~ where, "example": none}) -%}
{%- endfor -%}

{#- grain rules: a key's columns (or expressions), each a grouped scan -#}
{%- set keys = [] -%}
{%- if primary_key -%}
    {#- rows with a null key column are primary_key: not_null's -#}
    {%- do keys.append({"columns": primary_key, "rule": "primary_key: unique",
                        "where": primary_key | join(" is not null and ") ~ " is not null"}) -%}
{%- endif -%}
{%- for combination in unique_combination or [] -%}
    {%- do keys.append({"columns": combination, "rule": "unique_combination", "where": none}) -%}
{%- endfor -%}

{#- a view read by several queries is computed once (adapter support: `as materialized`) -#}
{%- set scans = (1 if rules else 0) + keys | length + (unique or []) | length + (relationships or []) | length -%}
{%- set rows_from = model -%}
{%- set columns = [] -%}
{%- if execute and scans > 1 and target.type in ("duckdb", "postgres") -%}
    {%- set relation = load_relation(model) -%}
    {%- if relation is not none and relation.is_view -%}
        {%- set rows_from = "model_rows" -%}
        {%- set named = (primary_key or []) + (not_null or []) + (unique or []) -%}
        {%- for check in (accepted_values or []) + (accepted_range or []) + (relationships or []) -%}
            {%- do named.append(check["column"]) -%}
        {%- endfor -%}
        {%- for combination in unique_combination or [] -%}
            {%- do named.extend(combination) -%}
        {%- endfor -%}
        {#- an expression (expression_is_true, a key expression) may read any column: then all -#}
        {%- for column in named -%}
            {%- if column not in columns -%}
                {%- do columns.append(column) -%}
            {%- endif -%}
            {%- if not modules.re.fullmatch("[A-Za-z_][A-Za-z0-9_]*", column) -%}
                {%- do columns.append("*") -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if expression_is_true or "*" in columns -%}
            {%- do columns.clear() -%}
        {%- endif -%}
    {%- endif -%}
{%- endif -%}

{%- if rows_from == "model_rows" %}
with model_rows as materialized (
    select {{ columns | join(", ") if columns else "*" }}
    from {{ model }}
){{ "," if rules }}
{%- elif rules %}
with
{%- endif %}
{%- if rules %}
tallies as (
    select
        {% for r in rules -%}
        sum(case when {{ r.fails }} then 1 else 0 end) as failing_{{ loop.index }},
        {% if r.example is none -%}
        cast(null as {{ string_type }}) as example_{{ loop.index }}
        {%- else -%}
        min(case when {{ r.fails }} then cast({{ r.example }} as {{ string_type }}) end) as example_{{ loop.index }}
        {%- endif -%}
        {{- "," if not loop.last }}
        {% endfor %}
    from {{ rows_from }}
)
{%- endif %}

{% for r in rules -%}
select
    '{{ r.column | replace("'", "''") }}' as column_name,
    '{{ r.rule | replace("'", "''") }}' as rule,
    failing_{{ loop.index }} as failing_rows,
    example_{{ loop.index }} as example_value
from tallies
where failing_{{ loop.index }} > 0
union all
{% endfor -%}
{%- for key in keys %}
{%- set shown = [] -%}
{%- for column in key.columns -%}
    {%- do shown.append("coalesce(cast(" ~ column ~ " as " ~ string_type ~ "), 'null')") -%}
{%- endfor %}
select
    '{{ key.columns | join(", ") | replace("'", "''") }}' as column_name,
    '{{ key.rule }}' as rule,
    sum(n_records) as failing_rows,
    min(key_value) as example_value
from (
    select {{ shown | join(" || ', ' || ") }} as key_value, count(*) as n_records
    from {{ rows_from }}
    {% if key.where %}where {{ key.where }}{% endif %}
    group by {{ key.columns | join(", ") }}
    having count(*) > 1
) as repeated_key_{{ loop.index }}
having count(*) > 0
union all
{%- endfor %}
{%- for column in unique or [] %}
select
    '{{ column }}' as column_name,
    'unique' as rule,
    sum(n_records) as failing_rows,
    min(cast(value_field as {{ string_type }})) as example_value
from (
    select {{ column }} as value_field, count(*) as n_records
    from {{ rows_from }}
    where {{ column }} is not null
    group by {{ column }}
    having count(*) > 1
) as repeated_{{ loop.index }}
having count(*) > 0
union all
{%- endfor %}
{%- for check in relationships or [] %}
select
    '{{ check["column"] }}' as column_name,
    'relationships: {{ check["field"] }} of {{ check["to"] | string | replace("'", "''") }}' as rule,
    count(*) as failing_rows,
    min(cast(child.from_field as {{ string_type }})) as example_value
from (
    select {{ check["column"] }} as from_field
    from {{ rows_from }}
    where {{ check["column"] }} is not null
) as child
left join (
    select {{ check["field"] }} as to_field
    from {{ check["to"] }}
) as parent
    on child.from_field = parent.to_field
where parent.to_field is null
having count(*) > 0
union all
{%- endfor %}
{%- for check in equal_row_count or [] %}
select
    '' as column_name,
    'equal_row_count: {{ check["compare_model"] | string | replace("'", "''") }}{{ (" where " ~ check["compare_where"]) | replace("'", "''") if check.get("compare_where") }}' as rule,
    abs(model_count.n_rows - compare_rows.n_rows) as failing_rows,
    cast(model_count.n_rows as {{ string_type }}) || ' rows, compared with ' || cast(compare_rows.n_rows as {{ string_type }}) as example_value
from (select count(*) as n_rows from {{ rows_from }}) as model_count
cross join (
    select count(*) as n_rows
    from {{ check["compare_model"] }}
    {% if check.get("compare_where") %}where {{ check["compare_where"] }}{% endif %}
) as compare_rows
where model_count.n_rows <> compare_rows.n_rows
union all
{%- endfor %}
select
    cast(null as {{ string_type }}) as column_name,
    cast(null as {{ string_type }}) as rule,
    cast(null as {{ dbt.type_bigint() }}) as failing_rows,
    cast(null as {{ string_type }}) as example_value
where false

{% endtest %}
