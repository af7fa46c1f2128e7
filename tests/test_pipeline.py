"""`embedtab run`: pipeline files checked before anything runs, make-like execution, reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtab.artifacts import ArtifactStore
from embedtab.cli.main import run as cli
from tests.conftest import CONFIGS, REPO

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def items(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(1)
    words = np.array(["red", "blue", "wool", "steel", "soft", "lamp", "mug", "hat"])
    pd.DataFrame({"item_id": np.arange(n), "title": [" ".join(rng.choice(words, 5)) + f" {i}" for i in range(n)]}).to_parquet(path)
    return path


def chain(tmp_path: Path, **extra: str) -> Path:
    data = items(tmp_path / "items.parquet")
    new = items(tmp_path / "new.parquet", 10)
    body = f"""\
description: texts, PCA, new items projected
stages:
  - reduce: t                     # listed before what it needs: order comes from artifact names
    dims: 4
  - encode text: {data}
    name: t
    text-column: title
  - encode text: {new}
    name: new
    text_columns: [title]
  - apply: t-pca4
    source: new
{extra.get("more", "")}"""
    return write(tmp_path / "pipeline.yaml", body)


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "body, message",
    [
        (
            "stages:\n  - encode text: x.parquet\n    nmae: t\n",
            r"pipeline.yaml:3: encode text: unknown option 'nmae' \(options: name, id_column",
        ),
        ("stages:\n  - encode txt: x.parquet\n", r"pipeline.yaml:2: stage 1 needs exactly one command key .*'encode txt' is not a command"),
        ("stages:\n  - reduce: t\n    dims: many\n", r"pipeline.yaml:3: reduce: dims: Input should be a valid integer"),
        ("stages:\n  - reduce: nowhere\n", r"pipeline.yaml:2: reduce needs embeddings/nowhere, which no stage makes and .* does not hold"),
        (
            "stages:\n  - encode text: x.parquet\n  - encode text: y.parquet\n",
            r"pipeline.yaml:3: embeddings/text is already made by stage 1 \(line 2\)",
        ),
        (
            "stages:\n  - reduce: a\n    name: b\n  - reduce: b\n    name: a\n",
            r"pipeline.yaml: the stages depend on each other in a circle",
        ),
        ("stages:\n  - encode text: x.parquet\n    shard: 1/2\n", r"pipeline.yaml:3: encode text: 'shard' does not belong in a pipeline"),
        ("stages:\n  - encode image: x.parquet\n", r"pipeline.yaml:2: encode image: give the model"),
        ("steps: []\n", r"pipeline.yaml: expected a mapping with a non-empty `stages:` list"),
        ("stages: [{reduce: t}]\nartifacts: a\n", r"pipeline.yaml:2: unknown top-level key 'artifacts'"),
        ("stages:\n  - fit-workflow: no-such.yaml\n    data: x.parquet\n", r"pipeline.yaml:2: workflow config no-such.yaml does not exist"),
    ],
)
def test_a_bad_pipeline_file_is_one_line_with_its_position_and_nothing_runs(tmp_path, capsys, body, message):
    import re

    path = write(tmp_path / "pipeline.yaml", body)
    assert cli(["run", str(path), "-A", str(tmp_path / "a")]) == 2
    assert re.search(message, error_of(capsys))
    assert not (tmp_path / "a" / "manifest.json").exists()


# ----------------------------------------------------------------------------- running
def test_runs_in_dependency_order_then_is_up_to_date_and_plans_changes(tmp_path, capsys):
    path, root = chain(tmp_path), tmp_path / "a"
    assert cli(["run", str(path), "--json", "-A", str(root)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(s["stage"], s["status"]) for s in report["stages"]] == [
        ("embeddings/t", "ran"),
        ("embeddings/t-pca4", "ran"),
        ("embeddings/new", "ran"),
        ("embeddings/new-t-pca4", "ran"),
    ]
    assert report["stages"][0]["rows"] == 40 and report["stages"][0]["items_per_s"] > 0
    store = ArtifactStore(root)
    assert store.get("embeddings", "t-pca4").metadata["dim"] == 4
    assert store.get("embeddings", "new-t-pca4").summary["rows"] == 10
    fingerprints = {r.key: r.fingerprint for r in store.records()}

    assert cli(["run", str(path), "--json", "-A", str(root)]) == 0
    assert {s["status"] for s in json.loads(capsys.readouterr().out)["stages"]} == {"up to date"}
    assert {r.key: r.fingerprint for r in ArtifactStore(root).records()} == fingerprints

    # New rows in the catalog: encode updates (no --force needed) and everything after it follows.
    items(tmp_path / "items.parquet", 45)
    assert cli(["run", str(path), "--dry-run", "--json", "-A", str(root)]) == 0
    plan = {s["stage"]: (s["status"], s["why"]) for s in json.loads(capsys.readouterr().out)["stages"]}
    assert plan["embeddings/t"] == ("stale", "input items.parquet is new or changed")
    assert plan["embeddings/t-pca4"] == ("stale", "embeddings/t will be rebuilt first")
    assert plan["embeddings/new"] == ("up to date", "")
    assert {r.key: r.fingerprint for r in ArtifactStore(root).records()} == fingerprints  # a dry run changes nothing

    # A changed recipe needs --force, and the plan says so and why.
    write(path, path.read_text().replace("dims: 4", "dims: 4\n    whiten: true"))
    assert cli(["run", str(path), "--dry-run", "--only", "t-pca4", "--json", "-A", str(root)]) == 0
    plan = {s["stage"]: (s["status"], s["why"]) for s in json.loads(capsys.readouterr().out)["stages"]}
    assert list(plan) == ["embeddings/t", "embeddings/t-pca4"]  # --only: the stage and what it needs
    assert plan["embeddings/t-pca4"][0] == "stale"
    assert cli(["run", str(path), "--only", "t", "-A", str(root)]) == 0
    capsys.readouterr()
    assert cli(["run", str(path), "--dry-run", "--only", "t-pca4", "--json", "-A", str(root)]) == 0
    plan = {s["stage"]: (s["status"], s["why"]) for s in json.loads(capsys.readouterr().out)["stages"]}
    assert plan["embeddings/t-pca4"] == ("needs --force", "whiten: false -> true; embeddings/t changed")
    assert cli(["run", str(path), "--force", "t-pca4", "--json", "-A", str(root)]) == 0
    statuses = {s["stage"]: s["status"] for s in json.loads(capsys.readouterr().out)["stages"]}
    assert statuses == {
        "embeddings/t": "up to date",
        "embeddings/t-pca4": "ran",
        "embeddings/new": "up to date",
        "embeddings/new-t-pca4": "ran",
    }
    assert ArtifactStore(root).get("projections", "t-pca4").params["whiten"] is True


def test_a_failed_stage_stops_its_dependents_keeps_the_rest_and_a_rerun_continues(tmp_path, capsys):
    broken = tmp_path / "broken.parquet"
    pd.DataFrame({"item_id": [1, 2], "title": ["", None]}).to_parquet(broken)
    more = f"""  - encode text: {broken}
    name: bad
    text-column: title
  - reduce: bad
    dims: 1
