"""Is the data synthetic? — decided here only.

Raw data made by ``keytech synth`` carries the generator's planted truth in
``<raw_dir>/_truth.json``; licensed or own data never does. A stored estimation run records the
answer in its parameters (``synthetic``), which take precedence when tables of that run are
rebuilt later. Every reader (CLI, estimation runner, tables, report, doctor) asks these functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRUTH_FILE = "_truth.json"

# printed under every table and figure made from synthetic data
SYNTHETIC_NOTE = (
    "Note: the bundled data is synthetic; these numbers demonstrate the pipeline and are not findings."
)
# printed by the CLI when it builds or estimates on synthetic data
SYNTHETIC_BANNER = (
    "NOTE: the bundled data is SYNTHETIC (made by `keytech synth` with planted effects). "
    "Results computed on it demonstrate the pipeline; they are not findings."
)


def truth_path(raw_dir: Path | None = None) -> Path:
    """``<raw_dir>/_truth.json`` (``raw_dir`` defaults to :func:`keytech.paths.raw_dir`)."""
    if raw_dir is None:
        from keytech import paths

        raw_dir = paths.raw_dir()
    return Path(raw_dir) / TRUTH_FILE


def is_synthetic(raw_dir: Path | None = None) -> bool:
    """True when the raw data directory holds the synthetic generator's ``_truth.json``."""
    try:
        return truth_path(raw_dir).is_file()
    except Exception:  # no configured raw directory
        return False


def load_truth(raw_dir: Path | None = None) -> dict[str, Any] | None:
    """The planted truth, or None when the data is not synthetic or the file cannot be read."""
    try:
        p = truth_path(raw_dir)
        if p.is_file():
            return json.loads(p.read_text(encoding="utf-8"))
    except Exception:
        return None
    return None


def run_is_synthetic(run: dict[str, Any] | None) -> bool:
    """Whether a stored run (a ``results.runs`` row) was estimated on synthetic data: its recorded
    ``parameters_json`` ``synthetic``, else whether the current raw data is synthetic."""
    if run and run.get("parameters_json"):
        try:
            params = json.loads(run["parameters_json"])
            if "synthetic" in params:
                return bool(params["synthetic"])
        except (TypeError, ValueError):
            pass
    return is_synthetic()
