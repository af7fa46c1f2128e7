"""Hostile YAML: every file embedtab parses (workflow configs, pipeline files) goes through one
bounded reader. Nesting of any kind -- block or flow, sequences or mappings, mixed, or reached
through aliases -- past 64 levels is one line (exit 2) before anything recurses: libyaml's
composer recursing through 25,000 `- ` ended the process with a segmentation fault."""

from __future__ import annotations

import os
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
    return ("description: " + "[" * (levels - 1) + "x" + "]" * (levels - 1) + "\n"
            "stages:\n  - reduce: text\n    dims: 4\n")


SHAPES = {"block-sequence": block_sequence, "block-mapping": block_mapping, "flow-sequence": flow_sequence,
          "flow-mapping": flow_mapping, "mixed": mixed}


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
    with pytest.raises(ConfigError, match=rf"doc.yaml:\d+: nested more than {LIMIT} levels deep; a pipeline file may nest at most {LIMIT}$"):
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
    parsing = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if any(call in p.read_text() for call in ("yaml.load(", "yaml.safe_load(", "yaml.compose(", "yaml.full_load(",
                                                                   "yaml.unsafe_load(", "yaml.parse(")))
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
    one_line(embedtab("fit-workflow", str(path), "-d", str(sample / "items.parquet"), "-A", str(tmp_path / "a")),
             f"{path}:", f"nested more than {LIMIT} levels deep", "a workflow config")


def test_a_pipeline_file_at_the_limit_is_read_and_one_level_more_is_not(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(under_description(LIMIT))
    err = one_line(embedtab("run", str(path), "--dry-run", "-A", str(tmp_path / "a")))
    assert "levels deep" not in err and "needs embeddings/text" in err  # read; refused for what it asks
    path.write_text(under_description(LIMIT + 1))
    one_line(embedtab("run", str(path), "--dry-run", "-A", str(tmp_path / "a")), f"{path}:1: nested more than {LIMIT} levels deep")
