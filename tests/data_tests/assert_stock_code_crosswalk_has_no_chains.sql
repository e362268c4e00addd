-- The stock-code crosswalk is applied with one lookup (macro clean_stock_code), so a new code
-- must never itself be an old code: a chain A -> B -> C would leave B-rows and A-rows apart
-- (write A -> C and B -> C), and a cycle would have no final code. Fails with the offending rows.

with crosswalk as (
    select * from {{ ref('stock_code_crosswalk') }}
)

select
    link.old_code,
    link.new_code,
    onward.new_code as then_replaced_by,
    'new_code is itself an old_code: point ' || link.old_code || ' straight to the latest code'
        as failure
from crosswalk as link
inner join crosswalk as onward
    on link.new_code = onward.old_code
