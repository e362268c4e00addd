"""The generator: the core stages in order, the plug-in worlds' stages between them, and writing."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from keytech.synth import endogeneity, mechanisms
from keytech.synth.columns import CORE_TABLES
from keytech.synth.config import SCALES, Rates
from keytech.synth.financials import plant_financials
from keytech.synth.firms import plant_firm_info, plant_firms, plant_pilot_list
from keytech.synth.patents import plant_patents
from keytech.synth.plugin import Plugin
from keytech.synth.truth import build_truth, jsonable
from keytech.synth.world import World, plant_cities
from keytech.synth.writers import write_raw
from keytech.synth.yearbook import plant_yearbook

# (name, progress label, stage function); a plug-in stage names the core stage it follows
CORE_STAGES = (
    ("cities", "cities and pilot waves", plant_cities),
    ("firms", "firms", plant_firms),
    ("pilot_list", "pilot list", plant_pilot_list),
    ("firm_info", "firm_info", plant_firm_info),
    ("financials", "financial statements", plant_financials),
    ("yearbook", "city yearbook", plant_yearbook),
    ("patents", "patents", plant_patents),
)
# The plug-in worlds, in the order their stages, hooks and tables run (see keytech.synth.plugin).
PLUGINS: tuple[Plugin, ...] = (endogeneity.PLUGIN, mechanisms.PLUGIN)
TABLES = CORE_TABLES + tuple(t for p in PLUGINS for t in p.tables)


def stage_plan(plugins: tuple[Plugin, ...] = PLUGINS) -> list[tuple[str, object]]:
    """(progress label, stage function) in run order: each core stage, then the plug-in stages that
    follow it (in plug-in order)."""
    names = {name for name, _, _ in CORE_STAGES}
    for p in plugins:
        for after, label, _ in p.stages:
            if after not in names:
                raise ValueError(f"plug-in {p.name!r}: stage {label!r} follows unknown core stage {after!r}")
    plan = []
    for name, label, fn in CORE_STAGES:
        plan.append((label, fn))
        plan.extend((p_label, p_fn) for p in plugins for after, p_label, p_fn in p.stages if after == name)
    return plan


def build_world(scale: str, seed: int, rates: Rates | None = None, progress: bool = False) -> World:
    """Generate every table in memory (no files). ``generate`` writes them; tests may inspect the
    planted per-row status (``World.patents_kind`` etc.)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, not {scale!r}")
    w = World(SCALES[scale], rates or Rates(), int(seed), plugins=PLUGINS)
    stages = stage_plan(w.plugins)
    with tqdm(total=len(stages), desc=f"synth {scale}", disable=not progress, unit="stage") as bar:
        for label, fn in stages:
            bar.set_postfix_str(label)
            fn(w)
            bar.update(1)
    return w


def generate(scale: str, seed: int, out_dir: str | Path, progress: bool = True,
             rates: Rates | None = None) -> dict:
    """Write a synthetic raw folder for ``scale`` (tiny, small, paper, xl) and return the truth dict
    (also written to ``out_dir/_truth.json``). Deterministic for a seed."""
    w = build_world(scale, seed, rates, progress)
    out = Path(out_dir)
    with tqdm(total=1, desc=f"write {scale}", disable=not progress, unit="step") as bar:
        files = write_raw(w, out)
        truth = jsonable(build_truth(w, files))
        with open(out / "_truth.json", "w", encoding="utf-8", newline="\n") as handle:
            json.dump(truth, handle, ensure_ascii=False, indent=2, sort_keys=False)
            handle.write("\n")
        bar.update(1)
    return truth
