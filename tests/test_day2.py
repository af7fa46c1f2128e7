"""Day 2: the sample chain, then sample_data/next_day/ copied over the data and the same pipeline
run again. Every day-1 id stays, the new items and users get new ids and vectors, and only the
new work is done (README, "Day 2")."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from embedtab import Artifacts
from embedtab.workflow.vocabulary import read_unique_file
from tests.conftest import CONFIGS, SAMPLE
from tests.workflow.test_stage import read_dataset

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)

# workflow -> the columns it numbers itself (the others take their vocabulary from these)
ID_SPACES = {
    "item": ["item_id", "category", "brand"],
    "user": ["user_id", "age_binned", "gender", "top_category"],
    "context": ["device_type"],
}


def vocabularies(art: Artifacts) -> dict:
    out = {}
    for record in art.store.records():
        if record.kind != "workflows":
            continue
        for column in record.metadata["cardinalities"]:
            path = art.store.path("workflows", record.name) / "categories" / f"unique.{column}.parquet"
            if path.is_file():
                found = read_unique_file(path, column, 1 << 62)
                out[(record.name, column)] = dict(zip(found.values.to_pylist(), found.ids.tolist()))
    return out


def lookup_rows(art: Artifacts, name: str) -> dict:
    """raw item id -> (present, the row's bytes in the table and in the dense .npy)."""
    folder = art.store.path("lookups", name)
    table = pq.read_table(folder / "table.parquet").to_pandas()
    dense = np.load(folder / "_embeddings.npy")
    return {
        int(item): (bool(present), np.asarray(vector, np.float32).tobytes(), dense[cat].tobytes())
        for cat, item, present, vector in zip(table["cat_id"], table["item_id"], table["present"], table["embedding"])
        if item == item  # (reserved rows hold no item)
    }


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(artifacts, day-1 state, day-2 run report): the chain run twice in a copy of the repo's data."""
    root = tmp_path_factory.mktemp("shop")
    shutil.copytree(CONFIGS, root / "configs")
    shutil.copytree(SAMPLE, root / "sample_data", ignore=shutil.ignore_patterns("next_day"))
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # pipeline paths are relative to where embedtab runs
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        art = Artifacts(root / "artifacts")
        day1_report = art.run_pipeline("configs/pipeline.yaml")
        assert not day1_report.failed, [s.error for s in day1_report.stages if s.error]
        day1 = {
            "vocab": vocabularies(art),
            "lookups": {name: lookup_rows(art, name) for name in ("text-train", "image-train", "text-catalog")},
            "item_features": read_dataset(art.store.path("datasets", "item-features")),
            "train": read_dataset(art.store.path("datasets", "train")),
            "records": {r.key: r for r in art.store.records()},
        }
        shutil.copytree(SAMPLE / "next_day", root / "sample_data", dirs_exist_ok=True)
        day2_report = art.run_pipeline("configs/pipeline.yaml")
        assert not day2_report.failed, [s.error for s in day2_report.stages if s.error]
        yield art, day1, day2_report, root
    finally:
        mp.undo()


def test_every_day1_id_stays_in_every_category_file_dataset_and_lookup(shop):
    art, day1, _, root = shop
    now = vocabularies(art)
    for key, ids in day1["vocab"].items():
        assert {value: now[key].get(value) for value in ids} == ids, key
    for workflow, columns in ID_SPACES.items():
        for column in columns:
            assert len(now[(workflow, column)]) >= len(day1["vocab"][(workflow, column)])
    # The datasets: day-1 rows carry the same ids (train is re-transformed with the grown vocabulary).
    train = read_dataset(art.store.path("datasets", "train"))
    for column in ("item_id", "item_id_content", "user_id", "device_type"):
        assert train[column].tolist() == day1["train"][column].tolist(), column
    features = read_dataset(art.store.path("datasets", "item-features"))
    old = pd.read_parquet(SAMPLE / "items.parquet")["item_id"]
    grown = pd.read_parquet(root / "sample_data" / "items.parquet")["item_id"]
    by_raw = dict(zip(grown, features["item_id"]))
    assert [by_raw[i] for i in old] == day1["item_features"]["item_id"].tolist()


def test_lookup_rows_of_day1_ids_are_byte_identical_and_new_items_get_vectors(shop):
    art, day1, _, root = shop
    old = set(pd.read_parquet(SAMPLE / "items.parquet")["item_id"])
    new = set(pd.read_parquet(root / "sample_data" / "items.parquet")["item_id"]) - old
    assert len(new) == 6
    item_ids = vocabularies(art)[("item", "item_id")]
    day1_top = max(day1["vocab"][("item", "item_id")].values())
    assert sorted(item_ids[i] for i in new) == list(range(day1_top + 1, day1_top + 7))  # after every day-1 id
    for name, before in day1["lookups"].items():
        after = lookup_rows(art, name)
        assert {i: after[i] for i in before} == before, name  # table and .npy rows, bit for bit
        assert all(after[i][0] for i in new), name  # the new items have their vectors


def test_day2_does_only_the_new_work(shop):
    art, day1, report, _ = shop
    stages = {s.stage: s for s in report.stages}
    assert stages["embeddings/text"].summary["encoded"] == 6 and stages["embeddings/text"].summary["reused"] >= 199
    image = art.store.get("embeddings", "image").summary
    assert image["encoded"] + image["skipped"] <= 6 + 2  # the new images (the two broken day-1 files are retried)
    for name in ("text-pca64", "image-pca16"):
        projection = art.store.get("projections", name)
        assert projection.summary.get("kept") is True  # re-applied, not refitted
        assert projection.metadata == day1["records"][f"projections/{name}"].metadata
    spaces = {(s["workflow"], s["column"]): s for s in art.status()["id_spaces"]}
    assert spaces[("item", "item_id")]["added"] == 6 and spaces[("item", "item_id")]["moved"] == 0
    assert spaces[("user", "user_id")]["added"] == 10
    assert stages["workflows/item"].status == "ran" and stages["lookups/text-catalog"].status == "ran"
    assert stages["datasets/valid"].status == "ran"  # its workflow's vocabulary grew; its data did not
