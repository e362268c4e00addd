"""Frozen values of tests/python/test_permutation_identification.py (FROZEN_4A4D4B9): the
coefficients FEOLSCoefficient gave before the identification rule (h17q), on masks where nothing is
dropped, printed from the module at commit 4a4d4b9 — and checked bit for bit against the current code.

    git show 4a4d4b9:python/keytech/estimation/inference/permutation.py > /tmp/old_permutation.py
    .venv/bin/python tests/tools/freeze_permutation_identified.py /tmp/old_permutation.py
"""
import sys, importlib.util, numpy as np
sys.path.insert(0, "tests/python")
from test_mechanisms import _fe_panel, FE3, RHS
from keytech.estimation.inference.permutation import fe_ols_coefficient
spec = importlib.util.spec_from_file_location("oldp", sys.argv[1] if len(sys.argv) > 1 else "old_permutation.py"); oldp = importlib.util.module_from_spec(spec); spec.loader.exec_module(oldp)
data = _fe_panel()
for fes in (FE3, ["stkcd", "year"], ["stkcd", "ind_year"], []):
    for y in ("y", ["y", "y2"]):
        d = data.assign(y2=data["y"] * 0.5 + data["x2"])
        old = oldp.fe_ols_coefficient(y, RHS, fes).prepare(d)
        new = fe_ols_coefficient(y, RHS, fes).prepare(d)
        rng = np.random.default_rng(17)
        vals = []
        for share in (0.35, 0.5, 0.7, 1.0):
            m = rng.random(len(d)) < share
            o, n = np.atleast_1d(old(m)), np.atleast_1d(new(m))
            assert np.array_equal(o, n), (fes, y, share, o, n)
            vals.append([repr(float(v)) for v in o])
        print(fes, y, vals)
