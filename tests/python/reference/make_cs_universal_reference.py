"""Frozen reference for the universal base period of the doubly robust Callaway–Sant'Anna estimator
(issue 14 item 1; keytech.estimation.did.cs_dr, ``base_period="universal"``).

Run in a throwaway environment OUTSIDE the project (moderndid is never a project dependency;
the tests only read the CSV this writes):

    python3.11 -m venv /tmp/csref && /tmp/csref/bin/pip install moderndid==0.2.0
    /tmp/csref/bin/python tests/python/reference/make_cs_universal_reference.py

(moderndid 0.2.0 ran here with numpy 2.4 — see the ``versions`` rows.)

Writes ``cs_dr_universal_reference.csv``: ``moderndid``'s ``att_gt`` (its port of R
``did::att_gt``; ``est_method="dr"``, ``xformla="~lpop"``, ``base_period="universal"``, analytic
SEs) on ``mpdta.csv`` (the same public panel the varying-base reference uses), never-treated and
not-yet-treated controls:

* ``group_time`` rows: every ATT(g, t) and its SE (the reference cell t = g - 1 has ATT 0, SE NaN);
* ``simple`` / ``dynamic_overall`` / ``dynamic`` rows: ``aggte`` aggregations with their SEs;
* ``dynamic_vcov`` rows (``e``, ``e2``, ``att`` = the covariance): the unclustered covariance of the
  event-time estimates, IF' IF / n^2 from ``aggte``'s event-time influence functions
  (``influence_func``, n x E; its diagonal is checked against ``se_by_event`` squared here).
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def main() -> None:
    import polars as pl
    from moderndid.did.aggte import aggte
    from moderndid.did.att_gt import att_gt

    d = pl.from_pandas(pd.read_csv(HERE / "mpdta.csv"))
    rows = []
    for control in ("nevertreated", "notyettreated"):
        r = att_gt(d, yname="lemp", tname="year", idname="countyreal", gname="first.treat", xformla="~lpop",
                   est_method="dr", boot=False, cband=False, control_group=control, base_period="universal")
        for g, t, a, s in zip(r.groups, r.times, r.att_gt, r.se_gt):
            rows.append({"control_group": control, "aggregation": "group_time", "g": g, "t": t, "e": t - g, "att": a, "se": s})
        simple = aggte(r, type="simple", boot=False, cband=False)
        rows.append({"control_group": control, "aggregation": "simple", "att": simple.overall_att, "se": simple.overall_se})
        dyn = aggte(r, type="dynamic", boot=False, cband=False)
        rows.append({"control_group": control, "aggregation": "dynamic_overall", "att": dyn.overall_att, "se": dyn.overall_se})
        for e, a, s in zip(dyn.event_times, dyn.att_by_event, dyn.se_by_event):
            rows.append({"control_group": control, "aggregation": "dynamic", "e": e, "att": a, "se": s})
        psi = np.asarray(dyn.influence_func, dtype=float)
        n = psi.shape[0]
        V = psi.T @ psi / n**2
        se = np.asarray(dyn.se_by_event, dtype=float)
        ok = np.isfinite(se)
        assert np.allclose(np.sqrt(np.diag(V))[ok], se[ok], rtol=1e-8), "IF covariance diagonal != se_by_event^2"
        for i, e in enumerate(dyn.event_times):
            for j, e2 in enumerate(dyn.event_times):
                rows.append({"control_group": control, "aggregation": "dynamic_vcov", "e": e, "e2": e2, "att": V[i, j]})
    out = pd.DataFrame(rows)
    vers = [{"control_group": "", "aggregation": "version", "package": p, "package_version": version(p)}
            for p in ("moderndid", "numpy", "pandas", "polars")]
    vers.append({"control_group": "", "aggregation": "version", "package": "python", "package_version": sys.version.split()[0]})
    out = pd.concat([out, pd.DataFrame(vers)], ignore_index=True)
    out.to_csv(HERE / "cs_dr_universal_reference.csv", index=False, float_format="%.17g")
    print(out.to_string())


if __name__ == "__main__":
    main()
