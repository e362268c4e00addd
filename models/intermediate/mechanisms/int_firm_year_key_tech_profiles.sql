{#- One row per firm and application year with at least one key-tech invention application:
    key-tech applications by SEI top-level industry and the technology-width measures of
    Table 7 (Width1, Width3, Width4, defined in docs/variables.md; Width2 is a difference of
    pools, defined for every firm-year: int_firm_key_subclass_entries, fct_firm_year_mechanisms). Sub-fields are the SEI
    sub-industries (seeds/sei_subindustries, e.g. 2.1) of the application's key-tech IPC codes
    (only its main code under key_tech_rule = 'main'). The firm's pool is the set of IPC
    subclasses of all its earlier applications (any type). -#}

-- a table, not a view: its dbt tests would otherwise recompute it once per test (paper scale:
-- ~7 s per test; docs/performance.md)
{{ config(materialized='table') }}
{%- set rule = key_tech_rule() -%}

with patents as (
    select * from {{ ref('int_patents_key_tech_flagged') }}
),

patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_attributed') }}
),

key_patents as (
    select
        patent_id,
        stkcd,
        application_year as year,
        {%- for industry in range(1, 10) %}
        is_sei_{{ industry }},
        {%- endfor %}
    from patents
    where is_key_tech
),

subclass_first_years as (
    select
        patents.stkcd,
        patent_codes.ipc_subclass,
        min(patents.application_year) as first_year
    from patents
    inner join patent_codes
        on patents.patent_id = patent_codes.patent_id
    group by patents.stkcd, patent_codes.ipc_subclass
),

key_codes as (
    select
        key_patents.patent_id,
        key_patents.stkcd,
        key_patents.year,
        patent_codes.ipc_subclass,
        patent_codes.sei_codes
    from key_patents
    inner join patent_codes
        on key_patents.patent_id = patent_codes.patent_id
    where
        patent_codes.is_key_tech
        {%- if rule == 'main' %}
        and patent_codes.is_main_code
        {%- endif %}
),

patent_subfields as (
    select distinct
        patent_id,
        stkcd,
        year,
        unnest(sei_codes) as sei_code
    from key_codes
),

subfield_counts as (
    select
        stkcd,
        year,
        sei_code,
        count(*) as n_assignments
    from patent_subfields
    group by stkcd, year, sei_code
),

subfield_widths as (
    select
        stkcd,
        year,
        count(*) as width1,
        1 - sum(n_assignments * n_assignments) / (sum(n_assignments) * sum(n_assignments))
            as width3
    from subfield_counts
    group by stkcd, year
),

patent_pool_status as (
    select
        key_patents.patent_id,
        key_patents.stkcd,
        key_patents.year,
        bool_and(subclass_first_years.first_year >= key_patents.year) as is_outside_pool
    from key_patents
    inner join patent_codes
        on key_patents.patent_id = patent_codes.patent_id
    inner join subclass_first_years
        on key_patents.stkcd = subclass_first_years.stkcd
        and patent_codes.ipc_subclass = subclass_first_years.ipc_subclass
    group by key_patents.patent_id, key_patents.stkcd, key_patents.year
),

outside_pool as (
    select
        stkcd,
        year,
        count(*) filter (where is_outside_pool) as width4
    from patent_pool_status
    group by stkcd, year
),

field_counts as (
    select
        stkcd,
        year,
        count(*) as apply_inv_zl,
        {%- for industry in range(1, 10) %}
        count(*) filter (where is_sei_{{ industry }}) as apply_inv_zl_sei_{{ industry }},
        {%- endfor %}
    from key_patents
    group by stkcd, year
),

final as (
    select
        field_counts.stkcd,
        field_counts.year,
        field_counts.apply_inv_zl,
        {%- for industry in range(1, 10) %}
        field_counts.apply_inv_zl_sei_{{ industry }},
        {%- endfor %}
        coalesce(subfield_widths.width1, 0) as width1,
        round(subfield_widths.width3, 10) as width3,
        coalesce(outside_pool.width4, 0) as width4
    from field_counts
    left join subfield_widths
        on field_counts.stkcd = subfield_widths.stkcd
        and field_counts.year = subfield_widths.year
    left join outside_pool
        on field_counts.stkcd = outside_pool.stkcd
        and field_counts.year = outside_pool.year
)

select * from final
