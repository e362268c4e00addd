"""One function per estimator kind; each takes a :class:`Spec`, the prepared panel and the run
context and returns a list of :class:`SpecResult` (one per subsample when the spec splits)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from keytech.estimation import panel as pnl
from keytech.estimation.base import DEFAULT_SEED, NotEstimable, SpecResult, TermEstimate, add_common_diagnostics, term_from_normal
from keytech.estimation.registry import Spec


@dataclass
class RunContext:
    placebo_draws: int = 500
    seed: int = DEFAULT_SEED  # the run seed: placebo, CS bootstrap, permutation tests
    # when set, replaces options.permutation.draws of every spec (keytech estimate --permutation-draws)
    permutation_draws: int | None = None
    progress: bool = False
    fe_labels: dict[str, str] = field(default_factory=dict)
    truth: dict[str, Any] | None = None


# --------------------------------------------------------------------------- helpers


def _demeaner(spec: Spec):
    """pyfixest demeaner for the spec: LSMR ``within`` (default) or MAP, with the spec's tolerance."""
    import pyfixest as pf

    if spec.demeaner == "map":
        return pf.MapDemeaner(fixef_tol=spec.fixef_tol, fixef_maxiter=100_000)
    return pf.LsmrDemeaner(fixef_atol=spec.fixef_tol, fixef_btol=spec.fixef_tol, fixef_maxiter=10_000)


def formula(outcome: str, rhs: list[str] | tuple[str, ...], fixed_effects: tuple[str, ...] | list[str]) -> str:
    # spaces around '+' matter: see _cluster_columns
    f = f"{outcome} ~ {' + '.join(rhs) if rhs else '1'}"
    if fixed_effects:
        f += f" | {' + '.join(fixed_effects)}"
    return f


def _cluster_columns(df: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Cluster variables, copied under a new name when they are also fixed effects.

    pyfixest 0.60's nested-FE small-sample count matches cluster names against the FE names in
    formula order but applies the flags to the FE columns in (hash-randomised) internal order, so
    clustering on a variable that is itself a FE (e.g. firm) can give a process-dependent df_k.
    Clustering on a renamed copy makes pyfixest detect nesting from the data instead — correct
    and deterministic.
    """
    if spec.vcov.kind != "cluster":
        return df, ()
    names = []
    for c in spec.vcov.cluster:
        if c in spec.fixed_effects:
            alias = f"cl__{c}"
            if alias not in df.columns:
                df = df.assign(**{alias: df[c]})
            names.append(alias)
        else:
            names.append(c)
    return df, tuple(names)


def _vcov_arg(spec: Spec, cluster_cols: tuple[str, ...]):
    if spec.vcov.kind == "cluster":
        return {"CRV1": "+".join(cluster_cols)}
    return spec.vcov.pyfixest()


def prepare_spec_data(spec: Spec, df: pd.DataFrame) -> pd.DataFrame:
    """Derived regressors added and the spec's sample filter applied."""
    out = pnl.add_derived(df, spec.extra_regressors, spec.options)
    if spec.sample_query:
        out = out.query(spec.sample_query, engine="python")
    return out


def sample_description(spec: Spec, n_complete: int, nobs: int, extra: str = "") -> str:
    filt = "all rows" if not spec.sample_query else spec.sample_query
    s = f"{spec.panel} [{filt}]; complete cases {n_complete}; used {nobs}"
    if n_complete != nobs:
        s += f" ({n_complete - nobs} dropped: singletons/separation)"
    return s + (f"; {extra}" if extra else "")


def _fe_desc(spec: Spec, ctx: RunContext, fe: tuple[str, ...] | None = None) -> str:
    fe = spec.fixed_effects if fe is None else fe
    return " + ".join(ctx.fe_labels.get(f, f) for f in fe) if fe else "none"

def fit_result(
    spec: Spec,
    ctx: RunContext,
    fit,
    terms: list,
    n_complete: int,
    diagnostics: dict,
    *,
    main_term: str | None = None,
    with_adj_r2: bool = True,
    sample_note: str = "",
    fixed_effects_suffix: str = "",
) -> SpecResult:
    """The SpecResult of a spec estimated by one pyfixest fit (the common case of every estimator)."""
    nobs = int(fit._N)
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=nobs,
        adj_r2=_adj_r2(fit) if with_adj_r2 else None,
        fixed_effects=_fe_desc(spec, ctx) + fixed_effects_suffix,
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, n_complete, nobs, sample_note),
        main_term=main_term or spec.treatment,
        diagnostics=diagnostics,
    )



