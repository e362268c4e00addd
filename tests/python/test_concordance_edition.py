"""Issue 12 §3: `keytech build --concordance PATH` uses another edition of the SEI–IPC concordance
(same shape as the seed) and records which edition was used; a file of another shape is refused."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from conftest import write_raw
from keytech.build import BuildOptions, build_warehouse, land_concordance, read_build_state


def test_an_edition_of_another_shape_is_refused(tmp_path: Path):
    bad = tmp_path / "edition.csv"
    bad.write_text("code,rule\nG06F17/30,1\n", encoding="utf-8")
    options = BuildOptions(raw_dir=tmp_path, landing_dir=tmp_path / "landing", warehouse=tmp_path / "w.duckdb",
                           concordance=bad)
    with pytest.raises(ValueError, match="header must start with ipc_code,sei_rule_id"):
        land_concordance(options)
    bad.write_text("ipc_code,sei_rule_id\nG06F17/30,one\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line\\(s\\) 2"):
        land_concordance(options)
    default = land_concordance(BuildOptions(raw_dir=tmp_path, landing_dir=tmp_path / "l", warehouse=tmp_path / "w"))
    assert default["edition"].startswith("seeds/sei_ipc_concordance.csv")


@pytest.mark.slow
def test_build_uses_and_records_the_given_edition(tmp_path: Path):
    raw = write_raw(tmp_path / "raw", encodings={"city_yearbook.csv": "gbk"})
    edition = tmp_path / "sei_ipc_2026.csv"
    edition.write_text("ipc_code,sei_rule_id\nG06F17/30,1\n", encoding="utf-8")
    db = tmp_path / "warehouse.duckdb"
    outcome = build_warehouse(BuildOptions(raw_dir=raw, landing_dir=tmp_path / "landing", warehouse=db,
                                           quiet=True, concordance=edition))
    assert outcome["manifest"]["concordance"]["edition"] == str(edition.resolve())
    saved = json.loads((tmp_path / "landing" / "_manifest.json").read_text(encoding="utf-8"))
    assert saved["concordance"]["rows"] == 1
    assert read_build_state(db)["concordance"]["edition"] == str(edition.resolve())
    with duckdb.connect(str(db), read_only=True) as con:
        levels = dict(con.execute("select ipc_code, match_level from marts.fct_patent_ipc_codes "
                                  "where patent_id like '000001:%'").fetchall())
        assert con.execute("select count(*) from intermediate.int_sei_ipc_concordance_edition").fetchone() == (1,)
    # with the seed H04L27/26 is key technology; in this one-row edition only G06F17/30 is
    assert levels == {"H04L27/26": "none", "G06F17/30": "exact"}
