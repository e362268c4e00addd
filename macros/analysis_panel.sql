{#- The estimation sample, written once and used for every window.

    window_firm_years(end_year): a SELECT over the CTEs `firm_years` (fct_firm_years)
    and `firms` (dim_firms) returning the firm-years of sample_start_year..end_year with
    the sample-filter flags. is_listed_under_min_years is recomputed for the window:
    listed after December 31 of (end_year - min_listing_years), i.e. fewer than
    min_listing_years years of listing by the end of the window. The other flags come
    from fct_firm_years unchanged.

    analysis_panel(end_year): the full model SQL of rpt_analysis_panel*: the firm-years
    that pass every filter, controls winsorised at winsor_lower/winsor_upper (pooled
    over the sample, quantile_cont), logs of outcomes and of winsorised levels, lagged
    outcome. -#}

{% macro sample_filter_steps() -%}
    {{- return([
        ('pilot_firms', 'is_pilot_firm',
            'Drop firms that were themselves pilot units (any wave).'),
        ('listed_under_min_years', 'is_listed_under_min_years',
            'Drop firms listed for fewer than ' ~ var('min_listing_years')
            ~ ' years by the end of the window.'),
        ('delisted_firms', 'is_delisted_firm',
            'Drop firms that were ever delisted (终止上市 or a delisting date).'),
        ('st_firm_years', 'is_st',
            'Drop firm-years under special treatment (ST or *ST).'),
        ('financial_firm_years', 'is_financial',
            'Drop firm-years in the financial industry (CSRC section J).'),
        ('missing_data', 'has_missing_data',
            'Drop firm-years with any regression variable missing'
            ~ ' (incl. unknown city).'),
    ]) -}}
{%- endmacro %}

{% macro window_firm_years(end_year) -%}
    select
        firm_years.* exclude (is_listed_under_min_years, is_in_analysis_sample),
        coalesce(
            firms.listing_date
            > make_date({{ end_year }} - {{ var('min_listing_years') }}, 12, 31),
            false
        ) as is_listed_under_min_years
    from firm_years
    left join firms
        on firm_years.stkcd = firms.stkcd
    where firm_years.year between {{ var('sample_start_year') }} and {{ end_year }}
{%- endmacro %}

{% macro analysis_panel(end_year) -%}
{%- set controls = ['roa', 'lnage', 'ki', 'size', 'kd', 'meangdp', 'infor', 'finsgov',
                    'fdi', 'sale', 'saleshare'] -%}
{%- set outcomes = ['apply_inv_zl', 'apply_inv_nozl', 'apply_inv_zl_joint',
                    'grant_inv_zl', 'cite_inv_zl'] -%}
with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

firms as (
    select * from {{ ref('dim_firms') }}
),

window_firm_years as (
    {{ window_firm_years(end_year) }}
),

sample as (
    select *
    from window_firm_years
    where not (
        {%- for step, flag, description in sample_filter_steps() %}
        {{ 'or ' if not loop.first }}{{ flag }}
        {%- endfor %}
    )
),

bounds as (
    select
        {%- for control in controls %}
        quantile_cont(
            {{ control }}, [{{ var('winsor_lower') }}, {{ var('winsor_upper') }}]
        ) as {{ control }}_bounds{{ ',' if not loop.last }}
        {%- endfor %}
    from sample
),

winsorised as (
    select
        sample.stkcd,
        sample.year,
        sample.city_code,
        sample.province_code,
        sample.industry_code,
        sample.first_treated_year,
        sample.policy,
        {%- for outcome in outcomes %}
        sample.{{ outcome }},
        {%- endfor %}
        {%- for control in controls %}
        least(
            greatest(sample.{{ control }}, bounds.{{ control }}_bounds[1]),
            bounds.{{ control }}_bounds[2]
        ) as {{ control }},
        {%- endfor %}
        sample.ifdome
    from sample
    cross join bounds
),

lagged as (
    select
        winsorised.*,
        ln(1 + previous_year.apply_inv_zl) as lag1_ln_apply_inv_zl
    from winsorised
    left join firm_years as previous_year
        on winsorised.stkcd = previous_year.stkcd
        and winsorised.year - 1 = previous_year.year
),

final as (
    select
        stkcd,
        year,
        city_code,
        province_code,
        industry_code,
        first_treated_year,
        year - first_treated_year as rel_time,
        policy,
        {%- for outcome in outcomes %}
        {{ outcome }},
        {%- endfor %}
        {%- for outcome in outcomes %}
        ln(1 + {{ outcome }}) as ln_{{ outcome }},
        {%- endfor %}
        lag1_ln_apply_inv_zl,
        roa,
        lnage,
        ki,
        ifdome,
        size,
        kd,
        meangdp,
        infor,
        finsgov,
        fdi,
        sale,
        saleshare,
        ln(size) as ln_size,
        ln(meangdp) as ln_meangdp,
        ln(finsgov) as ln_finsgov,
        ln(1 + fdi) as ln_fdi,
        ln(sale) as ln_sale
    from lagged
)

select * from final
{%- endmacro %}

{% macro sample_funnel(end_year) -%}
{%- set steps = sample_filter_steps() -%}
with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

firms as (
    select * from {{ ref('dim_firms') }}
),

window_firm_years as (
    {{ window_firm_years(end_year) }}
),

steps as (
    select
        0 as step_order,
        'all_firm_years' as step,
        'All listed firm-years in {{ var("sample_start_year") }}-{{ end_year }} '
        || '(firm_info).' as description,
        count(distinct stkcd) as firms_kept,
        count(*) as firm_years_kept
    from window_firm_years
    {%- for step, flag, description in steps %}
    union all
    select
        {{ loop.index }} as step_order,
        '{{ step }}' as step,
        '{{ description }}' as description,
        count(distinct stkcd) as firms_kept,
        count(*) as firm_years_kept
    from window_firm_years
    where not (
        {%- for previous in steps[:loop.index] %}
        {{ 'or ' if not loop.first }}{{ previous[1] }}
        {%- endfor %}
    )
    {%- endfor %}
),

final as (
    select
        step_order,
        step,
        description,
        coalesce(lag(firms_kept) over (order by step_order) - firms_kept, 0)
            as firms_dropped,
        coalesce(lag(firm_years_kept) over (order by step_order) - firm_years_kept, 0)
            as firm_years_dropped,
        firms_kept,
        firm_years_kept
    from steps
    order by step_order
)

select * from final
{%- endmacro %}
