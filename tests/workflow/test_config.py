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
        {
            "features": [
                {
                    "columns": ["a"],
                    "ops": ["log", {"normalize": None}, {"tags": ["user"]}, {"bucketize": [1, 2]}, {"categorify": {"dtype": "int32"}}],
                }
            ]
        },
        "cfg.yaml",
    )
    ops = config.features[0].ops
    assert [o.op for o in ops] == ["log", "normalize", "tags", "bucketize", "categorify"]
    assert ops[2].tags == ["user"] and ops[3].boundaries == [1.0, 2.0] and ops[4].dtype == "int32"


def test_errors_name_the_place_and_the_allowed_values():
    check(
        {"features": [{"columns": ["a"], "ops": ["categorfy"]}]},
        r"cfg.yaml: features\[0\].ops\[0\]: unknown op 'categorfy' \(allowed: categorify, normalize",
    )
    check(
        {"features": [{"columns": ["a"], "ops": [{"categorify": {"freq_treshold": 2}}]}]},
        r"features\[0\].ops\[0\].categorify.freq_treshold: unknown parameter 'freq_treshold'",
    )
    check(
        {"features": [{"columns": ["a"], "ops": [{"categorify": {"dtype": "int8"}}]}]},
        r"features\[0\].ops\[0\].categorify.dtype: Input should be 'int32' or 'int64'",
    )
    check(
        {"features": [{"columns": ["a"], "ops": [{"tags": ["usr"]}]}]},
        r"features\[0\].ops\[0\].tags.tags\[0\]: unknown tag 'usr' \(allowed: user_id, item_id",
    )
    check({"features": [{"columns": ["a"], "ops": [{"bucketize": [3, 1]}]}]}, "boundaries must be increasing")
    check(
        {"features": [{"columns": ["a"], "ops": [{"rename": {"postfix": "_x", "name": "y"}}]}]},
        "give exactly one of postfix, prefix or name",
    )
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


# ----------------------------------------------------------------------------- hostile values
def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "op, place",
    [
        ("{bucketize: [1, .nan, 3]}", r"bucketize.boundaries\[1\]: must be a finite number \(got nan\)"),
        ("{bucketize: [1, 2, .inf]}", r"bucketize.boundaries\[2\]: must be a finite number \(got inf\)"),
        ("{clip: {min_value: .nan}}", r"clip.min_value: must be a finite number \(got nan\)"),
        ("{clip: {min_value: 0, max_value: .inf}}", r"clip.max_value: must be a finite number \(got inf\)"),
        ("{fill_missing: {fill_val: -.inf}}", r"fill_missing.fill_val: must be a finite number \(got -inf\)"),
        ("{target_encoding: {target: y, p_smooth: .inf}}", r"target_encoding.p_smooth: must be a finite number \(got inf\)"),
    ],
)
def test_nan_and_infinity_are_refused_in_op_parameters(tmp_path, op, place):
    """A NaN boundary passed validation and failed the fit with `unexpected KeyError: 'cardinality'`."""
    path = write(tmp_path, f"features:\n  - columns: [price]\n    ops: [{op}]\n")
    with pytest.raises(ConfigError, match=rf"cfg.yaml: features\[0\].ops\[0\].{place}$"):
        load_config(path)


def test_nan_and_infinity_are_refused_in_masking(tmp_path):
    base = "features:\n  - columns: [price]\n    ops: [log]\nmasking:\n  groups:\n"
    with pytest.raises(ConfigError, match=r"masking.groups\[0\].columns.price: must be a finite number \(got nan\)"):
        load_config(write(tmp_path, base + "    - {columns: {price: .nan}, rate: 0.1}\n"))
    with pytest.raises(ConfigError, match=r"masking.groups\[0\].rate: must be a finite number \(got inf\)"):
        load_config(write(tmp_path, base + "    - {columns: {price: -1}, rate: .inf}\n"))
    config = load_config(write(tmp_path, base + "    - {columns: {price: -1.5}, rate: 0.1}\n"))  # finite: fine
    assert config.masking.groups[0].columns == {"price": -1.5}


