"""Figures of the report as inline SVG strings (matplotlib, text kept as text).

Every function takes data frames already read from the warehouse and returns an SVG string
(without the XML prolog) or None when there is nothing to draw. Element ids are prefixed with the
figure name so several SVGs can live in one HTML page without id clashes.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd

INK = "#1f2d3d"
BLUE = "#1f4e79"
ORANGE = "#c55a11"
GREY = "#9aa5b1"
WAVE_COLOURS = {2015: "#1b9e77", 2016: "#d95f02", 2017: "#7570b3", 2018: "#e7298a"}
SEI_ENGLISH = {
    1: "Next-generation IT", 2: "High-end equipment", 3: "New materials", 4: "Biology",
    5: "New-energy vehicles", 6: "New energy", 7: "Energy saving & environment", 8: "Digital creative",
    9: "Related services",
}
SEI_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",  # text stays text: crisp, searchable, small
        "svg.hashsalt": "keytech-report",  # deterministic ids
        "font.family": ["DejaVu Sans"],
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.edgecolor": "#555",
        "axes.titlesize": 10,
        "axes.titleweight": "bold",
        "legend.frameon": False,
    })
    return plt


def to_svg(fig, name: str) -> str:
    plt = _plt()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{name}-{m.group(1)}"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#{name}-{m.group(1)})", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#{name}-{m.group(1)}"', svg)
    # natural size in CSS pixels (1 pt = 4/3 px); CSS caps the width at the column and keeps the ratio
    def _px(match: re.Match) -> str:
        w, h = (float(v) * 4 / 3 for v in (match.group(2), match.group(3)))
        return f'<svg{match.group(1)} width="{w:.0f}" height="{h:.0f}"'
    svg = re.sub(r'<svg([^>]*?) width="([\d.]+)pt" height="([\d.]+)pt"', _px, svg, count=1)
    return svg.replace("<svg", f'<svg role="img" aria-label="{name}" class="figure-svg" data-figure="{name}"', 1)


def _k(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(k=frame["term"].str.split("=").str[1].astype(int)).sort_values("k")


def event_study(est: pd.DataFrame, spec_id: str = "event_study", overlay: str = "robust_staggered_sunab") -> str | None:
    sub = est.loc[(est["spec_id"] == spec_id) & est["term"].str.startswith("rel_time=")]
    if sub.empty:
        return None
    plt = _plt()
    sub = _k(sub)
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    lo = (sub["estimate"] - sub["ci_low"]).fillna(0).clip(lower=0)
    hi = (sub["ci_high"] - sub["estimate"]).fillna(0).clip(lower=0)
    ax.axhline(0, color="#333", lw=0.8)
    ax.axvspan(-0.5, sub["k"].max() + 0.5, color="#f2f5f9", zorder=0)
    ax.errorbar(sub["k"], sub["estimate"], yerr=[lo, hi], fmt="o-", color=BLUE, capsize=3, lw=1.4,
                label="TWFE event study, 95% CI")
    ov = est.loc[(est["spec_id"] == overlay) & est["term"].str.startswith("rel_time=")]
    if not ov.empty:
        ov = _k(ov)
        ax.plot(ov["k"] + 0.12, ov["estimate"], "s--", color=ORANGE, alpha=0.85, ms=4, lw=1, label="Sun–Abraham IW")
    ax.set_xticks(sorted(sub["k"]))
    ax.set_xlabel("Years relative to the first pilot year of the city (k = −1 is the reference; k < −5 binned)")
    ax.set_ylabel("Effect on ln(1 + key-tech applications)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
    return to_svg(fig, "event-study")


def placebo(draws: list[float], actual: float, p_empirical: float | None) -> str | None:
    values = np.asarray([d for d in draws if d is not None], dtype=float)
    if values.size == 0:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.hist(values, bins=min(40, max(10, values.size // 5)), color="#8faadc", edgecolor="white",
            label=f"{values.size} placebo draws")
    ax.axvline(actual, color="#c00000", lw=2, label=f"actual estimate {actual:.4f}")
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_xlabel("Placebo coefficient of Policy (column 5 specification, random pilot cities and timing)")
    ax.set_ylabel("Draws")
    if p_empirical is not None:
        ax.set_title(f"Empirical two-sided p = {p_empirical:.3f}", loc="left", fontsize=9)
    ax.legend(fontsize=8)
    return to_svg(fig, "placebo")


def rollout(cities: pd.DataFrame, waves: pd.DataFrame | None) -> str | None:
    """New pilot cities per wave (this data vs the paper's Table 1) and a lon/lat map of pilot cities."""
    if cities.empty:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.9), gridspec_kw={"width_ratios": [1, 1.25]})
    pilots = cities.dropna(subset=["first_pilot_wave"])
    counts = pilots.groupby("first_pilot_wave").size()
    all_waves = sorted(set(int(w) for w in counts.index) | (set(int(w) for w in waves["wave"]) if waves is not None else set()))
    x = np.arange(len(all_waves))
    mine = [int(counts.get(w, 0)) for w in all_waves]
    ax1.bar(x - 0.2 if waves is not None else x, mine, width=0.4, color=[WAVE_COLOURS.get(w, BLUE) for w in all_waves],
            label="this data: new pilot cities")
    for xi, v in zip(x, mine):
        ax1.text(xi - (0.2 if waves is not None else 0), v, f"{v}", ha="center", va="bottom", fontsize=8)
    if waves is not None:
        paper = [int(waves.set_index("wave")["new_pilot_cities"].get(w, 0)) for w in all_waves]
        ax1.bar(x + 0.2, paper, width=0.4, color="white", edgecolor=INK, hatch="///", label="paper, Table 1")
        for xi, v in zip(x, paper):
            ax1.text(xi + 0.2, v, f"{v}", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(x, [str(w) for w in all_waves])
    ax1.set_xlabel("Pilot wave (announcement year)")
    ax1.set_ylabel("New pilot cities")
    ax1.set_title("New pilot cities per wave", loc="left")
    ax1.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    located = cities.dropna(subset=["longitude", "latitude"])
    ax2.scatter(located["longitude"], located["latitude"], s=6, color="#d0d5db", label="prefecture cities")
    for wave, group in pilots.dropna(subset=["longitude", "latitude"]).groupby("first_pilot_wave"):
        ax2.scatter(group["longitude"], group["latitude"], s=22, color=WAVE_COLOURS.get(int(wave), BLUE),
                    edgecolor="white", linewidth=0.4, label=f"first pilot {int(wave)}")
    ax2.set_xlabel("Longitude")
    ax2.set_ylabel("Latitude")
    ax2.set_aspect(1.15)
    ax2.set_title("Pilot cities by first wave (city seats)", loc="left")
    ax2.legend(fontsize=7, loc="lower right", markerscale=0.9)
    fig.tight_layout()
    return to_svg(fig, "rollout")


def patents_by_field(by_year: pd.DataFrame, by_field: pd.DataFrame, field_names: dict[int, str]) -> str | None:
    """Left: key vs non-key invention applications per year. Right: key-tech applications per SEI field."""
    if by_year.empty:
        return None
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.6, 3.9))
    ax1.plot(by_year["application_year"], by_year["key"], "o-", color=BLUE, ms=3, label="key technology")
    ax1.plot(by_year["application_year"], by_year["non_key"], "s-", color=GREY, ms=3, label="non-key")
    ax1.set_xlabel("Application year")
    ax1.set_ylabel("Invention applications")
    ax1.set_title("Key vs non-key invention applications", loc="left")
    ax1.legend(fontsize=8)
    for i, code in enumerate(sorted(field_names)):
        column = f"sei_{code}"
        if column in by_field:
            ax2.plot(by_field["application_year"], by_field[column], "-", color=SEI_COLOURS[i % 9], lw=1.4,
                     label=f"{code} {SEI_ENGLISH.get(code, field_names[code])}")
    ax2.set_xlabel("Application year")
    ax2.set_ylabel("Key-tech applications in the field")
    ax2.set_title("Key-tech applications by SEI field", loc="left")
    ax2.legend(fontsize=6.5, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return to_svg(fig, "patents-by-field")


def funnel(funnel_frame: pd.DataFrame) -> str | None:
    if funnel_frame.empty:
        return None
    plt = _plt()
    frame = funnel_frame.sort_values("step_order")
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(frame) + 0.8))
    y = np.arange(len(frame))[::-1]
    ax.barh(y, frame["firm_years_kept"], color=BLUE, height=0.6)
    for yi, v in zip(y, frame["firm_years_kept"]):
        ax.text(v, yi, f" {int(v):,}", va="center", fontsize=8)
    ax.set_yticks(y, frame["step"])
    ax.set_xlabel("Firm-years kept after the step")
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    fig.tight_layout()
    return to_svg(fig, "funnel")


