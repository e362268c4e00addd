{#- One row per firm and IPC4 subclass that ever appears among the firm's key-tech codes: the
    first application year it does. The firm's key-tech technology pool in year t is the set of
    subclasses with first_year <= t, so Width2 (Table 7 (2), 当年技术池相较于3年前技术池新增关键
    技术领域 IPC4 位码分类数) = the subclasses with t - width_pool_lag_years < first_year <= t
    (fct_firm_year_mechanisms). Key-tech codes as in fct_patents (int_patents_key_tech_flagged): the matching codes of
    key-tech inventions (only the main code under key_tech_rule = 'main'). -#}
{%- set rule = key_tech_rule() -%}

{#- A table, not a view: its dbt tests and fct_firm_year_mechanisms would otherwise each
    recompute the join of every kept patent with its codes (issue 17). -#}
{{ config(materialized='table') }}

with patents as (
    select * from {{ ref('int_patents_key_tech_flagged') }}
),

patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_attributed') }}
),

key_codes as (
    select
        patents.stkcd,
        patents.application_year,
        patent_codes.ipc_subclass
    from patents
    inner join patent_codes
        on patents.patent_id = patent_codes.patent_id
    where
        patents.is_key_tech
        and patent_codes.is_key_tech
        {%- if rule == 'main' %}
        and patent_codes.is_main_code
        {%- endif %}
),

final as (
    select
        stkcd,
        ipc_subclass,
        min(application_year) as first_year
    from key_codes
    group by stkcd, ipc_subclass
)

select * from final
