"""Frozen reference values from Python reference implementations (issue 14, items 1 and 4).

Run in a throwaway environment OUTSIDE the project (these packages are never project
dependencies; `make test` only reads the CSVs this writes):

    python3 -m venv /tmp/kt-ref && /tmp/kt-ref/bin/pip install wildboottest==0.3.2 moderndid==0.2.0 pandas
    /tmp/kt-ref/bin/python tests/python/reference/make_python_reference.py

Writes (next to this script):
* ``wildboottest_reference.csv`` — WCR11 p-values and t-statistics of ``wildboottest.WildboottestCL``
  (the package pyfixest's ``Feols.wildboottest`` calls) on ``tiny_panel.csv`` with the fixed effects
  as explicit dummy columns, for Rademacher and Webb weights, several seeds and null values r.
* ``mpdta.csv`` (public: the county teen-employment panel of Callaway & Sant'Anna 2021, shipped with
  R's ``did`` and with ``moderndid``) and ``cs_dr_reference.csv`` — ``moderndid``'s ``att_gt`` /
  ``aggte`` (its port of R ``did``) doubly robust ATT(g,t), simple and event-time aggregations with
  analytic SEs, never-treated and not-yet-treated controls.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def dummies(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.get_dummies(df[col], drop_first=True, dtype=float).to_numpy()


def independent_columns(X: np.ndarray) -> np.ndarray:
    """Drop columns (left to right) that are linear combinations of earlier ones (overlapping
    dummy sets, e.g. firm and industry x year cells); the treatment and controls come first."""
    keep: list[int] = []
    for j in range(X.shape[1]):
        if np.linalg.matrix_rank(X[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    return X[:, keep]


def wildboottest_cases() -> pd.DataFrame:
    from wildboottest.wildboottest import WildboottestCL

    df = pd.read_csv(HERE / "tiny_panel.csv", dtype={"stkcd": str, "city_code": str, "industry_code": str})
    df["ind_year"] = df["industry_code"] + "_" + df["year"].astype(str)
    designs = {
        # firm FE nested in city clusters, year FE not nested
        "firm_year": ["stkcd", "year"],
        # industry x year cells cut across the city clusters
        "firm_indyear": ["stkcd", "ind_year"],
    }
    rows = []
    for design, fes in designs.items():
        X = np.column_stack([df["policy"].to_numpy(float), df[["x1", "x2"]].to_numpy(float),
                             np.ones(len(df)), *[dummies(df, f) for f in fes]])
        X = independent_columns(X)
        R = np.zeros(X.shape[1])
        R[0] = 1.0
        cluster = np.unique(df["city_code"].to_numpy(), return_inverse=True)[1].astype(np.int64)  # sorted codes
        for weights, seed, B, r in [
            ("rademacher", 1, 999, 0.0), ("rademacher", 2, 999, 0.0), ("webb", 1, 999, 0.0),
            ("webb", 3, 1999, 0.0), ("rademacher", 1, 999, 0.3), ("webb", 1, 999, -0.2),
            ("rademacher", 7, 9999, 0.0),  # 2^12 = 4096 < 9999: full enumeration
        ]:
            y = df["y"].to_numpy(float) - r * X[:, 0]  # H0 b = r  <=>  b = 0 in y - r x
            wb = WildboottestCL(X=X, Y=y, cluster=cluster, R=R, B=B, seed=seed, parallel=False)
            wb.get_scores(bootstrap_type="11", impose_null=True)
            wb.get_weights(weights_type=weights)
            wb.get_numer()
            wb.get_denom()
            wb.get_tboot()
            wb.get_vcov()
            wb.get_tstat()
            wb.get_pvalue(pval_type="two-tailed")
            rows.append({"design": design, "weights": weights, "seed": seed, "draws": B, "r": r,
                         "effective_draws": int(wb.B), "p_value": float(wb.pvalue),
                         "t_stat": float(np.ravel(wb.t_stat)[0])})
    return pd.DataFrame(rows)


def cs_dr_cases() -> pd.DataFrame:
    """moderndid's port of R did::att_gt / aggte (est_method "dr", xformla ~lpop, varying base,
    analytic SEs) on mpdta (also frozen here as mpdta.csv)."""
    from moderndid.core.data import load_mpdta
    from moderndid.did.aggte import aggte
    from moderndid.did.att_gt import att_gt

    d = load_mpdta()
    d.to_pandas().to_csv(HERE / "mpdta.csv", index=False, float_format="%.17g")
    rows = []
    for control in ("nevertreated", "notyettreated"):
        r = att_gt(d, yname="lemp", tname="year", idname="countyreal", gname="first.treat", xformla="~lpop",
                   est_method="dr", boot=False, cband=False, control_group=control, base_period="varying")
        for g, t, a, s in zip(r.groups, r.times, r.att_gt, r.se_gt):
            rows.append({"control_group": control, "aggregation": "group_time", "g": g, "t": t, "e": t - g, "att": a, "se": s})
        simple = aggte(r, type="simple", boot=False, cband=False)
        rows.append({"control_group": control, "aggregation": "simple", "att": simple.overall_att, "se": simple.overall_se})
        dyn = aggte(r, type="dynamic", boot=False, cband=False)
        rows.append({"control_group": control, "aggregation": "dynamic_overall", "att": dyn.overall_att, "se": dyn.overall_se})
        for e, a, s in zip(dyn.event_times, dyn.att_by_event, dyn.se_by_event):
            rows.append({"control_group": control, "aggregation": "dynamic", "e": e, "att": a, "se": s})
    return pd.DataFrame(rows)


def main() -> None:
    cs = cs_dr_cases()
    cs.to_csv(HERE / "cs_dr_reference.csv", index=False, float_format="%.17g")
    print(cs)
    out = wildboottest_cases()
    out.to_csv(HERE / "wildboottest_reference.csv", index=False, float_format="%.17g")
    print(out)
    with open(HERE / "PY_VERSIONS.txt", "w") as fh:
        fh.write(f"python {sys.version.split()[0]}\n")
        for pkg in ("wildboottest", "moderndid", "numpy", "pandas"):
            fh.write(f"{pkg} {version(pkg)}\n")


if __name__ == "__main__":
    main()
