{#- The SEI–IPC concordance edition this build uses: the versioned seed
    seeds/sei_ipc_concordance.csv (CNIPA 2021), or another edition in the same shape
    (columns ipc_code, sei_rule_id; codes normalised as in the seed) given with
    `keytech build --concordance PATH`, which copies it into the landing area and passes
    its path as var concordance_path. The build records which edition was used
    (landing manifest 'concordance', build_meta.build_state, the report). -#}

{%- set edition_path = var('concordance_path', '') | string %}

with edition as (
    {%- if edition_path %}
    select
        cast(ipc_code as varchar) as ipc_code,
        cast(sei_rule_id as integer) as sei_rule_id
    from read_csv(
        '{{ edition_path }}',
        header = true,
        columns = {'ipc_code': 'VARCHAR', 'sei_rule_id': 'INTEGER'}
    )
    {%- else %}
    select
        ipc_code,
        sei_rule_id
    from {{ ref('sei_ipc_concordance') }}
    {%- endif %}
),

final as (
    select distinct
        ipc_code,
        sei_rule_id
    from edition
    where ipc_code is not null
)

select * from final
