"""Append-only vocabularies: a refit over a grown catalog keeps every earlier id, and a refit that
would move one is refused (embedtab/workflow/growth.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from embedtab.artifacts import RunMode
from embedtab.errors import ConfigError, DataError, IntegrityError
from embedtab.reporting import SILENT
from embedtab.workflow import stage
from embedtab.workflow.vocabulary import read_unique_file
from tests.test_id_space import _PLAIN_NVTABULAR
from tests.workflow.test_depth import write_config
from tests.workflow.test_stage import read_dataset

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)

NEW_IDS = [5, 999999, 100500]  # below, above and inside the day-1 ids


def config(append: bool = True, **extra) -> dict:
    extra = {key.rstrip("_"): value for key, value in extra.items()}  # (append_="yes": a raw value)
    categorify = {"dtype": "int32", **({"append": True} if append else {}), **extra}
    return {
        "features": [
            {"columns": ["item_id"], "ops": [{"categorify": categorify}]},
            {"columns": ["category", "brand"], "ops": [{"categorify": categorify}]},
        ]
    }


def vocab(store, name: str, column: str = "item_id") -> dict:
    path = store.path("workflows", name) / "categories" / f"unique.{column}.parquet"
    found = read_unique_file(path, column, 1 << 62)
    return dict(zip(found.values.to_pylist(), found.ids.tolist()))


def grown_catalog(items: pd.DataFrame) -> pd.DataFrame:
    """Day 2: three new items (one with a new category) spread among the old ones."""
    new = items.iloc[:3].copy()
    new["item_id"] = NEW_IDS
    new["category"] = ["brand-new-category", *new["category"].iloc[1:]]
    return pd.concat([items.iloc[:50], new, items.iloc[50:]], ignore_index=True)


@pytest.fixture
def catalog(sample, tmp_path):
    """The sample catalog at a path of its own (rewritten in place for day 2, as a daily export is)."""
    items = pd.read_parquet(sample / "items.parquet")
    path = tmp_path / "catalog.parquet"
    items.to_parquet(path)
    return items, path


def test_an_append_refit_keeps_every_id_and_numbers_new_values_after_them(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config())
    day1 = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = {column: vocab(store, "item", column) for column in ("item_id", "category", "brand")}
    assert day1.record.metadata["id_spaces"]["item_id"] == {"ids": 200, "added": 200, "moved": 0, "grown_from": None}
    stage.transform(store, stage.TransformOptions("item", [str(path)], name="day1"))
    day1_out = read_dataset(store.path("datasets", "day1"))

    grown_catalog(items).to_parquet(path)  # the same path, the same command: an update, no --force
    day2 = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert not day2.up_to_date
    after = {column: vocab(store, "item", column) for column in ("item_id", "category", "brand")}
    for column, ids in before.items():
        assert {value: after[column][value] for value in ids} == ids  # every day-1 value, the same id
    top = max(before["item_id"].values())
    assert [after["item_id"][i] for i in NEW_IDS] == [top + 1, top + 2, top + 3]  # in order of first appearance
    assert after["category"]["brand-new-category"] == max(before["category"].values()) + 1
    spaces = day2.record.metadata["id_spaces"]
    assert spaces["item_id"] == {"ids": 203, "added": 3, "moved": 0, "grown_from": day1.record.fingerprint}
    assert spaces["category"]["added"] == 1 and spaces["brand"]["added"] == 0

    # Day-1 data through the day-2 workflow: exactly day 1's output; and through plain NVTabular too.
    items.to_parquet(tmp_path / "day1-items.parquet")
    stage.transform(store, stage.TransformOptions("item", [str(tmp_path / "day1-items.parquet")], name="day1-again"))
    pd.testing.assert_frame_equal(read_dataset(store.path("datasets", "day1-again")), day1_out)
    out = tmp_path / "plain.parquet"
    jobs = {"item": (str(store.path("workflows", "item")), str(tmp_path / "day1-items.parquet"), str(out))}
    done = subprocess.run([sys.executable, "-c", _PLAIN_NVTABULAR, json.dumps(jobs)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out), day1_out)

    again = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert again.up_to_date  # nothing new: nothing refitted


def test_a_value_that_leaves_the_data_keeps_its_id(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config())
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = vocab(store, "item")
    items.iloc[10:].to_parquet(path)  # ten items left the catalog
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert vocab(store, "item") == before


def test_a_refit_that_would_move_ids_is_refused_and_force_renumbers(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config(append=False))
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = store.get("workflows", "item")
    grown_catalog(items).to_parquet(path)
    follow = RunMode(follow_inputs=True)  # as `embedtab run` refits a workflow whose data changed
    with pytest.raises(
        DataError, match=r"^refitting workflow 'item' would move .*; 200 of 200 item_id ids \(\d+: \d+ -> \d+.*\); nothing was written"
    ):
        stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"), SILENT, follow)
    assert store.get("workflows", "item").fingerprint == before.fingerprint  # nothing published
    assert not list((store.root / ".staging").glob("workflows.*"))
    forced = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item", force=True))
    assert forced.record.metadata["id_spaces"]["item_id"]["grown_from"] is None  # renumbered from scratch


def test_growing_refuses_a_changed_id_type(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config())
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = store.get("workflows", "item").fingerprint
    items.assign(item_id=items["item_id"].astype(str)).to_parquet(path)
    with pytest.raises(
        DataError, match=r"^item_id: workflow 'item' numbered int64 values and the data's item_id is string; ids cannot grow"
    ):
        stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert store.get("workflows", "item").fingerprint == before


def test_growing_refuses_a_category_file_edited_by_hand(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config())
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    unique = store.path("workflows", "item") / "categories" / "unique.item_id.parquet"
    frame = pd.read_parquet(unique)
    frame.loc[3, "item_id"], frame.loc[4, "item_id"] = frame.loc[4, "item_id"], frame.loc[3, "item_id"]
    frame.to_parquet(unique)
    grown_catalog(items).to_parquet(path)
    with pytest.raises(IntegrityError, match=r"unique\.item_id\.parquet.*cannot grow from it: restore it, or pass --force"):
        stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    forced = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item", force=True))
    assert np.array_equal(sorted(vocab(store, "item")), sorted(grown_catalog(items)["item_id"]))
    assert forced.record.metadata["id_spaces"]["item_id"]["added"] == 203


def test_a_grown_catalog_without_its_id_column_is_refused(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config())
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = store.get("workflows", "item").fingerprint
    items.drop(columns=["item_id"]).to_parquet(path)
    with pytest.raises((DataError, ConfigError), match="item_id"):
        stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert store.get("workflows", "item").fingerprint == before


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"num_buckets": 10}, "append cannot be combined with num_buckets"),
        ({"freq_threshold": 2}, "append keeps every value it has numbered"),
        ({"vocabulary": {"workflow": "item"}}, "a vocabulary from a workflow or table already follows its source"),
    ],
)
def test_append_refuses_what_would_drop_or_shift_ids(store, catalog, tmp_path, extra, message):
    _, path = catalog
    with pytest.raises(ConfigError, match=message):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config(**extra)), [str(path)], name="item"))


def test_dropping_the_append_declaration_is_refused_with_the_ids_it_would_move(store, catalog, tmp_path):
    items, path = catalog
    stage.fit(store, stage.FitOptions(write_config(tmp_path, config()), [str(path)], name="item"))
    grown_catalog(items).to_parquet(path)
    stage.fit(store, stage.FitOptions(write_config(tmp_path, config()), [str(path)], name="item"))  # day 2: grown
    before = store.get("workflows", "item").fingerprint
    plain = write_config(tmp_path, config(append=False), "plain.yaml")  # the declaration removed
    with pytest.raises(DataError, match=r"would move .*[\d,]+ of 203 item_id ids \(.* -> .*\); nothing was written"):
        stage.fit(store, stage.FitOptions(plain, [str(path)], name="item"))
    assert store.get("workflows", "item").fingerprint == before
    # An edit that moves nothing (another op beside the ids) is an update.
    extra = config()
    extra["features"].append({"columns": ["price"], "ops": ["log"]})
    grown = stage.fit(store, stage.FitOptions(write_config(tmp_path, extra, "extra.yaml"), [str(path)], name="item"))
    assert not grown.up_to_date and grown.record.metadata["id_spaces"]["item_id"]["added"] == 0


def test_a_rename_after_the_categorify_hides_nothing(store, catalog, tmp_path):
    items, path = catalog
    renamed = {"features": [{"columns": ["item_id"], "ops": [{"categorify": {"append": True}}, {"rename": {"postfix": "_idx"}}]}]}
    yaml = write_config(tmp_path, renamed)
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = vocab(store, "item")
    grown_catalog(items).to_parquet(path)
    day2 = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    after = vocab(store, "item")
    assert {value: after[value] for value in before} == before
    assert day2.record.metadata["id_spaces"]["item_id"]["added"] == 3


def test_an_id_space_dropped_from_an_append_only_config_is_refused(store, catalog, tmp_path):
    _, path = catalog
    stage.fit(store, stage.FitOptions(write_config(tmp_path, config()), [str(path)], name="item"))
    before = store.get("workflows", "item").fingerprint
    fewer = config()
    del fewer["features"][1]  # category and brand no longer categorified
    with pytest.raises(DataError, match=r"would move all 20 brand ids \(no longer categorified\); all 8 category ids"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, fewer, "fewer.yaml"), [str(path)], name="item"))
    assert store.get("workflows", "item").fingerprint == before


def test_null_ids_in_a_growing_fit_are_one_line_and_nothing_is_published(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config())
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = store.get("workflows", "item").fingerprint
    grown = grown_catalog(items)
    grown["item_id"] = grown["item_id"].astype("Int64")
    grown.loc[7, "item_id"] = None
    grown.to_parquet(path)
    with pytest.raises(DataError, match=r"catalog.parquet: 1 null item_id value\(s\); .*in a number column .*drop or fill them$"):
        stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert store.get("workflows", "item").fingerprint == before


def test_force_renumbers_and_says_how_many_ids_moved(store, catalog, tmp_path):
    items, path = catalog
    yaml = write_config(tmp_path, config(append=False))
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    grown_catalog(items).to_parquet(path)
    forced = stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item", force=True))
    space = forced.record.metadata["id_spaces"]["item_id"]
    assert space["moved"] == 200 and space["added"] == 203 and space["grown_from"] is None


def test_append_takes_true_or_false_only(store, catalog, tmp_path):
    _, path = catalog
    with pytest.raises(ConfigError, match="append"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config(append=False, append_="yes")), [str(path)], name="item"))


def test_a_second_growth_while_one_is_being_made_stops_at_once(store, catalog, tmp_path):
    from embedtab.errors import ArtifactBusy
    from tests.test_hardening import held_build_lock

    items, path = catalog
    yaml = write_config(tmp_path, config())
    stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    before = store.get("workflows", "item").fingerprint
    grown_catalog(items).to_parquet(path)
    with held_build_lock(store.root, "workflows.item", "another growth's inputs"):  # another run growing it from other data
        with pytest.raises(ArtifactBusy, match=r"workflows 'item' is being made right now by pid 4242 .*from other inputs"):
            stage.fit(store, stage.FitOptions(yaml, [str(path)], name="item"))
    assert store.get("workflows", "item").fingerprint == before and vocab(store, "item")
