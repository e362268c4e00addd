{#- One row per firm, IPC level (3 = class, 4 = subclass) and IPC class/subclass of the
    firm's pre-existing technology pool: the number of its patent applications (any type,
    de-duplicated, filed up to var similarity_pool_end_year) carrying at least one code in
    that class/subclass. The vectors of the Jaffe (1986) technology similarity. -#}

-- a table, not a view: its dbt tests would otherwise recompute it once per test (paper scale:
-- ~7 s per test; docs/performance.md)
{{ config(materialized='table') }}

with patents as (
    select * from {{ ref('int_patents_key_tech_flagged') }}
),

patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_attributed') }}
),

pool_patents as (
    select
        patent_id,
        stkcd
    from patents
    where application_year <= {{ var('similarity_pool_end_year') }}
),

patent_groups as (
    select distinct
        pool_patents.stkcd,
        pool_patents.patent_id,
        3 as ipc_level,
        patent_codes.ipc_class as ipc_group
    from pool_patents
    inner join patent_codes
        on pool_patents.patent_id = patent_codes.patent_id
    union
    select distinct
        pool_patents.stkcd,
        pool_patents.patent_id,
        4 as ipc_level,
        patent_codes.ipc_subclass as ipc_group
    from pool_patents
    inner join patent_codes
        on pool_patents.patent_id = patent_codes.patent_id
),

final as (
    select
        stkcd,
        ipc_level,
        ipc_group,
        count(*) as n_patents
    from patent_groups
    where ipc_group is not null
    group by stkcd, ipc_level, ipc_group
)

select * from final
