"""A damaged INPUT artifact is never "up to date" (issue 21, class 5).

A stage that finds its own output current must still check the artifacts it reads, as it would
before reading them: `ArtifactStore.plan` verifies every input artifact (stat-cached sha256) and
refuses a damaged one by name (exit 1), for every stage and every kind of input -- reduce (source,
--fit-on artifact), --apply (projection, source), transform (workflow), lookup (workflow and each
embeddings source), fit-workflow with `vocabulary: {workflow: ...}`, and the same stages under
`embedtab run`. Two kinds of damage: a flipped byte, and a rewrite that is still valid parquet
with two ids swapped (what a careless "fix" of a file would leave).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedtab.cli.main import run
from tests import support
from tests.conftest import CONFIGS
from tests.support import _capture, cli  # noqa: F401 (_capture: autouse)


def one_line_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    return support.one_line_error(proc, code, *fragments, forbidden=("Traceback", "up to date"))


def damage(path: Path, how: str, column: str | None) -> None:
    """flip: one bit in the middle, same size. swap: rewritten as valid parquet (schema and
    metadata kept) with the first two values of `column` swapped."""
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        return
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[0], values[1] = values[1], values[0]
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))
    pq.write_table(table, path)
    assert pq.read_table(path).num_rows == len(values)  # still a readable parquet file


SHARED_CONFIG = """\
name: shared
features:
  - columns: [item_id]
    ops:
      - categorify: {dtype: int32, vocabulary: {workflow: item}}
