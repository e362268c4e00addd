{{ config(meta={'vendor_labels': vendor_labels('patents')}) }}

{#- Application numbers: one key per CNIPA application whatever the extract's form
    (macro normalise_application_number; python/keytech/ipc.py), so the same
    application from two extracts is merged, not counted twice. The classification
    field of a design patent holds its Locarno class (e.g. 14-03), not IPC: it is moved
    to locarno_class and never tokenised as IPC. -#}

with source as (
    select * from {{ source('cnrds', 'patents') }}
),

renamed as (
    select
        {{ clean_stock_code('Scode') }} as stkcd,
        {{ normalise_application_number('ApplyNo') }} as application_number,
        ApplyNo as application_number_raw,
        {{ parse_vendor_date('ApplyDate') }} as application_date,
        PatentType as patent_type_raw,
        IPC as classification_string,
        Applicants as applicants_string,
        {{ parse_vendor_date('GrantDate') }} as grant_date,
        cast(CitedTimes as integer) as citations,
        _source_file,
        _source_row
    from source
),

typed as (
    select
        *,
        case
            when patent_type_raw like '%发明%'
                or lower(patent_type_raw) like 'invention%' then 'invention'
            when patent_type_raw like '%实用新型%'
                or lower(patent_type_raw) like 'utility%' then 'utility_model'
            when patent_type_raw like '%外观%'
                or lower(patent_type_raw) like 'design%' then 'design'
        end as patent_type
    from renamed
),

final as (
    select
        stkcd,
        application_number,
        application_number_raw,
        application_date,
        patent_type_raw,
        case
            when patent_type is distinct from 'design' then classification_string
        end as ipc_string,
        case when patent_type = 'design' then classification_string end as locarno_class,
        applicants_string,
        grant_date,
        citations,
        _source_file,
        _source_row,
        stkcd || ':' || application_number as patent_id,
        patent_type,
        year(application_date) as application_year
    from typed
)

select * from final
