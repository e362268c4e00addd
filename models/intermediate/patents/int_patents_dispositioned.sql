{%- set content_columns = [
    'stkcd',
    'application_number',
    'application_date',
    'patent_type_raw',
    'ipc_string',
    'locarno_class',
    'applicants_string',
    'grant_date',
    'citations',
] -%}
{%- set content_hash = 'hash(' ~ content_columns | join(', ') ~ ')' -%}
{%- set staged_content_hash = 'hash(staged.' ~ content_columns | join(', staged.') ~ ')' -%}

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        pre_hook="
            {% if is_incremental() %}
            delete from {{ this }}
            where patent_id in (
                select previous.patent_id
                from {{ this }} as previous
                where not exists (
                    select 1
                    from {{ ref('stg_cnrds__patents') }} as staged
                    where staged._source_file = previous._source_file
                        and staged._source_row = previous._source_row
                        and " ~ staged_content_hash ~ " = previous._content_hash
                )
                union
                select staged.patent_id
                from {{ ref('stg_cnrds__patents') }} as staged
                where not exists (
                    select 1
                    from {{ this }} as previous
                    where staged._source_file = previous._source_file
                        and staged._source_row = previous._source_row
                        and " ~ staged_content_hash ~ " = previous._content_hash
                )
                union
                select previous.patent_id
                from {{ this }} as previous
                where previous.is_listed_firm <> (
                    previous.stkcd in (
                        select stkcd from {{ ref('stg_csmar__firm_years') }}
                    )
                )
            )
            {% endif %}
        ",
    )
}}

{#- Every landed patent row with exactly one disposition. Precedence (first that
    applies):
      1 merged_duplicate     a later row (by _source_row) for the same stock code and
                             application number; the first row stands for the patent
      2 unmatched_firm       the stock code is not in firm_info (any year)
      3 unknown_patent_type  the patent type is not 发明 / 实用新型 / 外观设计
      4 outside_window       application year outside panel_start_year..panel_end_year
      5 unparseable_ipc      an invention whose IPC string yields no parseable code
                             (including an empty IPC string)
      6 kept
    Duplicates come first because a repeat adds nothing whatever its content; firm and
    type before the window because they are data problems worth fixing in any year; the
    IPC check last because it only matters for patents that would otherwise be counted.

    Incremental (docs/performance.md, "Incremental refresh"): a row's disposition depends
    on the other rows of its patent and on firm_info, so a refresh deletes every patent
    (all its rows) with a row that changed, appeared or disappeared (lineage plus
    _content_hash) or whose firm's listing changed, then dispositions every landed row
    of the patents no longer in the table. _batch_id (the dbt invocation) marks the rows
    written by a run; int_patents_key_tech_flagged and int_patent_ipc_codes_flagged
    (behind fct_patents and fct_patent_ipc_codes) rebuild exactly those patents.
    -#}

with patents as (
    select * from {{ ref('stg_cnrds__patents') }} as staged
    {%- if is_incremental() %}
    where not exists (
        select 1
        from {{ this }} as previous
        where previous.patent_id = staged.patent_id
    )
    {%- endif %}
),

tokens as (
    select * from {{ ref('int_patent_ipc_tokens_parsed') }} as parsed
    {%- if is_incremental() %}
    where exists (
        select 1
        from patents
        where patents._source_file = parsed._source_file
            and patents._source_row = parsed._source_row
    )
    {%- endif %}
),

firm_years as (
    select * from {{ ref('stg_csmar__firm_years') }}
),

listed_firms as (
    select distinct stkcd
    from firm_years
),

hashed as (
    select
        *,
        {{ content_hash }} as content_hash
    from patents
),

