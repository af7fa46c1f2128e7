"""The command line: fast help, one-line errors with the right exit codes, status, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedtab.cli.main import run
from tests.conftest import CONFIGS

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))


def cli(*args, env=None):
    return subprocess.run([EMBEDTAB, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_help_lists_subcommands_and_imports_nothing_heavy():
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("encode", "reduce", "fit-workflow", "transform", "lookup", "status"):
        assert command in proc.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom embedtab.cli.main import run\nrun(['--help'])\n"
            "heavy = [m for m in ('torch', 'nvtabular', 'open_clip', 'sentence_transformers', 'pandas', 'pyarrow', 'numpy', 'pydantic') if m in sys.modules]\n"
            "sys.stderr.write('HEAVY=' + ','.join(heavy))",
        ],
        capture_output=True,
        text=True,
    )
    assert "HEAVY=" in probe.stderr and probe.stderr.split("HEAVY=")[1] == ""


def test_version():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("embedtab 0.")


def test_unknown_command_is_one_line_exit_2():
    proc = cli("nonsense")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["Error: No such command 'nonsense'. (see 'embedtab --help')"]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["encode", "text", "missing.parquet", "-c", "title"], 1, "Error: input missing.parquet does not exist"),
        (["reduce", "nope"], 2, "Error: no embeddings artifact named 'nope'"),
        pytest.param(
            ["fit-workflow", "no-such.yaml", "--data", "x.parquet"],
            2,
            "Error: workflow config no-such.yaml does not exist",
            marks=pytest.mark.merlin,
        ),
        (["encode", "text", "x.parquet", "--device", "tpu", "-c", "t"], 2, None),
        (["reduce", "x", "--dims", "many"], 2, "Error: Invalid value for '--dims'"),
    ],
)
def test_errors_are_one_line_with_exit_codes(tmp_path, args, code, message):
    proc = cli(*args, "--artifacts", str(tmp_path / "a"))
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    if message:
        assert lines[0].startswith(message)
    assert "Traceback" not in proc.stderr


@pytest.mark.merlin
def test_bad_config_names_file_and_path(tmp_path, sample):
    config = tmp_path / "wf.yaml"
    config.write_text("features:\n  - columns: [item_id]\n    ops: [categorfy]\n")
    proc = cli("fit-workflow", str(config), "--data", str(sample / "items.parquet"), "-A", str(tmp_path / "a"))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"Error: {config}: features[0].ops[0]: unknown op 'categorfy' (allowed: categorify, normalize, normalize_minmax, fill_missing, fill_median, log, clip, bucketize, hash_bucket, target_encoding, rename, tags, time_features)"
    )


def test_corrupted_manifest_exit_1_and_debug_shows_traceback(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    (root / "manifest.json").write_text("{oops")
    proc = cli("status", "-A", str(root))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: {root}/manifest.json is not valid JSON (line 1, column 2); embedtab will not touch it: "
        "restore it from a backup or move it away to start afresh"
    ]
    debug = cli("--debug", "status", "-A", str(root))
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert (root / "manifest.json").read_text() == "{oops"


def test_artifacts_dir_from_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EMBEDTAB_ARTIFACTS", str(tmp_path / "env-artifacts"))
    (tmp_path / "env-artifacts").mkdir()
    assert run(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == str(tmp_path / "env-artifacts")


@pytest.mark.merlin
def test_status_lists_every_artifact_with_fingerprints(chain, capsys):
    assert run(["status", "--json", "-A", str(chain.root)]) == 0
    report = json.loads(capsys.readouterr().out)
    listed = {(a["kind"], a["name"]) for a in report["artifacts"]}
    assert listed == {(r.kind, r.name) for r in chain.records()}
    assert ("lookups", "text-train") in listed and ("workflows", "interactions") in listed
    for art in report["artifacts"]:
        assert len(art["fingerprint"]) == 64 and len(art["input_fingerprint"]) == 64
        assert art["health"] == "ok"
        assert all(len(o["sha256"]) == 64 for o in art["outputs"])
    assert run(["status", "--verify", "-A", str(chain.root)]) == 0
    table = capsys.readouterr().out
    assert "text-train" in table and "interactions" in table


@pytest.mark.merlin
def test_encode_fit_lookup_through_the_cli_with_json(tmp_path, sample, capsys):
    root = str(tmp_path / "a")
    items = str(sample / "items.parquet")
    assert run(["-q", "encode", "text", items, "-c", "title", "--name", "titles", "--json", "-A", root]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["up_to_date"] is False and out["summary"]["encoded"] == 200 and out["metadata"]["dim"] == 384
    assert run(["encode", "text", items, "-c", "title", "--name", "titles", "-A", root]) == 0
    assert "embeddings 'titles' is up to date; nothing to do" in capsys.readouterr().err
    assert run(["fit-workflow", str(CONFIGS / "item.yaml"), "--data", items, "-A", root]) == 0
    err = capsys.readouterr().err
    assert "wrote workflows/item" in err and "item_id" in err and "203" in err  # cardinality table
    assert run(["lookup", "-e", "titles", "-w", "item", "--json", "-A", root]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metadata"]["cardinality"] == 203 and out["metadata"]["with_embedding"] == 200
    assert run(["encode", "text", items, "-c", "description", "--name", "titles", "-A", root]) == 2
    assert "pass --force to replace it" in capsys.readouterr().err


def test_sharded_encode_through_the_cli(tmp_path, sample, capsys):
    root = str(tmp_path / "a")
    args = ["encode", "text", str(sample / "items.parquet"), "-t", "{title}. {description}", "--shard-size", "64", "-A", root]
    assert run([*args, "--shard", "1/2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sealed"] is False and out["missing_shards"] == [1, 3]
    assert run([*args, "--shard", "2/2"]) == 0
    err = capsys.readouterr().err
    assert "wrote embeddings/text" in err and "200 items: 200 encoded (200 distinct), 0 reused, 0 skipped" in err
    assert run([*args, "--seal"]) == 0
    assert "is up to date" in capsys.readouterr().err
    assert run([*args, "--shard", "0/2"]) == 2
    assert "invalid --shard '0/2'" in capsys.readouterr().err


@pytest.mark.merlin
def test_reduce_and_lookup_options_through_the_cli(chain, tmp_path, capsys):
    import shutil

    root = tmp_path / "a"
    shutil.copytree(chain.root, root)
    a = ["-A", str(root)]
    assert run(["reduce", "text", "--variance", "0.8", "--name", "t80", *a]) == 0
    err = capsys.readouterr().err
    assert "wrote embeddings/t80" in err and "cumulative variance by dims: 1:" in err
    assert run(["reduce", "text", "--apply", "t80", "--name", "again", *a]) == 0
    assert "200 rows projected with projections/t80" in capsys.readouterr().err
    assert run(["reduce", "text", "--apply", "t80", "--dims", "4", *a]) == 2
    assert "--apply reuses the saved projection" in capsys.readouterr().err
    assert run(["lookup", "-e", "t80", "-e", "image", "-w", "interactions", "--concat", "--fill", "mean", "--json", *a]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "t80+image" and out["metadata"]["concat"] is True
    assert set(out["metadata"]["by_source"]) == {"t80", "image"}
    assert run(["lookup", "-e", "image", "-w", "interactions", "--min-coverage", "1.0", "--name", "strict", *a]) == 1
    assert "--min-coverage 100.0%" in capsys.readouterr().err
    assert run(["lookup", "-e", "image", "-w", "interactions", "--name", "reach", *a]) == 0
    assert "198 of 198 encoded items reachable (100.0%)" in capsys.readouterr().err
    assert run(["lookup", "-e", "image", "-w", "interactions", "--min-reachable", "2", "--name", "bad", *a]) == 2
    assert "--min-reachable is a share between 0 and 1" in capsys.readouterr().err


def test_workflow_commands_without_nvtabular_name_the_extra(tmp_path, sample, capsys, monkeypatch):
    """Where NVTabular is absent (a modern Python, the base install), one line names what to install."""
    from embedtab.workflow import merlin

    monkeypatch.setattr(merlin, "merlin_installed", lambda: False)  # really absent in the modern test environment
    for args in (
        ["fit-workflow", str(CONFIGS / "item.yaml"), "-d", str(sample / "items.parquet")],
        ["transform", "item", "-d", str(sample / "items.parquet")],
    ):
        assert run([*args, "-A", str(tmp_path / "a")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [err] and err.startswith(f"Error: {args[0]} needs NVTabular")
        assert "pip install 'embedtab[merlin]' (Python 3.10-3.11)" in err


@pytest.mark.parametrize(
    "command", ["", "encode", "encode text", "encode image", "reduce", "fit-workflow", "transform", "lookup", "status"]
)
def test_help_reads_well_at_80_columns(command):
    proc = cli(*command.split(), "--help", env={"COLUMNS": "80"})
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert not any(tag in proc.stdout for tag in ("<bool>", "<str>", "<int>", "<float>", "<list"))
    for line in lines:  # flags read as flags: nothing between the flag and its help text
        if "--force " in line or "--json " in line:
            assert "TEXT" not in line and "BOOL" not in line.upper().replace("BOOLEAN", ""), line
    if command in ("lookup", "reduce", "encode text"):
        assert "TEXT" in proc.stdout  # values keep a metavar


def test_an_error_is_one_line_of_at_most_1000_characters(tmp_path, capsys):
    from tests.conftest import SAMPLE

    items = str(SAMPLE / "items.parquet")
    code = run(["encode", "text", items, "-t", "{" + "t" * 100_000 + "}", "-A", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and err.startswith("Error: ") and len(err.rstrip("\n")) == 1000
    assert not (tmp_path / "a" / "embeddings").exists()
