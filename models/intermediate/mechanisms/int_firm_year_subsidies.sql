{#- One row per firm and fiscal year with subsidy items: total, R&D and patent subsidies
    (yuan). An item is R&D (patent) when its name contains any keyword of that category in
    seeds/subsidy_keywords.csv; an item may be both. -#}

with items as (
    select * from {{ ref('stg_subsidies__subsidy_items') }}
),

keywords as (
    select * from {{ ref('subsidy_keywords') }}
),

classified as (
    select
        items.stkcd,
        items.year,
        items.item_name,
        items.amount,
        coalesce(
            bool_or(keywords.subsidy_category = 'rd' and contains(items.item_name, keywords.keyword)),
            false
        ) as is_rd_subsidy,
        coalesce(
            bool_or(
                keywords.subsidy_category = 'patent' and contains(items.item_name, keywords.keyword)
            ),
            false
        ) as is_patent_subsidy
    from items
    cross join keywords
    group by items.stkcd, items.year, items.item_name, items.amount
),

final as (
    select
        stkcd,
        year,
        count(*) as n_subsidy_items,
        count(*) filter (where is_rd_subsidy) as n_rd_subsidy_items,
        count(*) filter (where is_patent_subsidy) as n_patent_subsidy_items,
        coalesce({{ ordered_sum('amount') }}, 0) as subsidy_total,
        coalesce({{ ordered_sum('amount') }} filter (where is_rd_subsidy), 0) as rd_subsidy,
        coalesce({{ ordered_sum('amount') }} filter (where is_patent_subsidy), 0)
            as patent_subsidy
    from classified
    group by stkcd, year
)

select * from final
