"""Plain-Python reference implementation of IPC normalisation and SEI key-technology matching.

The warehouse does this work in SQL (``models/intermediate/patents``); this module is the
independent second implementation the tests compare it against, and the synthetic generator uses it
to know the true status of every code it plants.

Normalisation (``normalise_ipc_list``)
    Every form CNIPA and CNRDS publish. The string: Unicode NFKC (full-width letters, digits,
    ``；`` and ``，`` become ASCII); tokens are separated by ``;``, ``,``, ``、`` or by whitespace
    in front of the start of another code (``<A-H><2 digits><letter>``, any case, e.g.
    ``H04L 27/26 G06F 17/30`` is two codes while ``H04L 27/26`` is one); empty tokens are ignored;
    a repeated code keeps its first position only. Each token: upper case, all whitespace removed,
    edition suffixes such as ``(2006.01)`` removed together with an attached I/N/A marker
    (``H01L21/00(2006.01)I``), a marker directly after the subgroup dropped (``G06F17/30I``),
    ``-`` or ``:`` between main group and subgroup read as ``/``, leading zeros of the main group
    dropped (``H04L0027/26`` → ``H04L27/26``), subgroups padded to two digits (``/0`` → ``/00``).
    A token that does not parse as ``<section><class><subclass>[<group>/<subgroup>]`` is returned
    with ``code=None``. The SQL twin is ``macros/ipc.sql`` with
    ``models/intermediate/patents/int_patent_ipc_tokens_parsed.sql``.

    Design patents carry a Locarno class (e.g. ``14-03``) in the same vendor field: staging moves it
    to ``locarno_class`` and it is never tokenised as IPC (not quarantined either).

Application numbers (``normalise_application_number``)
    One key per CNIPA application whatever the extract's form: ``CN`` or ``ZL`` prefix or none,
    check character after a dot, directly attached, or absent, whitespace; the 12-digit form
    (from October 2003) and the 8-digit form (before). Key: ``CN`` + the 12 or 8 digits, without
    the check character (``CN201510123456.7``, ``201510123456.7``, ``2015101234567`` and
    ``201510123456`` → ``CN201510123456``). Anything else is kept upper-cased and whitespace-free.

Matching (``Concordance.match``), mode ``hierarchical`` (default) or ``strict``
    1. ``exact``: the normalised code is listed.
    2. ``main_group`` (hierarchical only): a subgroup that is not listed inherits from its listed
       main group ``X/00``. The public table was expanded from CNIPA rules down to subgroups; a
       subgroup missing under a listed main group is almost always a code from another IPC edition
       (CNIPA exclusions are written at group level or above, e.g. ``B41J*（不含B41J2*）``).
    3. ``subclass`` (hierarchical only): a code inherits from a listed bare subclass only when the
       table lists no group at all under that subclass (a pure subclass rule, e.g. ``G16H``). When
       the subclass is listed together with some of its groups, a missing main group is an
       exclusion and the code is not key technology.
    4. ``class`` (hierarchical only): a code inherits from a listed class (``C08``, ``G16``) only when
       its own subclass has no rows at all.
    5. ``supplement``: the code starts with a prefix in the revision supplement (codes lost to IPC
       revisions, at least ``H01L``), used only when nothing above matched and the supplement is on.
    6. ``none`` otherwise.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

MATCH_LEVELS = ("exact", "main_group", "subclass", "class", "supplement", "none")

# Python's str.isspace() characters, as in macros/cleaning.sql whitespace_class()
_WS = "[\t\n\x0b\x0c\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# whitespace in front of the start of another code is a separator (macros/ipc.sql ipc_separate_codes)
_CODE_START_AFTER_WS = re.compile(_WS + "+([A-Ha-h]" + _WS + "*[0-9]{2}" + _WS + "*[A-Za-z])")
# edition suffix with an optional attached I/N/A marker; a marker right after the subgroup
_EDITION_SUFFIX = re.compile(r"\([0-9]{4}(?:\.[0-9]{1,2})?\)[IAN]?")
_TRAILING_MARKER = re.compile(r"([/:\-][0-9]{1,6})[IAN]$")  # only after a subgroup: G06N stays G06N
_CODE = re.compile(r"^([A-H])([0-9]{2})([A-Z])(?:([0-9]{1,4})[/:\-]([0-9]{1,6}))?$")
_SPLIT = re.compile(r"[;,、]")
_APPLICATION_NUMBER = re.compile(r"^(?:CN|ZL)?([0-9]{12}|[0-9]{8})\.?[0-9X]?$")


@dataclass(frozen=True)
class IpcToken:
    """One token of a raw IPC string after normalisation."""

    position: int  # 1-based position among the distinct tokens kept, main code = 1
    raw: str  # the token as it appeared in the raw string (trimmed)
    code: str | None  # normalised code, e.g. H04L27/26, or None when unparseable

    @property
    def subclass(self) -> str | None:
        return self.code[:4] if self.code else None

    @property
    def ipc_class(self) -> str | None:
        return self.code[:3] if self.code else None


def normalise_ipc_code(token: str) -> str | None:
    """Normalise one IPC code; return None when it does not parse."""
    text = unicodedata.normalize("NFKC", token).upper()
    text = "".join(text.split())
    text = _EDITION_SUFFIX.sub("", text)
    text = _TRAILING_MARKER.sub(r"\1", text)
    match = _CODE.match(text)
    if not match:
        return None
    section, klass, subclass, group, subgroup = match.groups()
    head = f"{section}{klass}{subclass}"
    if group is None:
        return head
    return f"{head}{int(group)}/{subgroup.zfill(2)}"


def normalise_ipc_list(raw: str | None) -> list[IpcToken]:
    """Split a raw semicolon-separated IPC string into normalised, de-duplicated tokens."""
    if raw is None:
        return []
    text = _CODE_START_AFTER_WS.sub(r";\1", unicodedata.normalize("NFKC", raw))
    tokens: list[IpcToken] = []
    seen: set[str] = set()
    for piece in _SPLIT.split(text):
        trimmed = piece.strip()
        if not trimmed:
            continue
        code = normalise_ipc_code(trimmed)
        key = code if code is not None else "\x00" + "".join(trimmed.upper().split())
        if key in seen:
            continue
        seen.add(key)
        tokens.append(IpcToken(position=len(tokens) + 1, raw=trimmed, code=code))
    return tokens


def normalise_application_number(raw: str | None) -> str | None:
    """One key per CNIPA application number (see the module docstring); None for None."""
    if raw is None:
        return None
    text = "".join(str(raw).split()).upper()
    match = _APPLICATION_NUMBER.match(text)
    return f"CN{match.group(1)}" if match else text


def main_group_of(code: str) -> str | None:
    """``H04L27/26`` → ``H04L27/00``; None for a bare subclass or a main group itself."""
    if "/" not in code:
        return None
    group, subgroup = code.split("/")
    if subgroup == "00":
        return None
    return f"{group}/00"


@dataclass
class Match:
    match_level: str
    sei_rule_ids: tuple[int, ...] = ()

    @property
    def is_key_tech(self) -> bool:
        return self.match_level != "none"


@dataclass
class Concordance:
    """The SEI–IPC concordance with the revision supplement, ready for matching."""

    rules_by_code: dict[str, tuple[int, ...]]
    supplement: dict[str, tuple[int, ...]] = field(default_factory=dict)
    mode: str = "hierarchical"
    use_supplement: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("hierarchical", "strict"):
            raise ValueError(f"mode must be 'hierarchical' or 'strict', not {self.mode!r}")
        self._subclasses_with_groups = {c[:4] for c in self.rules_by_code if "/" in c}
        self._subclasses_with_rows = {c[:4] for c in self.rules_by_code if len(c) >= 4}

    @classmethod
    def from_csv(
        cls,
        concordance_csv: str | Path,
        supplement_csv: str | Path | None = None,
        mode: str = "hierarchical",
        use_supplement: bool = True,
    ) -> "Concordance":
        rules: dict[str, list[int]] = defaultdict(list)
        with open(concordance_csv, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                rules[row["ipc_code"]].append(int(row["sei_rule_id"]))
        supplement: dict[str, list[int]] = defaultdict(list)
        if supplement_csv is not None:
            with open(supplement_csv, encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    supplement[row["ipc_prefix"]].append(int(row["sei_rule_id"]))
        return cls(
            rules_by_code={k: tuple(sorted(set(v))) for k, v in rules.items()},
            supplement={k: tuple(sorted(set(v))) for k, v in supplement.items()},
            mode=mode,
            use_supplement=use_supplement,
        )

    def match(self, code: str | None) -> Match:
        if code is None:
            return Match("none")
        if code in self.rules_by_code:
            return Match("exact", self.rules_by_code[code])
        if self.mode == "hierarchical":
            main_group = main_group_of(code)
            if main_group is not None and main_group in self.rules_by_code:
                return Match("main_group", self.rules_by_code[main_group])
            subclass = code[:4]
            if (
                code != subclass
                and subclass in self.rules_by_code
                and subclass not in self._subclasses_with_groups
            ):
                return Match("subclass", self.rules_by_code[subclass])
            klass = code[:3]
            if klass in self.rules_by_code and subclass not in self._subclasses_with_rows:
                return Match("class", self.rules_by_code[klass])
        if self.use_supplement:
            for prefix in sorted(self.supplement, key=len, reverse=True):
                if code.startswith(prefix):
                    return Match("supplement", self.supplement[prefix])
        return Match("none")
