-- rpt_analysis_panel holds exactly the firm-years fct_firm_years flags
-- is_in_analysis_sample.
with panel as (
    select stkcd, year from {{ ref('rpt_analysis_panel') }}
),

flagged as (
    select stkcd, year
    from {{ ref('fct_firm_years') }}
    where is_in_analysis_sample
),

only_in_panel as (
    select *, 'in panel, not flagged' as failure from panel
    except
    select *, 'in panel, not flagged' as failure from flagged
),

only_flagged as (
    select *, 'flagged, not in panel' as failure from flagged
    except
    select *, 'flagged, not in panel' as failure from panel
)

select * from only_in_panel
union all
select * from only_flagged
