{#- One row per city and year with listed firms: the mean Jaffe (1986) technology
    similarity over all pairs of distinct listed firms located in the city that year whose
    pre-existing pool (int_firm_technology_pools) is not empty, at the IPC class (3) and
    subclass (4) level.

    No pair is materialised. With u_i the firm's pool vector scaled to unit length, the
    cosine similarity of firms i and j is u_i . u_j, and over the n firms of a city
    sum_{i != j} u_i . u_j = |sum_i u_i|^2 - n, so the mean over the n (n - 1) / 2 pairs is
    (|sum_i u_i|^2 - n) / (n (n - 1)): one aggregation over firm × class rows. -#}

with firm_years as (
    select * from {{ ref('fct_firm_years') }}
),

pools as (
    select * from {{ ref('int_firm_technology_pools') }}
),

located_firm_years as (
    select
        stkcd,
        year,
        city_code
    from firm_years
    where city_code is not null
),

pool_norms as (
    select
        stkcd,
        ipc_level,
        sqrt(sum(n_patents * n_patents)) as pool_norm
    from pools
    group by stkcd, ipc_level
),

unit_vectors as (
    select
        pools.stkcd,
        pools.ipc_level,
        pools.ipc_group,
        pools.n_patents / pool_norms.pool_norm as weight
    from pools
    inner join pool_norms
        on pools.stkcd = pool_norms.stkcd
        and pools.ipc_level = pool_norms.ipc_level
),

members as (
    select
        located_firm_years.city_code,
        located_firm_years.year,
        located_firm_years.stkcd,
        pool_norms.ipc_level
    from located_firm_years
    inner join pool_norms
        on located_firm_years.stkcd = pool_norms.stkcd
),

member_counts as (
    select
        city_code,
        year,
        ipc_level,
        count(*) as n_firms
    from members
    group by city_code, year, ipc_level
),

city_vectors as (
    select
        members.city_code,
        members.year,
        members.ipc_level,
        unit_vectors.ipc_group,
        {{ ordered_sum('unit_vectors.weight') }} as summed_weight
    from members
    inner join unit_vectors
        on members.stkcd = unit_vectors.stkcd
        and members.ipc_level = unit_vectors.ipc_level
    group by members.city_code, members.year, members.ipc_level, unit_vectors.ipc_group
),

city_norms as (
    select
        city_code,
        year,
        ipc_level,
        {{ ordered_sum('summed_weight * summed_weight') }} as squared_norm
    from city_vectors
    group by city_code, year, ipc_level
),

similarities as (
    select
        member_counts.city_code,
        member_counts.year,
        member_counts.ipc_level,
        member_counts.n_firms,
        member_counts.n_firms * (member_counts.n_firms - 1) // 2 as n_pairs,
        case
            when member_counts.n_firms >= 2
                then greatest(0.0, least(1.0,
                    (city_norms.squared_norm - member_counts.n_firms)
                    / (member_counts.n_firms * (member_counts.n_firms - 1))
                ))
        end as mean_similarity
    from member_counts
    inner join city_norms
        on member_counts.city_code = city_norms.city_code
        and member_counts.year = city_norms.year
        and member_counts.ipc_level = city_norms.ipc_level
),

city_years as (
    select distinct
        city_code,
        year
    from located_firm_years
),

final as (
    select
        city_years.city_code,
        city_years.year,
        coalesce(class_level.n_firms, 0) as n_firms_ipc3,
        coalesce(class_level.n_pairs, 0) as n_pairs_ipc3,
        round(class_level.mean_similarity, 10) as similarity_ipc3,
        coalesce(subclass_level.n_firms, 0) as n_firms_ipc4,
        coalesce(subclass_level.n_pairs, 0) as n_pairs_ipc4,
        round(subclass_level.mean_similarity, 10) as similarity_ipc4
    from city_years
    left join similarities as class_level
        on city_years.city_code = class_level.city_code
        and city_years.year = class_level.year
        and class_level.ipc_level = 3
    left join similarities as subclass_level
        on city_years.city_code = subclass_level.city_code
        and city_years.year = subclass_level.year
        and subclass_level.ipc_level = 4
)

select * from final
