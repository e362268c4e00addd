-- Each winsorised control of both panels lies within the winsor_lower-winsor_upper
-- quantiles of the unwinsorised values of the same sample (from fct_firm_years), and
-- values already inside those bounds are unchanged; a control is NULL in the panel exactly
-- when it is NULL in fct_firm_years (missing controls stay missing, none are invented).
{#- the lists are panel_variables() (macros/panel_variables.sql); sale and saleshare are outcomes
    (Table 6), not controls: they must equal fct_firm_years -#}
{%- set controls = panel_variables()['winsorised'] %}
{%- set unwinsorised = panel_variables()['unwinsorised'] %}
{%- set panels = ['rpt_analysis_panel', 'rpt_analysis_panel_window2022'] %}

with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

{% for panel in panels %}
{{ panel }}_raw as (
    select
        panel.*,
        {%- for control in controls + unwinsorised %}
        firm_years.{{ control }} as raw_{{ control }}{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ ref(panel) }} as panel
    inner join firm_years
        on panel.stkcd = firm_years.stkcd
        and panel.year = firm_years.year
),

{{ panel }}_bounds as (
    select
        {%- for control in controls %}
        quantile_cont(
            raw_{{ control }}, [{{ var('winsor_lower') }}, {{ var('winsor_upper') }}]
        ) as {{ control }}_bounds{{ ',' if not loop.last }}
        {%- endfor %}
    from {{ panel }}_raw
),

{{ panel }}_failures as (
    {%- for control in controls %}
    select
        '{{ panel }}' as panel,
        '{{ control }}' as control,
        stkcd,
        year
    from {{ panel }}_raw
    cross join {{ panel }}_bounds
    where
        {{ control }} < {{ control }}_bounds[1] - 1e-9 * abs({{ control }}_bounds[1])
        or {{ control }} > {{ control }}_bounds[2] + 1e-9 * abs({{ control }}_bounds[2])
        or ({{ control }} is null) <> (raw_{{ control }} is null)
        or (
            raw_{{ control }}
            between {{ control }}_bounds[1] and {{ control }}_bounds[2]
            and {{ control }} <> raw_{{ control }}
        )
    union all
    {%- endfor %}
    {%- for column in unwinsorised %}
    select
        '{{ panel }}' as panel,
        '{{ column }}' as control,
        stkcd,
        year
    from {{ panel }}_raw
    where {{ column }} is distinct from raw_{{ column }}
    {{ 'union all' if not loop.last }}
    {%- endfor %}
){{ ',' if not loop.last }}
{% endfor %}

{%- for panel in panels %}
select * from {{ panel }}_failures
{{ 'union all' if not loop.last }}
{%- endfor %}
