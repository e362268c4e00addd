"""Freeze reference values for keytech.estimation.inference.honest_did (Rambachan & Roth 2023 sensitivity).

Run OUTSIDE the project, in a throwaway virtualenv (none of these packages is a project dependency):

    python3.11 -m venv /tmp/hdref && /tmp/hdref/bin/pip install honestdid==0.1.1 moderndid==0.2.0 cvxpy rdata "numpy<2.3"
    (honestdid 0.1.1 fails on numpy 2.4: it converts 1x1 arrays with float())
    /tmp/hdref/bin/python tests/python/reference/make_honest_did_reference.py [path/to/BCdata_EventStudy.rda]

References (why two):
- Delta^RM (relative magnitudes), method C-LF: ``honestdid`` 0.1.1, a line-by-line Python port of the
  R package HonestDiD (``createSensitivityResults_relativeMagnitudes``: grid of 1000 points on
  [-20 sd, 20 sd], union over s = -(T_pre-1)..0 and both signs, least-favourable critical value from
  1000 draws of ``numpy.random.RandomState(0)``). ``moderndid`` 0.2.0 is not used for Delta^RM: it
  loops s over -(T_pre-1)..-1 with 0-based positions, so it never lets the earliest pre-period
  difference be the largest one (R and honestdid do).
- Delta^SD (smoothness), method FLCI (the R default without shape restrictions): ``moderndid``
  0.2.0 ``compute_flci`` (cvxpy/Clarabel, folded-normal quantile solved exactly). ``honestdid``'s
  FLCI is stored too (``flci_honestdid``) but not compared: like R it takes the folded-normal
  quantile from 10^6 simulated draws.

Inputs: (a) the R package's published example ``BCdata_EventStudy`` (Benzarti & Carloni 2019; 4 pre,
4 post periods; read from the package's .rda with ``rdata``); (b) a small fixed event study of our
own (3 pre, 2 post). Targets: the first post period (l = e1) and the average post effect.
Output: honest_did_reference.json beside this script (inputs included).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

HERE = Path(__file__).resolve().parent


def bc_input(path: str) -> dict:
    import rdata

    d = rdata.read_rda(path)["BCdata_EventStudy"]
    return {
        "name": "BCdata_EventStudy",
        "source": "HonestDiD R package, data/BCdata_EventStudy.rda (Benzarti & Carloni 2019 event study, "
        "the worked example of Rambachan & Roth 2023)",
        "betahat": np.asarray(d["betahat"], dtype=float).tolist(),
        "sigma": np.asarray(d["sigma"], dtype=float).tolist(),
        "num_pre": 4,
        "num_post": 4,
        "m_vec": [0.0, 0.01, 0.02, 0.03, 0.05],
        "mbar_vec": [0.0, 0.5, 1.0, 2.0],
    }


def own_input() -> dict:
    sd = np.array([0.06, 0.05, 0.04, 0.05, 0.07])
    corr = np.array(
        [
            [1.0, 0.3, 0.2, 0.1, 0.05],
            [0.3, 1.0, 0.3, 0.15, 0.1],
            [0.2, 0.3, 1.0, 0.3, 0.2],
            [0.1, 0.15, 0.3, 1.0, 0.4],
            [0.05, 0.1, 0.2, 0.4, 1.0],
        ]
    )
    sigma = corr * np.outer(sd, sd)
    return {
        "name": "own_3pre_2post",
        "source": "fixed by this script (3 pre periods, 2 post periods)",
        "betahat": [0.04, -0.03, 0.02, 0.25, 0.30],
        "sigma": sigma.tolist(),
        "num_pre": 3,
        "num_post": 2,
        "m_vec": [0.0, 0.02, 0.05, 0.1],
        "mbar_vec": [0.0, 0.5, 1.0, 2.0],
    }


def run_case(case: dict) -> dict:
    import honestdid
    from moderndid.didhonest import compute_flci

    b = np.asarray(case["betahat"])
    S = np.asarray(case["sigma"])
    npre, npost = case["num_pre"], case["num_post"]
    out = {}
    for target, l in (("first", np.eye(npost)[0]), ("average", np.full(npost, 1.0 / npost))):
        orig = honestdid.constructOriginalCS(b, S, npre, npost, l_vec=l)
        rows_sd = []
        for m in case["m_vec"]:
            r = compute_flci(b, S, m, npre, npost, post_period_weights=l)
            hd = honestdid.find_optimal_flci(b, S, M=m, numPrePeriods=npre, numPostPeriods=npost, l_vec=l)
            rows_sd.append({"M": m, "lb": float(r.flci[0]), "ub": float(r.flci[1]),
                            "flci_honestdid": [float(x) for x in np.asarray(hd["FLCI"]).ravel()]})
        t0 = time.time()
        rm = honestdid.createSensitivityResults_relativeMagnitudes(
            b, S, npre, npost, Mbarvec=case["mbar_vec"], l_vec=l)
        print(case["name"], target, "RM seconds", round(time.time() - t0, 1), file=sys.stderr)
        rows_rm = [{"Mbar": float(r.Mbar), "lb": float(r.lb), "ub": float(r.ub)} for r in rm.itertuples()]
        out[target] = {
            "l_vec": l.tolist(),
            "original": {"lb": float(orig["lb"].iloc[0]), "ub": float(orig["ub"].iloc[0])},
            "sd_flci": rows_sd,
            "rm_clf": rows_rm,
        }
    return out


def main() -> None:
    import honestdid
    import moderndid

    rda = sys.argv[1] if len(sys.argv) > 1 else "/tmp/hdrda/BC.rda"
    cases = [own_input(), bc_input(rda)]
    res = {
        "made_by": "tests/python/reference/make_honest_did_reference.py",
        "versions": {"honestdid": getattr(honestdid, "__version__", "0.1.1"), "moderndid": moderndid.__version__,
                     "numpy": np.__version__},
        "alpha": 0.05,
        "cases": [],
    }
    for case in cases:
        case = dict(case)
        case["results"] = run_case(case)
        res["cases"].append(case)
        (HERE / "honest_did_reference.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
