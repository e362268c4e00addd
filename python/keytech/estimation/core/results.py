"""Result containers shared by every estimator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


# The one seed of a run (keytech estimate --seed): placebo draws, the Callaway–Sant'Anna cluster
# bootstrap and the between-group permutation tests draw from numpy.random.default_rng(seed) (PSM
# shares ties and draws nothing); each stochastic spec stores the seed it used in its diagnostics.
DEFAULT_SEED = 20240601

# The term stored for a spec that produced no estimate: an error of the code or the input, or a
# sample on which the model is not estimable (NotEstimable). Every reader of results.estimates
# treats these rows as "no number".
ERROR_TERM = "(error)"
NOT_ESTIMABLE_TERM = "(not estimable)"
NO_ESTIMATE_TERMS = (ERROR_TERM, NOT_ESTIMABLE_TERM)


class NotEstimable(ValueError):
    """The spec's sample cannot identify the model: after complete cases and singleton removal
    it has no more observations than parameters (regressors + fixed-effect levels), so there are
    no residual degrees of freedom for a variance. A property of the data, not a failure of the
    code: `keytech estimate` records it (term ``(not estimable)``), names it and still exits 0."""


def add_common_diagnostics(diag: dict[str, Any], *, n_clusters: Any = None, warnings: list[str] | None = None,
                           dropped_collinear: list[str] | None = None, truth: dict[str, float] | None = None) -> dict[str, Any]:
    """Fill the diagnostics every estimator reports when it has them: the number of clusters,
    library warnings, regressors dropped as collinear and, on synthetic data, the planted key-tech
    effect (``planted_beta_key``). Keys without a value are left out. Returns ``diag``."""
    if n_clusters is not None:
        diag["n_clusters"] = n_clusters
    if warnings:
        diag["warnings"] = warnings
    if dropped_collinear:
        diag["dropped_collinear"] = dropped_collinear
    if truth and "beta_key" in truth:
        diag["planted_beta_key"] = truth["beta_key"]
    return diag


@dataclass
class TermEstimate:
    term: str
    estimate: float
    std_error: float | None = None
    t_stat: float | None = None
    p_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    diagnostics: dict[str, Any] | None = None


@dataclass
class SpecResult:
    spec_id: str
    terms: list[TermEstimate]
    nobs: int | None
    adj_r2: float | None
    fixed_effects: str
    vcov: str
    sample: str
    main_term: str
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def term(self, name: str) -> TermEstimate:
        for t in self.terms:
            if t.term == name:
                return t
        raise KeyError(f"{self.spec_id} has no term {name!r}; terms: {[t.term for t in self.terms]}")

    @property
    def main(self) -> TermEstimate:
        return self.term(self.main_term)


def term_from_normal(term: str, estimate: float, se: float, df: float | None = None, level: float = 0.95, **diag) -> TermEstimate:
    """A term with t/p/CI from a t(df) distribution (normal when df is None)."""
    # imported here, not with the module: scipy.stats takes 0.5-1.3 s to import, and the processes
    # that read results without computing p-values (the parent of `keytech estimate --jobs N`,
    # `keytech report`, the CLI) need not pay it
    from scipy import stats

    if se is None or not np.isfinite(se) or se <= 0:
        return TermEstimate(term, float(estimate), None, None, None, None, None, diag or None)
    t = estimate / se
    if df is None or not np.isfinite(df):
        p = 2 * stats.norm.sf(abs(t))
        q = stats.norm.ppf(0.5 + level / 2)
    else:
        p = 2 * stats.t.sf(abs(t), df)
        q = stats.t.ppf(0.5 + level / 2, df)
    return TermEstimate(term, float(estimate), float(se), float(t), float(p), float(estimate - q * se), float(estimate + q * se), diag or None)


def clean_float(x: Any) -> float | None:
    """float or None for NaN/inf/None (for JSON and SQL)."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def jsonable(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays and NaN to JSON-safe values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return clean_float(obj)
    return obj


def stars(p: float | None) -> str:
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.01 else "**" if p < 0.05 else "*" if p < 0.10 else ""
