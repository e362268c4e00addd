"""Mechanisms, heterogeneity and extensions (Tables 5, 6, 7, the heterogeneity splits and the
SEI-field outcomes): the median-split estimator (the tables are :mod:`keytech.tables.mechanisms`).

Specs (``specs.yml``, section "Mechanisms") read ``marts.rpt_analysis_panel`` with
``marts.fct_firm_year_mechanisms`` left-joined by (stkcd, year) (``extra_marts``).

**Median split** (estimator ``ols_split``; options ``split_by``, ``group``; both may be lists,
e.g. ``split_by: [visit_count, similarity_ipc4], group: [high, high]`` for one cell of a joint
split, each variable split at its own median over the same rows): the split variable's
median is taken over the spec's complete-case rows (outcome, regressors, fixed effects, cluster
variable and the split variable all present). ``high`` = above the median, ``low`` = at or below
it. When ties at the median make that split more unbalanced than "at or above" vs "below" (e.g. a
city-industry HHI that equals 1 for most firm-years), the tied rows go to ``high`` instead; the
rule used and the group sizes are recorded in the diagnostics. Each group is then estimated with
the column-5 specification (fixed effects, controls, city clustering) by
:func:`keytech.estimation.linear.fit_ols`.

**Between-group p-value** (option ``permutation: {draws, seed, permute_by}`` on the ``high``
spec): :func:`keytech.estimation.inference.permutation.permutation_test` of ``b_high − b_low``, reshuffling
group membership; stored in the diagnostics (``permutation``, with the draws used as ``n_draws``)
of the ``high`` spec. ``RunContext.permutation_draws`` (``keytech estimate --permutation-draws``)
replaces ``draws`` in every spec; ``RunContext.jobs`` (``--jobs``) shares the draws among forked worker
processes (same results). Sibling specs — the registry's ``ols_split`` specs that differ
only in the outcome, e.g. ``het_fc_high_key`` and ``het_fc_high_nonkey`` — whose complete-case rows
are the same have the same labels and reshuffles, so their tests are computed in one pass over
the draws (one more column in each re-estimation) by the first of them in a run and kept in
``RunContext.shared`` for the others (``computed_jointly_with`` in the diagnostics, and
``computed_in_pass_of`` the spec whose pass it was, on the reusing specs): the same
p-values as a test per spec, the differences equal up to rounding (issue 17).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core.results import SpecResult
from keytech.estimation.orchestration.registry import Spec


DEFAULT_DRAWS = 200


def median_split(x: pd.Series) -> tuple[pd.Series, dict[str, Any]]:
    """(labels, info): labels 1.0 (high) / 0.0 (low) / NaN (missing). See the module docstring."""
    v = pd.to_numeric(x, errors="coerce")
    med = float(v.median())
    above = v > med
    at_or_above = v >= med
    n = int(v.notna().sum())
    imbalance = abs(int(above.sum()) - n / 2)
    imbalance_ties_high = abs(int(at_or_above.sum()) - n / 2)
    rule = "above median = high"
    high = above
    if imbalance_ties_high < imbalance:
        rule = "at or above median = high (ties at the median)"
        high = at_or_above
    labels = high.astype(float).where(v.notna())
    return labels, {"median": med, "rule": rule, "n_high": int((labels == 1).sum()), "n_low": int((labels == 0).sum())}


def fit_split(spec: Spec, df: pd.DataFrame, ctx) -> SpecResult:
    from keytech.estimation.linear import fit_ols
    from keytech.estimation.core.panel import prepare_spec_data

    o = spec.options
    # one split variable, or several (options split_by: [a, b], group: [high, low]): the cell of
    # the joint split, each variable split at its own median over the same complete-case rows
    bys = list(o["split_by"]) if isinstance(o["split_by"], (list, tuple)) else [o["split_by"]]
    groups = list(o["group"]) if isinstance(o["group"], (list, tuple)) else [o["group"]]
    if len(bys) != len(groups):
        raise ValueError(f"{spec.id}: options.split_by and options.group need the same length")
    for by, group in zip(bys, groups):
        if group not in ("low", "high"):
            raise ValueError(f"{spec.id}: options.group must be 'low' or 'high'")
        if by not in df.columns:
            raise KeyError(f"{spec.id}: split variable {by!r} is not in the panel (extra_marts: {list(spec.extra_marts)})")
    data = prepare_spec_data(spec, df)
    cluster = list(spec.vcov.cluster) if spec.vcov.kind == "cluster" else []
    needed = list(dict.fromkeys([spec.outcome, *spec.regressors, *spec.fixed_effects, *cluster, *bys]))
    elig = data.dropna(subset=needed)
    if elig.empty:
        raise ValueError(f"{spec.id}: no complete rows with {', '.join(bys)} (is the optional input table supplied?)")
    keep = np.ones(len(elig), dtype=bool)
    infos = []
    for by, group in zip(bys, groups):
        labels, info = median_split(elig[by])
        is_high = (labels == 1).to_numpy()
        keep &= is_high if group == "high" else ~is_high
        infos.append({"by": by, "group": group, **info})
    sub = elig.loc[keep]
    plain = dataclasses.replace(spec, sample_query="", split=None)
    res = fit_ols(plain, sub, ctx)
    res.sample = res.sample + "".join(
        f"; {i['by']} {i['group']} half ({i['rule']}, median {i['median']:.6g})" for i in infos)
    if len(bys) == 1:
        by, group, info = bys[0], groups[0], infos[0]
        res.diagnostics["split"] = infos[0]
    else:
        res.diagnostics["split"] = {"cells": infos, "n_cell": int(keep.sum()), "n_eligible": int(len(elig))}
        return res  # the between-group permutation test is defined for a single split
    perm = o.get("permutation")
    if perm and group == "high":
        draws = int(perm.get("draws", DEFAULT_DRAWS)) if isinstance(perm, dict) else DEFAULT_DRAWS
        if ctx.permutation_draws is not None:
            draws = int(ctx.permutation_draws)
        seed = int(perm.get("seed", ctx.seed)) if isinstance(perm, dict) else ctx.seed
        permute_by = perm.get("permute_by") if isinstance(perm, dict) else None
        test = _joint_permutation_test(spec, df, data, elig, is_high, needed, draws, seed, permute_by, ctx)
        test["statistic"] = f"b_high − b_low of {spec.treatment} (point estimates, FE absorbed, singletons dropped)"
        res.diagnostics["permutation"] = test
    return res


def _sibling_outcomes(spec: Spec, registry=None) -> list[str]:
    """Outcomes of the registry's other ``ols_split`` specs that differ from ``spec`` only in the
    outcome (and id, label, description, paper values): the same split, sample, regressors, fixed
    effects and permutation options — e.g. the key and non-key halves of a heterogeneity split.
    ``registry``: the run's (``RunContext.registry``); None reads the packaged one."""
    from keytech.estimation import load_registry

    def same(other: Spec) -> bool:
        return all(getattr(other, f) == getattr(spec, f) for f in (
            "estimator", "panel", "extra_marts", "regressors", "fixed_effects", "fixef_rm", "sample_query",
            "extra_regressors", "vcov", "split", "options"))

    specs = (registry or load_registry()).specs
    return list(dict.fromkeys(s.outcome for s in specs if s.outcome != spec.outcome and same(s)))


