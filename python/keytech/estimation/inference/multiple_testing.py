"""Multiple-testing adjusted p-values for the families a reader scans (issue 14 item 2).

Estimator ``multiple_testing`` (specs ``mt_*``): ``options.members`` lists the spec ids of one
family (e.g. the nine ``field_*`` specs, or the four ``het_fc_*`` splits of one moderator). For
each member the treatment coefficient is tested (H0: b = 0) and three p-values are stored:

* ``raw_p_value``: the member's own analytic CRV1 p-value (as in its own spec);
* ``holm_p_value``: Holm's (1979) step-down adjustment of the raw p-values;
* ``p_value`` (the stored column) = ``romano_wolf_p_value``: Romano & Wolf's (2005) step-down
  adjustment from a joint wild cluster bootstrap. Every member's WCR bootstrap (null b = 0 imposed,
  :mod:`keytech.estimation.inference.wild_bootstrap`, FE-demeaned design) uses the *same* cluster weights —
  one weight per cluster label, shared across members — so the bootstrap t-statistics keep the
  dependence between the family's estimates (overlapping samples, correlated outcomes). The
  step-down rule and the ``(count + 1) / (B + 1)`` convention are pyfixest's ``rwolf``
  (``_get_rwolf_pval``), which the tests compare against; pyfixest's own ``rwolf`` cannot be called
  on these fits because its wild bootstrap densifies the three-way fixed effects into dummies;
  ``raw_bootstrap_p_value`` is each member's single-hypothesis bootstrap p-value with the same
  convention (the Romano–Wolf p-value is never below it).

A member already estimated earlier in the same run (``keytech estimate`` stores each spec's result
in ``RunContext.shared``) is taken from there (``members_taken_from_this_run`` in the diagnostics;
issue 17); the others are re-estimated here on their own samples: an ``ols`` member on its filtered panel, an
``ols_split`` member on its half of the median split (the rule of
:func:`keytech.estimation.mechanisms.median_split`). The coefficient is checked against the
member's pyfixest estimate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd


def holm(p: np.ndarray | list[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (input order kept)."""
    p = np.asarray(p, float)
    S = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(S)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (S - rank) * p[i]))
        adj[i] = running
    return adj


def romano_wolf(t: np.ndarray, t_boot: np.ndarray) -> np.ndarray:
    """Romano–Wolf step-down p-values. ``t``: (S,) original t-statistics; ``t_boot``: (B, S)
    bootstrap t-statistics under the null. p_(j) = (#{b: max_{k>=j} |t*_(k),b| >= |t_(j)|} + 1)/(B + 1)
    with hypotheses ordered by |t| descending, then made monotone (running maximum)."""
    t = np.abs(np.asarray(t, float))
    tb = np.abs(np.asarray(t_boot, float))
    B, S = tb.shape
    order = np.argsort(-t, kind="stable")
    adj = np.empty(S)
    running = 0.0
    for j, i in enumerate(order):
        mx = tb[:, order[j:]].max(axis=1)
        running = max(running, min(1.0, (np.sum(mx >= t[i]) + 1) / (B + 1)))
        adj[i] = running
    return adj


def single_bootstrap_p(t: np.ndarray, t_boot: np.ndarray) -> np.ndarray:
    """Per-hypothesis bootstrap p-values with the same (count + 1)/(B + 1) convention."""
    t = np.abs(np.asarray(t, float))
    tb = np.abs(np.asarray(t_boot, float))
    return (np.sum(tb >= t[None, :], axis=0) + 1) / (tb.shape[0] + 1)


def member_sample(spec, df: pd.DataFrame) -> pd.DataFrame:
    """The rows a member spec is estimated on (before complete cases and singletons)."""
    from keytech.estimation.core.panel import prepare_spec_data

    data = prepare_spec_data(spec, df)
    if spec.estimator == "ols":
        return data
    if spec.estimator == "ols_split":
        from keytech.estimation.mechanisms import median_split

        by, group = spec.options["split_by"], spec.options["group"]
        cluster = list(spec.vcov.cluster) if spec.vcov.kind == "cluster" else []
        needed = list(dict.fromkeys([spec.outcome, *spec.regressors, *spec.fixed_effects, *cluster, by]))
        elig = data.dropna(subset=needed)
        labels, _ = median_split(elig[by])
        is_high = (labels == 1).to_numpy()
        return elig.loc[is_high] if group == "high" else elig.loc[~is_high]
    raise ValueError(f"{spec.id}: multiple testing supports members with estimator ols or ols_split, not {spec.estimator!r}")


