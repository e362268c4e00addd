{#- IPC normalisation building blocks. They implement python/keytech/ipc.py's rules
    (normalise_ipc_code / normalise_ipc_list); tests/python compares the two row by row.

    Per raw IPC string: full-width → ASCII (fullwidth_to_ascii, the NFKC part that matters),
    split on ';' or ',', strip whitespace, drop empty tokens. Per token: upper case, remove all
    whitespace, remove edition suffixes such as (2006.01), then parse
    <section A-H><class 2 digits><subclass A-Z>[<main group 1-4 digits><'/', ':' or '-'>
    <subgroup 1-6 digits>]; main group without leading zeros, subgroup padded to 2 digits. -#}

{% macro ipc_code_pattern() -%}
    ^([A-H])(\d{2})([A-Z])(?:(\d{1,4})[/:\-](\d{1,6}))?$
{%- endmacro %}

{% macro ipc_edition_suffix_pattern() -%}
    \(\d{4}(\.\d{1,2})?\)
{%- endmacro %}

{#- The compact form of one token: upper case, no whitespace, no edition suffix. -#}
{% macro ipc_compact_token(token) -%}
    regexp_replace(
        {{ remove_whitespace('upper(' ~ token ~ ')') }},
        '{{ ipc_edition_suffix_pattern() }}',
        '',
        'g'
    )
{%- endmacro %}

{#- The named parts of a compact token (a struct; all parts '' when it does not parse). -#}
{% macro ipc_token_parts(compact) -%}
    regexp_extract(
        {{ compact }},
        '{{ ipc_code_pattern() }}',
        ['section', 'class_digits', 'subclass_letter', 'group_digits', 'subgroup_digits']
    )
{%- endmacro %}

{#- The normalised code built from the parts, or null when the token did not parse. -#}
{% macro ipc_code_from_parts(parts, is_parsed) -%}
    case
        when {{ is_parsed }}
            then
                {{ parts }}.section
                || {{ parts }}.class_digits
                || {{ parts }}.subclass_letter
                || case
                    when {{ parts }}.group_digits = '' then ''
                    else
                        cast(cast({{ parts }}.group_digits as integer) as varchar)
                        || '/'
                        || case
                            when length({{ parts }}.subgroup_digits) < 2
                                then lpad({{ parts }}.subgroup_digits, 2, '0')
                            else {{ parts }}.subgroup_digits
                        end
                end
    end
{%- endmacro %}

{#- The main group X/00 of a subgroup code; null for a bare subclass or a main group itself
    (ipc.py main_group_of). -#}
{% macro ipc_main_group_of(code) -%}
    case
        when contains({{ code }}, '/') and split_part({{ code }}, '/', 2) <> '00'
            then split_part({{ code }}, '/', 1) || '/00'
    end
{%- endmacro %}

{#- A boolean project var that may arrive as a YAML bool or as text from --vars. -#}
{% macro var_is_true(name) -%}
    {{- return((var(name) | string | lower) in ['true', '1', 'yes', 'on']) -}}
{%- endmacro %}

{#- The IPC matching mode, validated. -#}
{% macro ipc_matching_mode() -%}
    {%- set mode = var('ipc_matching') | string | lower -%}
    {%- if mode not in ['hierarchical', 'strict'] -%}
        {{ exceptions.raise_compiler_error(
            "var ipc_matching must be 'hierarchical' or 'strict', not '" ~ mode ~ "'"
        ) }}
    {%- endif -%}
    {{- return(mode) -}}
{%- endmacro %}

{#- The patent-level key-technology rule, validated: 'any' code or the 'main' code. -#}
{% macro key_tech_rule() -%}
    {%- set rule = var('key_tech_rule') | string | lower -%}
    {%- if rule not in ['any', 'main'] -%}
        {{ exceptions.raise_compiler_error(
            "var key_tech_rule must be 'any' or 'main', not '" ~ rule ~ "'"
        ) }}
    {%- endif -%}
    {{- return(rule) -}}
{%- endmacro %}
