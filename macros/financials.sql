{#- The consolidated (report type A) annual (report date December 31) rows of a staged
    CSMAR statement, with year = year of the report date and statement_rank = 1 for the
    first row of each firm-year by (_source_file, _source_row). -#}
{% macro consolidated_annual_rows(relation) -%}
    select
        *,
        year(report_date) as year,
        row_number() over (
            partition by stkcd, year(report_date)
            order by _source_file, _source_row
        ) as statement_rank
    from {{ relation }}
    where
        report_type = 'A'
        and month(report_date) = 12
        and day(report_date) = 31
{%- endmacro %}
