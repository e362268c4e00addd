with patent_codes as (
    select * from {{ ref('fct_patent_ipc_codes') }}
),

patents as (
    select * from {{ ref('fct_patents') }}
),

concordance as (
    select * from {{ ref('int_sei_ipc_concordance_edition') }}
),

supplement as (
    select * from {{ ref('ipc_revision_supplement') }}
),

concordance_subclasses as (
    select
        left(ipc_code, 4) as ipc_subclass,
        bool_or(length(ipc_code) = 4) as has_bare_subclass_rule,
        bool_or(contains(ipc_code, '/')) as has_group_rules
    from concordance
    where length(ipc_code) >= 4
    group by left(ipc_code, 4)
),

concordance_classes as (
    select distinct ipc_code as ipc_class
    from concordance
    where length(ipc_code) = 3
),

supplement_subclasses as (
    select distinct ipc_prefix as ipc_subclass
    from supplement
),

code_rows as (
    select
        patent_codes.*,
        patents.is_invention
    from patent_codes
    inner join patents
        on patent_codes.patent_id = patents.patent_id
),

by_subclass_level as (
    select
        ipc_subclass,
        match_level,
        count(*) as n_code_rows,
        count(*) filter (where is_invention) as n_invention_code_rows,
        count(distinct ipc_code) as n_distinct_codes,
        count(distinct patent_id) as n_patents
    from code_rows
    group by ipc_subclass, match_level
),

final as (
    select
        by_subclass_level.ipc_subclass,
        left(by_subclass_level.ipc_subclass, 3) as ipc_class,
        by_subclass_level.match_level,
        by_subclass_level.match_level <> 'none' as is_key_tech,
        by_subclass_level.n_code_rows,
        by_subclass_level.n_invention_code_rows,
        by_subclass_level.n_distinct_codes,
        by_subclass_level.n_patents,
        sum(by_subclass_level.n_code_rows) over (
            partition by by_subclass_level.ipc_subclass
        )::bigint as subclass_code_rows,
        coalesce(
            sum(by_subclass_level.n_code_rows) filter (
                where by_subclass_level.match_level <> 'none'
            ) over (partition by by_subclass_level.ipc_subclass),
            0
        )
        / sum(by_subclass_level.n_code_rows) over (
            partition by by_subclass_level.ipc_subclass
        ) as subclass_share_key_tech,
        case
            when concordance_subclasses.has_bare_subclass_rule
                and not concordance_subclasses.has_group_rules
                then 'bare_subclass_rule'
            when concordance_subclasses.has_bare_subclass_rule
                then 'subclass_and_groups'
            when concordance_subclasses.has_group_rules then 'groups_only'
            when concordance_classes.ipc_class is not null then 'class_rule'
            when supplement_subclasses.ipc_subclass is not null then 'supplement_only'
            else 'not_listed'
        end as concordance_coverage
    from by_subclass_level
    left join concordance_subclasses
        on by_subclass_level.ipc_subclass = concordance_subclasses.ipc_subclass
    left join concordance_classes
        on left(by_subclass_level.ipc_subclass, 3) = concordance_classes.ipc_class
    left join supplement_subclasses
        on by_subclass_level.ipc_subclass = supplement_subclasses.ipc_subclass
)

select * from final