"""
    path, root = chain(tmp_path, more=more), tmp_path / "a"
    assert cli(["run", str(path), "--json", "-A", str(root)]) == 1
    captured = capsys.readouterr()
    stages = {s["stage"]: s for s in json.loads(captured.out)["stages"]}
    assert stages["embeddings/bad"]["status"] == "failed" and "no row has text to encode" in stages["embeddings/bad"]["error"]
    assert (stages["embeddings/bad-pca1"]["status"], stages["embeddings/bad-pca1"]["why"]) == ("skipped", "embeddings/bad failed")
    assert stages["embeddings/new-t-pca4"]["status"] == "ran"  # independent stages still ran
    assert "Error: 1 stage(s) failed (embeddings/bad)" in captured.err
    assert {r.name for r in ArtifactStore(root).records()} == {"t", "t-pca4", "new", "new-t-pca4"}

    pd.DataFrame({"item_id": [1, 2, 3], "title": ["a lamp", "a mug", "a hat"]}).to_parquet(broken)
    assert cli(["run", str(path), "--json", "-A", str(root)]) == 0
    statuses = {s["stage"]: s["status"] for s in json.loads(capsys.readouterr().out)["stages"]}
    assert statuses["embeddings/bad-pca1"] == "ran" and statuses["embeddings/t"] == "up to date"


@pytest.mark.parametrize(
    "sig, code, said", [(signal.SIGINT, 130, "Error: interrupted"), (signal.SIGTERM, 143, "Error: terminated (SIGTERM)")]
)
def test_ctrl_c_keeps_finished_stages_and_a_rerun_resumes(tmp_path, sig, code, said):
    """Ctrl-C, and SIGTERM as CI timeouts and `docker stop` send it, unwind the same way."""
    small, big = items(tmp_path / "small.parquet", 5), items(tmp_path / "big.parquet", 3000)
    path = write(
        tmp_path / "pipeline.yaml",
        f"""stages:
  - encode text: {small}
    name: small
    text-column: title
  - encode text: {big}
    name: big
    text-column: title
    shard-size: 200
