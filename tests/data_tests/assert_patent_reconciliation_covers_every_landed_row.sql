-- Every landed patent row is accounted for exactly once in rpt_patent_reconciliation.
with reconciliation as (
    select sum(raw_rows) as reconciled_rows
    from {{ ref('rpt_patent_reconciliation') }}
),

landed as (
    select count(*) as landed_rows
    from {{ source('cnrds', 'patents') }}
)

select
    reconciliation.reconciled_rows,
    landed.landed_rows
from reconciliation
cross join landed
where reconciliation.reconciled_rows is distinct from landed.landed_rows
