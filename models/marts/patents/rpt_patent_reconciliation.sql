with patents as (
    select * from {{ ref('int_patents_dispositioned') }}
),

grouped as (
    select
        disposition_order,
        disposition,
        reason,
        count(*) as raw_rows,
        count(distinct patent_id) as n_patents,
        min(_source_row) as first_source_row
    from patents
    group by disposition_order, disposition, reason
),

final as (
    select
        disposition_order,
        disposition,
        reason,
        raw_rows,
        n_patents,
        raw_rows / sum(raw_rows) over () as share_of_raw_rows,
        first_source_row
    from grouped
    order by disposition_order, reason
)

select * from final
