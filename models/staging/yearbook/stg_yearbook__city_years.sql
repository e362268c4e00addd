{{ config(meta={'vendor_labels': vendor_labels('city_yearbook')}) }}

with source as (
    select * from {{ source('yearbook', 'city_yearbook') }}
),

final as (
    select
        CityName as city_name_raw,
        cast(Year as integer) as year,
        cast(GdpPerCapita as double) as gdp_per_capita,
        cast(Population as double) as population_10k,
        cast(InternetUsers as double) as internet_users_10k,
        cast(BudgetExpenditure as double) as budget_expenditure_10k_yuan,
        cast(FdiUsed as double) as fdi_used_10k_usd,
        cast(IndustrialEmployment as double) as industrial_employment_10k,
        cast(TotalEmployment as double) as total_employment_10k,
        _source_file,
        _source_row
    from source
)

select * from final
