{#- The parseable IPC codes of the kept patents with their SEI match, as
    int_patent_ipc_codes_flagged computes them (incremental there); this mart is what
    analysts, checks and the report read. A view: the intermediate is already a table (and
    the dbt tests of this grain run here, once), so a second copy of over a million rows would
    only cost a full write (issue 17). -#}

{{ config(materialized='view') }}

with patent_codes as (
    select * from {{ ref('int_patent_ipc_codes_flagged') }}
)

select * from patent_codes
