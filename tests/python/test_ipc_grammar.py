"""Issue 12 §3: every published IPC form parses, in SQL (the dbt macros, run in DuckDB) and in
the Python reference alike; application numbers in every CNIPA form normalise to one key.

The SQL side renders the project's own macros (macros/cleaning.sql, macros/ipc.sql) with Jinja
and runs the token pipeline of int_patent_ipc_tokens_parsed on each string: separate
(ipc_separate_codes) → split on ';' → strip whitespace → drop empty → upper case, remove
whitespace → remove edition and marker (ipc_remove_edition_suffix) → parse (ipc_code_of).
NFKC is applied in Python first (its SQL twin, nfkc_ascii_pairs, is covered by the
end-to-end comparison on built data)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import duckdb
import jinja2
import pytest
from hypothesis import given, settings, strategies as st

from keytech.ipc import normalise_application_number, normalise_ipc_code, normalise_ipc_list

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def macros():
    text = "".join((ROOT / "macros" / name).read_text(encoding="utf-8") for name in ("cleaning.sql", "ipc.sql"))
    return jinja2.Environment().from_string(text).module


@pytest.fixture(scope="module")
def sql_tokens(macros):
    con = duckdb.connect()
    separated_any = macros.ipc_separate_codes("t")
    separated_ascii = macros.ipc_separate_codes("t", printable_ascii=True)
    strip = macros.strip_whitespace("piece")
    compact = macros.ipc_remove_edition_suffix(macros.remove_whitespace("upper(raw)"))
    code = macros.ipc_code_of("compact")
    query = f"""
        with s as (select ? as t),
        split as (
            select string_split(case when regexp_full_match(t, '[ -~]*') then {separated_ascii}
                                     else {separated_any} end, ';') as pieces from s
        ),
        raws as (select unnest(list_filter(list_transform(pieces, lambda piece: {strip}),
                                           lambda raw: raw <> '')) as raw from split),
        compacts as (select raw, {compact} as compact from raws)
        select raw, {code} as code from compacts
    """

    def run(raw: str) -> list[tuple[str, str | None]]:
        rows = con.execute(query, [unicodedata.normalize("NFKC", raw)]).fetchall()
        out, seen = [], set()
        for piece, parsed in rows:  # the model's de-duplication (first position wins)
            key = parsed if parsed is not None else "\x00" + "".join(piece.upper().split())
            if key not in seen:
                seen.add(key)
                out.append((piece, parsed))
        return out

    yield run
    con.close()


def _python(raw: str) -> list[tuple[str, str | None]]:
    return [(t.raw, t.code) for t in normalise_ipc_list(raw)]


PUBLISHED = [
    ("H01L21/00(2006.01)I;H01L21/02(2006.01)I", ["H01L21/00", "H01L21/02"]),
    ("H01L 21/00 (2006.01) I; H01L 21/02 (2006.01) N", ["H01L21/00", "H01L21/02"]),
    ("G06F17/30(2006.01)A、H04L27/26", ["G06F17/30", "H04L27/26"]),
    ("G06F17/30 H04L27/26", ["G06F17/30", "H04L27/26"]),
    ("G06F 17/30  H04L 27/26", ["G06F17/30", "H04L27/26"]),
    ("g06f17/30；h04l27/26", ["G06F17/30", "H04L27/26"]),
    ("Ｇ０６Ｆ１７／３０，Ｈ０４Ｌ２７／２６", ["G06F17/30", "H04L27/26"]),
    ("G06F17/30I", ["G06F17/30"]),
    ("G06F17/30 I H04L27/26", ["G06F17/30", "H04L27/26"]),
    ("H04L 27/26", ["H04L27/26"]),
    ("B41J;G16H 40/63\tA61B5/00", ["B41J", "G16H40/63", "A61B5/00"]),
    ("H04L0027/26(2006.1)", ["H04L27/26"]),
    ("G06N;H04N 5/00;A61N(2006.01)I", ["G06N", "H04N5/00", "A61N"]),  # subclass letters I/A/N are no markers
]


@pytest.mark.parametrize("raw, codes", PUBLISHED)
def test_published_forms_parse_in_python_and_sql(raw, codes, sql_tokens):
    assert [c for _, c in _python(raw)] == codes
    assert sql_tokens(raw) == _python(raw)


def test_junk_stays_junk_and_positions_are_kept(sql_tokens):
    raw = "???;not an IPC;G06F17/30;XYZ-123;H04L 27/26 (2006.01)"
    assert [c for _, c in _python(raw)] == [None, None, "G06F17/30", None, "H04L27/26"]
    assert sql_tokens(raw) == _python(raw)


_code = st.builds(
    lambda s, c, sc, g, sg: f"{s}{c:02d}{sc}{g}/{sg:02d}",
    st.sampled_from("ABCDEFGH"), st.integers(1, 99), st.sampled_from("ABCDEFGHJKLMNPQ"),
    st.integers(1, 999), st.integers(0, 9999),
)
_subclass = st.builds(lambda s, c, sc: f"{s}{c:02d}{sc}", st.sampled_from("ABCDEFGH"), st.integers(1, 99),
                      st.sampled_from("ABCDEFGHJKLMNPQ"))
_form = st.fixed_dictionaries({
    "gap": st.sampled_from(["", " ", "  "]),
    "lower": st.booleans(),
    "fullwidth": st.booleans(),
    "edition": st.sampled_from(["", "(2006.01)", " (2006.01)", "(2019.1)", "(2006.01)I", "(2006.01)N",
                                "(2006.01)A", " (2006.01) I", "(2006.01)i"]),
})
_separator = st.sampled_from([";", "；", ",", "，", "、", " ", "  ", "; ", " ；", " 、 ", "\t"])


def _render(code: str, form: dict) -> str:
    text = code.replace(code[:4], code[:4] + form["gap"], 1) if "/" in code else code
    text += form["edition"] if "/" in code else ""
    if form["lower"]:
        text = text.lower()
    if form["fullwidth"]:
        text = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)
    return text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.one_of(_code, _subclass), _form), min_size=1, max_size=6),
       st.lists(_separator, min_size=6, max_size=6))
def test_grammar_any_published_form_gives_the_same_codes(sql_tokens, items, separators):
    raw = ""
    for i, (code, form) in enumerate(items):
        raw += (separators[i - 1] if i else "") + _render(code, form)
    expected = list(dict.fromkeys(normalise_ipc_code(code) for code, _ in items))
    assert [c for _, c in _python(raw)] == expected, raw
    assert sql_tokens(raw) == _python(raw), raw


@pytest.fixture(scope="module")
def sql_application_number(macros):
    con = duckdb.connect()
    query = f"select {macros.normalise_application_number('a')} from (select ? as a)"
    yield lambda raw: con.execute(query, [raw]).fetchone()[0]
    con.close()


_number12 = st.builds(lambda y, t, n: f"{y}{t}{n:07d}", st.integers(2003, 2024), st.sampled_from("12389"),
                      st.integers(0, 9_999_999))
_number8 = st.builds(lambda y, t, n: f"{y:02d}{t}{n:05d}", st.integers(85, 99), st.sampled_from("123"),
                     st.integers(0, 99_999))


@settings(max_examples=150, deadline=None)
@given(st.one_of(_number12, _number8), st.sampled_from("0123456789X"), st.sampled_from(["", "CN", "cn", "ZL", "CN "]),
       st.sampled_from([".", "", None]), st.booleans())
def test_application_number_forms_normalise_to_one_key(sql_application_number, digits, check, prefix, dot, spaced):
    body = digits if not spaced else " ".join([digits[:4], digits[4:]])
    raw = prefix + body + ("" if dot is None else dot + check)
    assert normalise_application_number(raw) == "CN" + digits
    assert sql_application_number(raw) == "CN" + digits


def test_application_number_examples(sql_application_number):
    for raw, key in [("CN201510123456.7", "CN201510123456"), ("2015101234567", "CN201510123456"),
                     ("201510123456", "CN201510123456"), ("CN98123456.X", "CN98123456"), ("98123456", "CN98123456"),
                     ("PCT/CN2015/000001", "PCT/CN2015/000001"), ("n/a", "N/A")]:
        assert normalise_application_number(raw) == key
        assert sql_application_number(raw) == key
