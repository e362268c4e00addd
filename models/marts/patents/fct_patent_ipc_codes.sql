{#- The parseable IPC codes of the kept patents with their SEI match: the rows of
    int_patent_ipc_codes_flagged (incremental there) with what each code implies (subclass,
    class, main group, match level, SEI rules, sub-industries and industries, key-tech flag)
    from int_ipc_codes_matched, one row per distinct code (primary key ipc_code, so the join
    keeps the grain; every parseable token's code is there). This mart is what analysts,
    checks and the report read. A view: both inputs are tables, and writing the SEI lists once
    per patent code (2.6 M rows at paper scale) cost more than this join on read (issue 17);
    the dbt tests of this grain run here, once. -#}

{{ config(materialized='view') }}

with patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_flagged') }}
),

codes as (
    select * from {{ ref('int_ipc_codes_matched') }}
),

final as (
    select
        patent_codes.patent_id,
        patent_codes.ipc_position,
        patent_codes.ipc_raw,
        patent_codes.ipc_code,
        codes.ipc_subclass,
        codes.ipc_class,
        codes.main_group,
        patent_codes.is_main_code,
        codes.match_level,
        codes.sei_rule_ids,
        codes.sei_codes,
        codes.sei_industry_codes,
        codes.is_key_tech
    from patent_codes
    inner join codes
        on patent_codes.ipc_code = codes.ipc_code
)

select * from final
