"""The specification registry: ``keytech/specs.yml`` → typed :class:`Spec` objects.

A specification is data. Adding a plain regression means adding a YAML entry; only a new *kind*
of estimator needs code (see :data:`keytech.estimation.dispatch.ESTIMATORS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from keytech.marts import marts_with
from keytech.yaml_files import load_yaml

SPECS_FILE = Path(__file__).resolve().parents[2] / "specs.yml"

# the marts a spec may read as its panel or extra_marts: those declared `estimation: true` in
# models/marts/<area>/_marts__*.yml (keytech/marts.py); all of them are public, so the data gate covers them
PANELS = marts_with("estimation")
DEFAULT_PANEL = "rpt_analysis_panel"


class RegistryError(ValueError):
    """The registry file is malformed or a selection names no spec."""


@dataclass(frozen=True)
class Vcov:
    """Variance estimator: ``iid``, ``hetero`` or cluster-robust (CRV1) by one or two variables."""

    kind: str  # iid | hetero | cluster
    cluster: tuple[str, ...] = ()

    def pyfixest(self) -> str | dict[str, str]:
        if self.kind == "iid":
            return "iid"
        if self.kind == "hetero":
            return "hetero"
        return {"CRV1": "+".join(self.cluster)}

    def describe(self) -> str:
        if self.kind == "cluster":
            return f"cluster({', '.join(self.cluster)})"
        return self.kind

    @classmethod
    def parse(cls, raw: Any) -> "Vcov":
        if isinstance(raw, str):
            if raw in ("iid", "hetero"):
                return cls(raw)
            raise RegistryError(f"unknown vcov {raw!r}; use iid, hetero or {{cluster: var}}")
        if isinstance(raw, dict) and set(raw) == {"cluster"}:
            cl = raw["cluster"]
            cl = (cl,) if isinstance(cl, str) else tuple(cl)
            if not 1 <= len(cl) <= 2:
                raise RegistryError("cluster needs one or two variables")
            return cls("cluster", cl)
        raise RegistryError(f"cannot read vcov {raw!r}")


@dataclass(frozen=True)
class PaperNumbers:
    """What the paper publishes for a specification (None where it publishes nothing)."""

    coef: float | None = None
    se: float | None = None
    stars: int | None = None
    nobs: int | None = None
    adj_r2: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Spec:
    id: str
    group: str
    label: str
    description: str
    estimator: str
    panel: str
    outcome: str
    treatment: str
    controls: tuple[str, ...]  # resolved variable names
    control_sets: tuple[str, ...]  # the names as written (sets or variables), for table rows
    extra_regressors: tuple[str, ...]
    fixed_effects: tuple[str, ...]
    fixed_effects_name: str
    vcov: Vcov
    sample: str  # named filter or pandas query string ('' = all rows)
    sample_query: str
    fixef_rm: str
    fixef_tol: float
    demeaner: str
    split: dict[str, Any] | None
    options: dict[str, Any] = field(default_factory=dict)
    paper: PaperNumbers | None = None
    table: str | None = None
    table_panel: str | None = None
    extra_marts: tuple[str, ...] = ()  # marts left-joined onto the panel by (stkcd, year)

    @property
    def regressors(self) -> tuple[str, ...]:
        return (self.treatment, *self.extra_regressors, *self.controls)

    def has_controls(self, set_name: str) -> bool:
        return set_name in self.control_sets

    def fe_description(self, labels: dict[str, str]) -> str:
        if not self.fixed_effects:
            return "none"
        return " + ".join(labels.get(f, f) for f in self.fixed_effects)


@dataclass(frozen=True)
class Moderator:
    """One row block of the heterogeneity table: its specs are ``het_<code>_<low|high>_<key|nonkey>``."""

    code: str
    label: str
    hint: str = ""

    def spec_id(self, group: str, outcome: str) -> str:
        """``het_<code>_<group>_<outcome>``: group low|high, outcome key|nonkey."""
        return f"het_{self.code}_{group}_{outcome}"

    def spec_ids(self) -> tuple[str, ...]:
        return tuple(self.spec_id(g, o) for o in ("key", "nonkey") for g in ("low", "high"))


@dataclass(frozen=True)
class TableSpec:
    """What a publication table says besides its numbers: an entry of the ``tables:`` block of
    ``specs.yml`` (the fields are described there)."""

    id: str
    title: str = ""
    notes: tuple[str, ...] = ()
    synthetic_notes: tuple[str, ...] = ()
    not_estimable_notes: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    extra_terms: tuple[tuple[str, str], ...] = ()  # (term, row label)
    sample_row: bool = False
    permutation_row: bool = False
    paper_rows: tuple[tuple[str, dict[str, str]], ...] = ()  # (row label, {spec id: text})
    moderators: tuple[Moderator, ...] = ()
    rendered: bool = True
    text_title: str = ""  # the plain-text rendering (Table 3's "this run vs paper")
    text_notes: tuple[str, ...] = ()


TABLE_KEYS = frozenset(f.name for f in fields(TableSpec)) - {"id"}


@dataclass(frozen=True)
class Registry:
    specs: tuple[Spec, ...]
    control_sets: dict[str, tuple[str, ...]]
    fixed_effect_sets: dict[str, tuple[str, ...]]
    fe_labels: dict[str, str]
    filters: dict[str, str]
    groups: tuple[str, ...]
    tables: dict[str, TableSpec] = field(default_factory=dict)

    def table(self, table_id: str) -> TableSpec:
        """The ``tables:`` entry of ``table_id``."""
        try:
            return self.tables[table_id]
        except KeyError:
            raise RegistryError(f"no table {table_id!r} in the tables: block of specs.yml; known: "
                                f"{', '.join(self.tables) or '(none)'}") from None

    def get(self, spec_id: str) -> Spec:
        for spec in self.specs:
            if spec.id == spec_id:
                return spec
        raise RegistryError(f"no spec {spec_id!r}; known: {', '.join(s.id for s in self.specs)}")

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]

    def select(self, only: list[str] | None) -> list[Spec]:
        """Specs named by ``only``: exact ids, group names (table3, event_study, robust, placebo,
        staggered, ...) or id prefixes. ``None`` or empty selects every spec, in registry order."""
        if not only:
            return list(self.specs)
        chosen: set[str] = set()
        for token in only:
            token = token.strip()
            hits = [
                s.id
                for s in self.specs
                if s.id == token or s.group == token or s.id.startswith(token) or token in _aliases(s)
            ]
            if not hits:
                raise RegistryError(
                    f"--only {token!r} matches no specification. Known ids: {', '.join(self.ids)}; "
                    f"groups: {', '.join(self.groups)}."
                )
            chosen.update(hits)
        return [s for s in self.specs if s.id in chosen]


def _aliases(spec: Spec) -> tuple[str, ...]:
    # 'staggered' selects robust_staggered_*; 'cluster' selects robust_cluster_*
    parts = spec.id.split("_")
    return tuple(parts[1:2]) if spec.id.startswith("robust_") else ()


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def parse_registry(raw: dict[str, Any]) -> Registry:
    if not isinstance(raw, dict) or "specs" not in raw:
        raise RegistryError("registry needs a top-level 'specs' list")
    control_sets = {k: _as_tuple(v) for k, v in (raw.get("control_sets") or {}).items()}
    fe_sets = {k: _as_tuple(v) for k, v in (raw.get("fixed_effect_sets") or {}).items()}
    fe_labels = dict(raw.get("fixed_effect_labels") or {})
    filters = {k: (v or "") for k, v in (raw.get("filters") or {}).items()}
    defaults = dict(raw.get("defaults") or {})
    specs: list[Spec] = []
    seen: set[str] = set()
    for entry in raw["specs"]:
        merged = {**defaults, **entry}
        sid = merged.get("id")
        if not sid or sid in seen:
            raise RegistryError(f"spec id missing or duplicated: {sid!r}")
        seen.add(sid)
        try:
            specs.append(_parse_spec(merged, control_sets, fe_sets, filters))
        except RegistryError as exc:
            raise RegistryError(f"spec {sid}: {exc}") from exc
    groups = tuple(dict.fromkeys(s.group for s in specs))
    tables = parse_tables(raw.get("tables"))
    for s in specs:
        if s.table is not None and s.table not in tables:
            raise RegistryError(f"spec {s.id}: table {s.table!r} is not in the tables: block of specs.yml "
                                f"(known: {', '.join(tables) or '(none)'}); add an entry with its title and notes")
    for tid, ts in tables.items():
        for m in ts.moderators:
            missing = [sid for sid in m.spec_ids() if sid not in seen]
            if missing:
                raise RegistryError(f"tables.{tid}.moderators: {m.code!r} needs the specs {', '.join(m.spec_ids())}; "
                                    f"missing: {', '.join(missing)}")
    return Registry(tuple(specs), control_sets, fe_sets, fe_labels, filters, groups, tables)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(f"{where} must be a list of strings")
    return tuple(value)


def _mapping(value: Any, keys: set[str], required: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RegistryError(f"{where} must be a mapping with {', '.join(sorted(keys))}")
    unknown = set(value) - keys
    if unknown:
        raise RegistryError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                            f"allowed: {', '.join(sorted(keys))}")
    missing = required - set(value)
    if missing:
        raise RegistryError(f"{where}: missing {', '.join(sorted(missing))}")
    return value


def parse_tables(raw: Any) -> dict[str, TableSpec]:
    """The ``tables:`` block: table id → :class:`TableSpec`, validated (unknown keys, wrong types,
    a rendered table without a title, duplicate moderators are errors naming the table)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RegistryError("tables: must be a mapping of table id to its title, notes, ...")
    out: dict[str, TableSpec] = {}
    for tid, entry in raw.items():
        where = f"tables.{tid}"
        m = _mapping(entry or {}, set(TABLE_KEYS), set(), where)
        rendered = m.get("rendered", True)
        if not isinstance(rendered, bool):
            raise RegistryError(f"{where}.rendered must be true or false")
        title = m.get("title", "")
        if not isinstance(title, str) or (rendered and not title.strip()):
            raise RegistryError(f"{where}: a rendered table needs a title (a string)")
        for flag in ("sample_row", "permutation_row"):
            if not isinstance(m.get(flag, False), bool):
                raise RegistryError(f"{where}.{flag} must be true or false")
        extra = []
        for i, t in enumerate(m.get("extra_terms") or []):
            t = _mapping(t, {"term", "label"}, {"term", "label"}, f"{where}.extra_terms[{i}]")
            extra.append((str(t["term"]), str(t["label"])))
        paper_rows = []
        for i, r in enumerate(m.get("paper_rows") or []):
            r = _mapping(r, {"label", "values"}, {"label", "values"}, f"{where}.paper_rows[{i}]")
            if not isinstance(r["values"], dict):
                raise RegistryError(f"{where}.paper_rows[{i}].values must map spec ids to text")
            paper_rows.append((str(r["label"]), {str(k): str(v) for k, v in r["values"].items()}))
        moderators: list[Moderator] = []
        for i, r in enumerate(m.get("moderators") or []):
            r = _mapping(r, {"code", "label", "hint"}, {"code", "label"}, f"{where}.moderators[{i}]")
            if any(x.code == str(r["code"]) for x in moderators):
                raise RegistryError(f"{where}.moderators: code {r['code']!r} listed twice")
            moderators.append(Moderator(str(r["code"]), str(r["label"]), str(r.get("hint") or "")))
        out[str(tid)] = TableSpec(
            id=str(tid), title=title,
            notes=_strings(m.get("notes"), f"{where}.notes"),
            synthetic_notes=_strings(m.get("synthetic_notes"), f"{where}.synthetic_notes"),
            not_estimable_notes=_strings(m.get("not_estimable_notes"), f"{where}.not_estimable_notes"),
            headers=_strings(m.get("headers"), f"{where}.headers"),
            extra_terms=tuple(extra), sample_row=m.get("sample_row", False),
            permutation_row=m.get("permutation_row", False), paper_rows=tuple(paper_rows),
            moderators=tuple(moderators), rendered=rendered,
            text_title=str(m.get("text_title") or ""),
            text_notes=_strings(m.get("text_notes"), f"{where}.text_notes"),
        )
    return out


