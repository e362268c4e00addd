"""What a plug-in world (``mechanisms``, ``endogeneity``) gives the generator.

The core stages (``keytech.synth.generator.CORE_STAGES``) know nothing of the plug-ins: the
generator runs each plug-in's stages right after the core stage they name, and the patents,
writing and truth stages call the plug-ins' hooks through ``World.plugins``. A plug-in module
imports from the core what it needs (helpers, the sample filters); the core never imports a
plug-in, so there is no import circle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from keytech.synth.world import World


@dataclass(frozen=True)
class Plugin:
    """One plug-in world. Every hook is optional."""

    name: str  # its slot in _truth.json
    tables: tuple[str, ...] = ()  # the raw tables it writes (contract tables)
    # (core stage it runs after, progress label, stage function)
    stages: tuple[tuple[str, str, Callable[[World], None]], ...] = ()
    # added, in plug-in order, to the key-tech invention log-rate per firm-year:
    # key_log_shift(w, firm, year, city, treat) -> array (or 0.0)
    key_log_shift: Callable[..., np.ndarray | float] | None = None
    # home_buckets(w, pool, home_key, home_nonkey) -> (home_key, home_nonkey)
    home_buckets: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    write_tables: Callable[[World, Path], dict] | None = None  # -> {table: file entry}
    truth: Callable[[World], dict] | None = None  # -> its slot of _truth.json
