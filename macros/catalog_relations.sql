{#- The relation filter of the docs catalog query (`dbt docs generate`, `keytech docs`), in place
    of dbt-duckdb's macro of the same name (a root-project macro overrides an adapter's).

    dbt-duckdb filters duckdb_tables(), duckdb_views() and duckdb_columns() with one
    `(upper(table_schema) = upper('s') and upper(table_name) = upper('t')) or …` term per relation
    of the project (≈ 85 here). DuckDB's optimizer takes seconds over that expression (issue 17:
    3–6 s of a tiny `keytech docs`, while the same rows come back in ≈ 10 ms): here the relations
    are a VALUES list and the filter a semi-join on it, with the same matching rule (schema and
    name compared upper-cased; a relation without an identifier matches its whole schema). The
    catalog's rows are the same. -#}
{% macro duckdb__get_catalog_relations_where_clause_sql(relations) -%}
    {%- if relations | length == 0 %}
        where 1 = 0
    {%- else %}
        where exists (
            select 1
            from (values
                {%- for relation in relations %}
                {%- if not relation.schema %}
                    {%- do exceptions.raise_compiler_error(
                        '`get_catalog_relations` requires a list of relations, each with a schema') %}
                {%- endif %}
                ('{{ relation.schema | replace("'", "''") }}',
                 {% if relation.identifier %}'{{ relation.identifier | replace("'", "''") }}'{% else %}cast(null as varchar){% endif %}){{ "," if not loop.last }}
                {%- endfor %}
            ) as catalog_relations (relation_schema, relation_name)
            where upper(table_schema) = upper(catalog_relations.relation_schema)
                and (catalog_relations.relation_name is null
                     or upper(table_name) = upper(catalog_relations.relation_name))
        )
    {%- endif %}
{%- endmacro %}
