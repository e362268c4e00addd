"""No committed merge-conflict block in the project's text files.

A conflict block (``<<<<<<< HEAD`` … ``=======`` … ``>>>>>>> branch``) was once committed into
docs/architecture.md by a merge and stayed there unseen for a session. The files checked are the
ones git tracks (``git ls-files``); without git (an exported tree) every file under the project
root except generated folders (virtual environment, dbt target and logs, output, data).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = {".git", ".venv", "target", "logs", "output", "data", "dbt_packages", "__pycache__", ".pytest_cache"}
# git writes the opening and closing markers as 7 characters and a space (then the side's name)
MARKER = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)


def _project_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / name for name in listed.decode("utf-8").split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*")
                if p.is_file() and not GENERATED.intersection(p.relative_to(ROOT).parts)]


def conflict_markers(path: Path) -> list[int]:
    """Line numbers (1-based) of conflict-marker lines in ``path``; [] for binary files."""
    data = path.read_bytes()
    if b"\0" in data:
        return []
    text = data.decode("utf-8", errors="replace")
    return [text.count("\n", 0, m.start()) + 1 for m in MARKER.finditer(text)]


def test_conflict_markers_are_found(tmp_path):
    planted = tmp_path / "notes.md"
    planted.write_text("# Notes\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> h17j\n", encoding="utf-8")
    assert conflict_markers(planted) == [2, 6]
    clean = tmp_path / "clean.md"
    clean.write_text("Title\n=======\n\n    >>>>>>> indented is not a marker\n", encoding="utf-8")
    assert conflict_markers(clean) == []


def test_no_committed_conflict_block():
    files = [p for p in _project_files() if p.is_file()]
    assert len(files) > 100, "the project's files were not found"
    found = {str(p.relative_to(ROOT)): lines for p in files if (lines := conflict_markers(p))}
    assert not found, f"merge-conflict markers (file: lines) — resolve them: {found}"
