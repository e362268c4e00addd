"""The report's "Inference beyond the peers" section (issue 14) renders the stored results of the
wild-bootstrap, multiple-testing and doubly robust CS specs, with the stored numbers."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from keytech.estimation.core import panel as pnl
from keytech.estimation.orchestration import store
from keytech.estimation.core.fitting import RunContext
from keytech.estimation.dispatch import run_spec
from keytech.estimation.orchestration.registry import load_registry
from keytech.estimation.simulate import simulate_panel
from keytech.report.inference import inference_section

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def test_inference_section_renders_stored_results():
    reg = load_registry()
    df = pnl.prepare_panel(simulate_panel(seed=4, n_cities=24, n_provinces=10, firms_per_city=4.0, beta_key=0.3))
    df = df.assign(fc_index=np.random.default_rng(2).normal(size=len(df)))
    results = []
    for sid, opts in (("robust_wcr_city", {"draws": 99}), ("mt_het_fc", {"draws": 99}),
                      ("robust_staggered_drcs", {"band_draws": 99}), ("robust_etwfe_poisson", {}),
                      ("table3_col5", {})):
        spec = reg.get(sid)
        results += run_spec(dataclasses.replace(spec, options={**spec.options, **opts}), df, RunContext(seed=1))
    est = pd.DataFrame(store.estimate_rows("r1", results), columns=store.ESTIMATE_COLUMNS)
    html = inference_section({"estimation": (est, {}, {}, None)})
    for tid in ("wcr-table", "adjusted-pvalues-table", "cs-dr-table", "etwfe-table"):
        assert f"id='{tid}'" in html
    wcr = results[0]
    assert f"{wcr.term('policy').p_value:.4f}" in html
    for t in results[1].terms:
        assert f"<code>{t.term}</code>" in html and f"{t.p_value:.4f}" in html
    assert "uniform band" in html.lower()
    pct = [r for r in results if r.spec_id == "robust_etwfe_poisson"][0].term("att_pct")
    assert f"{pct.estimate:,.4f}" in html
    empty = inference_section({"estimation": (est.iloc[0:0], {}, {}, None)})
    assert "keytech estimate --only wcr" in empty
