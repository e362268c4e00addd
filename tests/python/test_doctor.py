"""`keytech doctor` on the shared tiny warehouse: healthy, a broken raw folder (caught with the
file and the problem named), a missing warehouse, a failed check run."""

from __future__ import annotations

import shutil

import duckdb
import pytest

from _report_support import env_for
from keytech.doctor import diagnose, next_step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tiny_demo_warehouse) -> dict:
    return tiny_demo_warehouse


def _kw(built, **over):
    kw = {"raw_dir": built["raw"], "db_path": built["db"], "landing_dir": built["landing"], "output_dir": built["out"]}
    kw.update(over)
    return kw


def test_healthy_setup_has_no_failures(built):
    findings = diagnose(**_kw(built))
    assert not [f for f in findings if f.status == "fail"], [f.render() for f in findings]
    areas = {f.area for f in findings}
    assert {"python", "packages", "dbt", "digits", "raw folder", "landing", "warehouse", "checks", "estimation"} <= areas
    assert any("dbt-core" in f.message and "<1.12" in f.message for f in findings)


def test_broken_raw_folder_is_caught_with_a_useful_message(built, tmp_path, monkeypatch, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(built["raw"], raw)
    (raw / "pilot_list.csv").unlink()
    lines = (raw / "firm_info.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    drop = header.index("Nnindcd")
    (raw / "firm_info.csv").write_text(
        "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines) + "\n", encoding="utf-8")
    findings = diagnose(**_kw(built, raw_dir=raw))
    raw_finding = next(f for f in findings if f.area == "raw folder")
    assert raw_finding.status == "fail"
    assert "breaks the input contract" in raw_finding.message
    assert "pilot_list" in raw_finding.message and "Nnindcd" in raw_finding.message
    assert "column_mapping.yml" in raw_finding.fix and str(raw) in raw_finding.fix

    from keytech.cli import main

    for key, value in env_for(built).items():
        monkeypatch.setenv(key, value)
    assert main(["doctor", "--raw-dir", str(raw)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "Nnindcd" in out and "Next: fix the files" in out


def test_missing_warehouse_says_build(built, tmp_path):
    findings = diagnose(**_kw(built, db_path=tmp_path / "none.duckdb"))
    wh = next(f for f in findings if f.area == "warehouse")
    assert wh.status == "fail" and "keytech build" in wh.fix
    assert next_step(findings) == "Next: run `keytech build`"


def test_failed_last_check_is_reported(built, tmp_path):
    db = tmp_path / "w.duckdb"
    shutil.copy(built["db"], db)
    with duckdb.connect(str(db)) as con:
        con.execute("insert into results.check_runs select 'later-failed', checked_at + interval 1 hour, false, "
                    "data_fingerprint, details_json from results.check_runs order by checked_at desc limit 1")
    findings = diagnose(**_kw(built, db_path=db))
    check = next(f for f in findings if f.area == "checks")
    assert check.status == "fail" and "FAILED" in check.message and "later-failed" in check.message


def test_every_command_has_help_with_an_example_and_takes_quiet_after_the_command(capsys):
    from keytech.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert {"report", "export", "doctor", "docs"} <= set(sub.choices)
    for name in sub.choices:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "Example" in capsys.readouterr().out, name
    args = parser.parse_args(["doctor", "-q"])
    assert args.quiet is True and args.verbose is False
    assert parser.parse_args(["-q", "doctor"]).quiet is True


def test_digits_finding_warns_when_the_settings_differ(monkeypatch):
    """keytech doctor says when the estimates' last digits may differ from other machines: a thread
    count or the OpenBLAS kernels other than keytech's (keytech/__init__.py)."""
    import keytech
    from keytech.doctor import check_digits

    monkeypatch.setattr(keytech, "_cpu_runs_haswell_kernels", lambda: True)
    monkeypatch.setattr(keytech, "thread_settings", lambda: {"demeaner": "1", "blas": "1", "blas_core": "Haswell"})
    assert check_digits().status == "ok"
    monkeypatch.setattr(keytech, "thread_settings", lambda: {"demeaner": "1", "blas": "1", "blas_core": "SkylakeX"})
    finding = check_digits()
    assert finding.status == "warn" and "SkylakeX kernels, not Haswell" in finding.message
    assert "import keytech before numpy" in finding.fix
    monkeypatch.setattr(keytech, "thread_settings", lambda: {"demeaner": "4", "blas": "1", "blas_core": "Haswell"})
    assert "RAYON_NUM_THREADS=4" in check_digits().message
    monkeypatch.setattr(keytech, "_cpu_runs_haswell_kernels", lambda: False)  # ARM: OpenBLAS's own choice
    monkeypatch.setattr(keytech, "thread_settings", lambda: {"demeaner": "1", "blas": "1", "blas_core": "NEOVERSEN1"})
    assert check_digits().status == "ok" and "may differ from AVX2 machines" in check_digits().message
