-- Compare two estimation runs from results.estimates: by default the latest run against the one
-- before it (change `recency` to pick others, or filter results.runs by run_id). One row per
-- (spec_id, term) with both estimates, SEs, N, the difference, and whether the runs used the same
-- marts (data fingerprint) and code version. Intercepts and control coefficients are left out;
-- drop the `term` filter to see them.
-- Run:  .venv/bin/keytech sql analysis/compare_estimation_runs.sql --limit 200
with ranked as (
    select run_id, started_at, data_fingerprint, code_version,
           row_number() over (order by started_at desc) as recency
    from results.runs
),
latest as (
    select e.*, r.data_fingerprint, r.code_version
    from results.estimates as e join ranked as r using (run_id)
    where r.recency = 1
),
previous as (
    select e.*, r.data_fingerprint, r.code_version
    from results.estimates as e join ranked as r using (run_id)
    where r.recency = 2
)
select
    coalesce(l.spec_id, p.spec_id)                          as spec_id,
    coalesce(l.term, p.term)                                as term,
    p.estimate                                              as estimate_previous,
    l.estimate                                              as estimate_latest,
    l.estimate - p.estimate                                 as difference,
    p.std_error                                             as se_previous,
    l.std_error                                             as se_latest,
    p.nobs                                                  as nobs_previous,
    l.nobs                                                  as nobs_latest,
    p.data_fingerprint = l.data_fingerprint                 as same_data,
    p.code_version = l.code_version                         as same_code,
    p.run_id                                                as run_previous,
    l.run_id                                                as run_latest
from latest as l
full outer join previous as p
    on l.spec_id = p.spec_id and l.term = p.term
where coalesce(l.term, p.term) in ('policy', 'att', 'iv1', 'iv2')
   or coalesce(l.term, p.term) like 'rel_time=%'
   or coalesce(l.term, p.term) like '%:%'
order by abs(l.estimate - p.estimate) desc nulls last, spec_id, term
