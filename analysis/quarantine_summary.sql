-- What the warehouse rejected, by table and rule, with one example row each.
with quarantine as (
    select * from {{ ref('rpt_quarantine') }}
),

final as (
    select
        source_table,
        column_name,
        rejection_code,
        count(*) as n_rows,
        count(distinct value) as n_distinct_values,
        min(_source_row) as example_source_row,
        arg_min(value, _source_row) as example_value
    from quarantine
    group by source_table, column_name, rejection_code
    order by source_table, n_rows desc
)

select * from final
