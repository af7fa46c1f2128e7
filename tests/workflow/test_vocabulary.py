"""categorify vocabularies taken from a fitted workflow or a table: one id space across workflows."""

from __future__ import annotations

import pandas as pd
import pytest

from embedtab.errors import ArtifactExists, ConfigError
from embedtab.status import health
from embedtab.workflow import stage
from tests.conftest import CONFIGS
from tests.workflow.test_depth import write_config
from tests.workflow.test_stage import read_dataset

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)


def ids_of(store, dataset: str, column: str = "item_id") -> list[int]:
    return read_dataset(store.path("datasets", dataset))[column].tolist()


def item_config(vocabulary: dict | None = None, **categorify) -> dict:
    op = {**categorify, **({"vocabulary": vocabulary} if vocabulary else {})}
    return {"features": [{"columns": ["item_id"], "ops": [{"categorify": op}]}]}


def test_a_workflows_vocabulary_gives_identical_ids_on_other_data(store, sample, tmp_path):
    items, day1 = str(sample / "items.parquet"), str(sample / "interactions" / "day_1.parquet")
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [items]))
    shared = stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "item"})), [day1], name="shared"))
    stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config(), "own.yaml"), [day1], name="own"))
    for name in ("item", "shared", "own"):
        stage.transform(store, stage.TransformOptions(name, [items], name=f"{name}-out"))
    assert ids_of(store, "shared-out") == ids_of(store, "item-out")  # fitted on one day, the catalog's ids
    assert ids_of(store, "own-out") != ids_of(store, "item-out")  # what a vocabulary of its own gives
    assert shared.record.metadata["cardinalities"]["item_id"]["cardinality"] == 203
    origin = shared.record.metadata["vocabularies"]["item_id"]
    assert (origin["workflow"], origin["column"], origin["size"]) == ("item", "item_id", 200)
    assert shared.record.inputs["artifacts"] == [
        {"kind": "workflows", "name": "item", "fingerprint": store.get("workflows", "item").fingerprint}
    ]


def test_refitting_the_source_marks_dependants_stale(store, sample, tmp_path):
    items = str(sample / "items.parquet")
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [items]))
    shared = stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "item"})), [items], name="shared"))
    assert health(store, shared.record) == ("ok", [])
    half = tmp_path / "half.parquet"
    pd.read_parquet(items).iloc[:100].to_parquet(half)
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(half)], force=True))
    assert health(store, store.get("workflows", "shared")) == ("stale", ["workflows/item changed"])
    with pytest.raises(ArtifactExists, match="made from other inputs"):  # fitted state: refit with --force
        stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "item"})), [items], name="shared"))
    again = stage.fit(
        store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "item"})), [items], name="shared", force=True)
    )
    assert again.record.metadata["cardinalities"]["item_id"]["cardinality"] == 103
    assert health(store, again.record) == ("ok", [])


def test_a_tables_vocabulary_keeps_first_appearance_order(store, sample, tmp_path):
    catalog = pd.read_parquet(sample / "items.parquet")
    table = tmp_path / "catalog.csv"
    catalog[["item_id"]].iloc[[5, 5, 1, 7]].to_csv(table, index=False)  # duplicates count once
    config = item_config({"table": "catalog.csv"})  # relative to the config file
    fitted = stage.fit(store, stage.FitOptions(write_config(tmp_path, config), [str(sample / "items.parquet")], name="t"))
    assert fitted.record.metadata["vocabularies"]["item_id"] == {"table": str(table), "column": "item_id", "size": 3}
    assert any(f["path"] == str(table) for f in fitted.record.inputs["files"])  # a changed table is a changed input
    stage.transform(store, stage.TransformOptions("t", [str(table)], name="t-out"))
    assert ids_of(store, "t-out") == [3, 3, 4, 5]
    stage.transform(store, stage.TransformOptions("t", [str(sample / "items.parquet")], name="all"))
    assert sorted(set(ids_of(store, "all"))) == [2, 3, 4, 5]  # everything else is out of vocabulary


@pytest.mark.parametrize(
    "config, message",
    [
        (
            item_config({"workflow": "item"}),
            r"wf.yaml: categorify vocabulary: no workflows artifact named 'item' .*; fit workflow 'item' first",
        ),
        (
            item_config({"workflow": "item", "table": "x.parquet"}),
            r"wf.yaml: features\[0\].ops\[0\].categorify.vocabulary: give exactly one of workflow",
        ),
        (item_config({"workflow": "item"}, freq_threshold=2), r"a given vocabulary is used as it is: drop freq_threshold"),
        (
            {
                "features": [
                    {"columns": ["category", "brand"], "ops": [{"categorify": {"vocabulary": {"table": "t.parquet", "column": "c"}}}]}
                ]
            },
            r"vocabulary.column names one source column: use it in a group of one column",
        ),
        (
            {"features": [{"columns": [["category", "brand"]], "ops": [{"categorify": {"vocabulary": {"table": "t.parquet"}}}]}]},
            r"a vocabulary cannot be given to column groups",
        ),
        (item_config({"table": "missing.parquet"}), r"wf.yaml: categorify vocabulary table .*missing.parquet does not exist"),
    ],
)
def test_vocabulary_config_errors(store, sample, tmp_path, config, message):
    with pytest.raises(ConfigError, match=message):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), [str(sample / "items.parquet")]))
    assert store.get("workflows", "wf") is None


def test_vocabularies_that_cannot_match_are_refused(store, sample, tmp_path):
    items = [str(sample / "items.parquet")]
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), items))
    strings = {"features": [{"columns": ["category"], "ops": [{"categorify": {"vocabulary": {"workflow": "item", "column": "item_id"}}}]}]}
    with pytest.raises(
        ConfigError,
        match=r"the vocabulary of 'category' from workflow 'item' \(item_id\) holds int\d+ values, the data's category is object",
    ):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, strings), items))
    with pytest.raises(ConfigError, match=r"num_buckets cannot be combined with a vocabulary"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "item"}, num_buckets=3)), items))
    stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config(num_buckets=3, max_size=150), "b.yaml"), items, name="buckets"))
    with pytest.raises(ConfigError, match=r"item_id would get other ids than in workflow 'buckets', whose vocabulary starts at id 5"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "buckets"})), items))
    with pytest.raises(ConfigError, match="cannot take a vocabulary from itself"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, item_config({"workflow": "item"})), items, name="item", force=True))
    assert [r.name for r in store.records()] == ["buckets", "item"]
