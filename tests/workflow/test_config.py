"""Workflow YAML validation: every error names the file, the path inside it and what is allowed."""

from __future__ import annotations

import pytest

from embedtab.errors import ConfigError
from embedtab.workflow.config import load_config, parse_config
from tests.conftest import CONFIGS


def check(raw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(raw, "cfg.yaml")


def test_shipped_configs_parse():
    for name in ("item", "user", "context", "interactions"):
        config = load_config(CONFIGS / f"{name}.yaml")
        assert config.name == name
        assert config.input_columns()


def test_shorthand_forms():
    config = parse_config(
        {"features": [{"columns": ["a"], "ops": ["log", {"normalize": None}, {"tags": ["user"]},
                                                  {"bucketize": [1, 2]}, {"categorify": {"dtype": "int32"}}]}]},
        "cfg.yaml",
    )
    ops = config.features[0].ops
    assert [o.op for o in ops] == ["log", "normalize", "tags", "bucketize", "categorify"]
    assert ops[2].tags == ["user"] and ops[3].boundaries == [1.0, 2.0] and ops[4].dtype == "int32"


def test_errors_name_the_place_and_the_allowed_values():
    check({"features": [{"columns": ["a"], "ops": ["categorfy"]}]},
          r"cfg.yaml: features\[0\].ops\[0\]: unknown op 'categorfy' \(allowed: categorify, normalize")
    check({"features": [{"columns": ["a"], "ops": [{"categorify": {"freq_treshold": 2}}]}]},
          r"features\[0\].ops\[0\].categorify.freq_treshold: unknown parameter 'freq_treshold'")
    check({"features": [{"columns": ["a"], "ops": [{"categorify": {"dtype": "int8"}}]}]},
          r"features\[0\].ops\[0\].categorify.dtype: Input should be 'int32' or 'int64'")
    check({"features": [{"columns": ["a"], "ops": [{"tags": ["usr"]}]}]},
          r"features\[0\].ops\[0\].tags.tags\[0\]: unknown tag 'usr' \(allowed: user_id, item_id")
    check({"features": [{"columns": ["a"], "ops": [{"bucketize": [3, 1]}]}]}, "boundaries must be increasing")
    check({"features": [{"columns": ["a"], "ops": [{"rename": {"postfix": "_x", "name": "y"}}]}]},
          "give exactly one of postfix, prefix or name")
    check({"features": [{"columns": ["a"], "ops": [{"log": 3}]}]}, "op parameters must be a mapping")
    check({"features": [{"columns": ["a"], "ops": [{"log": {}, "normalize": {}}]}]}, "one-key mapping")
    check({"features": []}, r"features: List should have at least 1 item")
    check({"feature": []}, "unknown parameter 'feature'")
    check(["not", "a", "mapping"], "expected a mapping")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  - columns: [a\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ is not valid YAML"):
        load_config(bad)
