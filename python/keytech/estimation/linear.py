"""Linear models with high-dimensional fixed effects (pyfixest ``feols``): OLS (and the PPML call
it shares with :mod:`keytech.estimation.count`), the exact-rank degrees-of-freedom diagnostics,
and the event study (Eq. 2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, fit_model, fit_result, formula, joint_wald, terms_from_fit
from keytech.estimation.core.panel import complete_cases, poisson_informative_sample, prepare_spec_data
from keytech.estimation.core.results import SpecResult, TermEstimate
from keytech.estimation.orchestration.registry import Spec


def fit_ols(spec: Spec, df: pd.DataFrame, ctx: RunContext, kind: str = "ols") -> SpecResult:
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    n_complete = complete_cases(spec, data, rhs)
    removed = None
    if kind == "poisson":
        data, removed = poisson_informative_sample(spec, data, rhs)
    fit, msgs, _ = fit_model(kind, spec, data, rhs)
    diag: dict[str, Any] = {"formula": formula(spec.outcome, rhs, spec.fixed_effects), "fixef_rm": spec.fixef_rm}
    if removed is not None:
        diag |= removed | {
            "uninformative_obs_removed": removed["separated_obs_removed"] + removed["singleton_obs_removed"],
            "sample_rule": "all-zero-outcome FE groups (separation) and singletons removed iteratively before the "
            "fit, as ppmlhdfe; N and the small-sample factor use this informative sample",
        }
    if msgs:
        diag["warnings"] = msgs
    dropped = [c for c in rhs if c not in fit._coefnames]
    if dropped:
        diag["dropped_collinear"] = dropped
    if spec.vcov.kind == "cluster":
        diag["n_clusters"] = [int(g) for g in np.atleast_1d(fit._G)][: len(spec.vcov.cluster)]
    diag["df_k"] = int(np.asarray(fit._df_k).ravel()[0]) if getattr(fit, "_df_k", None) is not None else None
    if kind == "ols" and diag["df_k"] is not None:
        diag |= exact_dof_diagnostics(spec, fit, diag["df_k"])
    if kind == "poisson":
        b = float(fit.coef()[spec.treatment])
        diag["exp_coef_minus_1"] = float(np.exp(b) - 1)
        for attr in ("_pseudo_r2", "deviance"):
            val = getattr(fit, attr, None)
            if val is not None:
                try:
                    diag[attr.strip("_")] = float(np.asarray(val).ravel()[0])
                except (TypeError, ValueError):
                    pass
        if ctx.truth and "beta_key" in ctx.truth:
            diag["planted_beta_key"] = ctx.truth["beta_key"]
    return fit_result(spec, ctx, fit, terms_from_fit(fit), n_complete, diag, with_adj_r2=kind == "ols")


def exact_dof_diagnostics(spec: Spec, fit, df_k: int) -> dict[str, Any]:
    """The reghdfe-style alternative to pyfixest's parameter count: the FE contribute their exact
    rank (redundant levels not counted; :func:`keytech.estimation.core.ssc.exact_fe_rank`) instead of
    levels − (dimensions − 1). Reported beside the default: ``df_k_exact``, the treatment's SE and
    the adjusted R² under it (SE × sqrt((N − df_k)/(N − df_k_exact)); adj. R² = 1 − (1 − R²)(N − 1)/
    (N − df_k_exact)). The default stays pyfixest's (fixest's) count — see docs/estimator-conventions.md."""
    from keytech.estimation.core.ssc import exact_fe_rank

    if not spec.fixed_effects:
        return {}
    used = fit._data
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    codes = pnl.factorize_columns(used, spec.fixed_effects)
    try:
        fe_rank = exact_fe_rank(codes, pnl.factorize_columns(used, cl) if cl else None)  # vcov: nesting rule
        fe_rank_all = exact_fe_rank(codes, None)  # adj. R²: every FE parameter
    except Exception as exc:  # diagnostics only: never fail the spec
        return {"df_k_exact": None, "df_k_exact_note": f"not computed: {type(exc).__name__}"}
    if fe_rank is None:
        return {"df_k_exact": None, "df_k_exact_note": "not computed: too many FE levels for the dense rank"}
    k = len(fit._coefnames)
    n = int(fit._N)
    k_exact = k + fe_rank
    out: dict[str, Any] = {"df_k_exact": int(k_exact), "redundant_fe_levels_counted": int(df_k - k_exact)}
    if n - k_exact > 0 and n - df_k > 0 and spec.treatment in fit._coefnames:
        ratio = float(np.sqrt((n - df_k) / (n - k_exact)))
        out["std_error_exact_dof"] = float(fit.se()[spec.treatment]) * ratio
    r2 = getattr(fit, "_r2", None)
    if fe_rank_all is not None and r2 is not None and np.isfinite(r2) and n - k - fe_rank_all > 0:
        out["adj_r2_exact_dof"] = float(1 - (1 - float(r2)) * (n - 1) / (n - k - fe_rank_all))
    return out


def fit_event_study(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    o = spec.options
    kmin, kmax, base = int(o.get("k_min", -5)), int(o.get("k_max", 3)), int(o.get("base", -1))
    data = prepare_spec_data(spec, df)
    D = pnl.event_time_dummies(data["rel_time"], kmin, kmax, base)
    data = pd.concat([data, D], axis=1)
    rhs = [*D.columns, *spec.extra_regressors, *spec.controls]
    fit, msgs, _ = fit_model("ols", spec, data, rhs)
    ks = [k for k in range(kmin, kmax + 1) if k != base]
    rename = {pnl.event_dummy_name(k): pnl.event_term_label(k) for k in ks}
    terms = terms_from_fit(fit, rename=rename)
    terms.append(TermEstimate(pnl.event_term_label(base), 0.0, diagnostics={"reference_period": True}))
    names = list(fit._coefnames)
    V = np.asarray(fit._vcov)
    b = np.asarray(fit._beta_hat)
    G = int(np.min(fit._G)) if spec.vcov.kind == "cluster" else None
    dfd = (G - 1) if G else float(fit._N - fit._df_k)

    def test(ks_sel: list[int]) -> dict[str, Any]:
        idx = [names.index(pnl.event_dummy_name(k)) for k in ks_sel if pnl.event_dummy_name(k) in names]
        if not idx:
            return {}
        res = joint_wald(b[idx], V[np.ix_(idx, idx)], dfd)
        res["periods"] = ks_sel
        return res

    pre = [k for k in ks if k < base]
    post = [k for k in ks if k >= 0]
    used = data.loc[data[[spec.outcome, *rhs]].notna().all(axis=1)]
    binned = np.clip(used["rel_time"], kmin, kmax)
    counts = {str(k): int((binned == k).sum()) for k in range(kmin, kmax + 1)}
    diag = {
        "pretrend_test": test(pre),
        "post_test": test(post),
        "k_min": kmin,
        "k_max": kmax,
        "base": base,
        "binning": f"k<{kmin} binned into {kmin}; k>{kmax} binned into {kmax}; never-treated: all dummies 0",
        "obs_per_period": counts,
        "formula": formula(spec.outcome, rhs, spec.fixed_effects),
    }
    if msgs:
        diag["warnings"] = msgs
    if o.get("honest_did"):  # Rambachan & Roth (2023) sensitivity; rows go to results.honest_did
        from keytech.estimation.inference.honest_did import sensitivity_for_spec

        have = {k: names.index(pnl.event_dummy_name(k)) for k in ks if pnl.event_dummy_name(k) in names}
        diag["honest_did"] = sensitivity_for_spec(
            {k: float(b[i]) for k, i in have.items()},
            {(k, j): float(V[i, m]) for k, i in have.items() for j, m in have.items()}, base, o["honest_did"])
    n_complete = complete_cases(spec, data, rhs)
    return fit_result(spec, ctx, fit, terms, n_complete, diag, main_term=pnl.event_term_label(0))
