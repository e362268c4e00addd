{#- One row per yearbook city-year with both employment columns: the industrial-agglomeration
    index, a location quotient of secondary-sector employment (after 袁其刚、刘斌、朱学昌 2015):
    LQ_ct = (E2_ct / E_ct) / (sum_c E2_ct / sum_c E_ct), E2 = IndustrialEmployment, E =
    TotalEmployment, the reference being all yearbook cities reporting both that year.
    LQ > 1: the city is more specialised in industry than the reference. -#}

with city_years as (
    select * from {{ ref('int_city_years_matched') }}
),

reported as (
    select
        city_code,
        year,
        industrial_employment_10k,
        total_employment_10k
    from city_years
    where
        is_kept
        and industrial_employment_10k is not null
        and total_employment_10k > 0
),

reference as (
    select
        year,
        {{ ordered_sum('industrial_employment_10k') }} / {{ ordered_sum('total_employment_10k') }}
            as reference_share
    from reported
    group by year
),

final as (
    select
        reported.city_code,
        reported.year,
        reported.industrial_employment_10k / reported.total_employment_10k
            as industrial_employment_share,
        reported.industrial_employment_10k / reported.total_employment_10k
        / nullif(reference.reference_share, 0) as agglomeration_lq
    from reported
    inner join reference
        on reported.year = reference.year
)

select * from final
