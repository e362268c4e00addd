{#- The estimation sample, written once and used for every window.

    sample_filter_steps(): the paper's sample filters in its order (section 四), as
    (step, flag column, level, description); rpt_sample_funnel has one row per step.

    sample_flag_columns(end_year): the window-dependent filter flags as select-list
    expressions (fct_firm_years uses it for the 2010-2019 window, window_firm_years for
    any window), so that the flags in fct_firm_years and the panels cannot disagree.

    window_firm_years(end_year): a SELECT over the CTE `firm_years` (fct_firm_years)
    returning the firm-years of sample_start_year..end_year with the flags recomputed for
    that window.

    analysis_panel(end_year): the full model SQL of rpt_analysis_panel*: every firm-year of
    the firms that pass the filters. Missing controls stay NULL (each specification drops
    the rows missing its own variables); controls are winsorised at winsor_lower/
    winsor_upper (pooled over the non-null values of the sample, quantile_cont); logs of
    outcomes and of winsorised levels (NULL where the level is not positive); lagged
    outcome. -#}

{% macro sample_filter_steps() -%}
    {#- (step, flag column, level, description) in the paper's order (section 四): pilot units
        first, then ① listed < 5 years, ② delisting flag, ③ financial industry, ④ some missing
        data. Every step but an ST-years reading of ② drops whole firms. -#}
    {%- set rule = var('delisting_flag_rule') -%}
    {%- set delisting = {
        'delisted_or_star_st': 'firms delisted by the end of the window (终止上市 or a delisting'
            ~ ' date) or under a delisting-risk warning (*ST) in any window year; plain ST'
            ~ ' years are kept',
        'delisted_only': 'firms delisted by the end of the window (终止上市 or a delisting date);'
            ~ ' ST and *ST years are kept',
        'st_years': 'firms delisted by the end of the window, and every ST or *ST firm-year',
        'st_firms': 'firms delisted by the end of the window or with any ST or *ST year in the'
            ~ ' window',
    } -%}
    {%- if rule not in delisting -%}
        {{ exceptions.raise_compiler_error(
            "var delisting_flag_rule must be one of " ~ (delisting.keys() | list | join(', '))
            ~ "; got '" ~ rule ~ "'") }}
    {%- endif -%}
    {{- return([
        ('pilot_firms', 'is_pilot_firm', 'firm',
            'Drop firms that were themselves pilot units (any wave).'),
        ('listed_under_min_years', 'is_listed_under_min_years', 'firm',
            'Drop firms listed for fewer than ' ~ var('min_listing_years')
            ~ ' years by the end of the window.'),
        ('delisting_flag', 'is_delisting_flagged',
            'firm-year' if rule == 'st_years' else 'firm',
            'Drop ' ~ delisting[rule] ~ ' (delisting_flag_rule ' ~ rule ~ ').'),
        ('financial_firms', 'is_financial', 'firm',
            'Drop firms in the financial industry (CSRC section J in any window year).'),
        ('missing_data_firms', 'is_missing_data_firm', 'firm',
            'Drop firms with an unknown city, province or industry in any window year, or'
            ~ ' without total assets in every window year; missing controls do not drop rows'
            ~ ' here (each regression drops its own).'),
    ]) -}}
{%- endmacro %}

{% macro sample_flag_columns(end_year) -%}
    {#- The window-dependent filter flags, as select-list expressions over rows that carry
        fct_firm_years' ingredients (stkcd, year, listing_date, is_delisted, delisting_date,
        is_st, is_star_st, industry_section, has_missing_identifiers, size). Firm-level flags
        are window aggregates over the firm's rows of sample_start_year..end_year. -#}
    {%- set in_window = 'year between ' ~ var('sample_start_year') ~ ' and ' ~ end_year -%}
    {%- set rule = var('delisting_flag_rule') -%}
    {%- set delisted -%}
        coalesce(is_delisted and (delisting_date is null or year(delisting_date) <= {{ end_year }}), false)
    {%- endset -%}
    coalesce(
        listing_date > make_date({{ end_year }} - {{ var('min_listing_years') }}, 12, 31),
        false
    ) as is_listed_under_min_years,
    {%- if rule == 'delisted_or_star_st' %}
    {{ delisted }}
    or coalesce(bool_or(case when {{ in_window }} then is_star_st end) over (partition by stkcd), false)
    {%- elif rule == 'delisted_only' %}
    {{ delisted }}
    {%- elif rule == 'st_years' %}
    {{ delisted }} or is_st
    {%- else %}
    {{ delisted }}
    or coalesce(bool_or(case when {{ in_window }} then is_st end) over (partition by stkcd), false)
    {%- endif %}
        as is_delisting_flagged,
    coalesce(
        bool_or(case when {{ in_window }} then industry_section = 'J' end)
            over (partition by stkcd),
        false
    ) as is_financial,
    coalesce(
        bool_or(case when {{ in_window }} then has_missing_identifiers end)
            over (partition by stkcd),
        false
    )
    or not coalesce(
        bool_or(case when {{ in_window }} then size is not null end) over (partition by stkcd),
        false
    ) as is_missing_data_firm
{%- endmacro %}

{% macro window_firm_years(end_year) -%}
    select
        firm_years.* exclude (
            is_listed_under_min_years, is_delisting_flagged, is_financial,
            is_missing_data_firm, is_in_analysis_sample
        ),
        {{ sample_flag_columns(end_year) | indent(8) }}
    from firm_years
    where firm_years.year between {{ var('sample_start_year') }} and {{ end_year }}
{%- endmacro %}

{% macro analysis_panel(end_year) -%}
{#- the variable lists are panel_variables() (macros/panel_variables.sql): the paper winsorises
    "all control variables" at 1% (所有控制变量都进行了 1% 的缩尾处理); Sale and Saleshare are
    Table 6 outcomes, not controls, and stay as measured -#}
{%- set variables = panel_variables() -%}
{%- set outcomes = variables['outcomes'] -%}
{%- set winsorised = variables['winsorised'] -%}
with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

window_firm_years as (
    {{ window_firm_years(end_year) }}
),

sample as (
    select *
    from window_firm_years
    where not (
        {%- for step, flag, level, description in sample_filter_steps() %}
        {{ 'or ' if not loop.first }}{{ flag }}
        {%- endfor %}
    )
),

bounds as (
    select
        {%- for control in winsorised %}
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
        {%- for column in variables['unwinsorised'] %}
        sample.{{ column }},
        {%- endfor %}
        {%- for control in winsorised %}
        -- least/greatest skip NULLs in DuckDB: a missing control must stay missing
        case
            when sample.{{ control }} is not null then least(
                greatest(sample.{{ control }}, bounds.{{ control }}_bounds[1]),
                bounds.{{ control }}_bounds[2]
            )
        end as {{ control }},
        {%- endfor %}
        {%- for control in variables['controls'] if control not in winsorised %}
        sample.{{ control }}{{ ',' if not loop.last }}
        {%- endfor %}
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
        {%- for column in variables['controls'] + variables['unwinsorised'] %}
        {{ column }},
        {%- endfor %}
        case when size > 0 then ln(size) end as ln_size,
        case when meangdp > 0 then ln(meangdp) end as ln_meangdp,
        case when finsgov > 0 then ln(finsgov) end as ln_finsgov,
        case when fdi >= 0 then ln(1 + fdi) end as ln_fdi,
        case when sale > 0 then ln(sale) end as ln_sale
    from lagged
)

select * from final
{%- endmacro %}

{% macro sample_funnel(end_year) -%}
{%- set steps = sample_filter_steps() -%}
with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

window_firm_years as (
    {{ window_firm_years(end_year) }}
),

steps as (
    select
        0 as step_order,
        'all_firm_years' as step,
        'window' as filter_level,
        'All listed firm-years in {{ var("sample_start_year") }}-{{ end_year }} '
        || '(firm_info).' as description,
        count(distinct stkcd) as firms_kept,
        count(*) as firm_years_kept
    from window_firm_years
    {%- for step, flag, level, description in steps %}
    union all
    select
        {{ loop.index }} as step_order,
        '{{ step }}' as step,
        '{{ level }}' as filter_level,
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
        filter_level,
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
