{#- The kept patents with their key-technology classification, as
    int_patents_key_tech_flagged computes them (incremental there); this mart is what
    analysts, checks and the report read. -#}

with patents as (
    select * from {{ ref('int_patents_key_tech_flagged') }}
)

select * from patents
