-- Descriptive statistics of the analysis panel (Table 2 variables): N, mean, SD, min, p50, max.
-- DuckDB's UNPIVOT turns the numeric columns into (variable, value) rows, so new panel columns are
-- picked up automatically. Source: marts.rpt_analysis_panel (2010–2019, after the paper's filters;
-- controls winsorised at 1%/99%). The report (`keytech report`) shows the same table.
-- Run:  .venv/bin/keytech sql analysis/descriptive_statistics.sql --limit 100
with long as (
    unpivot (select * exclude (stkcd, city_code, province_code, industry_code) from {{ ref('rpt_analysis_panel') }})
    on columns(*)
    into name variable value value
)
select
    variable,
    count(value)                              as n,
    round(avg(value::double), 4)              as mean,
    round(stddev_samp(value::double), 4)      as sd,
    round(min(value::double), 4)              as min,
    round(median(value::double), 4)           as p50,
    round(max(value::double), 4)              as max
from long
group by variable
order by variable
