{#- Every row-level rejection or repair that removes information, with where it came
    from. Nothing is dropped silently: each rule below names the landed table, file,
    row, column and value, and says what happened to the row. -#}

with firm_years as (
    select * from {{ ref('int_firm_years_city_matched') }}
),

city_years as (
    select * from {{ ref('int_city_years_matched') }}
),

pilot_projects as (
    select * from {{ ref('int_pilot_projects_city_matched') }}
),

statement_duplicates as (
    select * from {{ ref('int_financial_statement_duplicates') }}
),

patents as (
    select * from {{ ref('int_patents_dispositioned') }}
),

landed_patents as (
    select * from {{ ref('stg_cnrds__patents') }}
),

ipc_tokens as (
    select * from {{ ref('int_patent_ipc_tokens_parsed') }}
),

firm_unknown_cities as (
    select
        'firm_info' as source_table,
        _source_file,
        _source_row,
        'Ctnm' as column_name,
        city_name_raw as value,
        'unknown_city' as rejection_code,
        'city name not found (or ambiguous) in that year among prefecture-level '
        || 'cities, their short forms, and the prefecture and county names in use '
        || '(seeds/city_name_history.csv); '
        || 'the firm-year gets no city (no city controls, no policy), so the firm is '
        || 'dropped from the sample as a missing-data firm (is_missing_data_firm)' as reason
    from firm_years
    where city_code is null
),

firm_unknown_industries as (
    select
        'firm_info' as source_table,
        _source_file,
        _source_row,
        'Nnindcd' as column_name,
        industry_code_raw as value,
        'unknown_industry_code' as rejection_code,
        'not a CSRC 2012 division code; the firm-year gets no industry, so the firm is '
        || 'dropped from the sample as a missing-data firm (is_missing_data_firm)' as reason
    from firm_years
    where industry_code is null
),

firm_duplicate_years as (
    select
        'firm_info' as source_table,
        _source_file,
        _source_row,
        'Accper' as column_name,
        cast(fiscal_year_end_date as varchar) as value,
        'duplicate_firm_year' as rejection_code,
        'second row of the firm in fiscal year ' || year
        || '; the row with the latest fiscal year end is used' as reason
    from firm_years
    where not is_kept
),

yearbook_unknown_cities as (
    select
        'city_yearbook' as source_table,
        _source_file,
        _source_row,
        'CityName' as column_name,
        city_name_raw as value,
        'unknown_city' as rejection_code,
        'city name not found (or ambiguous) in that year among prefecture-level '
        || 'cities, their short forms, and the prefecture and county names in use '
        || '(seeds/city_name_history.csv); '
        || 'row not used' as reason
    from city_years
    where city_code is null
),

yearbook_duplicate_city_years as (
    select
        'city_yearbook' as source_table,
        _source_file,
        _source_row,
        'CityName' as column_name,
        city_name_raw as value,
        'duplicate_city_year' as rejection_code,
        'another row resolves to the same city (' || city_code || ') and year ' || year
        || '; the row printing the current name is used' as reason
    from city_years
    where city_code is not null and not is_kept
),

pilot_unknown_cities as (
    select
        'pilot_list' as source_table,
        _source_file,
        _source_row,
        'City' as column_name,
        city_name_raw as value,
        'unknown_city' as rejection_code,
        'city name not found; this pilot project treats no city' as reason
    from pilot_projects
    where city_code is null
),

statement_duplicate_rows as (
    select
        source_table,
        _source_file,
        _source_row,
        'Accper' as column_name,
        cast(report_date as varchar) as value,
        'duplicate_statement' as rejection_code,
        'second consolidated annual row for firm ' || stkcd || ' in ' || year
        || '; the first row is used' as reason
    from statement_duplicates
),

{#- int_patents_dispositioned is narrow: the raw patent type and IPC string of a rejected row
    come from staging, by row key -#}
patent_rejections as (
    select
        'patents' as source_table,
        patents._source_file,
        patents._source_row,
        case patents.disposition
            when 'unmatched_firm' then 'Scode'
            when 'unknown_patent_type' then 'PatentType'
            when 'merged_duplicate' then 'ApplyNo'
            else 'IPC'
        end as column_name,
        case patents.disposition
            when 'unmatched_firm' then patents.stkcd
            when 'unknown_patent_type' then landed_patents.patent_type_raw
            when 'merged_duplicate' then patents.application_number
            else landed_patents.ipc_string
        end as value,
        case
            when patents.disposition = 'merged_duplicate' then 'conflicting_duplicate'
            when patents.disposition = 'unparseable_ipc' and patents.n_ipc_tokens = 0
                then 'missing_ipc'
            when patents.disposition = 'unparseable_ipc' then 'no_parseable_ipc'
            else patents.disposition
        end as rejection_code,
        patents.reason
    from patents
    inner join landed_patents
        on patents._source_file = landed_patents._source_file
        and patents._source_row = landed_patents._source_row
    where
        patents.disposition in ('unmatched_firm', 'unknown_patent_type', 'unparseable_ipc')
        or (patents.disposition = 'merged_duplicate' and not patents.is_exact_duplicate)
),

unparseable_tokens as (
    select
        'patents' as source_table,
        patents._source_file,
        patents._source_row,
        'IPC' as column_name,
        ipc_tokens.ipc_raw as value,
        'unparseable_ipc_token' as rejection_code,
        'IPC token at position ' || ipc_tokens.ipc_position
        || ' does not parse as an IPC code; ignored (patent '
        || patents.disposition || ')' as reason
    from ipc_tokens
    inner join patents
        on ipc_tokens._source_file = patents._source_file
        and ipc_tokens._source_row = patents._source_row
    where
        ipc_tokens.ipc_code is null
        and patents.disposition in ('kept', 'unparseable_ipc')
),

unioned as (
    select * from firm_unknown_cities
    union all
    select * from firm_unknown_industries
    union all
    select * from firm_duplicate_years
    union all
    select * from yearbook_unknown_cities
    union all
    select * from yearbook_duplicate_city_years
    union all
    select * from pilot_unknown_cities
    union all
    select * from statement_duplicate_rows
    union all
    select * from patent_rejections
    union all
    select * from unparseable_tokens
),

final as (
    select * from unioned
)

select * from final