def terms_from_fit(fit, names: list[str] | None = None, rename: dict[str, str] | None = None) -> list[TermEstimate]:
    tidy = fit.tidy()
    rename = rename or {}
    out = []
    for coef, row in tidy.iterrows():
        if names is not None and coef not in names:
            continue
        out.append(
            TermEstimate(
                term=rename.get(coef, coef),
                estimate=float(row["Estimate"]),
                std_error=float(row["Std. Error"]),
                t_stat=float(row["t value"]),
                p_value=float(row["Pr(>|t|)"]),
                ci_low=float(row["2.5%"]),
                ci_high=float(row["97.5%"]),
            )
        )
    return out


def _fit(kind: str, spec: Spec, data: pd.DataFrame, rhs: list[str], fe: tuple[str, ...] | None = None):
    """Run pyfixest feols/fepois; returns (fit, captured warning messages, cluster columns)."""
    import pyfixest as pf

    fe = spec.fixed_effects if fe is None else fe
    data, cl = _cluster_columns(data, spec)
    fml = formula(spec.outcome, rhs, fe)
    fn = pf.feols if kind == "ols" else pf.fepois
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = fn(fml, data=data, vcov=_vcov_arg(spec, cl), fixef_rm=spec.fixef_rm if fe else "none",
                     demeaner=_demeaner(spec))
        except np.linalg.LinAlgError as exc:
            # pyfixest's variance/Wald step breaks down when its parameter count leaves no
            # residual degrees of freedom: say so (NotEstimable) instead of a linear-algebra error
            n, n_parameters = sample_size_and_parameters(spec, data, rhs, fe)
            if n > n_parameters:
                raise
            raise NotEstimable(
                f"{spec.id}: not estimable on this sample: {n} observations after complete cases"
                f"{' and singleton removal' if fe and spec.fixef_rm == 'singleton' else ''} for {n_parameters} "
                f"parameters ({len(rhs)} regressors + the levels of the {', '.join(fe) or 'no'} fixed effects, "
                "counted as fixest counts them), so no residual degrees of freedom are left") from exc
    return fit, relevant_warnings(caught), cl


def sample_size_and_parameters(spec: Spec, data: pd.DataFrame, rhs: list[str],
                               fe: tuple[str, ...]) -> tuple[int, int]:
    """(N, parameters) of a linear FE fit, counted as fixest/pyfixest count them: complete cases,
    singletons removed iteratively when ``fixef_rm == 'singleton'``, then regressors + the FE
    levels − (number of FE dimensions − 1). ``N <= parameters`` leaves no residual degrees of
    freedom (the spec is not estimable)."""
    from keytech.estimation.negbin import drop_uninformative

    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = data.dropna(subset=list(dict.fromkeys([spec.outcome, *rhs, *fe, *cl])))
    if not fe:
        return len(sample), len(rhs) + 1
    codes = pnl.factorize_columns(sample, fe)
    # y = 1 everywhere: only singletons are removed (no group has an all-zero outcome)
    keep, _, _ = drop_uninformative(np.ones(len(sample)), codes, drop_singletons=spec.fixef_rm == "singleton")
    levels = sum(len(np.unique(codes[keep, j])) for j in range(codes.shape[1]))
    return int(keep.sum()), len(rhs) + levels - (codes.shape[1] - 1)


def relevant_warnings(caught) -> list[str]:
    """Messages worth keeping (collinearity, separation, ...); drops library deprecation noise."""
    keep = set()
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, FutureWarning, PendingDeprecationWarning)):
            continue
        if "deprecated" in str(w.message).lower():
            continue
        keep.add(" ".join(str(w.message).split()))
    return sorted(keep)


