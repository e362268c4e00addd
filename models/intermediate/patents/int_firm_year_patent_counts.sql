{#- One row per firm and application year with patents, counting the kept patents
    (int_patents_key_tech_flagged, the rows of fct_patents) behind the Table 2 outcomes. Grants and citations are counted by
    application year (the cohort filed that year), as of the extraction date; citations are
    those received by all the year's key-tech invention applications, granted or not (an
    application is citable once published; the paper: 发明专利被引用量). -#}

with patents as (
    select * from {{ ref('int_patents_key_tech_flagged') }}
),

final as (
    select
        stkcd,
        application_year as year,
        count(*) filter (where is_invention and is_key_tech) as apply_inv_zl,
        count(*) filter (where is_invention and not is_key_tech) as apply_inv_nozl,
        count(*) filter (where is_invention and is_key_tech and is_joint)
            as apply_inv_zl_joint,
        count(*) filter (where is_invention and is_key_tech and is_granted)
            as grant_inv_zl,
        count(*) filter (where is_invention and is_key_tech and is_joint and is_granted)
            as grant_inv_zl_joint,
        cast(
            coalesce(
                sum(citations) filter (where is_invention and is_key_tech),
                0
            ) as bigint
        ) as cite_inv_zl,
        count(*) filter (where is_invention) as apply_inv,
        count(*) filter (where patent_type = 'utility_model') as apply_utility_models,
        count(*) filter (where patent_type = 'design') as apply_designs
    from patents
    group by stkcd, application_year
)

select * from final