def honest_did(rows: pd.DataFrame, spec_id: str = "event_study") -> str | None:
    """Rambachan & Roth (2023) sensitivity: robust 95% CI against M (smoothness, FLCI) and Mbar
    (relative magnitudes, C-LF), for the first post period and the average post effect, with the
    ordinary CI (exact parallel trends) drawn beside each panel."""
    sub = rows.loc[rows["spec_id"] == spec_id] if not rows.empty else rows
    if sub.empty:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 5.4))
    for j, target in enumerate(("first", "average")):
        t = sub.loc[sub["target"] == target]
        orig = t.loc[t["restriction"] == "original"]
        for i, (restr, xlabel, colour) in enumerate((("SD", "M (smoothness, Δ^SD)", BLUE),
                                                     ("RM", "M̄ (relative magnitudes, Δ^RM)", ORANGE))):
            ax = axes[i, j]
            r = t.loc[t["restriction"] == restr].sort_values("value")
            if r.empty:
                ax.set_axis_off()
                continue
            x = r["value"].to_numpy(float)
            step = (x.max() - x.min()) / max(len(x) - 1, 1) if len(x) > 1 else 1.0
            if not orig.empty:
                xo = x.min() - step
                ax.errorbar([xo], [(orig["ci_low"].iloc[0] + orig["ci_high"].iloc[0]) / 2],
                            yerr=[[(orig["ci_high"].iloc[0] - orig["ci_low"].iloc[0]) / 2]],
                            fmt="none", ecolor=GREY, elinewidth=2.2, capsize=3, label="original")
            mid = (r["ci_low"] + r["ci_high"]).to_numpy(float) / 2
            half = (r["ci_high"] - r["ci_low"]).to_numpy(float) / 2
            ax.errorbar(x, mid, yerr=half, fmt="none", ecolor=colour, elinewidth=2.2, capsize=3,
                        label="robust (FLCI)" if restr == "SD" else "robust (C-LF)")
            ax.axhline(0, color=INK, lw=0.7)
            bd = t.loc[t["restriction"] == f"{restr}_breakdown", "value"]
            if not bd.empty and pd.notna(bd.iloc[0]):
                ax.axvline(float(bd.iloc[0]), color=colour, lw=0.8, ls="--", label=f"breakdown {float(bd.iloc[0]):.3g}")
            ax.set_xlabel(xlabel)
            ax.set_title(("first post period (k=0)" if target == "first" else "average post effect") if i == 0 else "")
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return to_svg(fig, f"honest-did-{spec_id}")
