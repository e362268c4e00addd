-- The 'kept' disposition of the reconciliation is exactly the rows of fct_patents.
with kept as (
    select coalesce(sum(raw_rows), 0) as kept_rows
    from {{ ref('rpt_patent_reconciliation') }}
    where disposition = 'kept'
),

facts as (
    select count(*) as fact_rows
    from {{ ref('fct_patents') }}
)

select *
from kept
cross join facts
where kept.kept_rows <> facts.fact_rows
