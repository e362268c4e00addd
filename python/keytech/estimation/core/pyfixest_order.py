"""Make pyfixest's fixed-effect order independent of Python's string hashing.

pyfixest 0.60 builds the fixed-effect part of a model from ``set(fixed_effects.split("+"))``
(``pyfixest.estimation.formula.utils._encode_fixed_effects``), so the order in which the fixed
effects reach the demeaner depends on ``PYTHONHASHSEED``. The demeaner converges to a tolerance,
not to machine precision, so a different order gives numbers that differ below that tolerance —
with an iterative estimator on top (Poisson IRLS, the did2s two-stage) up to ~2e-6 relative from
one run of unchanged code to the next. R's fixest keeps the fixed effects in the order written.

:func:`load_pyfixest` imports pyfixest and replaces that encoder (where
``model_matrix`` looks it up) with one that keeps the written order, so a run is reproducible to
the last digit. The replacement produces the same encoded columns and formula as pyfixest's,
only in a fixed order. Every module of ``keytech`` imports pyfixest through this function (the
bench's fit counter aside, which only wraps ``feols``/``fepois``); an AST walk in
``tests/python/test_pyfixest_order.py`` fails on a bare ``import pyfixest``.
"""

from __future__ import annotations

import re
from types import ModuleType

import pandas as pd


def encode_fixed_effects_in_written_order(fixed_effects: str, data: pd.DataFrame) -> str:
    """pyfixest's ``_encode_fixed_effects`` with the fixed effects in the order written (duplicates once)."""
    fes = list(dict.fromkeys(re.split(r"\s*\+\s*", fixed_effects)))
    for fixed_effect in fes:
        if "^" not in fixed_effect:
            continue
        variables = fixed_effect.split("^")
        data[fixed_effect.replace("^", "_")] = (
            data[variables[0]]
            .astype(pd.StringDtype())
            .str.cat(data[variables[1:]].astype(pd.StringDtype()), sep="^", na_rep=None)
        )
    encoded = (f"__fixed_effect__({fe.replace('^', '_')})" for fe in fes)
    return f"{' + '.join(encoded)} - 1"


def load_pyfixest() -> ModuleType:
    """``import pyfixest`` with the fixed-effect order made deterministic (idempotent)."""
    import pyfixest
    from pyfixest.estimation.formula import model_matrix

    if not hasattr(model_matrix, "_encode_fixed_effects"):
        raise RuntimeError(
            "pyfixest changed: pyfixest.estimation.formula.model_matrix._encode_fixed_effects is gone; "
            "check keytech/estimation/core/pyfixest_order.py against the installed version "
            f"({pyfixest.__version__}; requirements.lock pins the tested one)")
    model_matrix._encode_fixed_effects = encode_fixed_effects_in_written_order  # idempotent
    return pyfixest
