{{ config(materialized='table') }}

{#- One row per distinct normalised IPC code found in the patents, with its SEI match,
    exactly as python/keytech/ipc.py Concordance.match:
      exact       the code is listed;
      main_group  (hierarchical) a subgroup not listed inherits from its listed main
                  group X/00;
      subclass    (hierarchical) a code inherits from a listed bare subclass only when
                  the table lists no group at all under that subclass (otherwise the
                  missing group is an exclusion);
      class       (hierarchical) a code inherits from a listed class (C08, G16) only
                  when its own subclass has no rows at all;
      supplement  the code starts with a prefix of the revision supplement (longest
                  prefix wins), only when nothing above matched and var
                  use_ipc_supplement is true;
      none        otherwise.
    Set-based: one join per level against the concordance, no per-row lookups. -#}

{%- set hierarchical = ipc_matching_mode() == 'hierarchical' -%}
{%- set use_supplement = var_is_true('use_ipc_supplement') %}

with tokens as (
    select * from {{ ref('int_patent_ipc_tokens_parsed') }}
),

concordance as (
    select * from {{ ref('int_sei_ipc_concordance_edition') }}
),

supplement as (
    select * from {{ ref('ipc_revision_supplement') }}
),

catalogue as (
    select * from {{ ref('sei_catalogue') }}
),

subindustries as (
    select * from {{ ref('sei_subindustries') }}
),

distinct_codes as (
    select distinct ipc_code
    from tokens
    where ipc_code is not null
),

{#- what a code implies, computed once per distinct code (the tokens table does not repeat
    it per token: issue 17) -#}
codes as (
    select
        ipc_code,
        left(ipc_code, 4) as ipc_subclass,
        left(ipc_code, 3) as ipc_class,
        case
            when contains(ipc_code, '/') then split_part(ipc_code, '/', 1) || '/00'
        end as main_group,
        {{ ipc_main_group_of('ipc_code') }} as parent_main_group
    from distinct_codes
),

rules_by_code as (
    select
        ipc_code,
        list_sort(list_distinct(list(sei_rule_id))) as sei_rule_ids
    from concordance
    group by ipc_code
),

subclasses_with_groups as (
    select distinct left(ipc_code, 4) as ipc_subclass
    from concordance
    where contains(ipc_code, '/')
),

subclasses_with_rows as (
    select distinct left(ipc_code, 4) as ipc_subclass
    from concordance
    where length(ipc_code) >= 4
),

supplement_rules as (
    select
        ipc_prefix,
        list_sort(list_distinct(list(sei_rule_id))) as sei_rule_ids
    from supplement
    group by ipc_prefix
),

supplement_candidates as (
    select
        codes.ipc_code,
        supplement_rules.sei_rule_ids,
        row_number() over (
            partition by codes.ipc_code
            order by
                length(supplement_rules.ipc_prefix) desc,
                supplement_rules.ipc_prefix
        ) as prefix_rank
    from codes
    inner join supplement_rules
        on starts_with(codes.ipc_code, supplement_rules.ipc_prefix)
),

supplement_matches as (
    select
        ipc_code,
        sei_rule_ids
    from supplement_candidates
    where prefix_rank = 1
),

levels as (
    select
        codes.ipc_code,
        codes.ipc_subclass,
        codes.ipc_class,
        codes.main_group,
        exact_rules.sei_rule_ids as exact_rule_ids,
        main_group_rules.sei_rule_ids as main_group_rule_ids,
        case
            when codes.ipc_code <> codes.ipc_subclass
                and subclasses_with_groups.ipc_subclass is null
                then subclass_rules.sei_rule_ids
        end as subclass_rule_ids,
        case
            when subclasses_with_rows.ipc_subclass is null
                then class_rules.sei_rule_ids
        end as class_rule_ids,
        supplement_matches.sei_rule_ids as supplement_rule_ids
    from codes
    left join rules_by_code as exact_rules
        on codes.ipc_code = exact_rules.ipc_code
    left join rules_by_code as main_group_rules
        on codes.parent_main_group = main_group_rules.ipc_code
    left join rules_by_code as subclass_rules
        on codes.ipc_subclass = subclass_rules.ipc_code
    left join subclasses_with_groups
        on codes.ipc_subclass = subclasses_with_groups.ipc_subclass
    left join rules_by_code as class_rules
        on codes.ipc_class = class_rules.ipc_code
    left join subclasses_with_rows
        on codes.ipc_subclass = subclasses_with_rows.ipc_subclass
    left join supplement_matches
        on codes.ipc_code = supplement_matches.ipc_code
),

matched as (
    select
        ipc_code,
        ipc_subclass,
        ipc_class,
        main_group,
        case
            when exact_rule_ids is not null then 'exact'
            {%- if hierarchical %}
            when main_group_rule_ids is not null then 'main_group'
            when subclass_rule_ids is not null then 'subclass'
            when class_rule_ids is not null then 'class'
            {%- endif %}
            {%- if use_supplement %}
            when supplement_rule_ids is not null then 'supplement'
            {%- endif %}
            else 'none'
        end as match_level,
        case
            when exact_rule_ids is not null then exact_rule_ids
            {%- if hierarchical %}
            when main_group_rule_ids is not null then main_group_rule_ids
            when subclass_rule_ids is not null then subclass_rule_ids
            when class_rule_ids is not null then class_rule_ids
            {%- endif %}
            {%- if use_supplement %}
            when supplement_rule_ids is not null then supplement_rule_ids
            {%- endif %}
            else []::integer[]
        end as sei_rule_ids
    from levels
),

rule_fields as (
    select
        matched.ipc_code,
        list_sort(list_distinct(list(catalogue.sei_code))) as sei_codes,
        list_sort(list_distinct(list(subindustries.sei_industry_code)))
            as sei_industry_codes
    from matched
    cross join unnest(matched.sei_rule_ids) as rule_ids (sei_rule_id)
    inner join catalogue
        on rule_ids.sei_rule_id = catalogue.sei_rule_id
    inner join subindustries
        on catalogue.sei_code = subindustries.sei_code
    group by matched.ipc_code
),

final as (
    select
        matched.ipc_code,
        matched.ipc_subclass,
        matched.ipc_class,
        matched.main_group,
        matched.match_level,
        matched.match_level <> 'none' as is_key_tech,
        matched.sei_rule_ids,
        coalesce(rule_fields.sei_codes, []::varchar[]) as sei_codes,
        coalesce(rule_fields.sei_industry_codes, []::integer[]) as sei_industry_codes
    from matched
    left join rule_fields
        on matched.ipc_code = rule_fields.ipc_code
)

select * from final