"""


@pytest.fixture(scope="module")
def reduce_dir(tmp_path_factory, sample) -> Path:
    """Two embeddings of one catalog, a fitted PCA, a PCA fitted on the other, a projection applied."""
    import pandas as pd

    root = tmp_path_factory.mktemp("inputs") / "artifacts"
    small = root.parent / "items.parquet"
    pd.read_parquet(sample / "items.parquet").iloc[:40].to_parquet(small)
    steps = [
        ["encode", "text", str(small), "-c", "title", "--name", "text"],
        ["encode", "text", str(small), "--template", "{title} by {brand}", "--name", "text2"],
        ["reduce", "text", "--dims", "4"],
        ["reduce", "text", "--dims", "4", "--fit-on", "text2", "--name", "fitted"],
        ["reduce", "text2", "--apply", "text-pca4"],
    ]
    for step in steps:
        assert run(["-q", *step, "-A", str(root)]) == 0, step
    return root


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory, reduce_dir) -> Path:
    """reduce_dir + the item workflow, one sharing its vocabulary, a transform and a two-source lookup."""
    root = tmp_path_factory.mktemp("chain") / "artifacts"
    shutil.copytree(reduce_dir, root)
    small = reduce_dir.parent / "items.parquet"
    shutil.copy(small, root.parent / "items.parquet")
    (root.parent / "shared.yaml").write_text(SHARED_CONFIG)
    for step in _CHAIN_STEPS:
        assert run(["-q", *expand(step, root), "-A", str(root)]) == 0, step
    return root


def expand(args: list[str], root: Path) -> list[str]:
    fill = {"{small}": str(root.parent / "items.parquet"), "{configs}": str(CONFIGS), "{dir}": str(root.parent)}
    return [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in args]


_CHAIN_STEPS = [
    ["fit-workflow", "{configs}/item.yaml", "-d", "{small}"],
    ["fit-workflow", "{dir}/shared.yaml", "-d", "{small}"],
    ["transform", "item", "-d", "{small}", "--name", "features"],
    ["lookup", "-e", "text-pca4", "-e", "text", "-w", "item", "--name", "both"],
]
_LOOKUP = ["lookup", "-e", "text-pca4", "-e", "text", "-w", "item", "--name", "both"]
_PART = "part-00000.parquet"
_UNIQUE = "categories/unique.item_id.parquet"

# (damaged input artifact, its file, the column two values are swapped in (None: flip only),
#  a command whose own output is up to date and which reads that input)
REDUCE_CASES = [
    ("embeddings/text", _PART, "item_id", ["reduce", "text", "--dims", "4"]),
    ("embeddings/text2", _PART, "item_id", ["reduce", "text", "--dims", "4", "--fit-on", "text2", "--name", "fitted"]),
    ("projections/text-pca4", "projection.npz", None, ["reduce", "text2", "--apply", "text-pca4"]),
    ("embeddings/text2", _PART, "item_id", ["reduce", "text2", "--apply", "text-pca4"]),
]
CHAIN_CASES = [
    ("workflows/item", _UNIQUE, "item_id", ["transform", "item", "-d", "{small}", "--name", "features"]),
    ("workflows/item", _UNIQUE, "item_id", _LOOKUP),
    ("embeddings/text-pca4", _PART, "item_id", _LOOKUP),
    ("embeddings/text", _PART, "item_id", _LOOKUP),  # the second source too
    ("workflows/item", _UNIQUE, "item_id", ["fit-workflow", "{dir}/shared.yaml", "-d", "{small}"]),
]


def _cases(cases):
    return [
        pytest.param(*case, how, id=f"{' '.join(a for a in case[3][:2] if '{' not in a)}<-{case[0]}:{how}")
        for case in cases
        for how in ("flip", "swap")
        if how == "flip" or case[2]
    ]


def _check(source: Path, tmp_path: Path, artifact: str, file: str, column: str | None, command: list[str], how: str) -> None:
    root = tmp_path / "artifacts"
    shutil.copytree(source, root)
    command = expand(command, source)  # the data and configs it was made from (their paths are recorded)
    assert "up to date" in cli(*command, "-A", str(root)).stderr  # its output is current before the damage
    before = (root / "manifest.json").read_text()
    damage(root / artifact / file, how, column)

    one_line_error(cli(*command, "-A", str(root)), 1, f"{artifact} is damaged: {file}", "refusing to use it")
    assert (root / "manifest.json").read_text() == before  # nothing published, nothing changed
    verify = cli("status", "--verify", "-A", str(root))
    one_line_error(verify, 1, "1 damaged", f"{artifact} ({file}")


@pytest.mark.parametrize("artifact, file, column, command, how", _cases(REDUCE_CASES))
def test_reduce_and_apply_refuse_a_damaged_input_instead_of_up_to_date(reduce_dir, tmp_path, artifact, file, column, command, how):
    _check(reduce_dir, tmp_path, artifact, file, column, command, how)


@pytest.mark.merlin
@pytest.mark.parametrize("artifact, file, column, command, how", _cases(CHAIN_CASES))
def test_workflow_stages_and_lookup_refuse_a_damaged_input_instead_of_up_to_date(chain_dir, tmp_path, artifact, file, column, command, how):
    _check(chain_dir, tmp_path, artifact, file, column, command, how)


@pytest.mark.merlin
@pytest.mark.parametrize("how", ["flip", "swap"])
def test_embedtab_run_refuses_a_damaged_input_it_does_not_make(chain_dir, tmp_path, how):
    """Stages of a pipeline check their inputs the same way; the stage fails by name, exit 1."""
    root = tmp_path / "artifacts"
    shutil.copytree(chain_dir, root)
    pipeline = tmp_path / "pipeline.yaml"
    small = chain_dir.parent / "items.parquet"
    pipeline.write_text(
        f"stages:\n"
        f"  - transform: item\n    data: {small}\n    name: features\n"
        f"  - lookup: [text-pca4, text]\n    workflow: item\n    name: both\n"
        f"  - apply: text-pca4\n    source: text2\n"
    )
    ran = cli("run", str(pipeline), "--json", "-A", str(root))
    assert ran.returncode == 0 and {s["status"] for s in json.loads(ran.stdout)["stages"]} == {"up to date"}, ran.stdout
    before = (root / "manifest.json").read_text()
    damage(root / "workflows/item" / _UNIQUE, how, "item_id")
    damage(root / "projections/text-pca4/projection.npz", "flip", None)

    for args in ([], ["--dry-run"]):
        proc = cli("run", str(pipeline), "--json", *args, "-A", str(root))
        assert proc.returncode == 1, proc.stderr
        stages = {s["stage"]: s for s in json.loads(proc.stdout)["stages"]}
        for key, damaged in (
            ("datasets/features", "workflows/item"),
            ("lookups/both", "workflows/item"),
            ("embeddings/text2-text-pca4", "projections/text-pca4"),
        ):
            assert stages[key]["status"] == "failed", stages[key]
            assert f"{damaged} is damaged" in stages[key]["error"], stages[key]
    assert (root / "manifest.json").read_text() == before


def test_trusted_inputs_are_the_only_ones_not_checked(reduce_dir, tmp_path):
    """plan() checks every input artifact unless the caller names it as trusted (--trust-workflow)."""
    from embedtab.artifacts import ArtifactStore
    from embedtab.errors import IntegrityError

    root = tmp_path / "artifacts"
    shutil.copytree(reduce_dir, root)
    store = ArtifactStore(root)
    source = store.require("embeddings", "text")
    damage(root / "embeddings/text" / _PART, "flip", None)
    params = {"dims": 4}
    with pytest.raises(IntegrityError, match=r"embeddings/text is damaged: part-00000.parquet differs"):
        store.plan("embeddings", "y", "test", params, input_artifacts=[source])
    plan = store.plan("embeddings", "y", "test", params, input_artifacts=[source], trusted=("embeddings/text",))
    assert not plan.up_to_date
