"""Entry points: write every publication table and figure of a stored run, and the plain-text
"Table 3: this run vs paper". Everything is rebuilt from ``results.estimates`` — tables and figures
can be regenerated for any stored run without re-estimating."""

from __future__ import annotations

from pathlib import Path

from keytech.estimation.orchestration import store
from keytech.estimation.orchestration.registry import Registry, load_registry
from keytech.synthetic import SYNTHETIC_NOTE, run_is_synthetic
from keytech.tables.baseline import event_study_model, robustness_models, table3_model
from keytech.tables.endogeneity import render as render_table4
from keytech.tables.figures import plot_event_study, plot_placebo
from keytech.tables.format import fmt_coef, fmt_n, fmt_r2, fmt_se, stars_to_p
from keytech.tables.mechanisms import render_tables as render_mechanism_tables
from keytech.tables.model import main_row
from keytech.tables.render import write_tables


def _output_dir(out_dir: str | Path | None) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    from keytech import paths

    return paths.output_dir()


def render_tables(
    run_id: str | None = None,
    db_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    synthetic: bool | None = None,
    registry: Registry | None = None,
) -> list[Path]:
    """Write table3.*, robustness.*, event_study.* (md, tex, html) under ``<output>/tables`` and the
    event-study and placebo figures (png, svg) under ``<output>/figures`` for a stored run."""
    reg = registry or load_registry()
    est, source, run = store.estimates_for_display(db_path, run_id)
    syn = run_is_synthetic(run) if synthetic is None else synthetic
    base = _output_dir(out_dir)
    runs_used = sorted(set(source.values()))
    footer = f"Estimates from run(s) {', '.join(runs_used)} (data fingerprint {run['data_fingerprint']})."
    written: list[Path] = []
    if any(s.table == "table3" for s in reg.specs):
        written += write_tables("table3", [table3_model(est, reg, syn)], base / "tables", footer)
    rob = robustness_models(est, reg, syn)
    if rob:
        written += write_tables("robustness", rob, base / "tables", footer)
    es = event_study_model(est, synthetic=syn, reg=reg)
    if es is not None:
        written += write_tables("event_study", [es], base / "tables", footer)

    written += render_mechanism_tables(est, reg, syn, base / "tables", footer)

    written += render_table4(est, reg, syn, base / "tables", footer)
    written += plot_event_study(est, base / "figures", syn)
    written += plot_placebo(est, base / "figures", syn)
    return written


def table3_vs_paper(run_id: str | None = None, db_path: str | Path | None = None, synthetic: bool | None = None, registry: Registry | None = None) -> str:
    """Plain-text Table 3: this run next to the paper's published numbers."""
    reg = registry or load_registry()
    est, source, run = store.estimates_for_display(db_path, run_id)
    syn = run_is_synthetic(run) if synthetic is None else synthetic
    specs = [s for s in reg.specs if s.table == "table3"]
    head = f"{'col':<5}{'this run: Policy (SE)':>26}{'paper: Policy (SE)':>26}{'N run':>9}{'N paper':>9}{'adjR2 run':>11}{'paper':>7}"
    ts = reg.table("table3")
    lines = [ts.text_title, head, "-" * len(head)]
    for s in specs:
        r = main_row(est, s.id, s.treatment)
        mine = f"{fmt_coef(r['estimate'], r['p_value'])} {fmt_se(r['std_error'])}" if r else "not estimated"
        p = s.paper
        theirs = f"{fmt_coef(p.coef, stars_to_p(p.stars))} {fmt_se(p.se)}" if p else ""
        lines.append(
            f"{s.label:<5}{mine:>26}{theirs:>26}{fmt_n(r and r['nobs']):>9}{fmt_n(p and p.nobs):>9}"
            f"{fmt_r2(r and r['adj_r2']):>11}{fmt_r2(p and p.adj_r2):>7}"
        )
    lines += list(ts.text_notes)
    lines.append(f"run {run['run_id']} · data fingerprint {run['data_fingerprint']}")
    if syn:
        lines.append(SYNTHETIC_NOTE)
    return "\n".join(lines)
