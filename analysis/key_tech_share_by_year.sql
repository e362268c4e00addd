-- Key-technology share of kept invention applications by application year and match
-- level of the main code: a quick check of the concordance's reach over time.
with patents as (
    select * from {{ ref('fct_patents') }}
),

codes as (
    select * from {{ ref('fct_patent_ipc_codes') }}
),

inventions as (
    select
        patents.application_year,
        patents.is_key_tech,
        codes.match_level as main_code_match_level
    from patents
    left join codes
        on patents.patent_id = codes.patent_id
        and codes.is_main_code
    where patents.is_invention
),

final as (
    select
        application_year,
        count(*) as n_inventions,
        avg(case when is_key_tech then 1.0 else 0.0 end) as share_key_tech,
        count(*) filter (where main_code_match_level = 'exact') as n_main_exact,
        count(*) filter (
            where main_code_match_level = 'supplement'
        ) as n_main_supplement
    from inventions
    group by application_year
    order by application_year
)

select * from final