""",
    )
    root = tmp_path / "a"
    proc = subprocess.Popen(
        [EMBEDTAB, "run", str(path), "-A", str(root)], stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((root / "work" / "embeddings" / "big").rglob("shard-*.json")):
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert said in err
    assert not [p for p in (root / ".staging").iterdir() if not p.name.startswith("trash")]  # nothing half-written left
    store = ArtifactStore(root)
    assert store.get("embeddings", "small") is not None and store.get("embeddings", "big") is None
    rerun = subprocess.run(
        [EMBEDTAB, "run", str(path), "--json", "-A", str(root)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming:" in rerun.stderr
    statuses = {s["stage"]: s["status"] for s in json.loads(rerun.stdout)["stages"]}
    assert statuses == {"embeddings/small": "up to date", "embeddings/big": "ran"}


@pytest.mark.merlin
def test_the_demo_pipeline_makes_what_the_shell_chain_makes(tmp_path, sample, monkeypatch):
    """configs/pipeline.yaml and the same commands typed in a shell give the same artifacts."""
    (tmp_path / "sample_data").symlink_to(sample)
    (tmp_path / "configs").symlink_to(CONFIGS)
    monkeypatch.chdir(tmp_path)
    assert cli(["-q", "run", str(REPO / "configs" / "pipeline.yaml"), "--only", "text-catalog", "-A", "p"]) == 0
    for args in (
        ["encode", "text", "sample_data/items.parquet", "--template", "{title}. {description}", "--name", "text"],
        ["reduce", "text", "--dims", "64"],
        ["fit-workflow", "configs/item.yaml", "--data", "sample_data/items.parquet"],
        ["lookup", "-e", "text-pca64", "-w", "item", "-c", "item_id", "-n", "text-catalog"],
    ):
        assert cli(["-q", *args, "-A", "s"]) == 0, args
    piped, shell = ArtifactStore(tmp_path / "p"), ArtifactStore(tmp_path / "s")
    assert {r.key for r in piped.records()} == {r.key for r in shell.records()}
    for record in shell.records():
        twin = piped.get(record.kind, record.name)
        assert (twin.params, twin.inputs["files"] and [f["sha256"] for f in twin.inputs["files"]]) == (
            record.params,
            record.inputs["files"] and [f["sha256"] for f in record.inputs["files"]],
        ), record.key
        assert [u["name"] for u in twin.inputs["artifacts"]] == [u["name"] for u in record.inputs["artifacts"]]
        if not record.inputs["artifacts"]:  # (made from files only: the same fingerprint; the others
            assert twin.input_fingerprint == record.input_fingerprint  # differ by upstream timings)


@pytest.mark.merlin
def test_one_changed_description_reruns_only_what_reads_it(tmp_path, monkeypatch, capsys):
    """The demo pipeline: a second run is all up to date; after one item's description changes,
    only that text is re-encoded and only the stages downstream of the text embeddings rerun (the
    image encode and the item workflow read other columns of the same file)."""
    import shutil

    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data")
    (tmp_path / "configs").symlink_to(CONFIGS)
    monkeypatch.chdir(tmp_path)
    pipeline = str(REPO / "configs" / "pipeline.yaml")
    assert cli(["-q", "run", pipeline, "--json", "-A", "a"]) == 0
    stages = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert len(stages) == 18 and list(stages)[-1] == "exports/triton"  # (it serves every workflow and lookup: last)
    # Each stage's report carries what its own command prints, and its summary.
    image = stages["embeddings/image"]
    assert image["summary"]["skipped"] == 2 and ", 2 skipped; " in image["lines"][0]
    assert image["lines"][1] == "skipped items and reasons: embeddings/image/_errors.parquet"
    text = stages["embeddings/text-pca64"]
    assert "of the variance kept" in text["lines"][0] and text["summary"]["explained_variance_ratio_total"] > 0.9
    train = stages["datasets/train"]["summary"]  # masked ids are not unseen ones
    assert train["masked"]["item_id"] == train["masked_rows"][2] > 0 and train["oov"]["item_id"] == 0
    assert train["masked"]["user_id"] == train["masked_rows"][0] and train["oov"]["user_id"] == 0
    assert [line for line in stages["datasets/train"]["lines"] if "OOV" in line] == [
        f"masked by --mask (set to OOV): user_id {train['masked']['user_id']:,}, item_id {train['masked']['item_id']:,}, "
        f"device_type {train['masked']['device_type']:,}"
    ]
    assert stages["lookups/image-train"]["lines"][1] == (
        "image-pca16: 198 of 200 vocabulary ids have an embedding (99.0%); 198 of 198 encoded items reachable (100.0%)"
    )
    # Nothing to do: a line per stage and one closing line, no headings.
    assert cli(["run", pipeline, "-A", "a"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 19 and all(line.endswith(": up to date") for line in lines[:18])
    assert lines[18].startswith(f"all 18 stages of {pipeline} are up to date; nothing to do")

    frame = pd.read_parquet("sample_data/items.parquet")
    frame.loc[5, "description"] = "A brand new description."
    frame.to_parquet("sample_data/items.parquet", index=False)
    assert cli(["-q", "run", pipeline, "--json", "-A", "a"]) == 0
    ran = [s["stage"] for s in json.loads(capsys.readouterr().out)["stages"] if s["status"] != "up to date"]
    assert ran == ["embeddings/text", "embeddings/text-pca64", "lookups/text-train", "lookups/text-catalog", "exports/triton"]
    assert ArtifactStore(tmp_path / "a").get("exports", "triton").metadata["version"] == 2  # the day's new version
    summary = ArtifactStore(tmp_path / "a").get("embeddings", "text").summary
    assert (summary["encoded"], summary["reused"]) == (1, 199)


def test_an_export_of_everything_runs_after_every_lookup_and_workflow_wherever_it_stands(tmp_path):
    """`export triton:` without names serves every lookup and workflow: it waits for all of them."""
    from embedtab.pipeline import load

    text = (REPO / "configs" / "pipeline.yaml").read_text().replace("  - export triton: triton\n", "")
    path = write(tmp_path / "p.yaml", text.replace("stages:\n", "stages:\n  - export triton: triton\n", 1))
    stages = load(path, ArtifactStore(tmp_path / "a")).stages
    at = next(i for i, s in enumerate(stages) if s.command == "export triton")
    served = {o for s in stages for o in s.outputs if o[0] in ("lookups", "workflows")}
    assert set(stages[at].needs) == served and len(served) == 8
    assert all(i < at for i, s in enumerate(stages) if set(s.outputs) & served)
