"""IPC normalisation and key-technology matching (the reference implementation) on hand-written cases."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from keytech import paths
from keytech.ipc import Concordance, main_group_of, normalise_ipc_code, normalise_ipc_list


@pytest.fixture(scope="module")
def concordance() -> Concordance:
    seeds = paths.seeds_dir()
    return Concordance.from_csv(seeds / "sei_ipc_concordance.csv", seeds / "ipc_revision_supplement.csv")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("H04L27/26", "H04L27/26"),
        ("H04L 27/26", "H04L27/26"),
        ("h04l27/26", "H04L27/26"),
        ("Ｈ０４Ｌ２７／２６", "H04L27/26"),  # full-width
        ("H04L27/26(2006.01)", "H04L27/26"),  # edition suffix
        ("H04L 27/26 (2006.01)", "H04L27/26"),
        ("H04L0027/26", "H04L27/26"),  # zero-padded main group
        ("H04L27-26", "H04L27/26"),
        ("H04L27/0", "H04L27/00"),
        ("B41J", "B41J"),
        ("G06F 17/3000", "G06F17/3000"),
        ("N/A", None),
        ("待定", None),
        ("12345", None),
        ("H04", None),
        ("Z99Z1/00", None),
    ],
)
def test_normalise_code(raw, expected):
    assert normalise_ipc_code(raw) == expected


def test_list_main_first_dedup_and_junk_positions():
    tokens = normalise_ipc_list(" H04L 27/26；h04l27/26 ; G06F17/30(2006.01);;N/A; n/a ,A47J27/00")
    assert [t.code for t in tokens] == ["H04L27/26", "G06F17/30", None, "A47J27/00"]
    assert [t.position for t in tokens] == [1, 2, 3, 4]
    assert tokens[0].raw == "H04L 27/26"  # the first occurrence's raw text is kept
    assert tokens[0].subclass == "H04L" and tokens[0].ipc_class == "H04"
    assert normalise_ipc_list(None) == [] and normalise_ipc_list(" ; ") == []


def test_main_group_of():
    assert main_group_of("H04L27/26") == "H04L27/00"
    assert main_group_of("H04L27/00") is None
    assert main_group_of("H04L") is None


def test_exact_match(concordance):
    match = concordance.match("A01B1/02")
    assert match.match_level == "exact" and match.sei_rule_ids == (33,)


def test_unlisted_subgroup_inherits_listed_main_group(concordance):
    # A01B1/00 is listed; A01B1/99 is not (another IPC edition): inherits.
    assert "A01B1/99" not in concordance.rules_by_code
    match = concordance.match("A01B1/99")
    assert match.match_level == "main_group" and match.sei_rule_ids == concordance.rules_by_code["A01B1/00"]
    strict = Concordance(concordance.rules_by_code, concordance.supplement, mode="strict")
    assert strict.match("A01B1/99").match_level == "none"


def test_missing_main_group_under_listed_subclass_is_an_exclusion(concordance):
    # A61B is listed with groups, but the real main group A61B8/00 (ultrasonic diagnosis) is not:
    # the rule was written with an exclusion, so neither the group nor its subgroups are key.
    assert "A61B" in concordance.rules_by_code and "A61B8/00" not in concordance.rules_by_code
    assert concordance.match("A61B8/00").match_level == "none"
    assert concordance.match("A61B8/08").match_level == "none"
    # an exclusion that exists because the group is mapped to another field keeps that field's rule
    assert concordance.match("B41J2/01").sei_rule_ids == concordance.rules_by_code["B41J2/00"] != concordance.rules_by_code["B41J"]


def test_pure_subclass_rule_and_class_rule(concordance):
    assert concordance.match("G16H99/99").match_level == "subclass"  # G16H listed without groups
    assert concordance.match("C08C19/00").match_level == "class"  # C08C has no rows; C08 listed
    assert concordance.match("G16Z99/00").match_level == "class"
    # a class rule does not reach a subclass that has its own rows (C08L lists groups)
    c08l_unlisted = "C08L999/00"
    assert concordance.match(c08l_unlisted).match_level == "none"


def test_h01l_supplement_and_switch(concordance):
    assert not any(code.startswith("H01L") for code in concordance.rules_by_code)
    match = concordance.match("H01L21/02")
    assert match.match_level == "supplement" and match.sei_rule_ids == (13,)
    off = Concordance(concordance.rules_by_code, concordance.supplement, use_supplement=False)
    assert off.match("H01L21/02").match_level == "none"


def test_unlisted_subclass_is_not_key(concordance):
    assert concordance.match("A47J27/00").match_level == "none"
    assert concordance.match(None).match_level == "none"


_code = st.builds(
    lambda s, c, sc, g, sg: f"{s}{c:02d}{sc}{g}/{sg:02d}",
    st.sampled_from("ABCDEFGH"), st.integers(1, 99), st.sampled_from("ABCDEFGHJKLMNPQ"),
    st.integers(1, 999), st.integers(0, 9999),
)


@given(_code, st.sampled_from(["", " ", "  "]), st.booleans(), st.booleans(), st.booleans())
def test_formatting_never_changes_the_normalised_code(code, gap, lower, fullwidth, suffix):
    text = code.replace(code[:4], code[:4] + gap, 1)
    if lower:
        text = text.lower()
    if fullwidth:
        text = "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)
    if suffix:
        text += "(2006.01)"
    assert normalise_ipc_code(text) == normalise_ipc_code(code) == code


@given(st.lists(_code, min_size=1, max_size=8))
def test_list_normalisation_is_idempotent_and_unique(codes):
    tokens = normalise_ipc_list(";".join(codes))
    again = normalise_ipc_list(";".join(t.code for t in tokens))
    assert [t.code for t in again] == [t.code for t in tokens]
    assert len({t.code for t in tokens}) == len(tokens)
    assert tokens[0].code == codes[0]


def test_photovoltaic_devices_go_to_the_solar_field_of_their_family(concordance):
    """Issue 11 §5: solar cells (H01L31/04-31/078, H10F10, H10F19) take the SEI rule the 2021
    concordance gives their family, PV modules H02S (read from the concordance file itself),
    not rule 13 (1.2) of the rest of H01L; photodetectors stay in 1.2."""
    h02s_rules = {rules for code, rules in concordance.rules_by_code.items() if code.startswith("H02S")}
    assert h02s_rules == {(237,)}
    for pv in ("H01L31/0445", "H01L31/05", "H01L31/0687", "H01L31/078", "H10F10/142", "H10F19/50"):
        match = concordance.match(pv)
        assert (match.match_level, match.sei_rule_ids) == ("supplement", (237,)), pv
    for other in ("H01L31/0216", "H01L31/18", "H01L31/101", "H10F30/22", "H10F39/18", "H01L21/02"):
        assert concordance.match(other).sei_rule_ids == (13,), other