def _joint_permutation_test(spec: Spec, df: pd.DataFrame, data: pd.DataFrame, elig: pd.DataFrame,
                            is_high: np.ndarray, needed: list[str], draws: int, seed: int, permute_by, ctx) -> dict:
    """The permutation test of ``spec`` (:func:`keytech.estimation.inference.permutation.permutation_tests`),
    computed jointly with its sibling specs (:func:`_sibling_outcomes`) whose complete-case rows
    are the same — hence the same labels and reshuffles: one pass over the draws re-estimates
    every outcome on the same rows and fixed-effect structure (one more column in the
    projection). The tests of the siblings are kept in ``ctx.shared`` for their own specs of the
    run. Each result is what the spec's test alone gives, up to rounding (the draws, seed and
    statistic are the same)."""
    from keytech.estimation.inference.permutation import fe_ols_coefficient, permutation_tests

    key = ("split_permutation", id(df), spec.panel, spec.extra_marts, tuple(spec.regressors), tuple(spec.fixed_effects),
           spec.fixef_rm, spec.sample_query, tuple(spec.extra_regressors), repr(spec.vcov), repr(spec.options),
           draws, seed, repr(permute_by))
    cache = ctx.shared.get(key)
    if cache is not None and cache["df"] is df and spec.outcome in cache["tests"]:
        # computed in the pass of another spec of this run (no re-estimation here)
        return {**cache["tests"][spec.outcome], "computed_in_pass_of": cache["spec_id"]}
    outcomes = [spec.outcome]
    for other in _sibling_outcomes(spec, ctx.registry):
        if other not in data.columns:
            continue
        needed_other = [other if c == spec.outcome else c for c in needed]
        if data.dropna(subset=needed_other).index.equals(elig.index) and data.loc[elig.index, other].notna().all():
            outcomes.append(other)
    coef_fn = fe_ols_coefficient(outcomes if len(outcomes) > 1 else spec.outcome, list(spec.regressors),
                                 spec.fixed_effects, drop_singletons=spec.fixef_rm == "singleton")
    tests = dict(zip(outcomes, permutation_tests(elig, is_high, coef_fn, draws=draws, seed=seed, permute_by=permute_by,
                                                     jobs=ctx.jobs)))
    if len(outcomes) > 1:
        for t in tests.values():
            t["computed_jointly_with"] = list(outcomes)
        ctx.shared[key] = {"df": df, "tests": tests, "spec_id": spec.id}
    return dict(tests[spec.outcome])
