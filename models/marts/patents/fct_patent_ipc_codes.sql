{#- The parseable IPC codes of the kept patents with their SEI match: the rows of
    int_patent_ipc_codes_attributed (int_patent_ipc_codes_flagged, incremental there, joined
    with what each code implies from int_ipc_codes_matched: subclass, class, main group, match
    level, SEI rules, sub-industries and industries, key-tech flag), all its columns but the
    industry bits that int_patents_key_tech_flagged reads. This mart is what analysts, checks
    and the report read. A view: writing the SEI lists once per patent code (2.6 M rows at paper
    scale) cost more than the join on read (issue 17); the dbt tests of this grain run here,
    once. -#}

{{ config(materialized='view') }}

with patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_attributed') }}
),

final as (
    select
        patent_id,
        ipc_position,
        ipc_raw,
        ipc_code,
        ipc_subclass,
        ipc_class,
        main_group,
        is_main_code,
        match_level,
        sei_rule_ids,
        sei_codes,
        sei_industry_codes,
        is_key_tech
    from patent_codes
)

select * from final
