-- Patent trends by strategic-emerging-industry (SEI) field.
-- Invention applications of the listed firms per application year: key-technology vs non-key, the
-- key-tech share, and key-tech applications in each of the nine SEI fields (a patent whose IPC codes
-- fall in several fields counts in each). Source: marts.fct_patents (de-duplicated applications).
-- Run:  .venv/bin/keytech sql analysis/patent_trends_by_sei_field.sql --limit 100
select
    application_year,
    count(*) filter (where is_key_tech)                                   as key_tech,
    count(*) filter (where not is_key_tech)                               as non_key,
    round(avg(case when is_key_tech then 1.0 else 0.0 end), 4)            as key_tech_share,
    count(*) filter (where is_sei_1) as sei_1_next_generation_it,
    count(*) filter (where is_sei_2) as sei_2_high_end_equipment,
    count(*) filter (where is_sei_3) as sei_3_new_materials,
    count(*) filter (where is_sei_4) as sei_4_biology,
    count(*) filter (where is_sei_5) as sei_5_new_energy_vehicles,
    count(*) filter (where is_sei_6) as sei_6_new_energy,
    count(*) filter (where is_sei_7) as sei_7_energy_saving_environment,
    count(*) filter (where is_sei_8) as sei_8_digital_creative,
    count(*) filter (where is_sei_9) as sei_9_related_services
from {{ ref('fct_patents') }}
where is_invention
  and application_year is not null
group by application_year
order by application_year