def _complete_cases(spec: Spec, data: pd.DataFrame, rhs: list[str], fe: tuple[str, ...] | None = None) -> int:
    fe = spec.fixed_effects if fe is None else fe
    cols = [spec.outcome, *rhs, *fe, *(spec.vcov.cluster if spec.vcov.kind == "cluster" else ())]
    return int(data[cols].notna().all(axis=1).sum())


def _adj_r2(fit) -> float | None:
    v = getattr(fit, "_adj_r2", None)
    try:
        v = float(np.asarray(v).ravel()[0])
    except (TypeError, ValueError, IndexError):
        return None
    return v if np.isfinite(v) else None


# --------------------------------------------------------------------------- OLS / Poisson


def poisson_informative_sample(spec: Spec, data: pd.DataFrame, rhs: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Complete cases minus the observations that carry no information in an FE Poisson model,
    removed as ppmlhdfe does: FE groups whose outcome is zero throughout (separated: their FE goes
    to −∞) and singleton groups (when ``fixef_rm == 'singleton'``), iterated until neither is left
    (removing one can create the other). Regressor-induced separation (ppmlhdfe's ReLU/simplex
    checks) is not tested."""
    from keytech.estimation.negbin import drop_uninformative

    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = data.dropna(subset=list(dict.fromkeys([spec.outcome, *rhs, *spec.fixed_effects, *cl])))
    if not spec.fixed_effects:
        return sample, {"separated_obs_removed": 0, "singleton_obs_removed": 0}
    keep, n_zero, n_single = drop_uninformative(
        sample[spec.outcome].to_numpy(float), pnl.factorize_columns(sample, spec.fixed_effects),
        drop_singletons=spec.fixef_rm == "singleton")
    return sample.loc[keep], {"separated_obs_removed": int(n_zero), "singleton_obs_removed": int(n_single)}


def fit_ols(spec: Spec, df: pd.DataFrame, ctx: RunContext, kind: str = "ols") -> SpecResult:
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    n_complete = _complete_cases(spec, data, rhs)
    removed = None
    if kind == "poisson":
        data, removed = poisson_informative_sample(spec, data, rhs)
    fit, msgs, _ = _fit(kind, spec, data, rhs)
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
    rank (redundant levels not counted; :func:`keytech.estimation.ssc.exact_fe_rank`) instead of
    levels − (dimensions − 1). Reported beside the default: ``df_k_exact``, the treatment's SE and
    the adjusted R² under it (SE × sqrt((N − df_k)/(N − df_k_exact)); adj. R² = 1 − (1 − R²)(N − 1)/
    (N − df_k_exact)). The default stays pyfixest's (fixest's) count — see docs/estimator-conventions.md."""
    from keytech.estimation.ssc import exact_fe_rank

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


def fit_poisson(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    return fit_ols(spec, df, ctx, kind="poisson")


# --------------------------------------------------------------------------- event study


def joint_wald(beta: np.ndarray, vcov: np.ndarray, df_denominator: float | None) -> dict[str, float]:
    """Wald test of beta = 0: chi2 and F (with ``df_denominator``, e.g. G-1 when clustered)."""
    beta = np.asarray(beta, dtype=float)
    W = float(beta @ np.linalg.pinv(vcov) @ beta)
    q = len(beta)
    out = {"wald_chi2": W, "df": q, "p_chi2": float(stats.chi2.sf(W, q)), "F": W / q}
    if df_denominator is not None and np.isfinite(df_denominator):
        out["df_denominator"] = float(df_denominator)
        out["p_F"] = float(stats.f.sf(W / q, q, df_denominator))
    out["p_value"] = out.get("p_F", out["p_chi2"])
    return out


def fit_event_study(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    o = spec.options
    kmin, kmax, base = int(o.get("k_min", -5)), int(o.get("k_max", 3)), int(o.get("base", -1))
    data = prepare_spec_data(spec, df)
    D = pnl.event_time_dummies(data["rel_time"], kmin, kmax, base)
    data = pd.concat([data, D], axis=1)
    rhs = [*D.columns, *spec.extra_regressors, *spec.controls]
    fit, msgs, _ = _fit("ols", spec, data, rhs)
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
        from keytech.estimation.honest_did import sensitivity_for_spec

        have = {k: names.index(pnl.event_dummy_name(k)) for k in ks if pnl.event_dummy_name(k) in names}
        diag["honest_did"] = sensitivity_for_spec(
            {k: float(b[i]) for k, i in have.items()},
            {(k, j): float(V[i, m]) for k, i in have.items() for j, m in have.items()}, base, o["honest_did"])
    n_complete = _complete_cases(spec, data, rhs)
    return fit_result(spec, ctx, fit, terms, n_complete, diag, main_term=pnl.event_term_label(0))


# --------------------------------------------------------------------------- negative binomial


def fit_negbin(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    from keytech.estimation.negbin import drop_uninformative, fenegbin

    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = data.dropna(subset=[spec.outcome, *rhs, *spec.fixed_effects, *cl])
    fe = spec.fixed_effects or ("__const",)
    if not spec.fixed_effects:
        sample = sample.assign(__const=0)
    n_complete = len(sample)
    y_all = sample[spec.outcome].to_numpy(dtype=float)
    # drop uninformative groups first, so the collinearity check sees the estimation sample
    keep0, n_zero0, n_single0 = drop_uninformative(
        y_all, pnl.factorize_columns(sample, fe), drop_singletons=spec.fixef_rm == "singleton"
    )
    sample = sample.loc[keep0]
    fe_codes = pnl.factorize_columns(sample, fe)
    X = sample[rhs].to_numpy(dtype=float)
    y = sample[spec.outcome].to_numpy(dtype=float)
    keep_cols = noncollinear_columns(X, fe_codes, spec.fixef_tol)
    dropped = [rhs[j] for j in range(len(rhs)) if j not in keep_cols]
    names = [rhs[j] for j in keep_cols]
    res = fenegbin(y, X[:, keep_cols], fe_codes, names, fixef_tol=min(spec.fixef_tol, 1e-10), drop_singletons=spec.fixef_rm == "singleton")
    res.n_dropped_zero += n_zero0
    res.n_dropped_singleton += n_single0
    used = sample.loc[res.keep]
    if spec.vcov.kind == "cluster":
        cl_codes = pnl.factorize_columns(used, cl)
        V, G = res.vcov_cluster(cl_codes, pnl.factorize_columns(used, fe))
    else:
        V, G = res.vcov_iid, None
    se = np.sqrt(np.diag(V))
    terms = [term_from_normal(n, b, s) for n, b, s in zip(names, res.coef, se)]
    diag: dict[str, Any] = {
        "theta": res.theta,
        "theta_se": res.theta_se,
        "alpha": res.alpha,
        "loglik": res.loglik,
        "iterations": res.n_iter,
        "converged": res.converged,
        "theta_at_poisson_bound": res.theta_at_bound,
        "dropped_all_zero_groups_obs": res.n_dropped_zero,
        "dropped_singleton_obs": res.n_dropped_singleton,
        "exp_coef_minus_1": float(np.exp(res.coef[0]) - 1),
        "inference": "normal (z), as for GLMs in fixest/pyfixest",
        "algorithm": "IRLS with weighted FE demeaning (LSMR within) + ML theta, fenegbin-style",
    }
    add_common_diagnostics(diag, n_clusters=G, dropped_collinear=dropped, truth=ctx.truth)
    return SpecResult(
        spec_id=spec.id,
        terms=terms,
        nobs=res.nobs,
        adj_r2=None,
        fixed_effects=_fe_desc(spec, ctx),
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, n_complete, res.nobs),
        main_term=spec.treatment,
        diagnostics=diag,
    )


def noncollinear_columns(X: np.ndarray, fe_codes: np.ndarray, tol: float, collin_tol: float = 1e-9) -> list[int]:
    """Indices of columns kept after dropping those (nearly) collinear with the FE and the columns
    before them: a column goes when the part of its variation not explained by the FE and the kept
    columns is below ``collin_tol`` of its own variation (forward, in order, like pyfixest)."""
    from keytech.estimation.demeaning import demean

    Xd, _ = demean(X, fe_codes, None, tol=min(tol, 1e-10))
    keep: list[int] = []
    for j in range(X.shape[1]):
        total = float(np.sum((X[:, j] - X[:, j].mean()) ** 2))
        r = Xd[:, j]
        if keep:
            K = Xd[:, keep]
            r = r - K @ np.linalg.lstsq(K, r, rcond=None)[0]
        if total > 0 and float(r @ r) > collin_tol * total:
            keep.append(j)
    return keep


# --------------------------------------------------------------------------- registry of kinds


def _staggered(name: str) -> Callable:
    def run(spec: Spec, df: pd.DataFrame, ctx: RunContext):
        from keytech.estimation import staggered

        return getattr(staggered, name)(spec, df, ctx)

    return run


def _placebo(spec: Spec, df: pd.DataFrame, ctx: RunContext):
    from keytech.estimation.placebo import fit_placebo

    return fit_placebo(spec, df, ctx)


def _mechanisms(spec: Spec, df: pd.DataFrame, ctx: RunContext):
    from keytech.estimation.mechanisms import fit_split

    return fit_split(spec, df, ctx)


def _lazy(module: str, name: str) -> Callable:
    """An estimator implemented in ``keytech.estimation.<module>`` (imported when first run)."""

    def run(spec: Spec, df: pd.DataFrame, ctx: RunContext):
        import importlib

        fn = getattr(importlib.import_module(f"keytech.estimation.{module}"), name)
        return fn(spec, df, ctx)

    return run


ESTIMATORS: dict[str, Callable[[Spec, pd.DataFrame, RunContext], SpecResult]] = {
    "ols": fit_ols,
    "poisson": fit_poisson,
    "negbin": fit_negbin,
    "event_study": fit_event_study,
    "staggered_dcdh": _staggered("fit_dcdh"),
    "staggered_bacon": _staggered("fit_bacon"),
    "staggered_sunab": _staggered("fit_sunab"),
    "staggered_did2s": _staggered("fit_did2s"),
    "staggered_cs": _staggered("fit_cs"),
    "placebo": _placebo,
    "ols_split": _mechanisms,  # median splits with a permutation p-value (issue 5)
    # Table 4 and spillover checks (issue 4)
    "ife": _lazy("ife", "fit_ife"),
    "iv": _lazy("iv", "fit_iv"),
    "psm": _lazy("psm", "fit_psm"),
    "ols_ext": _lazy("spillover", "fit_ols_ext"),
    "spill_split": _lazy("spillover", "fit_spill_split"),
    "spill_bands": _lazy("spillover", "fit_spill_bands"),
    "wild_bootstrap": _lazy("wild_bootstrap", "fit_wild_bootstrap"),  # issue 14
    "multiple_testing": _lazy("multiple_testing", "fit_multiple_testing"),  # issue 14
    "staggered_cs_dr": _lazy("cs_doubly_robust", "fit_cs_dr"),  # issue 14
    "etwfe_poisson": _lazy("etwfe", "fit_etwfe_poisson"),  # issue 14
    "staggered_imputation": _lazy("imputation", "fit_imputation"),  # issue 14
}


def run_spec(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> list[SpecResult]:
    """Run one spec (and its subsamples when it has a ``split``)."""
    if spec.estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {spec.estimator!r}; known: {', '.join(ESTIMATORS)}")
    fn = ESTIMATORS[spec.estimator]
    if not spec.split:
        return [fn(spec, df, ctx)]
    by = spec.split["by"]
    at = spec.split.get("at")
    if at == "median":
        med = df[by].median()
        groups = {f"{by}<=median": df[df[by] <= med], f"{by}>median": df[df[by] > med]}
    else:
        groups = {f"{by}={v}": g for v, g in df.groupby(by, dropna=True)}
    out = []
    for label, sub in groups.items():
        r = fn(spec, sub, ctx)
        r.spec_id = f"{spec.id}@{label}"
        r.sample = f"{r.sample}; split {label}"
        out.append(r)
    return out
