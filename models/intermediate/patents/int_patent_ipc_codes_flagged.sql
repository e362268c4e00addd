{{ incremental_patent_model_config() }}

{#- Incremental: see macros/delete_redispositioned_patents.sql and docs/performance.md.

    Narrow (issue 17): one row per parseable code of a kept patent with only what the token
    adds (position, raw text, code, main-code flag). What the code implies (subclass, class,
    main group, SEI match, key-tech flag) is one row per distinct code in int_ipc_codes_matched
    (about 50,000 codes for 2.6 M rows at paper scale), joined on ipc_code in one place, the
    view int_patent_ipc_codes_attributed, which fct_patent_ipc_codes and the firm-level models
    read, so a build does not write the SEI lists once per row. Every parseable token's code
    is a row of int_ipc_codes_matched (it is built from all tokens), so that join keeps every
    row. -#}

with tokens as (
    select * from {{ ref('int_patent_ipc_tokens_parsed') }}
),

patents as (
    select * from {{ ref('int_patents_dispositioned') }}
),

kept_patents as (
    select
        patent_id,
        _source_file,
        _source_row
    from patents
    where disposition = 'kept'
    {%- if is_incremental() %}
        and _batch_id = '{{ invocation_id }}'
    {%- endif %}
),

final as (
    select
        kept_patents.patent_id,
        tokens.ipc_position,
        tokens.ipc_raw,
        tokens.ipc_code,
        tokens.is_main_code
    from tokens
    inner join kept_patents
        on tokens._source_file = kept_patents._source_file
        and tokens._source_row = kept_patents._source_row
    where tokens.ipc_code is not null
)

select * from final
