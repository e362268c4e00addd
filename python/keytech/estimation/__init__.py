"""Estimation layer: the spec registry (``keytech/specs.yml``) run on the marts.

Public entry points (used by the CLI):

* :func:`run_estimation` — gate on the latest data checks, estimate, store in ``results.*``
  (and, given ``render=keytech.tables.render_tables``, write tables and figures); returns the run id.
* :func:`list_specs` — (id, description) for ``keytech estimate --list``.
* :func:`load_registry` — the parsed ``specs.yml``.

Layout (docs/architecture.md): ``core/`` (results, panel and sample preparation, fitting,
demeaning, small-sample corrections), one module per estimator family (``linear``, ``count``,
``iv``, ``ife``, ``psm``, ``spillover``, ``mechanisms``), ``did/`` (one file per staggered-DiD
estimator), ``inference/`` (placebo, permutation, wild bootstrap, multiple testing), ``dispatch``
(estimator name → family function, ``run_spec``), and ``orchestration/`` (``registry``, ``gate``,
``runner``, ``store``). Tables and figures are :mod:`keytech.tables`.

Nothing runs at import time; heavy libraries (pyfixest, scipy.stats, matplotlib) are imported
where they are used.
"""

from keytech.estimation.orchestration.gate import ChecksNotPassed
from keytech.estimation.orchestration.registry import RegistryError, load_registry
from keytech.estimation.orchestration.runner import list_specs, run_estimation

__all__ = [
    "ChecksNotPassed",
    "RegistryError",
    "list_specs",
    "load_registry",
    "run_estimation",
]
