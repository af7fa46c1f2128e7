"""One id space, checked on the shipped demo (scripts/demo.sh, the chain `make demo` runs).

Every catalog item has one categorified id in item-features, train, valid, sessions and every
lookup; cold-start items (only in the validation day) keep real ids and their vectors; every
artifact folder opens with merlin.io.Dataset; every saved workflow loads and transforms with plain
NVTabular where embedtab cannot be imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from embedtab import tables
from embedtab.artifacts import ArtifactStore
from embedtab.workflow.stage import quiet_merlin
from tests.conftest import REPO, SAMPLE
from tests.workflow.test_stage import read_dataset

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)


def catalog_ids(store: ArtifactStore) -> dict:
    """raw item id -> categorified id, as datasets/item-features holds them (same row order as the catalog)."""
    raw = pd.read_parquet(SAMPLE / "items.parquet")["item_id"]
    features = read_dataset(store.path("datasets", "item-features"))
    assert len(features) == len(raw) == 200
    return dict(zip(raw, features["item_id"]))


def source_vectors(store: ArtifactStore, name: str) -> dict:
    table = tables.read_parts(tables.part_files(store.path("embeddings", name)))
    return dict(zip(table.column("item_id").to_pylist(), tables.vectors(table)))


def days(*numbers: int) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(SAMPLE / "interactions" / f"day_{d}.parquet") for d in numbers], ignore_index=True)


def test_every_item_has_one_id_in_every_dataset_and_lookup(demo):
    ids = catalog_ids(demo)
    assert len(set(ids.values())) == 200 and min(ids.values()) == 3

    train, train_raw = read_dataset(demo.path("datasets", "train")), days(1, 2)
    expected = train_raw["item_id"].map(ids)
    assert (train["item_id_content"] == expected).all()  # the content key is never masked
    hidden = train["item_id"] != expected
    assert (train.loc[hidden, "item_id"] == 2).all() and hidden.sum() == demo.get("datasets", "train").summary["masked_rows"][2]

    valid, valid_raw = read_dataset(demo.path("datasets", "valid")), days(3)
    cold = ~valid_raw["item_id"].isin(set(train_raw["item_id"]))
    assert valid_raw.loc[cold, "item_id"].nunique() >= 15 and cold.sum() >= 40  # items first seen on day 3
    assert (valid["item_id"] == valid_raw["item_id"].map(ids)).all()  # cold-start items too: no OOV
    assert demo.get("datasets", "valid").summary["oov"]["item_id"] == 0

    sessions = read_dataset(demo.path("datasets", "sessions"))
    in_sessions = np.concatenate(sessions["item_id-list"].to_numpy())
    assert sessions["item_id-list"].map(len).eq(20).all() and sessions["item_id-count"].max() <= 20  # none cut
    assert sorted(in_sessions[in_sessions != 0]) == sorted(days(1, 2, 3)["item_id"].map(ids))  # 0 pads

    for name, source in (("text-train", "text-pca64"), ("image-train", "image-pca16"), ("text-catalog", "text-pca64")):
        table = pq.read_table(demo.path("lookups", name) / "table.parquet").to_pandas()
        matrix = np.load(demo.path("lookups", name) / "_embeddings.npy")
        vectors = source_vectors(demo, source)
        for raw, cat_id in ids.items():
            assert table.loc[cat_id, "cat_id"] == cat_id and table.loc[cat_id, "item_id"] == raw
            if raw in vectors:
                np.testing.assert_array_equal(matrix[cat_id], vectors[raw])
            else:  # its image could not be read
                assert source == "image-pca16" and not table.loc[cat_id, "present"] and not matrix[cat_id].any()
        assert demo.get("lookups", name).metadata["reachable"] == 1.0


@pytest.mark.parametrize("dataset, key", [("valid", "item_id"), ("train", "item_id_content")])
def test_merlin_dataloader_gathers_content_vectors_also_for_cold_and_masked_items(demo, dataset, key):
    from merlin.dataloader.ops.embeddings import EmbeddingOperator
    from merlin.dataloader.torch import Loader
    from merlin.io import Dataset

    with quiet_merlin():
        loader = Loader(
            Dataset(str(demo.path("datasets", dataset)), engine="parquet", cpu=True),
            batch_size=256,
            shuffle=False,
            transforms=[
                EmbeddingOperator(str(demo.path("lookups", "text-train") / "_embeddings.npy"), lookup_key=key, embedding_name="text_vec")
            ],
        )
        gathered = np.concatenate([batch[0]["text_vec"].numpy() for batch in loader])
    raw = days(3) if dataset == "valid" else days(1, 2)
    vectors = source_vectors(demo, "text-pca64")
    np.testing.assert_array_equal(gathered, np.stack([vectors[i] for i in raw["item_id"]]))
    if dataset == "valid":
        cold = ~raw["item_id"].isin(set(days(1, 2)["item_id"])).to_numpy()
        assert np.abs(gathered[cold]).sum(axis=1).min() > 0  # real vectors, not the zero rows of OOV
    else:
        masked = (read_dataset(demo.path("datasets", "train"))["item_id"] == 2).to_numpy()
        assert masked.sum() > 0 and np.abs(gathered[masked]).sum(axis=1).min() > 0


def test_merlin_opens_every_embeddings_lookup_and_dataset_folder(demo):
    from merlin.io import Dataset

    opened = 0
    for record in demo.records():
        if record.kind not in ("embeddings", "lookups", "datasets"):
            continue
        with quiet_merlin():
            frame = Dataset(str(demo.path(record.kind, record.name)), engine="parquet", cpu=True).to_ddf().compute()
        if record.kind == "embeddings":
            assert list(frame.columns) == ["item_id", "embedding"] and len(frame) == record.rows(prefix="part-")
            assert len(frame["embedding"].iloc[0]) == record.metadata["dim"]
        elif record.kind == "lookups":
            assert list(frame.columns) == ["cat_id", "item_id", "present", "embedding"]
            assert len(frame) == record.metadata["cardinality"] == 203
        else:
            assert list(frame.columns) == [c["name"] for c in record.metadata["output_schema"]]
            assert len(frame) == record.metadata["rows"]
        opened += 1
    assert opened == 12


_PLAIN_NVTABULAR = """
import sys

