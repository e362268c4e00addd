"""Figures of a stored run: the event study (with the Sun–Abraham overlay) and the placebo
distribution (png, svg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from keytech.synthetic import SYNTHETIC_NOTE
from keytech.tables.model import main_row


def plot_event_study(est: pd.DataFrame, out_dir: Path, synthetic: bool, spec_id: str = "event_study", overlay: str | None = "robust_staggered_sunab") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = est.loc[(est["spec_id"] == spec_id) & est["term"].str.startswith("rel_time=")]
    if sub.empty:
        return []
    sub = sub.assign(k=sub["term"].str.split("=").str[1].astype(int)).sort_values("k")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lo = (sub["estimate"] - sub["ci_low"]).fillna(0)
    hi = (sub["ci_high"] - sub["estimate"]).fillna(0)
    es_fe = sub["fixed_effects"].iloc[0] if "fixed_effects" in sub else ""
    ax.errorbar(sub["k"], sub["estimate"], yerr=[lo, hi], fmt="o-", color="#1f4e79", capsize=3, label=f"TWFE event study, {es_fe} FE (95% CI)")
    ov = est.loc[(est["spec_id"] == overlay) & est["term"].str.startswith("rel_time=")] if overlay else pd.DataFrame()
    if not ov.empty:
        ov = ov.assign(k=ov["term"].str.split("=").str[1].astype(int)).sort_values("k")
        ov_fe = ov["fixed_effects"].iloc[0] if "fixed_effects" in ov else ""
        ax.plot(ov["k"] + 0.12, ov["estimate"], "s--", color="#c55a11", alpha=0.8, label=f"Sun–Abraham IW ({ov_fe} FE; {overlay})")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(-0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Years relative to treatment (k; k=-1 is the reference, k<-5 binned)")
    ax.set_ylabel("Effect on ln(1+key-tech applications)")
    main = main_row(est, spec_id, "rel_time=0")
    pre = (main or {}).get("diagnostics", {}).get("pretrend_test", {})
    title = "Event study (Eq. 2)"
    if pre:
        title += f" — pre-period joint test p = {pre.get('p_value', float('nan')):.3f}"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    if synthetic:
        fig.text(0.01, 0.01, SYNTHETIC_NOTE, fontsize=7, color="#a00")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out_dir, "event_study")


def plot_placebo(est: pd.DataFrame, out_dir: Path, synthetic: bool, spec_id: str = "placebo") -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = main_row(est, spec_id, "policy")
    if not main or not main["diagnostics"].get("draws"):
        return []
    d = main["diagnostics"]
    draws = np.asarray(d["draws"], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.hist(draws, bins=40, color="#8faadc", edgecolor="white", label=f"{len(draws)} placebo draws")
    ax.axvline(d["real_beta"], color="#c00000", lw=2, label=f"actual estimate {d['real_beta']:.4f}")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("Placebo coefficient of Policy (column 5 specification)")
    ax.set_ylabel("Draws")
    n_ext = d.get("n_draws_as_extreme", int(round(d["p_empirical"] * len(draws))))
    ax.set_title(f"Placebo: random pilot cities and timing — empirical p = {d['p_empirical']:.3f} ({n_ext}/{len(draws)} draws as extreme)", fontsize=10)
    ax.legend(fontsize=8)
    if synthetic:
        fig.text(0.01, 0.01, SYNTHETIC_NOTE, fontsize=7, color="#a00")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return _save(fig, out_dir, "placebo")


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = out_dir / f"{name}.{ext}"
        fig.savefig(p, dpi=150)
        paths.append(p)
    plt.close(fig)
    return paths
