"""Run orchestration: the specification registry (``registry``: ``specs.yml`` → ``Spec``s and the
publication tables' ``TableSpec``s), the data gate (``gate``), the run (``runner``:
gate → estimate through :mod:`keytech.estimation.dispatch` → store) and the results store
(``store``: ``results.*``).

Estimators and the core import only ``registry`` from here (the spec model they fit); nothing in
this package is imported by them otherwise (``tests/python/test_import_layout.py``). This file
imports nothing, so importing ``orchestration.registry`` does not load the runner.
"""