class NoEmbedtab:  # as in a serving or training container where embedtab is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "embedtab" or name.startswith("embedtab."):
            raise ModuleNotFoundError("No module named 'embedtab' (blocked by the test)")

sys.meta_path.insert(0, NoEmbedtab())
import json, warnings
warnings.filterwarnings("ignore")
import nvtabular as nvt
from merlin.io import Dataset


for name, (folder, data, out) in json.loads(sys.argv[1]).items():
    workflow = nvt.Workflow.load(folder)
    workflow.transform(Dataset(data, engine="parquet", cpu=True)).to_ddf().compute().reset_index(drop=True).to_parquet(out)
assert not any(m == "embedtab" or m.startswith("embedtab.") for m in sys.modules)
print("ok")
"""


def test_every_saved_workflow_loads_and_transforms_without_embedtab(demo, tmp_path):
    from embedtab.workflow import stage

    store = ArtifactStore(tmp_path / "artifacts")
    shutil.copytree(demo.root, store.root)  # ours to write into
    jobs = {}
    for record in store.records():
        if record.kind != "workflows":
            continue
        data = [str(REPO / p) for p in record.params["data"]]  # the demo ran in the repository root
        stage.transform(store, stage.TransformOptions(record.name, data, name=f"check-{record.name}"))
        jobs[record.name] = (str(store.path("workflows", record.name)), data, str(tmp_path / f"{record.name}.parquet"))
    assert sorted(jobs) == ["context", "interactions", "item", "session", "user"]
    done = subprocess.run([sys.executable, "-c", _PLAIN_NVTABULAR, json.dumps(jobs)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    for name, (_, _, out) in jobs.items():
        plain = pd.read_parquet(out)
        ours = read_dataset(store.path("datasets", f"check-{name}"))
        pd.testing.assert_frame_equal(plain, ours, check_dtype=True)
