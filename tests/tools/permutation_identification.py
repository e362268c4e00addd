"""Draw-by-draw check of the between-group permutation tests against pyfixest (h17q).

For every ``ols_split`` spec carrying ``options.permutation`` in the selected groups (default: the
Table 5 and heterogeneity splits), rebuilds the test's inputs exactly as
:func:`keytech.estimation.mechanisms._joint_permutation_test` does (its call of
``permutation_tests`` is intercepted), redraws the same reshuffles, and for every draw and each
half compares :class:`~keytech.estimation.inference.permutation.FEOLSCoefficient`'s coefficient with
pyfixest ``feols`` on the same rows (same formula and outcomes, ``fixef_rm='singleton'``, default
``collin_tol``, the spec's demeaner, iid vcov: only the point estimate is used). pyfixest's
outcome per half: ``ok``, ``dropped`` (its collinearity rule drops the treatment), ``no obs`` (no
row left after singletons), or ``error:<type>`` (it raises later, e.g. ZeroDivisionError in the
small-sample factor when N = k); all but ``ok`` count as NaN.

Prints per test: draws, halves NaN in ours / in pyfixest / in both (and pyfixest's outcomes),
halves that differ by more than ``--rtol`` relative and by more than 1e-6 × max(1, |b|) (both
finite), and the p-values and quantiles of d* recomputed with pyfixest's half-sample coefficients
in place of ours (NaN draws dropped, as the test does).

    .venv/bin/python tests/tools/permutation_identification.py [--db PATH] [--only table5 het]
        [--draws N] [--rtol 1e-8] [--json OUT] [--module PATH]

``--module``: take ``fe_ols_coefficient`` from another copy of permutation.py (e.g. the code
before h17q: ``git show 4a4d4b9:python/keytech/estimation/inference/permutation.py > old.py``).

Read-only: it reads the marts and writes nothing to the warehouse.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np


def _captured_inputs(only, db_path, draws, module=None):
    """(spec id, inputs of permutation_tests) for each permutation test of the selection."""
    import keytech.estimation.inference.permutation as perm
    from keytech.estimation import load_registry
    from keytech.estimation.core import panel as pnl
    from keytech.estimation.core.fitting import RunContext
    from keytech.estimation.mechanisms import fit_split

    reg = load_registry()
    specs = [s for s in reg.select(only) if s.estimator == "ols_split" and s.options.get("permutation")
             and s.options.get("group") == "high"]
    captured = []
    original = perm.permutation_tests

    def spy(data, labels, coef_fn, draws=500, seed=20240601, permute_by=None, jobs=1):
        captured.append(dict(data=data, labels=labels, coef_fn=coef_fn, draws=draws, seed=seed,
                             permute_by=permute_by))
        return original(data, labels, coef_fn, draws=draws, seed=seed, permute_by=permute_by, jobs=jobs)

    perm.permutation_tests = spy
    original_fe = perm.fe_ols_coefficient
    if module:
        import importlib.util

        spec_ = importlib.util.spec_from_file_location("permutation_alt", module)
        alt = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(alt)
        perm.fe_ols_coefficient = alt.fe_ols_coefficient
    out = []
    try:
        ctx = RunContext(registry=reg, permutation_draws=draws)
        panels = {}
        for spec in specs:
            key = (spec.panel, spec.extra_marts)
            if key not in panels:
                panels[key] = pnl.load_panel(spec.panel, db_path, extra_marts=spec.extra_marts)
            n_before = len(captured)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fit_split(spec, panels[key], ctx)
            if len(captured) > n_before:  # this spec ran the pass (else: computed in a sibling's)
                out.append((spec, captured[-1], res.diagnostics.get("permutation")))
    finally:
        perm.permutation_tests = original
        perm.fe_ols_coefficient = original_fe
    return out


def pyfixest_coefficients(df, outcomes, regressors, fixed_effects, spec) -> tuple[np.ndarray, str]:
    """(pyfixest's coefficient of regressors[0] for each outcome on ``df``, outcome): NaN unless
    the outcome is ``ok`` (see the module docstring)."""
    from keytech.estimation.core.fitting import demeaner, formula
    from keytech.estimation.core.pyfixest_order import load_pyfixest

    pf = load_pyfixest()
    lhs = " + ".join(outcomes)
    fml = formula(lhs, list(regressors), tuple(fixed_effects))
    out = np.full(len(outcomes), np.nan)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits = pf.feols(fml, data=df, vcov="iid", fixef_rm=spec.fixef_rm, demeaner=demeaner(spec))
    except ValueError as exc:
        return out, "no obs" if "no observations" in str(exc) else f"error:{type(exc).__name__}"
    except Exception as exc:
        return out, f"error:{type(exc).__name__}"
    models = fits.all_fitted_models.values() if hasattr(fits, "all_fitted_models") else [fits]
    for fit in models:
        y = fit._depvar
        if y in outcomes and regressors[0] in fit._coefnames:
            out[outcomes.index(y)] = float(fit.coef()[regressors[0]])
    return out, "ok" if np.isfinite(out).all() else "dropped"


def _p_values(d_obs, d_star, exact):
    from keytech.estimation.inference.permutation import _test_result

    return _test_result(d_obs, d_star, exact, 0, None, 0, 0)


def main(argv=None) -> int:
    import keytech.estimation.inference.permutation as perm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default=None, help="warehouse (default: the project's data/warehouse.duckdb)")
    ap.add_argument("--only", nargs="+", default=["table5", "het"])
    ap.add_argument("--draws", type=int, default=None, help="override the registry's draws")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--module", default=None, help="permutation.py to take fe_ols_coefficient from")
    ap.add_argument("--pyfixest-draws", type=int, default=None,
                    help="compare with pyfixest on the first N draws only (paper scale: ~1 s per fit); "
                         "the pyfixest p-values are then left out; 0 = ours only")
    args = ap.parse_args(argv)

    report = []
    for spec, inp, stored in _captured_inputs(args.only, args.db, args.draws, args.module):
        data, labels, coef_fn = inp["data"], np.asarray(inp["labels"], dtype=bool), inp["coef_fn"]
        outcomes = list(coef_fn.outcomes)
        on_rows = coef_fn.prepare(data)
        # the reshuffles permutation_tests drew (same function, same rng)
        unit_draws, unit, exact = perm.reshuffles(data, labels, inp["draws"], inp["seed"], inp["permute_by"])[:3]
        ref_obs = np.full(len(outcomes), np.nan) if args.pyfixest_draws == 0 else pyfixest_coefficients(data[labels], outcomes, coef_fn.regressors, coef_fn.fixed_effects, spec)[0] - \
            pyfixest_coefficients(data[~labels], outcomes, coef_fn.regressors, coef_fn.fixed_effects, spec)[0]
        ours_obs = np.atleast_1d(on_rows(labels) - on_rows(~labels))
        B = len(unit_draws)
        ours = np.empty((B, 2, len(outcomes)))
        ref = np.empty((B, 2, len(outcomes)))
        status = np.empty((B, 2), dtype=object)
        for i, ud in enumerate(unit_draws):
            lab = ud[unit]
            for h, m in enumerate((lab, ~lab)):
                ours[i, h] = np.atleast_1d(on_rows(m))
                if args.pyfixest_draws is not None and i >= args.pyfixest_draws:
                    ref[i, h], status[i, h] = np.nan, "not compared"
                    continue
                ref[i, h], status[i, h] = pyfixest_coefficients(data[m], outcomes, coef_fn.regressors,
                                                                coef_fn.fixed_effects, spec)
        n_cmp = B if args.pyfixest_draws is None else min(B, args.pyfixest_draws)
        for j, y in enumerate(outcomes):
            o_all = ours[:, :, j]
            o, r = ours[:n_cmp, :, j], ref[:n_cmp, :, j]
            both = np.isfinite(o) & np.isfinite(r)
            rel = np.abs(o - r) / np.maximum(np.abs(r), 1e-300)
            d_ours, d_ref = o_all[:, 0] - o_all[:, 1], r[:, 0] - r[:, 1]
            t_ours = _p_values(ours_obs[j], d_ours, exact)
            t_ref = _p_values(ours_obs[j], d_ref, exact) if n_cmp == B and len(d_ref) else \
                {"p_one_sided": None, "p_two_sided": None, "draws_quantiles": None}
            row = {
                "spec": spec.id, "outcome": y, "draws": B, "draws_compared": n_cmp, "permute_by": str(inp["permute_by"]),
                "observed_d_ours": float(ours_obs[j]), "observed_d_pyfixest": float(ref_obs[j]),
                "halves_nan_ours": int((~np.isfinite(o)).sum()), "halves_nan_pyfixest": int((~np.isfinite(r)).sum()),
                "halves_nan_both": int((~np.isfinite(o) & ~np.isfinite(r)).sum()),
                "halves_nan_ours_only": int((~np.isfinite(o) & np.isfinite(r)).sum()),
                "pyfixest_outcomes": {str(k): int(v) for k, v in zip(*np.unique(status[:n_cmp].astype(str), return_counts=True))},
                "halves_nan_pyfixest_only_by_outcome": {
                    str(k): int(v) for k, v in zip(*np.unique(status[:n_cmp][~np.isfinite(r) & np.isfinite(o)].astype(str),
                                                              return_counts=True))},
                "halves_differ": int((both & (rel > args.rtol)).sum()),
                "halves_differ_gross": int((both & (np.abs(o - r) > 1e-6 * np.maximum(1.0, np.abs(r)))).sum()),
                "max_abs_diff_finite": float(np.abs(o - r)[both].max()) if both.any() else None,
                "max_rel_diff_finite": float(rel[both].max()) if both.any() else None,
                "draws_failed_ours": int((~np.isfinite(d_ours)).sum()),
                "draws_failed_pyfixest": int((~np.isfinite(d_ref)).sum()) if n_cmp == B else None,
                "p_one_ours": t_ours["p_one_sided"], "p_one_pyfixest": t_ref["p_one_sided"],
                "p_two_ours": t_ours["p_two_sided"], "p_two_pyfixest": t_ref["p_two_sided"],
                "q_ours": t_ours["draws_quantiles"], "q_pyfixest": t_ref["draws_quantiles"],
                "stored_p_one": (stored or {}).get("p_one_sided") if y == spec.outcome else None,
            }
            report.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
