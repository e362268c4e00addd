{#- One row per listed firm-year of fct_firm_years (2008-2022): the mechanism,
    heterogeneity and extension variables of Tables 5-7 (docs/variables.md, "Mechanisms").
    The estimation layer left-joins it onto the analysis panel by (stkcd, year). -#}

with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

city_similarity as (
    select * from {{ ref('fct_city_year_similarity') }}
),

key_tech_profiles as (
    select * from {{ ref('int_firm_year_key_tech_profiles') }}
),

financial_indices as (
    select * from {{ ref('int_firm_year_financial_indices') }}
),

subsidies as (
    select * from {{ ref('int_firm_year_subsidies') }}
),

keyword_counts as (
    select * from {{ ref('int_firm_year_keyword_counts') }}
),

key_subclass_entries as (
    select * from {{ ref('int_firm_key_subclass_entries') }}
),

patent_counts as (
    select * from {{ ref('int_firm_year_patent_counts') }}
),

subsidy_coverage as (
    select count(*) > 0 as has_subsidy_data
    from subsidies
),

first_years as (
    select
        stkcd,
        min(year) as first_year
    from firm_years
    group by stkcd
),

pool_growth as (
    -- Width2: key-tech IPC4 subclasses in the pool of year t but not in the pool of t - lag
    select
        firm_years.stkcd,
        firm_years.year,
        count(key_subclass_entries.ipc_subclass) as width2
    from firm_years
    left join key_subclass_entries
        on firm_years.stkcd = key_subclass_entries.stkcd
        and key_subclass_entries.first_year > firm_years.year - {{ var('width_pool_lag_years') }}
        and key_subclass_entries.first_year <= firm_years.year
    group by firm_years.stkcd, firm_years.year
),

joined as (
    select
        firm_years.stkcd,
        firm_years.year,
        firm_years.city_code,
        firm_years.industry_code,
        firm_years.size as total_assets,
        city_similarity.similarity_ipc3,
        city_similarity.similarity_ipc4,
        city_similarity.n_firms_ipc3 as similarity_firms_ipc3,
        city_similarity.n_firms_ipc4 as similarity_firms_ipc4,
        financial_indices.adjusted_output_growth,
        financial_indices.volatility_pre,
        financial_indices.volatility_current,
        financial_indices.volatility_post,
        financial_indices.sales_growth,
        financial_indices.industry_sales_growth,
        financial_indices.ww_index,
        financial_indices.ww_dividend_source,
        financial_indices.fc_index,
        financial_indices.hhi_city_industry,
        case
            when subsidy_coverage.has_subsidy_data then coalesce(subsidies.subsidy_total, 0)
        end as subsidy_total,
        case
            when subsidy_coverage.has_subsidy_data then coalesce(subsidies.rd_subsidy, 0)
        end as rd_subsidy,
        case
            when subsidy_coverage.has_subsidy_data then coalesce(subsidies.patent_subsidy, 0)
        end as patent_subsidy,
        keyword_counts.visit_count,
        keyword_counts.standard_count,
        keyword_counts.pilot_mention_count,
        -- firm-level: any annual report (any year) counts a pilot category; null when the firm
        -- has no pilot-category row at all (keyword data not supplied for it)
        cast(
            bool_or(keyword_counts.pilot_mention_count > 0) over (partition by firm_years.stkcd)
            as integer
        ) as mentions_pilot_category,
        {%- for industry in range(1, 10) %}
        coalesce(key_tech_profiles.apply_inv_zl_sei_{{ industry }}, 0)
            as apply_inv_zl_sei_{{ industry }},
        {%- endfor %}
        coalesce(key_tech_profiles.width1, 0) as width1,
        case
            when firm_years.year - {{ var('width_pool_lag_years') }} >= first_years.first_year
                then pool_growth.width2
        end as width2,
        key_tech_profiles.width3,
        coalesce(key_tech_profiles.width4, 0) as width4,
        coalesce(patent_counts.grant_inv_zl_joint, 0) as grant_inv_zl_joint
    from firm_years
    left join first_years
        on firm_years.stkcd = first_years.stkcd
    cross join subsidy_coverage
    left join city_similarity
        on firm_years.city_code = city_similarity.city_code
        and firm_years.year = city_similarity.year
    left join key_tech_profiles
        on firm_years.stkcd = key_tech_profiles.stkcd
        and firm_years.year = key_tech_profiles.year
    left join financial_indices
        on firm_years.stkcd = financial_indices.stkcd
        and firm_years.year = financial_indices.year
    left join subsidies
        on firm_years.stkcd = subsidies.stkcd
        and firm_years.year = subsidies.year
    left join keyword_counts
        on firm_years.stkcd = keyword_counts.stkcd
        and firm_years.year = keyword_counts.year
    left join pool_growth
        on firm_years.stkcd = pool_growth.stkcd
        and firm_years.year = pool_growth.year
    left join patent_counts
        on firm_years.stkcd = patent_counts.stkcd
        and firm_years.year = patent_counts.year
),

final as (
    select
        * exclude (total_assets),
        rd_subsidy / nullif(total_assets, 0) as rd_subsidy_ratio,
        patent_subsidy / nullif(total_assets, 0) as patent_subsidy_ratio,
        {%- for industry in range(1, 10) %}
        ln(1 + apply_inv_zl_sei_{{ industry }}) as ln_apply_inv_zl_sei_{{ industry }},
        {%- endfor %}
        ln(1 + width1) as ln_width1,
        ln(1 + width2) as ln_width2,
        ln(1 + width4) as ln_width4,
        ln(1 + grant_inv_zl_joint) as ln_grant_inv_zl_joint
    from joined
)

select * from final
