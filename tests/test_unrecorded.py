"""Folders the manifest has no record of are never replaced or read silently (issue 21, class 4).

A lost manifest.json (or an older one restored), or a folder copied in by hand beside a valid
manifest: nothing tells what made such a folder. `ArtifactStore.plan` refuses to replace it and
`ArtifactStore.require` refuses to read it (exit 2, naming it) unless the command is given
--force, which rebuilds it; `status` lists it as unrecorded and exits 1; `embedtab run` behaves
the same. Unfinished encode work from other inputs, for a name with no artifact, is not discarded
silently either.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from embedtab.cli.main import run
from tests.conftest import CONFIGS
from tests.support import _capture, cli, one_line_error  # noqa: F401 (_capture: autouse)

KINDS = ("embeddings", "projections", "workflows", "datasets", "lookups", "work")


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file of every artifact and work folder."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for kind in KINDS
        if (root / kind).is_dir()
        for p in sorted((root / kind).rglob("*"))
        if p.is_file()
    }


def _small(sample: Path, folder: Path) -> Path:
    import pandas as pd

    small = folder / "items.parquet"
    pd.read_parquet(sample / "items.parquet").iloc[:40].to_parquet(small)
    return small


ENCODE = ["encode", "text", "{small}", "-c", "title", "--name", "text"]
REDUCE = ["reduce", "text", "--dims", "4"]
FIT = ["fit-workflow", f"{CONFIGS}/item.yaml", "-d", "{small}"]
TRANSFORM = ["transform", "item", "-d", "{small}", "--name", "features"]
LOOKUP = ["lookup", "-e", "text-pca4", "-w", "item", "--name", "text"]


def expand(args: list[str], small: Path) -> list[str]:
    return [a.replace("{small}", str(small)) for a in args]


@pytest.fixture(scope="module")
def embeddings_dir(tmp_path_factory, sample) -> Path:
    root = tmp_path_factory.mktemp("embeddings") / "artifacts"
    small = _small(sample, root.parent)
    for step in (ENCODE, REDUCE):
        assert run(["-q", *expand(step, small), "-A", str(root)]) == 0, step
    return root


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory, embeddings_dir) -> Path:
    """Every kind of artifact: embeddings, projections, workflows, datasets, lookups."""
    root = tmp_path_factory.mktemp("chain") / "artifacts"
    shutil.copytree(embeddings_dir, root)
    small = shutil.copy(embeddings_dir.parent / "items.parquet", root.parent / "items.parquet")
    for step in (FIT, TRANSFORM, LOOKUP):
        assert run(["-q", *expand(step, small), "-A", str(root)]) == 0, step
    return root


def _lost_manifest(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(source, root)
    (root / "manifest.json").unlink()
    return root


# ----------------------------------------------------------------------------- status
def test_status_lists_unrecorded_folders_after_the_manifest_is_lost(embeddings_dir, tmp_path):
    root = _lost_manifest(embeddings_dir, tmp_path)
    shown = cli("status", "-A", str(root))
    assert "no artifacts yet" not in shown.stdout
    for key in ("embeddings/text", "embeddings/text-pca4", "projections/text-pca4"):
        kind, name = key.split("/")
        assert any(kind in line and name in line and "unrecorded" in line for line in shown.stdout.splitlines()), shown.stdout
    assert "there is no manifest.json" in shown.stdout
    one_line_error(shown, 1, "3 unrecorded", "embeddings/text, embeddings/text-pca4, projections/text-pca4")

    as_json = cli("status", "--json", "-A", str(root))
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["manifest"] is False and report["artifacts"] == []
    assert [(u["kind"], u["name"]) for u in report["unrecorded"]] == [
        ("embeddings", "text"),
        ("embeddings", "text-pca4"),
        ("projections", "text-pca4"),
    ]
    assert not (root / "manifest.json").exists()  # status writes nothing


def test_an_empty_directory_has_no_artifacts_yet_and_exits_0(tmp_path):
    (tmp_path / "a").mkdir()
    shown = cli("status", "-A", str(tmp_path / "a"))
    assert shown.returncode == 0 and "no artifacts yet" in shown.stdout


# ----------------------------------------------------------------------------- every stage refuses
REFUSALS = [  # (command, the folder it must name)
    (ENCODE, "embeddings/text"),
    (["encode", "text", "{small}", "--template", "{title}!", "--name", "text"], "embeddings/text"),
    (REDUCE, "embeddings/text"),  # its input: not read either
    ([*REDUCE, "--force"], "embeddings/text"),  # --force rebuilds what a command makes, never adopts an input
    (["reduce", "text-pca4", "--dims", "2"], "embeddings/text-pca4"),
]
CHAIN_REFUSALS = [
    (FIT, "workflows/item"),
    (TRANSFORM, "workflows/item"),
    (LOOKUP, "embeddings/text-pca4"),
    (["lookup", "-e", "text-pca4", "-w", "item", "--name", "new"], "embeddings/text-pca4"),
]


def _refused(source: Path, tmp_path: Path, command: list[str], folder: str) -> None:
    root = _lost_manifest(source, tmp_path)
    before = tree(root)
    proc = cli(*expand(command, source.parent / "items.parquet"), "-A", str(root))
    one_line_error(proc, 2, f"{folder} is in {root} but manifest.json has no record of it")
    assert tree(root) == before and not (root / "manifest.json").exists()


@pytest.mark.parametrize("command, folder", REFUSALS, ids=[" ".join(c[:2]) + f"<-{f}" for c, f in REFUSALS])
def test_after_a_lost_manifest_encode_and_reduce_refuse_naming_the_folder(embeddings_dir, tmp_path, command, folder):
    _refused(embeddings_dir, tmp_path, command, folder)


@pytest.mark.merlin
@pytest.mark.parametrize("command, folder", CHAIN_REFUSALS, ids=[" ".join(c[:2]) + f"<-{f}" for c, f in CHAIN_REFUSALS])
def test_after_a_lost_manifest_workflow_stages_and_lookup_refuse_naming_the_folder(chain_dir, tmp_path, command, folder):
    _refused(chain_dir, tmp_path, command, folder)


@pytest.mark.merlin
def test_force_rebuilds_the_unrecorded_folders_one_command_at_a_time(chain_dir, tmp_path):
    root = _lost_manifest(chain_dir, tmp_path)
    small = chain_dir.parent / "items.parquet"
    original = tree(chain_dir)
    remaining = {"embeddings/text", "embeddings/text-pca4", "projections/text-pca4", "workflows/item", "datasets/features", "lookups/text"}
    for command, makes in (
        (ENCODE, {"embeddings/text"}),
        (REDUCE, {"embeddings/text-pca4", "projections/text-pca4"}),
        (FIT, {"workflows/item"}),
        (TRANSFORM, {"datasets/features"}),
        (LOOKUP, {"lookups/text"}),
    ):
        assert cli(*expand(command, small), "-A", str(root)).returncode == 2  # refused without --force
        done = cli("-q", *expand(command, small), "--force", "-A", str(root))
        assert done.returncode == 0 and "up to date" not in done.stderr, done.stderr
        remaining -= makes
        report = json.loads(cli("status", "--json", "-A", str(root)).stdout)
        assert {f"{u['kind']}/{u['name']}" for u in report["unrecorded"]} == remaining
    assert cli("status", "--verify", "-A", str(root)).returncode == 0
    rebuilt = tree(root)
    # Rebuilt from the same inputs: the embeddings and the lookup are the same bytes as before.
    for path in ("embeddings/text/part-00000.parquet", "lookups/text/_embeddings.npy"):
        assert rebuilt[path] == original[path]
    again = cli(*expand(LOOKUP, small), "-A", str(root))
    assert again.returncode == 0 and "up to date" in again.stderr


# ----------------------------------------------------------------------------- copied in by hand
def test_a_folder_copied_in_beside_a_valid_manifest_is_refused_and_listed(embeddings_dir, tmp_path, sample):
    root = tmp_path / "artifacts"
    small = embeddings_dir.parent / "items.parquet"
    assert run(["-q", "encode", "text", str(small), "-c", "title", "--name", "mine", "-A", str(root)]) == 0
    shutil.copytree(embeddings_dir / "embeddings" / "text", root / "embeddings" / "text")
    manifest, before = (root / "manifest.json").read_text(), tree(root)

    one_line_error(cli("status", "-A", str(root)), 1, "1 unrecorded", "embeddings/text")
    report = json.loads(cli("status", "--json", "-A", str(root)).stdout)
    assert [a["name"] for a in report["artifacts"]] == ["mine"] and report["manifest"] is True
    assert [(u["kind"], u["name"]) for u in report["unrecorded"]] == [("embeddings", "text")]
    for command in (expand(ENCODE, small), REDUCE, ["reduce", "mine", "--dims", "2", "--fit-on", "text"]):
        one_line_error(cli(*command, "-A", str(root)), 2, f"embeddings/text is in {root} but manifest.json has no record of it")
    assert (root / "manifest.json").read_text() == manifest and tree(root) == before
    # Other names work as before, and --force replaces the copied folder with a rebuilt one.
    assert cli("-q", "reduce", "mine", "--dims", "2", "-A", str(root)).returncode == 0
    assert cli("-q", *expand(ENCODE, small), "--force", "-A", str(root)).returncode == 0
    assert cli("status", "--verify", "-A", str(root)).returncode == 0


@pytest.mark.merlin
@pytest.mark.parametrize("folder", ["workflows/item", "datasets/features", "lookups/text"])
def test_copied_in_workflows_datasets_and_lookups_are_refused(chain_dir, tmp_path, folder):
    root = tmp_path / "artifacts"
    shutil.copytree(chain_dir, root)
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["artifacts"][folder]  # the folder stays: as if copied in by hand
    (root / "manifest.json").write_text(json.dumps(manifest))
    before = tree(root)
    small = chain_dir.parent / "items.parquet"
    command = {"workflows/item": FIT, "datasets/features": TRANSFORM, "lookups/text": LOOKUP}[folder]
    one_line_error(cli(*expand(command, small), "-A", str(root)), 2, f"{folder} is in {root} but manifest.json has no record")
    if folder == "workflows/item":  # its readers refuse to read it, too
        for reader in (TRANSFORM, LOOKUP):
            one_line_error(cli(*expand(reader, small), "-A", str(root)), 2, "workflows/item is in")
    one_line_error(cli("status", "-A", str(root)), 1, "1 unrecorded", folder)
    assert tree(root) == before


# ----------------------------------------------------------------------------- unfinished encode work
def test_unfinished_work_of_other_inputs_is_not_discarded_silently(embeddings_dir, tmp_path):
    small = embeddings_dir.parent / "items.parquet"
    root = tmp_path / "artifacts"
    job = ["encode", "text", str(small), "-c", "title", "--name", "t", "--shard-size", "10", "-A", str(root)]
    assert cli("-q", *job, "--shard", "1/2").returncode == 0  # half the work, nothing published yet
    work = tree(root)
    assert work and not (root / "embeddings").exists()
    other = ["encode", "text", str(small), "--template", "{title}!", "--name", "t", "--shard-size", "10", "-A", str(root)]
    one_line_error(cli(*other), 2, "work/embeddings/t holds unfinished work of another encode text run", "--force")
    assert tree(root) == work

    shown = cli("status", "-A", str(root))  # legitimate resumable state: listed, not an error
    assert shown.returncode == 0 and "unfinished encode work: work/embeddings/t" in shown.stdout
    assert json.loads(cli("status", "--json", "-A", str(root)).stdout)["work"][0]["path"] == "work/embeddings/t"

    finished = cli(*job, "--shard", "2/2")  # the same command resumes it and seals
    assert finished.returncode == 0 and "wrote embeddings/t" in finished.stderr, finished.stderr
    assert not (root / "work" / "embeddings" / "t").exists()

    # --force discards the other run's work.
    again = tmp_path / "again"
    assert cli("-q", *job[:-1], str(again), "--shard", "1/2").returncode == 0
    forced = cli("-q", *other[:-1], str(again), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (again / "work" / "embeddings" / "t").exists() and cli("status", "-A", str(again)).returncode == 0


# ----------------------------------------------------------------------------- embedtab run
@pytest.mark.merlin
def test_embedtab_run_after_a_lost_manifest_refuses_then_force_rebuilds(chain_dir, tmp_path):
    root = _lost_manifest(chain_dir, tmp_path)
    small = chain_dir.parent / "items.parquet"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        f"stages:\n"
        f"  - encode text: {small}\n    text_column: title\n    name: text\n"
        f"  - reduce: text\n    dims: 4\n"
        f"  - fit-workflow: {CONFIGS}/item.yaml\n    data: {small}\n"
        f"  - transform: item\n    data: {small}\n    name: features\n"
        f"  - lookup: text-pca4\n    workflow: item\n    name: text\n"
    )
    before = tree(root)
    planned = cli("run", str(pipeline), "--dry-run", "--json", "-A", str(root))
    stages = {s["stage"]: s for s in json.loads(planned.stdout)["stages"]}
    assert {key: s["status"] for key, s in stages.items()} == dict.fromkeys(
        ["embeddings/text", "embeddings/text-pca4", "workflows/item", "datasets/features", "lookups/text"], "needs --force"
    )
    assert "embeddings/text is on disk but not in manifest.json" in stages["embeddings/text"]["why"]

    ran = cli("run", str(pipeline), "--json", "-A", str(root))
    assert ran.returncode == 2  # every failure a usage problem: what the commands exit with
    stages = {s["stage"]: s for s in json.loads(ran.stdout)["stages"]}
    for key in ("embeddings/text", "workflows/item"):
        assert stages[key]["status"] == "failed" and f"{key} is in {root} but manifest.json has no record" in stages[key]["error"]
    assert tree(root) == before and not (root / "manifest.json").exists()

    forced = cli(
        "-q",
        "run",
        str(pipeline),
        "--json",
        "-A",
        str(root),
        *[
            a
            for key in ("embeddings/text", "embeddings/text-pca4", "workflows/item", "datasets/features", "lookups/text")
            for a in ("--force", key)
        ],
    )
    assert forced.returncode == 0, forced.stderr
    assert {s["status"] for s in json.loads(forced.stdout)["stages"]} == {"ran"}
    assert cli("status", "--verify", "-A", str(root)).returncode == 0
    again = cli("run", str(pipeline), "--json", "-A", str(root))
    assert {s["status"] for s in json.loads(again.stdout)["stages"]} == {"up to date"}


def test_embedtab_run_names_unrecorded_folders_it_reads_or_makes(embeddings_dir, tmp_path):
    root = _lost_manifest(embeddings_dir, tmp_path)
    before = tree(root)
    reads = tmp_path / "reads.yaml"
    reads.write_text("stages:\n  - reduce: text\n    dims: 2\n")
    one_line_error(cli("run", str(reads), "-A", str(root)), 2, "reduce needs embeddings/text", "holds it only unrecorded")
    makes = tmp_path / "makes.yaml"
    small = embeddings_dir.parent / "items.parquet"
    makes.write_text(f"stages:\n  - encode text: {small}\n    text_column: title\n    name: text\n  - reduce: text\n    dims: 4\n")
    planned = json.loads(cli("run", str(makes), "--dry-run", "--json", "-A", str(root)).stdout)
    assert [(s["stage"], s["status"]) for s in planned["stages"]] == [
        ("embeddings/text", "needs --force"),
        ("embeddings/text-pca4", "needs --force"),
    ]
    ran = cli("run", str(makes), "--json", "-A", str(root))
    assert ran.returncode == 2  # a usage problem, as the command itself exits
    stages = json.loads(ran.stdout)["stages"]
    assert stages[0]["status"] == "failed" and "embeddings/text is in" in stages[0]["error"] and stages[1]["status"] == "skipped"
    assert tree(root) == before and not (root / "manifest.json").exists()