def test_integers_out_of_range_are_refused(tmp_path):
    path = write(tmp_path, "features:\n  - columns: [a]\n    ops: [{categorify: {freq_threshold: " + "9" * 5000 + "}}]\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: an integer of 5,000 digits is too long \(at most 4,300 digits\)$"):
        load_config(path)
    check(
        {"features": [{"columns": ["a"], "ops": [{"categorify": {"max_size": 2**63}}]}]},
        r"categorify.max_size: Input should be less than or equal to 9223372036854775807",
    )
    check(
        {"features": [{"columns": ["a"], "ops": [{"target_encoding": {"target": "y", "fold_seed": 2**32}}]}]},
        r"target_encoding.fold_seed: Input should be less than or equal to 4294967295",
    )


def test_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml:4: duplicate key 'features' \(first on line 1\); give each key once$"):
        load_config(write(tmp_path, "features:\n  - columns: [a]\nname: x\nfeatures:\n  - columns: [b]\n"))
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: duplicate key 'freq_threshold' \(first on line 2\)"):
        load_config(
            write(
                tmp_path,
                "features:\n  - {columns: [a], ops: [{categorify: {freq_threshold: 1,\n"
                "                                         freq_threshold: 2}}]}\n",
            )
        )


def test_a_value_no_union_member_takes_is_one_problem():
    check(
        {"features": [{"columns": ["a"], "ops": [{"fill_missing": {"fill_val": [1]}}]}]},
        r"cfg.yaml: features\[0\].ops\[0\].fill_missing.fill_val: must be a number or a string$",
    )
    check(
        {"features": [{"columns": ["a"], "ops": [{"target_encoding": {"target": 3}}]}]},
        r"target_encoding.target: must be a string or a list of strings$",
    )


def test_long_values_are_cut(tmp_path):
    long = "c" * 100_000
    for raw in (
        {"features": [{"columns": ["a"], "ops": [long]}]},
        {"features": [{"columns": ["a"], "ops": [{"categorify": {long: 1}}]}]},
        {"features": [{"columns": ["a"], long: 1}]},
        {"features": [{"columns": ["a"]}], "groupby": {"by": ["a"], "aggs": {"a": [long]}}},
        {"features": [{"columns": ["a"], "ops": [{"tags": [long]}]}]},
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(raw, "cfg.yaml")
        assert len(str(caught.value)) < 400 and "c" * 100 not in str(caught.value), str(caught.value)[:400]


@pytest.mark.merlin  # fit-workflow asks for NVTabular before it reads a config
@pytest.mark.parametrize(
    "config, message",
    [
        (
            "features:\n  - columns: [price]\n    ops: [{bucketize: [1, .nan, 3]}]\n",
            "cfg.yaml: features[0].ops[0].bucketize.boundaries[1]: must be a finite number (got nan)",
        ),
        (
            "features:\n  - columns: [item_id]\n    ops: [{categorify: {vocabulary: {table: /dev/zero}}}]\n",
            "cfg.yaml: categorify vocabulary table /dev/zero is not a regular file",
        ),
        (
            "joins:\n  - {path: /dev/zero, key: item_id, columns: [x]}\nfeatures:\n  - columns: [item_id]\n",
            "cfg.yaml: joins[0].path: /dev/zero is not a regular file",
        ),
        ("features:\n  - columns: [" + "c" * 100_000 + "]\n", "cfg.yaml: features[0].columns: ccccccccc"),
    ],
)
def test_hostile_configs_are_one_short_line_at_fit(tmp_path, sample, config, message):
    from tests.test_yamlfile import embedtab, one_line

    path = write(tmp_path, config)
    err = one_line(embedtab("fit-workflow", str(path), "-d", str(sample / "items.parquet"), "-A", str(tmp_path / "a")), message)
    assert len(err) < 400, err[:500]
