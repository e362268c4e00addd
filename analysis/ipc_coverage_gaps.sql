-- Which IPC subclasses of invention patents does the concordance leave unmatched, and
-- is that an exclusion (subclass listed with some groups) or a gap (subclass not listed
-- at all)? Compile with `dbt compile -s ipc_coverage_gaps` and run the SQL in
-- target/compiled.
with coverage as (
    select * from {{ ref('rpt_ipc_coverage') }}
),

unmatched as (
    select
        ipc_subclass,
        concordance_coverage,
        n_invention_code_rows,
        n_patents,
        subclass_share_key_tech
    from coverage
    where match_level = 'none'
),

final as (
    select *
    from unmatched
    order by n_invention_code_rows desc
    limit 50
)

select * from final
