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
from keytech.estimation.did.common import identified_rows
from keytech.estimation.orchestration.registry import Spec


@contextmanager
def _did2s_demeaner(spec: Spec):
    """Make pyfixest.did2s fit its stages with the spec's demeaner.

    ``pf.did2s`` (0.60) takes no demeaner argument and its first stage uses pyfixest's default
    alternating projections, which did not converge within 10,000 iterations on the column (5) FE
    of the paper-scale synthetic warehouse. For the duration of the call, the ``feols`` that the
    did2s module calls gets the spec's demeaner (LSMR ``within``) as a default; the GMM variance
    (sparse solves, no demeaning) is unchanged.
    """
    import importlib

    # (``import pyfixest.did.did2s as m`` would give the function that pyfixest.did re-exports)
    did2s_module = importlib.import_module("pyfixest.did.did2s")

    original = did2s_module.feols
    did2s_module.feols = functools.partial(original, demeaner=demeaner(spec))
    try:
        yield
    finally:
        did2s_module.feols = original


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
    with warnings.catch_warnings(record=True) as caught, _did2s_demeaner(spec):
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
        "vcov": "Gardner (2021) GMM-corrected, clustered",
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
