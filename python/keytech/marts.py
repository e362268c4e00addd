"""The marts as the dbt project declares them: one source for every list of marts in Python.

Each mart's YAML (``models/marts/<area>/_marts__<area>.yml``) says what it is for::

    - name: rpt_analysis_panel
      access: public                 # covered by the data fingerprint and the estimation gate
      config:
        meta:
          keytech:
            estimation: true         # a panel or an extra mart that specs.yml reads
            gx_suite: true           # has a Great Expectations suite (keytech/quality.py SUITES)
            report: true             # listed with its row count on the report page
            export_panel: true       # `keytech export --panel` can write it

From these declarations come ``warehouse.PUBLIC_MARTS`` (fingerprint and gate), the marts
``keytech check`` must find a suite for, the report's mart list, the panels ``keytech export``
offers, and the marts the estimation registry may read (a spec naming another mart is a registry
error). ``tests/python/test_declared_marts.py`` checks that each derived list agrees with the dbt
manifest and with ``models/exposures.yml``. Adding a mart: write its SQL and YAML (with the
declaration above) — nothing else lists it.

The YAML is read directly (it is what dbt reads to build the manifest), so the lists are known
without a compiled ``target/manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from keytech import paths
from keytech.yaml_files import load_yaml

FLAGS = ("estimation", "gx_suite", "report", "export_panel")


@dataclass(frozen=True)
class MartDeclaration:
    name: str
    public: bool
    estimation: bool = False
    gx_suite: bool = False
    report: bool = False
    export_panel: bool = False


def _yaml_files(root: Path) -> list[Path]:
    return sorted((root / "models" / "marts").rglob("*.yml"))


@lru_cache(maxsize=4)
def _declared(root: str) -> tuple[MartDeclaration, ...]:
    out: list[MartDeclaration] = []
    for path in _yaml_files(Path(root)):
        doc = load_yaml(path.read_text(encoding="utf-8")) or {}
        for model in doc.get("models") or ():
            meta = ((model.get("config") or {}).get("meta") or {}).get("keytech") or {}
            unknown = set(meta) - set(FLAGS)
            if unknown:
                raise ValueError(f"{path}: model {model['name']}: unknown config.meta.keytech key(s) "
                                 f"{sorted(unknown)}; known: {', '.join(FLAGS)}")
            out.append(MartDeclaration(name=model["name"], public=model.get("access") == "public",
                                       **{flag: bool(meta.get(flag, False)) for flag in FLAGS}))
    return tuple(out)


def declared_marts(root: Path | None = None) -> tuple[MartDeclaration, ...]:
    """Every model of ``models/marts`` with its declaration, in file-name then file order."""
    return _declared(str((root or paths.project_root()).resolve()))


def public_marts(root: Path | None = None) -> tuple[str, ...]:
    """``access: public`` marts: the data fingerprint and the estimation gate cover them."""
    return tuple(m.name for m in declared_marts(root) if m.public)


def marts_with(flag: str, root: Path | None = None) -> tuple[str, ...]:
    """Marts whose ``config.meta.keytech.<flag>`` is true (flag: one of ``FLAGS``)."""
    if flag not in FLAGS:
        raise ValueError(f"unknown mart flag {flag!r}; known: {', '.join(FLAGS)}")
    return tuple(m.name for m in declared_marts(root) if getattr(m, flag))


@lru_cache(maxsize=None)
def panel_variables() -> dict[str, tuple[str, ...]]:
    """The panel's variable lists (outcomes, controls, winsorised, unwinsorised) from their one
    owner, the dbt macro ``panel_variables()`` in ``macros/panel_variables.sql``, rendered with
    plain Jinja (the macro only returns a literal)."""
    import ast

    import jinja2

    text = (paths.project_root() / "macros" / "panel_variables.sql").read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["return"] = repr  # dbt's return(): here the macro renders the literal it returns
    rendered = env.from_string(text + "{{ panel_variables() }}").render()
    value = ast.literal_eval(rendered.strip())
    return {role: tuple(columns) for role, columns in value.items()}
