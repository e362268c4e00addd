{#- City-name matching, written once for every model that resolves a printed city or province
    (firm_info, the pilot list, the yearbook, the instrument tables). Each model imports its
    name table as a CTE (`city_names`: int_city_names_by_year when the row has a year, else
    int_city_names_unioned; `province_names`: int_province_names_unioned) and joins with:

    city_name_matches(printed_name, year=none, names='city_names'): the join condition of a
        printed city name to the name table: the cleaned name (clean_place_name) equals its
        lookup_name and, with `year`, the name is the one valid in that year.
    province_name_matches(printed_name, names='province_names'): the same for a province.
    is_province_consistent(printed_name, printed_code, code, city_code='city_code'): the printed
        province (its code printed_code) agrees with the matched city's province `code` (null
        when the province is not printed or the city is unknown).
    best_city_match_rank(partition_by, priority='match_priority'): 1 for the row with the best
        name match (official name first) among rows resolving to the same city (and year),
        ties broken by the lower _source_file, _source_row. -#}

{% macro city_name_matches(printed_name, year=none, names='city_names') -%}
    {{ clean_place_name(printed_name) }} = {{ names }}.lookup_name
    {%- if year is not none %}
        and {{ year }} = {{ names }}.year
    {%- endif %}
{%- endmacro %}

{% macro province_name_matches(printed_name, names='province_names') -%}
    {{ clean_place_name(printed_name) }} = {{ names }}.lookup_name
{%- endmacro %}

{% macro is_province_consistent(printed_name, printed_code, code, city_code='city_code') -%}
    case
        when {{ printed_name }} is null or {{ city_code }} is null then null
        else coalesce({{ printed_code }} = {{ code }}, false)
    end
{%- endmacro %}

{% macro best_city_match_rank(partition_by, priority='match_priority') -%}
    row_number() over (
        partition by {{ partition_by }}
        order by {{ priority }}, _source_file, _source_row
    )
{%- endmacro %}
