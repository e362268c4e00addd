{#- One row per firm and fiscal year with annual-report keyword counts: mentions of the
    visit keyword (var visit_keyword, 参访) and the standardisation keyword (var
    standard_keyword, 标准化), and the summed mentions of the pilot categories of the MIIT
    application form (var pilot_mention_keywords). A keyword without a row that year is null
    (not counted); pilot_mention_count is null when none of its keywords has a row. -#}

with keyword_counts as (
    select * from {{ ref('stg_annual_reports__keyword_counts') }}
),

final as (
    select
        stkcd,
        year,
        max(keyword_count) filter (where keyword = '{{ var("visit_keyword") }}') as visit_count,
        max(keyword_count) filter (where keyword = '{{ var("standard_keyword") }}')
            as standard_count,
        sum(keyword_count) filter (
            where keyword in (
                {%- for keyword in var('pilot_mention_keywords') %}
                '{{ keyword }}'{{ ',' if not loop.last }}
                {%- endfor %}
            )
        ) as pilot_mention_count
    from keyword_counts
    group by stkcd, year
)

select * from final
