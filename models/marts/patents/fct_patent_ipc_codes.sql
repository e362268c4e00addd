{#- The parseable IPC codes of the kept patents with their SEI match, as
    int_patent_ipc_codes_flagged computes them (incremental there); this mart is what
    analysts, checks and the report read. -#}

with patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_flagged') }}
)

select * from patent_codes
