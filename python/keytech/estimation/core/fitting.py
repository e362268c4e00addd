"""Fitting primitives shared by every estimator family: the run context, formulas, the pyfixest
call with the spec's demeaner and cluster variables, result assembly, and a few tests on a fit.

Part of the public core (``keytech.estimation.core``): estimator families import these names;
nothing here knows about a family, a table or a report."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core.panel import sample_description, sample_size_and_parameters
from keytech.estimation.core.results import DEFAULT_SEED, NotEstimable, SpecResult, TermEstimate
from keytech.estimation.orchestration.registry import Spec


@dataclass
class RunContext:
    placebo_draws: int = 500
    seed: int = DEFAULT_SEED  # the run seed: placebo, CS bootstrap, permutation tests
    # when set, replaces options.permutation.draws of every spec (keytech estimate --permutation-draws)
    permutation_draws: int | None = None
    # worker processes for the draws of each permutation test (keytech estimate --jobs); the
    # results do not depend on it (keytech.estimation.inference.permutation)
    jobs: int = 1
    progress: bool = False
    fe_labels: dict[str, str] = field(default_factory=dict)
    truth: dict[str, Any] | None = None
    # the registry the run's specs come from (keytech.estimation.run_estimation sets it; None: the
    # packaged registry); where the joint permutation passes look for sibling specs
    registry: Any = field(default=None, repr=False, compare=False)
    # work shared between the specs of one run (e.g. the joint permutation tests of
    # keytech.estimation.mechanisms); never part of a result
    shared: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def demeaner(spec: Spec):
    """pyfixest demeaner for the spec: LSMR ``within`` (default) or MAP, with the spec's tolerance."""
    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    if spec.demeaner == "map":
        return pf.MapDemeaner(fixef_tol=spec.fixef_tol, fixef_maxiter=100_000)
    return pf.LsmrDemeaner(fixef_atol=spec.fixef_tol, fixef_btol=spec.fixef_tol, fixef_maxiter=10_000)


def formula(outcome: str, rhs: list[str] | tuple[str, ...], fixed_effects: tuple[str, ...] | list[str]) -> str:
    # spaces around '+' matter: see cluster_columns
    f = f"{outcome} ~ {' + '.join(rhs) if rhs else '1'}"
    if fixed_effects:
        f += f" | {' + '.join(fixed_effects)}"
    return f


def cluster_columns(df: pd.DataFrame, spec: Spec) -> tuple[pd.DataFrame, tuple[str, ...]]:
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


def vcov_arg(spec: Spec, cluster_cols: tuple[str, ...]):
    if spec.vcov.kind == "cluster":
        return {"CRV1": "+".join(cluster_cols)}
    return spec.vcov.pyfixest()


def fe_desc(spec: Spec, ctx: RunContext, fe: tuple[str, ...] | None = None) -> str:
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
        adj_r2=adj_r2(fit) if with_adj_r2 else None,
        fixed_effects=fe_desc(spec, ctx) + fixed_effects_suffix,
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


def fit_model(kind: str, spec: Spec, data: pd.DataFrame, rhs: list[str], fe: tuple[str, ...] | None = None):
    """Run pyfixest feols/fepois; returns (fit, captured warning messages, cluster columns)."""
    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    fe = spec.fixed_effects if fe is None else fe
    data, cl = cluster_columns(data, spec)
    fml = formula(spec.outcome, rhs, fe)
    fn = pf.feols if kind == "ols" else pf.fepois
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = fn(fml, data=data, vcov=vcov_arg(spec, cl), fixef_rm=spec.fixef_rm if fe else "none",
                     demeaner=demeaner(spec))
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


def adj_r2(fit) -> float | None:
    v = getattr(fit, "_adj_r2", None)
    try:
        v = float(np.asarray(v).ravel()[0])
    except (TypeError, ValueError, IndexError):
        return None
    return v if np.isfinite(v) else None


def joint_wald(beta: np.ndarray, vcov: np.ndarray, df_denominator: float | None) -> dict[str, float]:
    """Wald test of beta = 0: chi2 and F (with ``df_denominator``, e.g. G-1 when clustered)."""
    from scipy import stats  # here, as in results.term_from_normal: not every importer computes p-values

    beta = np.asarray(beta, dtype=float)
    W = float(beta @ np.linalg.pinv(vcov) @ beta)
    q = len(beta)
    out = {"wald_chi2": W, "df": q, "p_chi2": float(stats.chi2.sf(W, q)), "F": W / q}
    if df_denominator is not None and np.isfinite(df_denominator):
        out["df_denominator"] = float(df_denominator)
        out["p_F"] = float(stats.f.sf(W / q, q, df_denominator))
    out["p_value"] = out.get("p_F", out["p_chi2"])
    return out


def noncollinear_columns(X: np.ndarray, fe_codes: np.ndarray, tol: float, collin_tol: float = 1e-9,
                         demeaned: np.ndarray | None = None) -> list[int]:
    """Indices of columns kept after dropping those (nearly) collinear with the FE and the columns
    before them: a column goes when the part of its variation not explained by the FE and the kept
    columns is below ``collin_tol`` of its own variation (forward, in order, like pyfixest).
    ``demeaned``: ``X`` already demeaned on ``fe_codes`` at tolerance ``min(tol, 1e-10)`` (what
    this function would compute; the wild bootstrap passes the columns it demeaned itself)."""
    from keytech.estimation.core.demeaning import demean

    Xd = demeaned if demeaned is not None else demean(X, fe_codes, None, tol=min(tol, 1e-10))[0]
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
