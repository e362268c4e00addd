{%- set rule = key_tech_rule() -%}

{{ incremental_patent_model_config() }}

{#- Incremental: see macros/delete_redispositioned_patents.sql and docs/performance.md. -#}

with patents as (
    select * from {{ ref('int_patents_dispositioned') }}
),

patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_attributed') }} as codes
    {%- if is_incremental() %}
    where exists (
        select 1
        from {{ ref('int_patents_dispositioned') }} as dispositioned
        where dispositioned.patent_id = codes.patent_id
            and dispositioned._batch_id = '{{ invocation_id }}'
    )
    {%- endif %}
),

landed as (
    select * from {{ ref('stg_cnrds__patents') }}
),

{#- int_patents_dispositioned is narrow: the kept rows' dates, applicants and citations come
    from staging, by row key -#}
kept as (
    select
        patents.patent_id,
        patents.stkcd,
        patents.application_number,
        landed.application_date,
        patents.application_year,
        patents.patent_type,
        landed.applicants_string,
        landed.grant_date,
        landed.citations,
        patents._source_file,
        patents._source_row
    from patents
    inner join landed
        on patents._source_file = landed._source_file
        and patents._source_row = landed._source_row
    where patents.disposition = 'kept'
    {%- if is_incremental() %}
        and patents._batch_id = '{{ invocation_id }}'
    {%- endif %}
),

{#- n_applicants per distinct applicant string (a few ten thousand strings for over a million
    patents), joined back: the list lambdas run once per string, not once per patent. -#}
applicant_counts as (
    select
        applicants_string,
        len(
            list_distinct(
                list_filter(
                    list_transform(
                        string_split_regex(applicants_string, '[;；]'),
                        lambda applicant: trim(replace(applicant, '　', ' '))
                    ),
                    lambda applicant: applicant <> ''
                )
            )
        ) as n_applicants
    from (select distinct applicants_string from kept) as strings
    where applicants_string is not null
),

{#- A patent's SEI industries are the union of its key-tech codes' industries. Each code's
    industries are the bits of one integer (sei_industry_mask, computed once per distinct code in
    int_patent_ipc_codes_attributed), so a patent's union is a bit_or and the list is spelt out
    once per patent (decoded), not built by flattening a list of lists per group (issue 17). -#}
code_summary as (
    select
        patent_id,
        count(*) as n_ipc_codes,
        max(ipc_code) filter (where is_main_code) as main_ipc_code,
        bool_or(is_key_tech) as has_key_tech_code,
        bool_or(is_key_tech and is_main_code) as has_key_tech_main_code,
        bit_or(sei_industry_mask) filter (where is_key_tech) as any_code_industry_mask,
        bit_or(sei_industry_mask) filter (where is_key_tech and is_main_code)
            as main_code_industry_mask
    from patent_codes
    group by patent_id
),

joined as (
    select
        kept.patent_id,
        kept.stkcd,
        kept.application_number,
        kept.application_date,
        kept.application_year,
        kept.patent_type,
        kept.patent_type = 'invention' as is_invention,
        coalesce(code_summary.n_ipc_codes, 0) as n_ipc_codes,
        applicant_counts.n_applicants,
        coalesce(applicant_counts.n_applicants > 1, false) as is_joint,
        kept.grant_date is not null as is_granted,
        kept.grant_date,
        year(kept.grant_date) as grant_year,
        kept.citations,
        code_summary.main_ipc_code,
        {%- if rule == 'main' %}
        coalesce(code_summary.has_key_tech_main_code, false)
            as has_key_tech_code_by_rule,
        code_summary.main_code_industry_mask as rule_industry_mask,
        {%- else %}
        coalesce(code_summary.has_key_tech_code, false) as has_key_tech_code_by_rule,
        code_summary.any_code_industry_mask as rule_industry_mask,
        {%- endif %}
        kept._source_file,
        kept._source_row
    from kept
    left join code_summary
        on kept.patent_id = code_summary.patent_id
    left join applicant_counts
        on kept.applicants_string = applicant_counts.applicants_string
),

classified as (
    select
        * exclude (rule_industry_mask),
        is_invention and has_key_tech_code_by_rule as is_key_tech,
        case
            when is_invention and has_key_tech_code_by_rule and rule_industry_mask > 0
                then cast(
                    list_filter(
                        range(0, cast(floor(log2(rule_industry_mask)) as integer) + 1),
                        lambda industry: (rule_industry_mask >> industry) & 1 = 1
                    ) as integer[]
                )
            else []::integer[]
        end as sei_industry_codes
    from joined
),

final as (
    select
        patent_id,
        stkcd,
        application_number,
        application_date,
        application_year,
        patent_type,
        is_invention,
        n_ipc_codes,
        n_applicants,
        is_joint,
        is_granted,
        grant_date,
        grant_year,
        citations,
        is_key_tech,
        main_ipc_code,
        has_key_tech_code_by_rule,
        sei_industry_codes,
        {%- for industry in range(1, 10) %}
        list_contains(sei_industry_codes, {{ industry }}) as is_sei_{{ industry }},
        {%- endfor %}
        _source_file,
        _source_row
    from classified
)

select * from final
