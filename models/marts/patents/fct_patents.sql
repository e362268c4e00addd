{#- The kept patents with their key-technology classification, as
    int_patents_key_tech_flagged computes them (incremental there); this mart is what
    analysts, checks and the report read. A view: the intermediate is already a table (and
    the dbt tests of this grain run here, once), so a second copy of over a million rows would
    only cost a full write (issue 17). -#}

{{ config(materialized='view') }}

with patents as (
    select * from {{ ref('int_patents_key_tech_flagged') }}
)

select * from patents
