""":func:`fit_did2s` — Gardner (2021) two-stage DID (pyfixest ``did2s``), whose pooled estimate
  equals the Borusyak–Jaravel–Spiess imputation estimator.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, demeaner, fe_desc, relevant_warnings
from keytech.estimation.core.panel import prepare_spec_data, sample_description
from keytech.estimation.core.results import SpecResult, TermEstimate
from keytech.estimation.did.common import identified_rows, untreated_first_solver
from keytech.estimation.orchestration.registry import Spec


def gardner_vcov(
    data: pd.DataFrame,
    yname: str,
    first_stage: str,
    second_stage: str,
    treatment: str,
    first_u: np.ndarray,
    second_u: np.ndarray,
    cluster: str,
    weights: str | None = None,
    *,
    covariates: list[str] | tuple[str, ...],
    fixed_effects: list[str] | tuple[str, ...],
    tol: float = 1e-8,
) -> tuple[np.ndarray, int]:
    """Gardner's (2021) GMM-corrected cluster variance of the second-stage coefficient, with the
    first-stage Gram matrix solved by a generalized inverse. Takes the arguments of pyfixest's
    ``_did2s_vcov`` (0.60), which :func:`fit_did2s` replaces with it, and returns (vcov, clusters).

    With X1 the first-stage design of every row, X10 the same with the treated rows zeroed, X2 the
    treatment column and u1, u2 the two stages' residuals, the cluster score is
    ``W_g = X2_g'u2_g - X2'X1 (X10'X10)^- X10_g'u1_g`` and the variance
    ``(X2'X2)^-1 (sum_g W_g W_g') (X2'X2)^-1``. pyfixest solves ``X10'X10`` with a sparse LU
    (``spsolve``), but with more than one fixed effect the dummies of every level are collinear
    (e.g. firm, industry-year and province-year: the industry-year and the province-year dummies of a
    year sum to the same column), so the matrix is singular (the demo's: 895 columns of rank 773) and
    the LU's near-zero pivots made the standard error depend on rounding: 0.1993 with one BLAS kernel
    family and 0.1981 with another. Any generalized inverse gives the same variance when every row
    of X1 lies in the row space of X10, which :func:`identified_rows` has ensured for the sample, so
    here the design is :func:`first_stage_design`'s (standardised covariates, every FE level), the
    Gram matrix is solved by :func:`generalized_gram_solver` (as many columns left out as its null
    space, with the same ``tol``, has dimensions; a regular sparse LU of the rest). The cluster sums
    are one scatter-add instead of pyfixest's loop over clusters. Only the second stage
    ``~ treatment`` without weights, as :func:`fit_did2s` calls it."""
    if weights is not None:
        raise ValueError("gardner_vcov: weights are not supported")
    if second_stage.replace(" ", "") not in (f"~{treatment}", f"~0+{treatment}"):
        raise ValueError(f"gardner_vcov: the second stage must be '~ {treatment}', got {second_stage!r}")
    treated = data[treatment].to_numpy().astype(bool)
    order, Z, n_u, solve = untreated_first_solver(data, treated, covariates, fixed_effects, tol)
    Zu = Z[:n_u]
    x2 = treated[order].astype(float)
    y = solve(Z.T @ x2)  # (X10'X10)^- X1'X2
    u1 = np.asarray(first_u, dtype=float)[order]
    u2 = np.asarray(second_u, dtype=float)[order]
    score = x2 * u2
    score[:n_u] -= np.asarray(Zu @ y) * u1[:n_u]
    codes, clusters = pd.factorize(data[cluster].iloc[order])
    w = np.bincount(codes, weights=score, minlength=len(clusters))
    bread = 1.0 / float(x2 @ x2)
    return np.array([[bread * float(w @ w) * bread]]), len(clusters)


@contextmanager
def _did2s_patched(spec: Spec, covariates: list[str], fixed_effects: list[str], tol: float):
    """Make pyfixest.did2s fit its stages with the spec's demeaner and compute its variance with
    :func:`gardner_vcov`.

    ``pf.did2s`` (0.60) takes no demeaner argument and its first stage uses pyfixest's default
    alternating projections, which did not converge within 10,000 iterations on the column (5) FE
    of the paper-scale synthetic warehouse. For the duration of the call, the ``feols`` that the
    did2s module calls gets the spec's demeaner (LSMR ``within``) as a default, and the
    ``_did2s_vcov`` that ``pf.did2s`` calls is :func:`gardner_vcov` (a generalized inverse of the
    rank-deficient first-stage Gram matrix instead of a sparse LU of it).
    """
    import importlib

    # (``import pyfixest.did.did2s as m`` would give the function that pyfixest.did re-exports)
    did2s_module = importlib.import_module("pyfixest.did.did2s")
    estimation_module = importlib.import_module("pyfixest.did.estimation")

    original_feols, original_vcov = did2s_module.feols, estimation_module._did2s_vcov
    did2s_module.feols = functools.partial(original_feols, demeaner=demeaner(spec))
    estimation_module._did2s_vcov = functools.partial(gardner_vcov, covariates=covariates, fixed_effects=fixed_effects, tol=tol)
    try:
        yield
    finally:
        did2s_module.feols, estimation_module._did2s_vcov = original_feols, original_vcov


def fit_did2s(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:

    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()

    if spec.vcov.kind != "cluster" or len(spec.vcov.cluster) != 1:
        raise ValueError("did2s needs one cluster variable")
    data = prepare_spec_data(spec, df)
    fe = list(spec.fixed_effects)
    if not fe:
        raise ValueError("did2s needs fixed effects in the first stage")
    cl = spec.vcov.cluster[0]
    covs = [*spec.extra_regressors, *spec.controls]
    data = data.dropna(subset=[spec.outcome, spec.treatment, *covs, *fe, cl])
    n_complete = len(data)
    # first stage is fitted on untreated rows: drop their singletons, then keep only the treated
    # rows whose counterfactual x'b + FE is estimable from the untreated design (rank test)
    untreated = data[data[spec.treatment] == 0]
    untreated = pnl.estimation_sample(untreated, [spec.outcome, *covs], fe, (), spec.fixef_rm)
    treated = data[data[spec.treatment] == 1]
    ok, ident = identified_rows(untreated, treated, covs, fe)
    n_unidentified = int((~ok).sum())
    n_level_check = int((~ident["levels_present"]).sum())
    sample = pd.concat([untreated, treated.loc[ok]]).sort_index(kind="stable")
    sample = sample.assign(**{spec.treatment: sample[spec.treatment].astype(int)})
    first = f"~ {' + '.join(covs) if covs else '0'} | {' + '.join(fe)}"
    with warnings.catch_warnings(record=True) as caught, _did2s_patched(spec, covs, fe, ident["tol"]):
        warnings.simplefilter("always")
        fit = pf.did2s(sample, yname=spec.outcome, first_stage=first, second_stage=f"~ {spec.treatment}", treatment=spec.treatment, cluster=cl)
    msgs = relevant_warnings(caught)
    tidy = fit.tidy()
    row = tidy.loc[[i for i in tidy.index if spec.treatment in str(i)][0]]
    G = int(np.min(np.atleast_1d(fit._G)))
    term = TermEstimate(
        "att",
        float(row["Estimate"]),
        float(row["Std. Error"]),
        float(row["t value"]),
        float(row["Pr(>|t|)"]),
        float(row["2.5%"]),
        float(row["97.5%"]),
    )
    diag: dict[str, Any] = {
        "first_stage": f"{spec.outcome} {first} (untreated observations only)",
        "second_stage": f"residualised {spec.outcome} ~ {spec.treatment}",
        "treated_obs_dropped_unidentified": n_unidentified,
        "treated_obs_dropped_fe_level_absent": n_level_check,
        "identification": "a treated row is kept when its design row (covariates + FE dummies) lies in the row "
        "space of the untreated first-stage design (rank test, null space of Z'Z, "
        f"rel. tol {ident['tol']:g}); others have no estimable Y(0) and are dropped "
        f"({n_unidentified}, of which {n_level_check} have an FE level absent among untreated rows)",
        "untreated_design_rank_deficiency": ident["null_dim"],
        "untreated_obs": len(untreated),
        "treated_obs": int(ok.sum()),
        "n_clusters": G,
        "vcov": "Gardner (2021) GMM-corrected, clustered; the untreated first-stage Gram matrix solved with a "
        "generalized inverse (its null space's columns left out), as it is singular with more than one fixed effect",
        "demeaner": f"{spec.demeaner} (tol {spec.fixef_tol}) in both stages",
    }
    if msgs:
        diag["warnings"] = msgs
    return SpecResult(
        spec_id=spec.id,
        terms=[term],
        nobs=len(sample),
        adj_r2=None,
        fixed_effects=fe_desc(spec, ctx) + " (first stage)",
        vcov=spec.vcov.describe(),
        sample=sample_description(spec, n_complete, len(sample)),
        main_term="att",
        diagnostics=diag,
    )
