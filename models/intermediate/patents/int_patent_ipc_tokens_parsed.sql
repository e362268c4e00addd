{{ config(materialized='table') }}

{#- One row per distinct IPC token of each first-occurrence patent row, exactly as
    python/keytech/ipc.py normalise_ipc_list: tokens that parse carry ipc_code, junk tokens
    carry ipc_code = null. Distinct key: the normalised code, or for a junk token its
    upper-cased whitespace-free text; the first position wins; ipc_position renumbers the
    distinct tokens (junk included) 1, 2, ... in raw order, so position 1 is the main code. -#}

with patent_rows as (
    select * from {{ ref('int_patent_rows_ranked') }}
),

first_occurrences as (
    select
        patent_id,
        {{ fullwidth_to_ascii('ipc_string') }} as ipc_text
    from patent_rows
    where occurrence_rank = 1 and ipc_string is not null
),

split as (
    select
        patent_id,
        string_split_regex(ipc_text, '[;,]') as pieces
    from first_occurrences
),

pieces as (
    select
        patent_id,
        unnest(pieces) as piece,
        generate_subscripts(pieces, 1) as piece_index
    from split
),

trimmed as (
    select
        patent_id,
        piece_index,
        {{ strip_whitespace('piece') }} as ipc_raw
    from pieces
),

compacted as (
    select
        patent_id,
        piece_index,
        ipc_raw,
        {{ ipc_compact_token('ipc_raw') }} as ipc_compact,
        {{ remove_whitespace('upper(ipc_raw)') }} as raw_key
    from trimmed
    where ipc_raw <> ''
),

parsed as (
    select
        *,
        regexp_matches(ipc_compact, '{{ ipc_code_pattern() }}') as is_parsed,
        {{ ipc_token_parts('ipc_compact') }} as parts
    from compacted
),

coded as (
    select
        patent_id,
        piece_index,
        ipc_raw,
        is_parsed,
        {{ ipc_code_from_parts('parts', 'is_parsed') }} as ipc_code,
        raw_key
    from parsed
),

keyed as (
    select
        *,
        coalesce(ipc_code, 'unparsed:' || raw_key) as token_key
    from coded
),

first_of_key as (
    select
        *,
        row_number() over (
            partition by patent_id, token_key order by piece_index
        ) as key_occurrence
    from keyed
),

final as (
    select
        patent_id,
        cast(
            row_number() over (partition by patent_id order by piece_index) as integer
        ) as ipc_position,
        ipc_raw,
        ipc_code,
        is_parsed,
        left(ipc_code, 4) as ipc_subclass,
        left(ipc_code, 3) as ipc_class,
        case
            when contains(ipc_code, '/') then split_part(ipc_code, '/', 1) || '/00'
        end as main_group
    from first_of_key
    where key_occurrence = 1
)

select * from final
