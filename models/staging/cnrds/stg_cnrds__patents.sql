with source as (
    select * from {{ source('cnrds', 'patents') }}
),

renamed as (
    select
        {{ clean_stock_code('Scode') }} as stkcd,
        upper(ApplyNo) as application_number,
        {{ parse_vendor_date('ApplyDate') }} as application_date,
        PatentType as patent_type_raw,
        IPC as ipc_string,
        Applicants as applicants_string,
        {{ parse_vendor_date('GrantDate') }} as grant_date,
        cast(CitedTimes as integer) as citations,
        _source_file,
        _source_row
    from source
),

final as (
    select
        *,
        stkcd || ':' || application_number as patent_id,
        case
            when patent_type_raw like '%发明%'
                or lower(patent_type_raw) like 'invention%' then 'invention'
            when patent_type_raw like '%实用新型%'
                or lower(patent_type_raw) like 'utility%' then 'utility_model'
            when patent_type_raw like '%外观%'
                or lower(patent_type_raw) like 'design%' then 'design'
        end as patent_type,
        year(application_date) as application_year
    from renamed
)

select * from final
