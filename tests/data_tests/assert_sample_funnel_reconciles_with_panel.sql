-- The funnel starts from every firm-year of the window in fct_firm_years, each step's
-- dropped + kept equals the previous step's kept, and the last step equals the panel.
with funnel as (
    select * from {{ ref('rpt_sample_funnel') }}
),

panel as (
    select
        count(*) as panel_firm_years,
        count(distinct stkcd) as panel_firms
    from {{ ref('rpt_analysis_panel') }}
),

window_firm_years as (
    select count(*) as window_firm_years
    from {{ ref('fct_firm_years') }}
    where is_in_sample_window
),

steps as (
    select
        *,
        lag(firm_years_kept) over (order by step_order) as previous_firm_years_kept,
        lag(firms_kept) over (order by step_order) as previous_firms_kept
    from funnel
),

step_failures as (
    select 'step ' || step || ' does not add up' as failure
    from steps
    where
        previous_firm_years_kept is not null
        and (
            firm_years_dropped + firm_years_kept <> previous_firm_years_kept
            or firms_dropped + firms_kept <> previous_firms_kept
            or firm_years_dropped < 0
        )
),

start_failures as (
    select 'first step is not the window population' as failure
    from funnel
    cross join window_firm_years
    where
        funnel.step_order = 0
        and funnel.firm_years_kept <> window_firm_years.window_firm_years
),

end_failures as (
    select 'last step does not equal rpt_analysis_panel' as failure
    from funnel
    cross join panel
    where
        funnel.step_order = (select max(step_order) from funnel)
        and (
            funnel.firm_years_kept <> panel.panel_firm_years
            or funnel.firms_kept <> panel.panel_firms
        )
)

select * from step_failures
union all
select * from start_failures
union all
select * from end_failures
