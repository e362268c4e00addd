"""What a process that fits no model loads (issue 17).

Importing the estimation package, its scheduler, the tables and the report must leave
``scipy.stats``, pyfixest and matplotlib unloaded: the parent process of ``keytech estimate
--jobs N`` (whose specs run in worker processes), ``keytech report`` and the CLI would otherwise pay
0.5-1.5 s for each before doing anything. Checked in a fresh interpreter, since this test process
has them loaded already. (That the parent of a ``--jobs 2`` run stays without them to the end is
checked in test_estimation_parallel.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

HEAVY = ("scipy.stats", "pyfixest", "matplotlib")

PROBE = """
import json, sys
import keytech.cli
import keytech.estimation
import keytech.estimation.orchestration.runner
import keytech.estimation.orchestration.schedule
import keytech.estimation.orchestration.store
import keytech.estimation.core.results
import keytech.estimation.core.fitting
import keytech.tables
import keytech.report
print(json.dumps({"loaded": [m for m in %r if m in sys.modules],
                  "modules": len(sys.modules)}))
""" % (HEAVY,)


def test_importing_estimation_tables_and_report_loads_no_heavy_library():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["loaded"] == []
    assert probe["modules"] > 200  # the probe did import the packages (pandas, duckdb, keytech)


def test_the_stored_pyfixest_version_is_the_one_pyfixest_reports():
    import pyfixest

    from keytech.estimation.orchestration.runner import pyfixest_version

    assert pyfixest_version() == pyfixest.__version__
    assert pyfixest_version().count(".") >= 1  # a version number, not "unknown"


def test_p_values_still_come_from_scipy_stats():
    """The functions that now import scipy.stats where they run give the same numbers."""
    from scipy import stats

    from keytech.estimation.core.fitting import joint_wald
    from keytech.estimation.core.results import term_from_normal

    normal = term_from_normal("x", 1.0, 0.5)
    assert normal.p_value == 2 * stats.norm.sf(2.0)
    assert normal.ci_low == 1.0 - stats.norm.ppf(0.975) * 0.5
    t = term_from_normal("x", 1.0, 0.5, df=10)
    assert t.p_value == 2 * stats.t.sf(2.0, 10)
    wald = joint_wald(np.array([1.0, 2.0]), np.eye(2), 30)
    assert wald["p_chi2"] == float(stats.chi2.sf(5.0, 2))
    assert wald["p_F"] == float(stats.f.sf(2.5, 2, 30))
