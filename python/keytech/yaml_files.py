"""YAML reading for the project's own files (the registry ``specs.yml``, the input contract, the
dbt model and project YAML) and a raw folder's ``column_mapping.yml``.

``load_yaml`` is ``yaml.safe_load`` with PyYAML's C parser (libyaml, ``CSafeLoader``) when the
installed PyYAML has it: the same safe constructor and resolver, so the same Python objects (tested
on every YAML file of the project, ``tests/python/test_yaml_files.py``), about 8× faster (issue 17:
0.67 s → 0.08 s for the project's 33 files; the registry alone is read by every ``keytech``
command that estimates). Without libyaml it is the pure-Python loader. Errors are
``yaml.YAMLError`` either way.
"""

from __future__ import annotations

from typing import IO, Any

import yaml

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(stream: str | bytes | IO) -> Any:
    """The document in ``stream`` (text, bytes or an open file), as ``yaml.safe_load`` reads it."""
    return yaml.load(stream, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader (SafeConstructor)