def family_weights(labels: list[np.ndarray], kind: str, draws: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Weights (union of cluster labels x draws) and, per member, the rows of its clusters."""
    from keytech.estimation.inference.wild_bootstrap import draw_weights

    union = np.unique(np.concatenate([np.asarray(lab).astype(str) for lab in labels]))
    V = draw_weights(kind, len(union), draws, seed)
    rows = [np.searchsorted(union, np.asarray(lab).astype(str)) for lab in labels]
    return V, rows


def fit_multiple_testing(spec, df: pd.DataFrame, ctx):
    from keytech.estimation.core.results import SpecResult, TermEstimate
    from keytech.estimation.dispatch import run_spec
    from keytech.estimation.orchestration.registry import load_registry
    from keytech.estimation.inference.wild_bootstrap import prepare_spec

    o = spec.options
    members = list(o.get("members") or [])
    if len(members) < 2:
        raise ValueError(f"{spec.id}: options.members must list at least two spec ids")
    reg = load_registry()
    draws = int(o.get("draws", 9999))
    kind = str(o.get("weights", "rademacher"))
    seed = int(ctx.seed)
    mspecs = [reg.get(m) for m in members]
    fits, boots = [], []
    # the members' own between-group permutation tests do not enter here: one draw is enough
    mctx = dataclasses.replace(ctx, permutation_draws=1)
    reused = []
    for ms in mspecs:
        # a member already estimated in this run (same spec, same panel object) is not fitted again:
        # only its treatment term and N are used, which do not depend on its permutation draws
        prior = ctx.shared.get(("spec_result", ms.id))
        if prior is not None and prior["df"] is df and prior["spec"] == ms:
            res = prior["result"]
            reused.append(ms.id)
        else:
            res = run_spec(ms, df, mctx)[0]
        wb = prepare_spec(ms, member_sample(ms, df))
        main = res.term(ms.treatment)
        if abs(wb.beta - main.estimate) > 1e-6 * max(1.0, abs(main.estimate)):
            raise RuntimeError(f"{spec.id}: {ms.id} FWL coefficient {wb.beta} differs from its estimate {main.estimate}")
        fits.append((res, main))
        boots.append(wb)
    V, rows = family_weights([wb.clusters for wb in boots], kind, draws, seed)
    t = np.array([wb.t_original(0.0) for wb in boots])
    T = np.column_stack([wb.t_boot(0.0, V[r]) for wb, r in zip(boots, rows)])
    rw = romano_wolf(t, T)
    raw_boot = single_bootstrap_p(t, T)
    raw = np.array([m.p_value if m.p_value is not None else np.nan for _, m in fits])
    hl = holm(raw)
    terms = []
    for i, (ms, (res, main)) in enumerate(zip(mspecs, fits)):
        info = {"member": ms.id, "tested_term": ms.treatment, "raw_p_value": float(raw[i]), "holm_p_value": float(hl[i]),
                "romano_wolf_p_value": float(rw[i]), "raw_bootstrap_p_value": float(raw_boot[i]),
                "nobs": res.nobs, "n_clusters": boots[i].G}
        terms.append(TermEstimate(ms.id, main.estimate, main.std_error, main.t_stat, float(rw[i]), main.ci_low,
                                  main.ci_high, info))
    nobs = sum(int(r.nobs or 0) for r, _ in fits)
    return SpecResult(
        spec_id=spec.id, terms=terms, nobs=nobs, adj_r2=None,
        fixed_effects="as in each member spec", vcov=f"CRV1 by member; p_value: Romano–Wolf (WCR {kind}, B={V.shape[1]})",
        sample=f"family of {len(members)} specs: {', '.join(members)}; nobs = sum over members",
        main_term=members[0],
        diagnostics={"family": members, "weights": kind, "draws": int(V.shape[1]), "seed": seed,
                     "n_clusters_union": int(V.shape[0]), "members_taken_from_this_run": reused,
                     "method": "Romano–Wolf step-down on a joint WCR wild cluster bootstrap (shared cluster weights); "
                               "Holm on the members' analytic p-values"},
    )
