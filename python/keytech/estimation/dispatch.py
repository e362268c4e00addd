"""The estimator registry: ``estimator:`` names of ``specs.yml`` mapped to the function of the
family module that fits them (imported when first run), and :func:`run_spec`.

It sits beside the families, not in ``orchestration/``: it is how anything runs one spec — the
runner, the multiple-testing family (which re-runs specs) and the tests — and it imports only the
core and the spec model (``orchestration.registry``), so no estimator depends on the run machinery
(gate, runner, store)."""

from __future__ import annotations

from typing import Callable

import pandas as pd

from keytech.estimation.core.fitting import RunContext
from keytech.estimation.core.results import SpecResult
from keytech.estimation.orchestration.registry import Spec


def _lazy(module: str, name: str) -> Callable:
    """An estimator implemented in ``keytech.estimation.<module>`` (imported when first run: the
    registry names families by string, so it imports none of them and sits in no import circle)."""

    def run(spec: Spec, df: pd.DataFrame, ctx: RunContext):
        import importlib

        fn = getattr(importlib.import_module(f"keytech.estimation.{module}"), name)
        return fn(spec, df, ctx)

    return run


ESTIMATORS: dict[str, Callable[[Spec, pd.DataFrame, RunContext], SpecResult]] = {
    "ols": _lazy("linear", "fit_ols"),
    "poisson": _lazy("count", "fit_poisson"),
    "negbin": _lazy("count", "fit_negbin"),
    "event_study": _lazy("linear", "fit_event_study"),
    "staggered_dcdh": _lazy("did.dcdh", "fit_dcdh"),
    "staggered_bacon": _lazy("did.bacon", "fit_bacon"),
    "staggered_sunab": _lazy("did.sunab", "fit_sunab"),
    "staggered_did2s": _lazy("did.did2s", "fit_did2s"),
    "staggered_cs": _lazy("did.cs", "fit_cs"),
    "placebo": _lazy("inference.placebo", "fit_placebo"),
    "ols_split": _lazy("mechanisms", "fit_split"),  # median splits with a permutation p-value (issue 5)
    # Table 4 and spillover checks (issue 4)
    "ife": _lazy("ife", "fit_ife"),
    "iv": _lazy("iv", "fit_iv"),
    "psm": _lazy("psm", "fit_psm"),
    "ols_ext": _lazy("spillover", "fit_ols_ext"),
    "spill_split": _lazy("spillover", "fit_spill_split"),
    "spill_bands": _lazy("spillover", "fit_spill_bands"),
    "wild_bootstrap": _lazy("inference.wild_bootstrap", "fit_wild_bootstrap"),  # issue 14
    "multiple_testing": _lazy("inference.multiple_testing", "fit_multiple_testing"),  # issue 14
    "staggered_cs_dr": _lazy("did.cs_dr", "fit_cs_dr"),  # issue 14
    "etwfe_poisson": _lazy("did.etwfe", "fit_etwfe_poisson"),  # issue 14
    "staggered_imputation": _lazy("did.imputation", "fit_imputation"),  # issue 14
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
