-- Every landed firm_info row is either the firm-year used (fct_firm_years, inside the
-- panel window), a quarantined duplicate of a firm-year, or a year outside the panel
-- window.
with landed as (
    select count(*) as landed_rows from {{ source('csmar', 'firm_info') }}
),

firm_years as (
    select * from {{ ref('int_firm_years_city_matched') }}
),

facts as (
    select count(*) as fact_rows from {{ ref('fct_firm_years') }}
),

outside_or_duplicate as (
    select
        count(*) filter (where not is_kept) as duplicate_rows,
        count(*) filter (
            where is_kept
            and year not between {{ var('panel_start_year') }}
            and {{ var('panel_end_year') }}
        ) as outside_rows
    from firm_years
)

select *
from landed
cross join facts
cross join outside_or_duplicate
where
    landed.landed_rows
    <> facts.fact_rows
    + outside_or_duplicate.duplicate_rows
    + outside_or_duplicate.outside_rows
