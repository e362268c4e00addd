{{ incremental_patent_model_config() }}

{#- Incremental: see macros/delete_redispositioned_patents.sql and docs/performance.md. -#}

with tokens as (
    select * from {{ ref('int_patent_ipc_tokens_parsed') }}
),

codes as (
    select * from {{ ref('int_ipc_codes_matched') }}
),

patents as (
    select * from {{ ref('int_patents_dispositioned') }}
),

kept_patents as (
    select
        _source_file,
        _source_row
    from patents
    where disposition = 'kept'
    {%- if is_incremental() %}
        and _batch_id = '{{ invocation_id }}'
    {%- endif %}
),

parsed_tokens as (
    select tokens.*
    from tokens
    inner join kept_patents
        on tokens._source_file = kept_patents._source_file
        and tokens._source_row = kept_patents._source_row
    where tokens.ipc_code is not null
),

final as (
    select
        parsed_tokens.patent_id,
        parsed_tokens.ipc_position,
        parsed_tokens.ipc_raw,
        parsed_tokens.ipc_code,
        parsed_tokens.ipc_subclass,
        parsed_tokens.ipc_class,
        parsed_tokens.main_group,
        parsed_tokens.is_main_code,
        codes.match_level,
        codes.sei_rule_ids,
        codes.sei_codes,
        codes.sei_industry_codes,
        codes.is_key_tech
    from parsed_tokens
    inner join codes
        on parsed_tokens.ipc_code = codes.ipc_code
)

select * from final
