{#- Cleaning helpers used by the staging models. -#}

{#- A vendor stock code as the firm's one identity: 6-character text (Excel and some
    vendors drop leading zeros, `600` → `000600`; longer codes are kept as they are, lpad
    would truncate them), then mapped through the seed stock_code_crosswalk: a code that
    was replaced (e.g. a Beijing Stock Exchange 43/83/87 code by its 920 code in 2025)
    becomes its new code, so rows delivered under either code are one firm. Every staging
    model that reads a stock code uses this macro: it is the one place codes are mapped.
    The seed's tests keep old_code unique and forbid chains (a new_code that is itself an
    old_code), so one lookup gives the final code. -#}
{% macro pad_stock_code(column) -%}
    case
        when length(trim({{ column }})) < 6 then lpad(trim({{ column }}), 6, '0')
        else trim({{ column }})
    end
{%- endmacro %}

{% macro clean_stock_code(column) -%}
    coalesce(
        (
            select stock_code_crosswalk.new_code
            from {{ ref('stock_code_crosswalk') }} as stock_code_crosswalk
            where stock_code_crosswalk.old_code = {{ pad_stock_code(column) }}
        ),
        {{ pad_stock_code(column) }}
    )
{%- endmacro %}

{#- A vendor date in any of the contract formats: YYYY-MM-DD, YYYY/MM/DD or YYYYMMDD.
    DuckDB's date cast reads the first two (and is several times faster than strptime);
    YYYYMMDD falls through to strptime. Ingest has validated the formats already (it
    also accepts "YYYY-MM-DD HH:MM:SS", which the date cast reads as its date). -#}
{% macro parse_vendor_date(column) -%}
    coalesce(
        try_cast({{ column }} as date),
        cast(try_strptime({{ column }}, '%Y%m%d') as date)
    )
{%- endmacro %}

{#- The characters Python's str.isspace() accepts, as an RE2 character class body. Used
    to trim and to remove whitespace exactly as python/keytech/ipc.py does (str.strip(),
    "".join(s.split())). -#}
{% macro whitespace_class() -%}
    {{- '[\\t\\n\\x{0B}\\f\\r \\x{1C}-\\x{1F}\\x{85}\\x{A0}\\x{1680}'
        ~ '\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]' -}}
{%- endmacro %}

{% macro strip_whitespace(expression) -%}
    regexp_replace(
        {{ expression }},
        '^{{ whitespace_class() }}+|{{ whitespace_class() }}+$',
        '',
        'g'
    )
{%- endmacro %}

{% macro remove_whitespace(expression) -%}
    regexp_replace({{ expression }}, '{{ whitespace_class() }}', '', 'g')
{%- endmacro %}

{#- A place name as printed by a vendor, ready to be looked up: all whitespace removed
    (including the ideographic space U+3000). -#}
{% macro clean_place_name(column) -%}
    nullif({{ remove_whitespace(column) }}, '')
{%- endmacro %}

{#- The vendor's labels of a landed table's columns ({contract column: label}, from the
    [DES] description file of a CSMAR download or the label row under the field codes;
    python/keytech/build.py passes them from the landing manifest as JSON in the env var
    KEYTECH_VENDOR_LABELS, which dbt's partial parsing tracks per model, so a new landing
    re-parses the staging models only; a var vendor_labels given by hand takes precedence).
    Each staging model puts its table's labels in meta.vendor_labels, so the dbt docs show the
    vendor's names beside the model; {} when nothing was labelled. -#}
{% macro vendor_labels(table_name) -%}
    {%- set labels = var('vendor_labels', none) -%}
    {%- if labels is none -%}
        {%- set labels = fromjson(env_var('KEYTECH_VENDOR_LABELS', '{}')) -%}
    {%- endif -%}
    {{ return((labels or {}).get(table_name, {})) }}
{%- endmacro %}
