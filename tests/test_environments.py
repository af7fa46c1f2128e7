"""One artifact directory, two environments: what the modern stack writes the pinned one reads, and
the other way round.

The pinned environment (Python 3.11, numpy 1, pandas 1.5, pyarrow 16, NVTabular) runs this test;
the modern one (Python 3.12, numpy 2, pandas 3, pyarrow 25+, no NVTabular) is driven through its
`embedtab` command. `make test` passes its interpreter in EMBEDTAB_MODERN_PYTHON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embedtab import tables
from embedtab.artifacts import ArtifactStore
from tests.conftest import CONFIGS

MODERN = os.environ.get("EMBEDTAB_MODERN_PYTHON")
pytestmark = [
    pytest.mark.merlin,
    pytest.mark.skipif(not MODERN, reason="set EMBEDTAB_MODERN_PYTHON to the second environment's python (`make test` does)"),
]


def versions(python: str) -> dict:
    code = "import sys, numpy, pandas, pyarrow; print(sys.version_info[:2], numpy.__version__, pandas.__version__, pyarrow.__version__)"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"python": " ".join(out[:2]), "numpy": out[2], "pandas": out[3], "pyarrow": out[4]}


def embedtab(python: str, root: Path, *args: str) -> dict:
    proc = subprocess.run(
        [str(Path(python).with_name("embedtab")), "-q", *args, "--json", "-A", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, f"{python} embedtab {' '.join(args)}:\n{proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def vectors(store: ArtifactStore, name: str) -> dict:
    table = tables.read_parts(tables.part_files(store.path("embeddings", name)))
    return dict(zip(table.column("item_id").to_pylist(), tables.vectors(table)))


def test_artifacts_cross_between_the_pinned_and_the_modern_stack(tmp_path, sample):
    pinned, modern = sys.executable, MODERN
    assert versions(pinned)["numpy"].startswith("1.") and versions(modern)["numpy"].split(".")[0] >= "2"
    assert versions(modern)["python"] >= versions(pinned)["python"]
    root, items = tmp_path / "artifacts", str(sample / "items.parquet")

    # Modern writes embeddings and a projection; pinned applies that projection and builds a lookup.
    embedtab(modern, root, "encode", "text", items, "-c", "title", "--name", "text")
    embedtab(modern, root, "reduce", "text", "--dims", "16")
    embedtab(pinned, root, "fit-workflow", str(CONFIGS / "item.yaml"), "--data", items)
    embedtab(pinned, root, "reduce", "text", "--apply", "text-pca16", "--name", "text-again")
    lookup = embedtab(pinned, root, "lookup", "-e", "text-pca16", "-w", "item", "--name", "text")
    store = ArtifactStore(root)
    modern_pca, pinned_pca = vectors(store, "text-pca16"), vectors(store, "text-again")
    for item, vector in modern_pca.items():
        np.testing.assert_allclose(pinned_pca[item], vector, atol=1e-5)
    matrix = np.load(root / "lookups" / "text" / "_embeddings.npy")
    table = pq.read_table(root / "lookups" / "text" / "table.parquet").to_pandas()
    for cat_id, item in table["item_id"].dropna().items():
        np.testing.assert_array_equal(matrix[cat_id], modern_pca[item])
    assert lookup["metadata"]["with_embedding"] == 200

    # Pinned writes embeddings and a projection; modern applies it and builds a lookup over the
    # pinned workflow's category file (read without NVTabular).
    embedtab(pinned, root, "encode", "image", items, "-m", "embedtab-smoke-clip", "--name", "image")
    embedtab(pinned, root, "reduce", "image", "--dims", "8")
    embedtab(modern, root, "reduce", "image", "--apply", "image-pca8", "--name", "image-again")
    embedtab(modern, root, "lookup", "-e", "image-pca8", "-w", "item", "--name", "image")
    for item, vector in vectors(store, "image-pca8").items():
        np.testing.assert_allclose(vectors(store, "image-again")[item], vector, atol=1e-5)

    # An incremental encode in the other environment reuses what the first one wrote.
    again = embedtab(pinned, root, "encode", "text", items, "-c", "title", "--name", "text")
    assert again["up_to_date"] is True
    for python in (pinned, modern):  # the manifest both wrote reads in both, every file intact
        report = embedtab(python, root, "status", "--verify")
        assert {a["health"] for a in report["artifacts"]} == {"ok"}
        assert len(report["artifacts"]) == 11  # 6 embeddings, 2 projections, 1 workflow, 2 lookups
