"""Estimation layer: the spec registry (``keytech/specs.yml``) run on ``marts.rpt_analysis_panel``.

Public entry points (used by the CLI):

* :func:`run_estimation` — gate on the latest data checks, estimate, store in ``results.*``,
  render tables and figures; returns the run id.
* :func:`list_specs` — (id, description) for ``keytech estimate --list``.
* :func:`render_tables` — rebuild ``output/tables`` and ``output/figures`` from a stored run.
* :func:`table3_vs_paper` — text rendering of Table 3 next to the paper's numbers.

Nothing runs at import time; heavy libraries (pyfixest, matplotlib) are imported lazily.
"""

from keytech.estimation.gate import ChecksNotPassed
from keytech.estimation.registry import RegistryError, load_registry
from keytech.estimation.report import SYNTHETIC_NOTE, render_tables, table3_vs_paper
from keytech.estimation.runner import list_specs, run_estimation

__all__ = [
    "ChecksNotPassed",
    "RegistryError",
    "SYNTHETIC_NOTE",
    "list_specs",
    "load_registry",
    "render_tables",
    "run_estimation",
    "table3_vs_paper",
]
