{#- One row per parseable IPC code of a kept patent (int_patent_ipc_codes_flagged) with what the
    code implies (int_ipc_codes_matched, one row per distinct code: subclass, class, main group,
    SEI match, key-tech flag) and the code's SEI industries as the bits of one integer. The one
    place the two are joined (issue 17): fct_patent_ipc_codes selects these rows,
    int_patents_key_tech_flagged and the mechanisms' technology pools, key-tech profiles and
    key-subclass entries read them. A view: DuckDB inlines it into each reader, so each reader
    computes the join once, as when it wrote the join itself (same plans, docs/performance.md),
    and the SEI lists are not written once per patent code. The join keeps every row and the
    grain (patent_id, ipc_position): every parseable token's code is a row of
    int_ipc_codes_matched, whose primary key is ipc_code; the grain and column tests run once,
    on fct_patent_ipc_codes. -#}

{{ config(materialized='view') }}

with patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_flagged') }}
),

codes as (
    select * from {{ ref('int_ipc_codes_matched') }}
),

{#- A code's SEI industries (a short sorted list of integers 0-62, 1-9 in the seed) become the
    bits of one integer, once per distinct code, so int_patents_key_tech_flagged takes a
    patent's union as a bit_or and spells the list out once per patent (issue 17). A reader
    that does not select sei_industry_mask does not compute it (DuckDB drops unused columns of
    an inlined view). -#}
code_attributes as (
    select
        ipc_code,
        ipc_subclass,
        ipc_class,
        main_group,
        match_level,
        sei_rule_ids,
        sei_codes,
        sei_industry_codes,
        is_key_tech,
        coalesce(
            list_aggregate(
                list_transform(
                    sei_industry_codes,
                    lambda industry: case
                        when industry between 0 and 62 then 1::bigint << industry
                        else error(
                            'int_patent_ipc_codes_attributed: sei_industry_code '
                            || industry || ' outside 0-62 (industries are encoded as bits)'
                        )
                    end
                ),
                'bit_or'
            ),
            0
        ) as sei_industry_mask
    from codes
),

final as (
    select
        patent_codes.patent_id,
        patent_codes.ipc_position,
        patent_codes.ipc_raw,
        patent_codes.ipc_code,
        code_attributes.ipc_subclass,
        code_attributes.ipc_class,
        code_attributes.main_group,
        patent_codes.is_main_code,
        code_attributes.match_level,
        code_attributes.sei_rule_ids,
        code_attributes.sei_codes,
        code_attributes.sei_industry_codes,
        code_attributes.is_key_tech,
        code_attributes.sei_industry_mask
    from patent_codes
    inner join code_attributes
        on patent_codes.ipc_code = code_attributes.ipc_code
)

select * from final
