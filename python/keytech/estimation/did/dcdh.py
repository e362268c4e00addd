""":func:`dcdh_weights` — de Chaisemartin & D'Haultfoeuille (2020, AER) weights of a two-way FE
  coefficient: by Frisch–Waugh–Lovell ``beta = sum_it e_it y_it / sum_{D=1} e_it`` where ``e`` is the
  residual of the treatment on the fixed effects (and controls); under parallel trends
  ``beta = sum_{D=1} w_it TE_it`` with ``w_it = e_it / sum_{D=1} e``, and negative ``w`` mean that
  some treated cells enter with negative weight.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.core.fitting import RunContext, fit_model, fit_result, terms_from_fit
from keytech.estimation.core.panel import complete_cases, prepare_spec_data
from keytech.estimation.core.results import SpecResult, TermEstimate
from keytech.estimation.orchestration.registry import Spec


def dcdh_weights(
    df: pd.DataFrame,
    outcome: str,
    treatment: str,
    fixed_effects: list[str] | tuple[str, ...],
    controls: list[str] | tuple[str, ...] = (),
    tol: float = 1e-10,
) -> dict[str, Any]:
    """Weights attached to the treated observations by the TWFE coefficient of ``treatment``.

    ``df`` must already be the estimation sample (complete cases, singletons removed). Returns the
    FWL coefficient, the weights of treated rows (summing to one) and summary statistics.
    """
    from keytech.estimation.core.demeaning import demean

    y = df[outcome].to_numpy(float)
    d = df[treatment].to_numpy(float)
    C = df[list(controls)].to_numpy(float) if controls else np.zeros((len(df), 0))
    M = np.column_stack([y, d, C])
    M, _ = demean(M, pnl.factorize_columns(df, fixed_effects), None, tol=tol)
    yt, dt, Ct = M[:, 0], M[:, 1], M[:, 2:]
    if Ct.shape[1]:
        dt = dt - Ct @ np.linalg.lstsq(Ct, dt, rcond=None)[0]
    treated = d == 1
    eps = dt
    beta = float(eps @ yt / (eps @ d))
    w = eps[treated] / eps[treated].sum()
    n1 = int(treated.sum())
    W = w * n1  # normalised to mean one
    sigma_w = float(np.sqrt(np.mean((W - 1.0) ** 2)))
    neg = w < 0
    return {
        "beta_fwl": beta,
        "weights": w,
        "treated_index": df.index[treated],
        "n_treated": n1,
        "n_negative": int(neg.sum()),
        "share_negative": float(neg.mean()) if n1 else float("nan"),
        "sum_negative": float(w[neg].sum()),
        "sum_positive": float(w[~neg].sum()),
        "sigma_w": sigma_w,
        "sigma_fe": float(abs(beta) / sigma_w) if sigma_w > 0 else float("inf"),
    }


def fit_dcdh(spec: Spec, df: pd.DataFrame, ctx: RunContext) -> SpecResult:
    data = prepare_spec_data(spec, df)
    rhs = list(spec.regressors)
    fit, msgs, _ = fit_model("ols", spec, data, rhs)
    cl = spec.vcov.cluster if spec.vcov.kind == "cluster" else ()
    sample = pnl.estimation_sample(data, [spec.outcome, *rhs], spec.fixed_effects, cl, spec.fixef_rm)
    kept_controls = [c for c in [*spec.extra_regressors, *spec.controls] if c in fit._coefnames]
    res = dcdh_weights(sample, spec.outcome, spec.treatment, spec.fixed_effects, kept_controls, tol=spec.fixef_tol)
    b_fit = float(fit.coef()[spec.treatment])
    # weights by cohort x relative time (sum of weights, number of negative cells)
    tr = sample.loc[res["treated_index"], ["first_treated_year", "rel_time"]].assign(w=res["weights"])
    by_cell = (
        tr.groupby(["first_treated_year", "rel_time"])["w"]
        .agg(["sum", "count", lambda s: int((s < 0).sum())])
        .reset_index()
        .rename(columns={"sum": "weight", "count": "n", "<lambda_0>": "n_negative"})
    )
    diag = {
        k: v for k, v in res.items() if k not in ("weights", "treated_index")
    } | {
        "beta_twfe_pyfixest": b_fit,
        "fwl_check_abs_diff": abs(res["beta_fwl"] - b_fit),
        "weights_by_cohort_period": by_cell.to_dict(orient="records"),
        "note": "weights of the column (5) TWFE coefficient on treated obs; sigma_fe = |beta|/sd(w) "
        "is the smallest SD of treatment effects compatible with a true ATT of zero",
    }
    if msgs:
        diag["warnings"] = msgs
    terms = terms_from_fit(fit, names=[spec.treatment])
    terms += [
        TermEstimate("dcdh:share_negative_weights", res["share_negative"]),
        TermEstimate("dcdh:sum_negative_weights", res["sum_negative"]),
        TermEstimate("dcdh:sigma_fe", res["sigma_fe"]),
    ]
    return fit_result(spec, ctx, fit, terms, complete_cases(spec, data, rhs), diag)