def _check_demeaner(name: str) -> str:
    if name not in ("lsmr", "map"):
        raise RegistryError("demeaner must be 'lsmr' or 'map'")
    return name


def _parse_spec(m: dict[str, Any], control_sets, fe_sets, filters) -> Spec:
    written_controls = _as_tuple(m.get("controls"))
    controls: list[str] = []
    for name in written_controls:
        controls.extend(control_sets.get(name, (name,)))
    fe_raw = m.get("fixed_effects", "none")
    if isinstance(fe_raw, str):
        if fe_raw not in fe_sets:
            raise RegistryError(f"unknown fixed-effect set {fe_raw!r}")
        fe, fe_name = fe_sets[fe_raw], fe_raw
    else:
        fe, fe_name = _as_tuple(fe_raw), "+".join(_as_tuple(fe_raw))
    sample = m.get("sample") or "all"
    query = filters.get(sample, sample if sample != "all" else "")
    panel = m.get("panel", DEFAULT_PANEL)
    for mart in (panel, *_as_tuple(m.get("extra_marts"))):
        if mart not in PANELS:
            raise RegistryError(f"mart {mart!r} is not declared for estimation; use one of {PANELS}, or declare it "
                                "in its models/marts YAML (access: public, config.meta.keytech.estimation: true)")
    paper = m.get("paper")
    fixef_rm = m.get("fixef_rm", "singleton")
    if fixef_rm not in ("singleton", "none"):
        raise RegistryError("fixef_rm must be 'singleton' or 'none'")
    for required in ("estimator", "outcome", "treatment"):
        if not m.get(required):
            raise RegistryError(f"missing {required!r}")
    return Spec(
        id=m["id"],
        group=m.get("group") or m["id"].split("_")[0],
        label=str(m.get("label") or m["id"]),
        description=" ".join(str(m.get("description", "")).split()),
        estimator=m["estimator"],
        panel=panel,
        outcome=m["outcome"],
        treatment=m["treatment"],
        controls=tuple(dict.fromkeys(controls)),
        control_sets=written_controls,
        extra_regressors=_as_tuple(m.get("extra_regressors")),
        fixed_effects=fe,
        fixed_effects_name=fe_name,
        vcov=Vcov.parse(m.get("vcov", "iid")),
        sample=sample,
        sample_query=query,
        fixef_rm=fixef_rm,
        fixef_tol=float(m.get("fixef_tol", 1e-8)),
        demeaner=_check_demeaner(m.get("demeaner", "lsmr")),
        split=m.get("split"),
        options=dict(m.get("options") or {}),
        paper=PaperNumbers(**paper) if paper else None,
        table=m.get("table"),
        table_panel=m.get("table_panel"),
        extra_marts=_as_tuple(m.get("extra_marts")),
    )


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> Registry:
    with open(path, encoding="utf-8") as fh:
        return parse_registry(load_yaml(fh))


def load_registry(path: str | Path | None = None) -> Registry:
    """Read and validate the registry (default: the packaged ``specs.yml``)."""
    p = Path(path) if path else SPECS_FILE
    return _load_cached(str(p), p.stat().st_mtime)
