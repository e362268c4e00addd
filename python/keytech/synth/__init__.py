"""Deterministic synthetic raw data for KeyTech Panel.

``generate(scale, seed, out_dir)`` writes one raw file per table of the input contract
(``contract.yml``) into ``out_dir`` plus ``_truth.json``, the planted truth: every rate parameter,
the pilot cities and their first treated years, pilot firms, row counts per file, every planted
mess and the true key-tech / non-key invention counts per year.

The files imitate the vendors' exports, with their mess (each planted mess is counted in
``_truth.json``):

* ``city_yearbook.csv`` in GBK with the Chinese yearbook headers and one unit row under the header;
* CSMAR tables (``firm_info``, ``balance_sheet``, ``income_statement``, ``cash_flow``) with two
  description rows under the header (Chinese field names, units), some with a UTF-8 BOM, stock codes
  without leading zeros in the statements, consolidated (A) and parent (B) statements;
* ``patents`` (CNRDS style) with messy IPC strings (spaces, full-width characters, lower case,
  edition suffixes, repeated codes), exact duplicate rows, junk IPC strings, unmatched firms and
  applications outside the calendar (2008-2022; 2008-2024 at ``xl``); Parquet at paper and xl
  scale, written 500,000 rows at a time from arrays (``patents.PatentTable``);
* ``pilot_list`` with one row per pilot unit.

Determinism: all randomness comes from ``numpy.random.default_rng([seed, stage])``; CSV numbers are
pre-formatted as text; Parquet is written by pyarrow without pandas metadata. Same seed, same
library versions → byte-identical files.

The key-tech status of every planted invention is decided by ``keytech.ipc.Concordance``
(hierarchical mode, supplement on) and verified over the pool of codes used before formatting.

Layout (each module imports only the ones above it; no module imports a plug-in but
``generator``):

=================  ===========================================================================
``config``         scales (``SCALES``, each with its calendar), planted rates (``Rates``)
``vocab``          fixed vocabularies (names, pilot categories, cities)
``columns``        the raw files' column names, vendor label rows and encodings
``common``         random streams (``stage_rng``), number and date formatting
``world``          ``World`` and stage 1: cities and pilot waves
``firms``          stages 2-4a: firms and firm-years, the pilot list, firm_info
``financials``     stage 4b: the financial statements
``yearbook``       stage 5: the city yearbook
``patents``        stage 6: patents and their IPC codes
``writers``        writing the raw folder
``truth``          ``_truth.json`` and the sample filters as planted
``plugin``         what a plug-in world gives the generator (``Plugin``)
``endogeneity``    plug-in: instruments, confounder, spillover (Table 4, robustness)
``mechanisms``     plug-in: mechanisms, heterogeneity, fields and width (Tables 5-7)
``generator``      ``build_world`` and ``generate``: core stages, plug-in stages, writing
=================  ===========================================================================
"""

from keytech.synth.config import (EXTRACTION_DATE, FIRST_YEAR, LAST_YEAR, SCALES, YEARS, Rates,
                                  ScaleConfig)
from keytech.synth.generator import PLUGINS, TABLES, build_world, generate
from keytech.synth.truth import planted_missing_controls, sample_filters
from keytech.synth.world import World

__all__ = ["EXTRACTION_DATE", "FIRST_YEAR", "LAST_YEAR", "PLUGINS", "SCALES", "TABLES", "YEARS", "Rates",
           "ScaleConfig", "World", "build_world", "generate", "planted_missing_controls", "sample_filters"]