{#- Repeats are rare: the first row (lowest _source_file, _source_row) and its content are
    looked up only for patent ids landed more than once, straight from staging (a patent's
    rows are all in this run's batch or none are), so `patents` is read once and a patent
    landed once needs no aggregate: it is its own first row (issue 17). -#}
repeated_patent_ids as (
    select patent_id
    from {{ ref('stg_cnrds__patents') }}
    group by patent_id
    having count(*) > 1
),

first_rows as (
    select
        staged.patent_id,
        min({'file': staged._source_file, 'row': staged._source_row}) as first_row_key,
        arg_min(
            {{ staged_content_hash }},
            {'file': staged._source_file, 'row': staged._source_row}
        ) as first_content_hash
    from {{ ref('stg_cnrds__patents') }} as staged
    semi join repeated_patent_ids
        on staged.patent_id = repeated_patent_ids.patent_id
    group by staged.patent_id
),

token_counts as (
    select
        _source_file,
        _source_row,
        count(*) as n_ipc_tokens,
        count(ipc_code) as n_ipc_codes
    from tokens
    group by _source_file, _source_row
),

joined as (
    select
        hashed.* exclude (content_hash),
        hashed.content_hash as _content_hash,
        coalesce(
            {'file': hashed._source_file, 'row': hashed._source_row}
            = first_rows.first_row_key,
            true
        ) as is_first_occurrence,
        coalesce(first_rows.first_row_key.row, hashed._source_row) as first_source_row,
        coalesce(hashed.content_hash = first_rows.first_content_hash, true)
            as is_same_content_as_first,
        listed_firms.stkcd is not null as is_listed_firm,
        coalesce(token_counts.n_ipc_tokens, 0) as n_ipc_tokens,
        coalesce(token_counts.n_ipc_codes, 0) as n_ipc_codes
    from hashed
    left join first_rows
        on hashed.patent_id = first_rows.patent_id
    left join listed_firms
        on hashed.stkcd = listed_firms.stkcd
    left join token_counts
        on hashed._source_file = token_counts._source_file
        and hashed._source_row = token_counts._source_row
),

dispositioned as (
    select
        *,
        case
            when not is_first_occurrence then 'merged_duplicate'
            when not is_listed_firm then 'unmatched_firm'
            when patent_type is null then 'unknown_patent_type'
            when application_year not between {{ var('panel_start_year') }}
                and {{ var('panel_end_year') }} then 'outside_window'
            when patent_type = 'invention' and n_ipc_codes = 0 then 'unparseable_ipc'
            else 'kept'
        end as disposition,
        case
            when not is_first_occurrence and is_same_content_as_first
                then 'exact duplicate of an earlier row; the first row is kept'
            when not is_first_occurrence
                then 'same stock code and application number as an earlier row with '
                    || 'different content; the first row (lowest _source_row) is kept'
            when not is_listed_firm then 'stock code not found in firm_info'
            when patent_type is null
                then 'patent type not recognised as 发明, 实用新型 or 外观设计'
            when application_year not between {{ var('panel_start_year') }}
                and {{ var('panel_end_year') }}
                then 'application year outside {{ var("panel_start_year") }}-'
                    || '{{ var("panel_end_year") }}'
            when patent_type = 'invention' and n_ipc_tokens = 0
                then 'invention without IPC codes'
            when patent_type = 'invention' and n_ipc_codes = 0
                then 'invention whose IPC tokens are all unparseable'
            else 'kept'
        end as reason
    from joined
),

{#- Narrow (issue 17): the row keys, the columns the disposition and its readers use
    (stock code, application number and year, patent type) and the computed columns; the
    other landed columns (dates, raw type, IPC and applicant strings, citations) stay in
    stg_cnrds__patents, joined on (_source_file, _source_row) by the models that need them,
    so a build does not write a second copy of every landed row. -#}
final as (
    select
        patent_id,
        stkcd,
        application_number,
        application_year,
        patent_type,
        _source_file,
        _source_row,
        is_first_occurrence,
        first_source_row,
        not is_first_occurrence and is_same_content_as_first as is_exact_duplicate,
        is_listed_firm,
        n_ipc_tokens,
        n_ipc_codes,
        disposition,
        reason,
        _content_hash,
        '{{ invocation_id }}' as _batch_id,
        case disposition
            when 'kept' then 1
            when 'merged_duplicate' then 2
            when 'unmatched_firm' then 3
            when 'unknown_patent_type' then 4
            when 'outside_window' then 5
            when 'unparseable_ipc' then 6
        end as disposition_order
    from dispositioned
)

select * from final
