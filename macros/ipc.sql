{#- IPC normalisation building blocks. They implement python/keytech/ipc.py's rules
    (normalise_ipc_code / normalise_ipc_list); tests/python compares the two row by row.

    Per raw IPC string: NFKC's one-character → ASCII mappings (macro nfkc_ascii_pairs),
    split on ';', ',', '、' or whitespace before another code (ipc_separate_codes), strip
    whitespace, drop empty tokens. Per token: upper case, remove all whitespace, remove
    edition suffixes such as (2006.01) with an I/N/A marker, then parse
    <section A-H><class 2 digits><subclass A-Z>[<main group 1-4 digits><'/', ':' or '-'>
    <subgroup 1-6 digits>]; main group without leading zeros, subgroup padded to 2
    digits. -#}

{% macro ipc_edition_suffix_pattern() -%}
    \([0-9]{4}(\.[0-9]{1,2})?\)[IAN]?
{%- endmacro %}

{#- Remove edition suffixes such as (2006.01), with an attached I/N/A marker
    ((2006.01)I), and a marker directly after the subgroup (G06F17/30I; never the
    subclass letter of a bare subclass such as G06N) from an upper-cased,
    whitespace-free token. -#}
{% macro ipc_remove_edition_suffix(base) -%}
    {#- the regular expressions run only on tokens they can change (a '(' for the suffix, a
        last character I, A or N for the marker); most tokens are returned as they are -#}
    case
        when contains({{ base }}, '(') or right({{ base }}, 1) in ('I', 'A', 'N')
            then regexp_replace(
                case
                    when contains({{ base }}, '(')
                        then
                            regexp_replace(
                                {{ base }}, '{{ ipc_edition_suffix_pattern() }}', '', 'g'
                            )
                    else {{ base }}
                end,
                '([/:\-][0-9]{1,6})[IAN]$',
                '\1'
            )
        else {{ base }}
    end
{%- endmacro %}

{#- Separators of a raw IPC string (after NFKC): ';' ',' '、' and whitespace in front of
    the start of another code (<A-H><2 digits><letter>, any case) all become ';', so
    'H04L 27/26 G06F 17/30' is two codes and 'H04L 27/26' one. -#}
{% macro ipc_separate_codes(text, printable_ascii=false) -%}
    {%- if printable_ascii -%}
        {#- the only whitespace of printable ASCII is the space -#}
        {%- set ws = ' ' -%}
    {%- else -%}
        {%- set ws = whitespace_class() -%}
    {%- endif -%}
    replace(
        replace(
            case
                when {{ 'contains(' ~ text ~ ", ' ')" if printable_ascii else 'true' }}
                    then regexp_replace(
                        {{ text }},
                        '{{ ws }}+([A-Ha-h]{{ ws }}*[0-9]{2}{{ ws }}*[A-Za-z])',
                        ';\1',
                        'g'
                    )
                else {{ text }}
            end,
            ',',
            ';'
        ),
        '、',
        ';'
    )
{%- endmacro %}

{#- One key per CNIPA application number (python/keytech/ipc.py
    normalise_application_number): CN/ZL prefix or none, check character with or
    without a dot or absent, 12-digit (from October 2003) or 8-digit form → 'CN' + the
    digits; anything else upper-cased and whitespace-free. -#}
{% macro normalise_application_number(column) -%}
    case
        when regexp_full_match(
            upper({{ remove_whitespace(column) }}),
            '(CN|ZL)?([0-9]{12}|[0-9]{8})\.?[0-9X]?'
        )
            then 'CN' || regexp_extract(
                upper({{ remove_whitespace(column) }}),
                '^(CN|ZL)?([0-9]{12}|[0-9]{8})',
                2
            )
        else upper({{ remove_whitespace(column) }})
    end
{%- endmacro %}

{#- The normalised code of a compact token, or null when it does not parse: a bare
    subclass as is; a group code with the main group's leading zeros dropped (0000 → 0)
    and a one-digit subgroup padded (/6 → /06). Pure expression (no CTE), so it can run
    inside a list lambda. -#}
{% macro ipc_code_of(compact) -%}
    {#- first the common case, a code already in normal form (main group without leading
        zero, '/', subgroup of two or more digits): it is its own code, one match instead of
        a match and two replacements -#}
    case
        when regexp_full_match({{ compact }}, '[A-H]\d{2}[A-Z][1-9]\d{0,3}/\d{2,6}')
            then {{ compact }}
        when regexp_full_match({{ compact }}, '[A-H]\d{2}[A-Z]') then {{ compact }}
        when regexp_full_match({{ compact }}, '[A-H]\d{2}[A-Z]\d{1,4}[/:\-]\d{1,6}')
            then regexp_replace(
                regexp_replace(
                    {{ compact }},
                    '^([A-H]\d{2}[A-Z])0*(\d+)[/:\-](\d+)$',
                    '\1\2/\3'
                ),
                '/(\d)$',
                '/0\1'
            )
    end
{%- endmacro %}

{#- The main group X/00 of a subgroup code; null for a bare subclass or a main group
    itself (ipc.py main_group_of). -#}
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
