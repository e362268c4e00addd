{{ config(materialized='table') }}

with patents as (
    select * from {{ ref('stg_cnrds__patents') }}
),

hashed as (
    select
        *,
        stkcd || ':' || application_number as patent_id,
        hash(
            stkcd,
            application_number,
            application_date,
            patent_type_raw,
            ipc_string,
            applicants_string,
            grant_date,
            citations
        ) as content_hash
    from patents
),

ranked as (
    select
        *,
        row_number() over (
            partition by patent_id order by _source_file, _source_row
        ) as occurrence_rank,
        first_value(content_hash) over (
            partition by patent_id order by _source_file, _source_row
        ) as first_content_hash,
        first_value(_source_row) over (
            partition by patent_id order by _source_file, _source_row
        ) as first_source_row
    from hashed
),

final as (
    select
        * exclude (content_hash, first_content_hash),
        occurrence_rank > 1 and content_hash = first_content_hash as is_exact_duplicate
    from ranked
)

select * from final
