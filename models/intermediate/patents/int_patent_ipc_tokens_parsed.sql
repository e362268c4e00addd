{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="
            {% if is_incremental() %}
            delete from {{ this }} as previous
            where not exists (
                select 1
                from {{ ref('stg_cnrds__patents') }} as staged
                where staged._source_file = previous._source_file
                    and staged._source_row = previous._source_row
                    and hash(staged.patent_id, staged.ipc_string) = previous._row_hash
            )
            {% endif %}
        ",
    )
}}

{#- One row per distinct IPC token of each landed patent row, exactly as
    python/keytech/ipc.py normalise_ipc_list: tokens that parse carry ipc_code, junk
    tokens carry ipc_code = null. Distinct key: the normalised code, or for a junk token
    its upper-cased whitespace-free text; the first position wins; ipc_position
    renumbers the distinct tokens (junk included) 1, 2, ... in raw order, so position 1
    is the main code.

    NFKC: characters that NFKC maps to one ASCII character are translated (macro
    nfkc_ascii_pairs), using only the pairs whose characters occur in the data.

    Performance: each patent's tokens are processed as lists (no window functions), and
    the NFKC and full Unicode whitespace handling run only for strings that are not
    plain printable ASCII (for those, whitespace is the space character alone).

    Incremental (docs/performance.md, "Incremental refresh"): parsing is a function of the
    landed row alone, so a refresh first deletes the tokens of rows that changed or
    disappeared (same _source_file and _source_row, same _row_hash = hash(patent_id,
    ipc_string)) and then parses only the landed rows without tokens. -#}

with patents as (
    select * from {{ ref('stg_cnrds__patents') }}
),

ipc_strings as (
    select
        _source_file,
        _source_row,
        hash(patent_id, ipc_string) as _row_hash,
        ipc_string
    from patents
    where ipc_string is not null
    {%- if is_incremental() %}
        and not exists (
            select 1
            from {{ this }} as existing
            where existing._source_file = patents._source_file
                and existing._source_row = patents._source_row
        )
    {%- endif %}
),

classified as (
    select
        _source_file,
        _source_row,
        _row_hash,
        ipc_string,
        regexp_full_match(ipc_string, '[ -~]*') as is_printable_ascii
    from ipc_strings
),

nfkc_pairs as (
    select * from {{ nfkc_ascii_pairs() }}
),

occurring_characters as (
    select distinct unnest(regexp_extract_all(ipc_string, '[^ -~]')) as source_character
    from classified
    where not is_printable_ascii
),

nfkc_mapping as (
    select
        coalesce(
            string_agg(
                nfkc_pairs.source_character, '' order by nfkc_pairs.source_character
            ),
            ''
        ) as source_characters,
        coalesce(
            string_agg(
                nfkc_pairs.ascii_character, '' order by nfkc_pairs.source_character
            ),
            ''
        ) as ascii_characters
    from nfkc_pairs
    inner join occurring_characters
        on nfkc_pairs.source_character = occurring_characters.source_character
),

normalised as (
    select
        classified._source_file,
        classified._source_row,
        classified._row_hash,
        classified.is_printable_ascii as was_printable_ascii,
        case
            when classified.is_printable_ascii then classified.ipc_string
            else translate(
                classified.ipc_string,
                nfkc_mapping.source_characters,
                nfkc_mapping.ascii_characters
            )
        end as ipc_text
    from classified
    cross join nfkc_mapping
),

{#- a printable ASCII string is its own NFKC text: only the translated ones are tested again -#}
normalised_classified as (
    select
        * exclude (was_printable_ascii),
        was_printable_ascii or regexp_full_match(ipc_text, '[ -~]*') as is_printable_ascii
    from normalised
),

split as (
    select
        _source_file,
        _source_row,
        _row_hash,
        is_printable_ascii,
        string_split(
            case
                when is_printable_ascii
                    then {{ ipc_separate_codes('ipc_text', printable_ascii=true) }}
                else {{ ipc_separate_codes('ipc_text') }}
            end,
            ';'
        ) as pieces
    from normalised_classified
),

ascii_tokens as (
    select
        _source_file,
        _source_row,
        _row_hash,
        list_filter(
            list_transform(pieces, lambda piece: trim(piece)),
            lambda raw: raw <> ''
        ) as raws
    from split
    where is_printable_ascii
),

ascii_bases as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        list_transform(raws, lambda raw: replace(upper(raw), ' ', '')) as bases
    from ascii_tokens
),

unicode_tokens as (
    select
        _source_file,
        _source_row,
        _row_hash,
        list_filter(
            list_transform(pieces, lambda piece: {{ strip_whitespace('piece') }}),
            lambda raw: raw <> ''
        ) as raws
    from split
    where not is_printable_ascii
),

unicode_bases as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        list_transform(raws, lambda raw: {{ remove_whitespace('upper(raw)') }}) as bases
    from unicode_tokens
),

bases as (
    select * from ascii_bases
    union all
    select * from unicode_bases
),

compacted as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        bases,
        list_transform(
            bases, lambda base: {{ ipc_remove_edition_suffix('base') }}
        ) as compacts
    from bases
),

coded as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        bases,
        list_transform(compacts, lambda compact: {{ ipc_code_of('compact') }}) as codes
    from compacted
),

keyed as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        codes,
        list_transform(
            codes, lambda code, i: coalesce(code, 'unparsed:' || bases[i])
        ) as token_keys
    from coded
),

deduplicated as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        codes,
        list_filter(
            range(1, len(token_keys) + 1),
            lambda i: list_position(token_keys, token_keys[i]) = i
        ) as kept_indexes
    from keyed
),

main_codes as (
    select
        *,
        list_position(
            list_transform(kept_indexes, lambda i: codes[i] is not null), true
        ) as main_code_position
    from deduplicated
),

unnested as (
    select
        _source_file,
        _source_row,
        _row_hash,
        raws,
        codes,
        main_code_position,
        unnest(kept_indexes) as token_index,
        generate_subscripts(kept_indexes, 1) as ipc_position
    from main_codes
),

{#- Narrow (issue 17): what a code implies (subclass, class, main group, match) is a column
    of int_ipc_codes_matched, one row per distinct code, and the patent key is
    int_patents_dispositioned's (same _source_file, _source_row); this table holds only what
    the token itself adds, so a build writes 7 columns of 2.6 M rows at paper scale, not 12. -#}
final as (
    select
        _source_file,
        _source_row,
        _row_hash,
        cast(ipc_position as integer) as ipc_position,
        raws[token_index] as ipc_raw,
        codes[token_index] as ipc_code,
        coalesce(ipc_position = main_code_position, false) as is_main_code
    from unnested
)

select * from final
