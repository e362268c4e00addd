{#- One row per firm-year of rpt_analysis_panel (2010-2019 estimation sample) with the
    columns of the endogeneity and spillover analyses added (Table 4, "Other robustness").
    The analysis panel itself is unchanged; see _marts__endogeneity.yml for every column. -#}
{%- set bands = var('spill_distance_bands_km', [0, 100, 200, 300, 500]) -%}
{%- set pre_end = var('alt_pre_end_year', 2014) -%}

with panel as (
    select * from {{ ref('rpt_analysis_panel') }}
),

exposures as (
    select * from {{ ref('fct_city_year_exposures') }}
),

firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

firms as (
    select * from {{ ref('dim_firms') }}
),

pilot_projects as (
    select * from {{ ref('int_pilot_projects_city_matched') }}
),

matched_firm_years as (
    select * from {{ ref('int_firm_years_city_matched') }}
),

{#- 企业注册地选择: firms whose office (operating) city differs from the registered city in any
    window year; null when the optional OfficeCity was not supplied for the firm -#}
registration_places as (
    select
        stkcd,
        cast(bool_or(office_city_code <> city_code) as integer) as is_registered_elsewhere
    from matched_firm_years
    where
        is_kept
        and year between {{ var('sample_start_year') }} and {{ var('sample_end_year') }}
        and office_city_code is not null
        and city_code is not null
    group by stkcd
),

{#- CSRC industries with a pilot unit, anywhere and in a given city: the year after the first
    announcement naming one. The unit's industry is pilot_list.Industry when supplied (also for
    units that are not listed), else the industry of its linked listed firm (Stkcd). -#}
pilot_firm_units as (
    select
        pilot_projects.city_code,
        coalesce(pilot_projects.industry_code, firms.industry_code) as industry_code,
        pilot_projects.wave
    from pilot_projects
    left join firms
        on pilot_projects.stkcd = firms.stkcd
    where coalesce(pilot_projects.industry_code, firms.industry_code) is not null
),

pilot_industries as (
    select
        industry_code,
        min(wave) + 1 as first_treated_year
    from pilot_firm_units
    group by industry_code
),

pilot_industry_cells as (
    select
        city_code,
        industry_code,
        min(wave) + 1 as first_treated_year
    from pilot_firm_units
    where city_code is not null
    group by city_code, industry_code
),

{#- firms' pre-policy fixed-asset stock and investment, relative to total assets -#}
firm_capital as (
    select
        stkcd,
        {{ ordered_avg('fixed_assets / nullif(size, 0)') }}
            filter (where year <= {{ pre_end }}) as fixed_asset_ratio_pre,
        {{ ordered_avg('capital_expenditure / nullif(size, 0)') }}
            filter (where year <= {{ pre_end }}) as investment_ratio_pre,
        {{ ordered_avg('fixed_assets / nullif(size, 0)') }} as fixed_asset_ratio_all,
        {{ ordered_avg('capital_expenditure / nullif(size, 0)') }}
            as investment_ratio_all
    from firm_years
    where year between {{ var('sample_start_year') }} and {{ var('sample_end_year') }}
    group by stkcd
),

joined as (
    select
        panel.*,
        exposures.robot_density_base,
        exposures.national_internet_users_10k,
        exposures.iv1,
        exposures.bartik_exposure,
        exposures.hypothetical_first_treated_year,
        exposures.iv2,
        exposures.dist_nearest_treated_km,
        exposures.dist_nearest_pilot_city_km,
        exposures.has_treated_other_city_in_province,
        exposures.has_later_added_pilots,
        exposures.agglomeration_lq,
        exposures.agglomeration_lq_base,
        coalesce(panel.year >= pilot_industries.first_treated_year, false)
            as has_same_industry_pilot,
        coalesce(panel.year >= pilot_industry_cells.first_treated_year, false)
            as has_same_industry_pilot_in_city,
        registration_places.is_registered_elsewhere,
        coalesce(firm_capital.fixed_asset_ratio_pre, firm_capital.fixed_asset_ratio_all)
            as fixed_asset_ratio_pre,
        coalesce(firm_capital.investment_ratio_pre, firm_capital.investment_ratio_all)
            as investment_ratio_pre
    from panel
    left join exposures
        on panel.city_code = exposures.city_code and panel.year = exposures.year
    left join pilot_industry_cells
        on panel.city_code = pilot_industry_cells.city_code
        and panel.industry_code = pilot_industry_cells.industry_code
    left join pilot_industries
        on panel.industry_code = pilot_industries.industry_code
    left join firm_capital
        on panel.stkcd = firm_capital.stkcd
    left join registration_places
        on panel.stkcd = registration_places.stkcd
),

medians as (
    select
        median(agglomeration_lq_base) as agglomeration_median,
        median(fixed_asset_ratio_pre) as fixed_asset_median,
        median(investment_ratio_pre) as investment_median
    from joined
),

final as (
    select
        joined.*,
        case when joined.first_treated_year is null then 0 else 1 end as is_ever_treated,
        case
            when joined.policy = 0 and joined.has_treated_other_city_in_province then 1
            else 0
        end as province_other_city_policy,
        case
            when joined.policy = 1 and joined.has_same_industry_pilot then 1 else 0
        end as policy_same_industry,
        case
            when joined.first_treated_year is null and joined.has_same_industry_pilot then 1
            else 0
        end as control_same_industry_pilot,
        {%- for lo in bands[:-1] %}
        {%- set hi = bands[loop.index] %}
        case
            when joined.policy = 0
                and joined.dist_nearest_treated_km >= {{ lo }}
                and joined.dist_nearest_treated_km < {{ hi }} then 1
            else 0
        end as spill_band_{{ lo }}_{{ hi }},
        {%- endfor %}
        case
            when joined.agglomeration_lq_base is null then null
            when joined.agglomeration_lq_base > medians.agglomeration_median then 1
            else 0
        end as is_high_agglomeration,
        case
            when joined.fixed_asset_ratio_pre is null then null
            when joined.fixed_asset_ratio_pre <= medians.fixed_asset_median then 1
            else 0
        end as is_low_fixed_assets,
        case
            when joined.investment_ratio_pre is null then null
            when joined.investment_ratio_pre <= medians.investment_median then 1
            else 0
        end as is_low_investment
    from joined
    cross join medians
)

select * from final
