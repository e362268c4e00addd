"""Presentation of stored estimates: the publication tables (Markdown, LaTeX, HTML) and figures
under ``<output>/tables`` and ``<output>/figures``, rebuilt from ``results.estimates``.

* :func:`render_tables` — every table and figure of a stored run.
* :func:`table3_vs_paper` — text rendering of Table 3 next to the paper's numbers.

Modules: :mod:`~keytech.tables.format` (number formatters, shared with the report page),
:mod:`~keytech.tables.model` (the table model), :mod:`~keytech.tables.render` (md/tex/html),
:mod:`~keytech.tables.baseline` (Table 3, robustness, event study), :mod:`~keytech.tables.endogeneity`
(Table 4, PSM balance, spillover checks), :mod:`~keytech.tables.mechanisms` (Tables 5–7,
heterogeneity, SEI fields), :mod:`~keytech.tables.figures`. Titles, notes, fixed headers and the
heterogeneity moderators are the ``tables:`` block of ``specs.yml`` (``Registry.table(id)``). This
package reads ``keytech.estimation`` (``orchestration.registry``, ``orchestration.store``, result
constants); estimation never imports it.
"""

from keytech.tables.publish import render_tables, table3_vs_paper

__all__ = ["render_tables", "table3_vs_paper"]
