{#- Order-independent aggregates of DOUBLE expressions.

    DuckDB adds doubles in whatever order its threads deliver the rows, and floating-point
    addition is not associative: a plain sum(x) / avg(x) of a DOUBLE (as a group or a window
    aggregate) can differ in its last bits between two builds of the same data. These macros
    sort the input by the value itself before accumulating it sequentially (a DuckDB ordered
    aggregate). Rows that tie in that order hold equal values, so any order among them gives
    the same bits: the result depends only on the multiset of values. The numerical meaning
    is unchanged (the same sum / mean, accumulated in ascending order); NULLs are ignored as
    before.

    Use them wherever a plain aggregate would be, including with FILTER and OVER:
        {{ ordered_sum('x * y') }} over (partition by g)
        {{ ordered_avg('x') }} filter (where year <= 2014)
    The expression is repeated in the ORDER BY, so pass a deterministic expression. -#}

{% macro ordered_sum(expr) -%}
    sum({{ expr }} order by {{ expr }})
{%- endmacro %}

{% macro ordered_avg(expr) -%}
    avg({{ expr }} order by {{ expr }})
{%- endmacro %}
