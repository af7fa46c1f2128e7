"""Hostile YAML: every file embedtab parses (workflow configs, pipeline files) goes through one
bounded reader. Nesting of any kind -- block or flow, sequences or mappings, mixed, or reached
through aliases -- past 64 levels is one line (exit 2) before anything recurses: libyaml's
composer recursing through 25,000 `- ` ended the process with a segmentation fault."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from embedtab import yamlfile
from embedtab.errors import ConfigError

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))
LIMIT = yamlfile.MAX_DEPTH


# ----------------------------------------------------------------------------- documents n levels deep
def block_sequence(levels: int) -> str:
    return "- " * levels + "x\n"


def block_mapping(levels: int) -> str:
    return "".join(" " * i + "a:\n" for i in range(levels - 1)) + " " * (levels - 1) + "a: 1\n"


def flow_sequence(levels: int) -> str:
    return "[" * levels + "x" + "]" * levels + "\n"


def flow_mapping(levels: int) -> str:
    return "{a: " * levels + "1" + "}" * levels + "\n"


def mixed(levels: int, block: int | None = None) -> str:
    """Block mappings and block sequences in turn (`block` levels, default half), then flow
    sequences and flow mappings in turn."""
    block = levels // 2 if block is None else block
    lines, indent = [], 0
    for i in range(block):
        lines.append(" " * indent + ("k:" if i % 2 == 0 else "-"))
        indent += 2
    flow = levels - block
    opening = "".join("[" if i % 2 == 0 else "{a: " for i in range(flow))
    closing = "".join("]" if i % 2 == 0 else "}" for i in reversed(range(flow)))
    lines.append(" " * indent + opening + "1" + closing)
    return "\n".join(lines) + "\n"


def under_description(levels: int) -> str:
    """A pipeline file that is fine but for a `description:` nested `levels` deep in all (the
    top-level mapping is the first level)."""
    return "description: " + "[" * (levels - 1) + "x" + "]" * (levels - 1) + "\nstages:\n  - reduce: text\n    dims: 4\n"


SHAPES = {
    "block-sequence": block_sequence,
    "block-mapping": block_mapping,
    "flow-sequence": flow_sequence,
    "flow-mapping": flow_mapping,
    "mixed": mixed,
}


def load(tmp_path: Path, text: str, what: str = "pipeline file"):
    path = tmp_path / "doc.yaml"
    path.write_text(text)
    return yamlfile.read_yaml(path, what)


@pytest.mark.parametrize("shape", SHAPES)
def test_exactly_the_limit_loads_and_one_more_level_is_refused(tmp_path, shape):
    value, _ = load(tmp_path, SHAPES[shape](LIMIT))
    depth = 0
    while isinstance(value, (list, dict)):  # (the document really is that deep)
        value = value[0] if isinstance(value, list) else next(iter(value.values()))
        depth += 1
    assert depth == LIMIT
    with pytest.raises(
        ConfigError, match=rf"doc.yaml:\d+: nested more than {LIMIT} levels deep; a pipeline file may nest at most {LIMIT}$"
    ):
        load(tmp_path, SHAPES[shape](LIMIT + 1))


def test_depth_reached_through_aliases_counts(tmp_path):
    """Each anchor nests a few levels and holds the one before: the text is shallow, the value is not."""
    text = "a0: &a0 [x]\n" + "".join(f"a{i}: &a{i} [[[*a{i - 1}]]]\n" for i in range(1, 40))
    with pytest.raises(ConfigError, match=rf"doc.yaml:\d+: nested more than {LIMIT} levels deep once YAML aliases are expanded"):
        load(tmp_path, text)
    load(tmp_path, text.split("a21:")[0])  # 1 + 1 + 3 * 20 = 62 levels: fine


def test_the_size_and_alias_limits_still_hold(tmp_path):
    from tests.test_integrity import BOMB

    with pytest.raises(ConfigError, match="holds more than 100,000 values once YAML aliases are expanded"):
        load(tmp_path, BOMB)
    with pytest.raises(ConfigError, match="holds more than 100,000 values"):
        load(tmp_path, "features: &f\n  - columns: *f\n")  # an alias inside its own anchor
    with pytest.raises(ConfigError, match=r"doc.yaml is 129 KiB; a workflow config may be at most 128 KiB"):
        load(tmp_path, "x" * (129 << 10), "workflow config")
    with pytest.raises(ConfigError, match=r"doc.yaml: line 2 is not valid YAML"):
        load(tmp_path, "a: [1, 2\n")


def test_a_pipe_is_read_no_further_than_the_limit(tmp_path):
    """A FIFO has no size to check in advance: reading stops at the limit instead of at the end."""
    fifo = tmp_path / "stream.yaml"
    os.mkfifo(fifo)

    def feed() -> None:
        try:
            with open(fifo, "w") as out:
                out.write("- x\n" * 100_000)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with pytest.raises(ConfigError, match="stream.yaml is more than 128 KiB; a pipeline file may be at most 128 KiB"):
        yamlfile.read_yaml(fifo, "pipeline file")
    writer.join(timeout=10)


def test_every_reader_shares_the_bounded_loader():
    """Workflow configs and pipeline files read YAML through embedtab.yamlfile, nothing else parses it."""
    from embedtab.workflow import config

    assert config.read_yaml is yamlfile.read_yaml and config.MAX_NESTING == LIMIT
    package = Path(yamlfile.__file__).parent
    parsing = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if any(
            call in p.read_text()
            for call in ("yaml.load(", "yaml.safe_load(", "yaml.compose(", "yaml.full_load(", "yaml.unsafe_load(", "yaml.parse(")
        )
    )
    assert parsing == ["yamlfile.py"]


# ----------------------------------------------------------------------------- through the command line
def embedtab(*args: str) -> subprocess.CompletedProcess:
    """In a process of its own: a crash must not take the test run down."""
    return subprocess.run([EMBEDTAB, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)


def one_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-500:])
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and "Traceback" not in err, err[-500:]
    for fragment in fragments:
        assert fragment in err, err
    return err


DEEP = {  # about 50 KB each: thousands of levels
    "block-sequence": block_sequence(25_000),
    "block-mapping": "".join(" " * i + "a:\n" for i in range(300)),
    "flow-sequence": "stages: " + flow_sequence(25_000),
    "flow-mapping": "stages: " + flow_mapping(10_000),
    "mixed": mixed(10_150, block=150),
    "under-a-valid-key": under_description(20_000),
}


@pytest.mark.parametrize("shape", DEEP)
def test_deep_pipeline_files_are_one_line_not_a_crash(tmp_path, shape):
    path = tmp_path / f"{shape}.yaml"
    path.write_text(DEEP[shape])
    one_line(embedtab("run", str(path), "-A", str(tmp_path / "a")), f"{path}:", f"nested more than {LIMIT} levels deep")
    assert not (tmp_path / "a").exists()


@pytest.mark.merlin  # fit-workflow asks for NVTabular before it reads a config
@pytest.mark.parametrize("shape", ["block-sequence", "block-mapping", "mixed"])
def test_deep_workflow_configs_are_one_line_not_a_crash(tmp_path, sample, shape):
    path = tmp_path / f"{shape}.yaml"
    path.write_text(DEEP[shape])
    one_line(
        embedtab("fit-workflow", str(path), "-d", str(sample / "items.parquet"), "-A", str(tmp_path / "a")),
        f"{path}:",
        f"nested more than {LIMIT} levels deep",
        "a workflow config",
    )


def test_a_pipeline_file_at_the_limit_is_read_and_one_level_more_is_not(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(under_description(LIMIT))
    err = one_line(embedtab("run", str(path), "--dry-run", "-A", str(tmp_path / "a")))
    assert "levels deep" not in err and "needs embeddings/text" in err  # read; refused for what it asks
    path.write_text(under_description(LIMIT + 1))
    one_line(embedtab("run", str(path), "--dry-run", "-A", str(tmp_path / "a")), f"{path}:1: nested more than {LIMIT} levels deep")


# ----------------------------------------------------------------------------- composed once, built strictly
def many_stages(count: int) -> str:
    return 'stages:\n  - encode text: items.parquet\n    template: "{title}"\n' + "".join(
        f"  - reduce: text\n    name: t{i}\n    dims: 8\n" for i in range(count)
    )


def test_a_pipeline_is_composed_once_however_many_stages(tmp_path, monkeypatch):
    """Each stage's line came from composing the whole file again: 1,000 stages (44 KB) took 31 s.
    Now read_yaml composes once and every line is looked up in that one node tree."""
    from embedtab import pipeline
    from embedtab.artifacts import ArtifactStore

    composed = []
    real = yamlfile._compose
    monkeypatch.setattr(yamlfile, "_compose", lambda text: composed.append(len(text)) or real(text))
    path = tmp_path / "many.yaml"
    path.write_text(many_stages(300))
    loaded = pipeline.load(path, ArtifactStore(tmp_path / "a"))
    assert len(composed) == 1  # the file, once: not once per stage
    lines = {s.name: s.line for s in loaded.stages}
    assert lines["text"] == 2 and [lines[f"t{i}"] for i in (0, 1, 299)] == [4, 7, 4 + 3 * 299]
    # errors found after loading look their line up in the same tree
    path.write_text(many_stages(300) + "  - reduce: text\n    name: t7\n")
    with pytest.raises(ConfigError, match=rf"many.yaml:{4 + 3 * 300}: embeddings/t7 is already made by stage 9 \(line 25\)"):
        pipeline.load(path, ArtifactStore(tmp_path / "a"))
    assert len(composed) == 2


def test_line_lookups_reuse_the_tree_read_yaml_kept(tmp_path, monkeypatch):
    value, text = load(tmp_path, "a:\n  b: [x, y]\n  1: one\nc: &c {d: 1}\ne:\n  <<: *c\n  d: 2\n")
    assert value == {"a": {"b": ["x", "y"], 1: "one"}, "c": {"d": 1}, "e": {"d": 2}}
    assert text == (tmp_path / "doc.yaml").read_text() and text.tree is not None
    monkeypatch.setattr(yamlfile, "_compose", lambda text: pytest.fail("composed again"))
    line = yamlfile.yaml_line
    assert [line(text, ("a", "b", 1)), line(text, ("a", 1)), line(text, ("e", "d")), line(text, ("a", "nope"))] == [2, 3, 7, 1]
    monkeypatch.undo()
    assert line(str(text), ("a", "b", 1)) == 2  # plain text: composed for the lookup


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("stages:\n  - reduce: text\n    dims: 8\n    dims: 9\n", 4, "duplicate key 'dims' (first on line 3)"),
        ("stages:\n  - reduce: text\n    reduce: image\n", 3, "duplicate key 'reduce' (first on line 2)"),
        ("stages: []\ndescription: x\nstages: [1]\n", 3, "duplicate key 'stages' (first on line 1)"),
        ("a: [{b: 1,\n     b: 2}]\n", 2, "duplicate key 'b' (first on line 1)"),
        ("1: a\n0x1: b\n", 2, "duplicate key 1 (first on line 1)"),  # the same key once YAML has read it
    ],
)
def test_duplicate_keys_are_refused_with_the_key_and_its_line(tmp_path, text, line, message):
    """PyYAML keeps the last of two equal keys: `dims: 8` then `dims: 9` silently ran with 9."""
    with pytest.raises(ConfigError, match=rf"^\S*doc.yaml:{line}: {re.escape(message)}; give each key once$"):
        load(tmp_path, text)


def test_merge_keys_are_not_duplicates(tmp_path):
    value, _ = load(tmp_path, "base: &b {dims: 8, name: x}\nstage:\n  <<: *b\n  dims: 9\n")
    assert value["stage"] == {"dims": 9, "name": "x"}


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("stages:\n  - reduce: text\n    dims: " + "9" * 5000 + "\n", 3, "an integer of 5,000 digits is too long (at most 4,300 digits)"),
        ("a: [1, -" + "1" * 4301 + "]\n", 1, "an integer of 4,301 digits is too long (at most 4,300 digits)"),
        ("a: 1\nb: 0x" + "f" * 4000 + "\n", 2, "an integer of about 4,817 digits is too long (at most 4,300 digits)"),  # (no int() limit)
        ("a:\n  when: 2020-13-45\n", 2, "'2020-13-45' is not a valid date (month must be in 1..12)"),
    ],
)
def test_scalars_that_cannot_be_built_are_one_line(tmp_path, text, line, message):
    """int() refuses more than 4,300 digits and date() a 13th month: it was `unexpected ValueError` (exit 1)."""
    with pytest.raises(ConfigError, match=rf"^\S*doc.yaml:{line}: {re.escape(message)}$"):
        load(tmp_path, text)
    assert load(tmp_path, "a: " + "9" * 4300 + "\n")[0]["a"] == 10**4300 - 1  # (at the limit: read)


@pytest.mark.parametrize("character", ["\x01", "\x00", "\x1b", "\x7f"])
def test_control_characters_are_refused_with_their_line(tmp_path, character):
    text = "# é ü ß, some multi-byte text first\nstages:\n  - reduce: te" + character + "xt\n"
    with pytest.raises(
        ConfigError, match=rf"doc.yaml: line 3 is not valid YAML \(character U\+{ord(character):04X} is not allowed in YAML\)$"
    ):
        load(tmp_path, text)


def test_file_problem_tells_a_device_from_a_missing_file(tmp_path):
    (tmp_path / "t.parquet").write_bytes(b"x")
    assert yamlfile.file_problem(tmp_path / "t.parquet") is None
    assert yamlfile.file_problem(tmp_path / "none.parquet") == "does not exist"
    assert yamlfile.file_problem(tmp_path / "t.parquet" / "under") == "does not exist"
    assert yamlfile.file_problem("/dev/zero") == "is not a regular file"
    assert yamlfile.file_problem(tmp_path) == "is not a regular file"
    assert yamlfile.file_problem(tmp_path / ("x" * 5000)).startswith("cannot be read (File name too long")


# ----------------------------------------------------------------------------- echoed values are cut
LONG = "t" * 100_000


@pytest.mark.parametrize(
    "stage",
    [
        f"  - reduce: {LONG}\n",  # an artifact name that needs a stage
        f"  - reduce: text\n    name: {LONG}\n",
        f"  - reduce: text\n    fit-on: {LONG}\n",
        f"  - reduce: text\n    dims: {LONG}\n",
        f"  - reduce: text\n    {'k' * 1000}: 4\n",  # (a plain key is at most 1,024 characters in YAML)
        f"  - {'k' * 1000}: 4\n",
        f"  - fit-workflow: {LONG}.yaml\n    data: items.parquet\n",
        f"  - fit-workflow: {'c' * 200}/{'c' * 200}.yaml\n    data: items.parquet\n",
        '  - fit-workflow: "nul\\0.yaml"\n    data: items.parquet\n',
    ],
)
def test_long_values_are_cut_in_pipeline_errors(tmp_path, stage):
    from embedtab import pipeline
    from embedtab.artifacts import ArtifactStore

    path = tmp_path / "long.yaml"
    path.write_text('stages:\n  - encode text: items.parquet\n    template: "{title}"\n' + stage)
    with pytest.raises(ConfigError) as caught:
        pipeline.load(path, ArtifactStore(tmp_path / "a"))
    message = str(caught.value)
    assert message.startswith(f"{path}:") and len(message) < 400 and "t" * 250 not in message, message[:500]  # (paths: 200 characters)


def test_shown_and_names_cut_values():
    assert yamlfile.shown("x" * 1000) == "'" + "x" * (yamlfile.SHOWN - 2) + "…"
    assert len(yamlfile.shown(["y" * 100] * 100)) == yamlfile.SHOWN and yamlfile.shown("a\nb") == "'a\\nb'"
    assert yamlfile.names(["a", "b" * 100, *"cdefghijklmnop"], limit=3) == f"a, {'b' * 39}…, c, … and 13 more"


def test_long_values_and_big_integers_through_the_command_line(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(f"stages:\n  - reduce: {LONG}\n")
    err = one_line(embedtab("run", str(path), "-A", str(tmp_path / "a"), "--dry-run"), f"{path}:2: reduce: invalid artifact name 'ttt")
    assert len(err) < 300
    path.write_text("stages:\n  - reduce: text\n    dims: " + "9" * 5000 + "\n")
    one_line(embedtab("run", str(path), "-A", str(tmp_path / "a"), "--dry-run"), f"{path}:3: an integer of 5,000 digits is too long")
