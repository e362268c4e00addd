"""keytech.yaml_files.load_yaml (issue 17: PyYAML's C parser) reads every YAML file of the project
to the same Python objects as the pure-Python ``yaml.safe_load``, and fails the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from keytech.yaml_files import SAFE_LOADER, load_yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted({*ROOT.glob("*.yml"), *(ROOT / "python").rglob("*.yml"), *(ROOT / "models").rglob("*.yml"),
                *(ROOT / "seeds").rglob("*.yml"), *(ROOT / "tests").rglob("*.yml")})


def test_the_c_parser_is_used_where_pyyaml_has_it():
    assert len(FILES) > 30
    assert SAFE_LOADER is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_project_yaml_file_loads_as_safe_load_reads_it(path):
    text = path.read_text(encoding="utf-8")
    expected = yaml.safe_load(text)
    assert load_yaml(text) == expected
    with path.open(encoding="utf-8") as handle:  # a stream, as the registry is read
        assert load_yaml(handle) == expected


def test_typed_scalars_and_invalid_yaml_as_safe_load():
    text = "a: 1e-8\nb: 2010\nc: yes\nd: null\ne: 2024-01-02\nf: '007'\ng: [1, 2.5, x]\nh: 参访\n"
    assert load_yaml(text) == yaml.safe_load(text)
    for broken in ("a: [1, 2", "a: b: c", "- a\nb: c", "a: !!python/object:os.system x"):
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(broken)
        with pytest.raises(yaml.YAMLError):
            load_yaml(broken)
