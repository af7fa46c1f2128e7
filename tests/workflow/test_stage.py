"""fit-workflow / transform: equal to the same graph built with NVTabular's API, safe loading."""

from __future__ import annotations

import glob
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from embedtab.errors import ArtifactNotFound, ConfigError, DataError, IntegrityError
from embedtab.workflow import functions, stage
from embedtab.workflow.stage import quiet_merlin
from tests.conftest import CONFIGS, SAMPLE, fit_id_space

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)


def read_dataset(path) -> pd.DataFrame:
    parts = sorted(glob.glob(os.path.join(path, "*.parquet")))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def fitted_vocabulary(store, workflow: str, column: str) -> pd.Series:
    """A fitted workflow's vocabulary in id order, read the way NVTabular wrote it."""
    unique = pd.read_parquet(store.path("workflows", workflow) / "categories" / f"unique.{column}.parquet")
    return unique[column].dropna().sort_index()


def direct_graph(which: str, out_path: str, store=None):
    """The shipped configs written by hand with NVTabular's Python API."""
    import nvtabular as nvt
    from merlin.schema import Tags
    from nvtabular import ops

    if which == "item":
        return nvt.Workflow(
            (["item_id"] >> ops.Categorify(dtype="int32", out_path=out_path) >> ops.AddTags([Tags.ITEM_ID, Tags.ITEM, Tags.ID]))
            + (["category", "brand"] >> ops.Categorify(dtype="int32", out_path=out_path) >> ops.AddTags([Tags.ITEM]))
            + (
                ["price"]
                >> ops.LogOp()
                >> ops.Normalize(out_dtype=np.float32)
                >> ops.Rename(postfix="_log_norm")
                >> ops.AddTags([Tags.ITEM, Tags.CONTINUOUS])
            )
        )
    if which == "user":
        return nvt.Workflow(
            (["user_id"] >> ops.Categorify(dtype="int32", out_path=out_path) >> ops.AddTags([Tags.USER_ID, Tags.USER, Tags.ID]))
            + (
                ["age"]
                >> ops.Normalize(out_dtype=np.float32)
                >> ops.FillMissing(fill_val=0.0)
                >> ops.Rename(postfix="_norm")
                >> ops.AddTags([Tags.USER, Tags.CONTINUOUS])
            )
            + (
                ["age"]
                >> ops.FillMissing(fill_val=-1)
                >> ops.Bucketize([0, 18, 25, 35, 50, 65])
                >> ops.Rename(postfix="_binned")
                >> ops.Categorify(dtype="int32", out_path=out_path)
                >> ops.AddTags([Tags.USER])
            )
            + (["gender", "top_category"] >> ops.Categorify(dtype="int32", out_path=out_path) >> ops.AddTags([Tags.USER]))
        )
    if which == "interactions":
        users = pd.read_parquet(SAMPLE / "users.parquet", columns=["user_id", "gender", "top_category"])
        joined = ["user_id", "item_id", "device_type", "timestamp", "click"] >> ops.JoinExternal(
            users, on="user_id", how="left", columns_ext=["user_id", "gender", "top_category"]
        )
        time = None
        for name in ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos"):
            branch = joined[["timestamp"]] >> ops.LambdaOp(getattr(functions, name), dtype=np.float32) >> ops.Rename(postfix=f"_{name}")
            time = branch if time is None else time + branch

        def shared(workflow, *columns):  # Categorify with the vocabularies of the item/user/context workflows
            return ops.Categorify(dtype="int32", out_path=out_path, vocabs={c: fitted_vocabulary(store, workflow, c) for c in columns})

        return nvt.Workflow(
            (joined[["user_id"]] >> shared("user", "user_id") >> ops.AddTags([Tags.USER_ID, Tags.USER, Tags.ID]))
            + (joined[["gender", "top_category"]] >> shared("user", "gender", "top_category") >> ops.AddTags([Tags.USER]))
            + (joined[["item_id"]] >> shared("item", "item_id") >> ops.AddTags([Tags.ITEM_ID, Tags.ITEM, Tags.ID]))
            + (joined[["item_id"]] >> shared("item", "item_id") >> ops.Rename(name="item_id_content") >> ops.AddTags([Tags.ITEM]))
            + (joined[["device_type"]] >> shared("context", "device_type") >> ops.AddTags([Tags.CONTEXT]))
            + (time >> ops.AddTags([Tags.CONTEXT, Tags.CONTINUOUS]))
            + (joined[["click"]] >> nvt.ops.AddMetadata() >> ops.AddTags([Tags.TARGET, Tags.BINARY_CLASSIFICATION]))
        )
    raise ValueError(which)


DATA = {
    "item": ["items.parquet"],
    "user": ["users.parquet"],
    "interactions": ["interactions/day_1.parquet", "interactions/day_2.parquet"],
}


@pytest.mark.parametrize("which", ["item", "user", "interactions"])
def test_transform_equals_the_same_graph_built_with_nvtabular(store, sample, tmp_path, which):
    import nvtabular as nvt
    from merlin.io import Dataset

    data = [str(sample / d) for d in DATA[which]]
    if which == "interactions":
        fit_id_space(store, sample)
    fitted = stage.fit(store, stage.FitOptions(str(CONFIGS / f"{which}.yaml"), data))
    out = stage.transform(store, stage.TransformOptions(which, data, name=f"{which}-out"))
    ours = read_dataset(store.path("datasets", f"{which}-out"))

    with quiet_merlin():
        direct = direct_graph(which, str(tmp_path / "direct"), store)
        direct.fit(Dataset(data, cpu=True))
        theirs = direct.transform(Dataset(data, cpu=True)).to_ddf().compute().reset_index(drop=True)
        sizes = nvt.ops.get_embedding_sizes(direct)
    assert list(ours.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(ours, theirs)
    assert out.record.metadata["rows"] == len(theirs)
    assert fitted.record.metadata["cardinalities"] == {
        col: {"cardinality": card, "embedding_dim": dim} for col, (card, dim) in sorted(sizes.items())
    }
    schema = {c["name"]: c["tags"] for c in fitted.record.metadata["output_schema"]}
    assert schema == {col.name: sorted(t.value for t in col.tags) for col in direct.output_schema}


def test_saved_workflow_opens_with_plain_nvtabular_load(store, sample):
    import nvtabular as nvt
    from merlin.io import Dataset

    data = [str(sample / "items.parquet")]
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), data, name="wf"))
    with quiet_merlin():
        loaded = nvt.Workflow.load(str(store.path("workflows", "wf")))
        frame = loaded.transform(Dataset(data, cpu=True)).to_ddf().compute()
    stage.transform(store, stage.TransformOptions("wf", data))
    ours = read_dataset(store.path("datasets", "wf"))
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), ours)
    assert (store.path("datasets", "wf") / "schema.pbtxt").is_file()
    assert frame["item_id"].min() >= 3  # vocabulary ids start after pad, null and OOV


class _Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_tampered_workflow_is_refused_before_unpickling(store, sample, tmp_path):
    data = [str(sample / "items.parquet")]
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), data, name="wf"))
    marker = tmp_path / "pwned"
    (store.path("workflows", "wf") / "workflow.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(IntegrityError, match=r"workflows/wf is damaged: workflow.pkl changed size; refusing to use it"):
        stage.transform(store, stage.TransformOptions("wf", data))
    assert not marker.exists()
    assert store.get("datasets", "wf") is None


def test_extra_file_in_workflow_dir_is_refused(store, sample):
    data = [str(sample / "items.parquet")]
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), data, name="wf"))
    (store.path("workflows", "wf") / "categories" / "evil.parquet").write_bytes(b"x")
    with pytest.raises(IntegrityError, match=r"workflows/wf is damaged: categories/evil.parquet is not embedtab's \(an extra file\)"):
        stage.load_workflow(store, "wf")


def test_fit_and_transform_input_errors(store, sample, tmp_path):
    users = [str(sample / "users.parquet")]
    with pytest.raises(
        ConfigError,
        match=r"item.yaml: features\[0\].columns: item_id not in the data \(users.parquet has user_id, age, gender, top_category\)",
    ):
        stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), users))
    assert store.get("workflows", "item") is None
    stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(sample / "items.parquet")]))
    with pytest.raises(DataError, match=r"missing column\(s\) item_id, category, brand, price"):
        stage.transform(store, stage.TransformOptions("item", users))
    with pytest.raises(ArtifactNotFound, match="no workflows artifact named 'nope'"):
        stage.transform(store, stage.TransformOptions("nope", users))
    with pytest.raises(DataError, match="no files match"):
        stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(tmp_path / "*.parquet")]))


def test_time_functions_from_seconds_and_datetimes():
    from embedtab.synthetic import DAY0  # a Monday, 00:00 UTC

    seconds = pd.Series([DAY0, DAY0 + 6 * 3600, DAY0 + 2 * 86_400 + 18 * 3600], dtype="int64")
    np.testing.assert_allclose(functions.hour_sin(seconds), [0.0, 1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(functions.hour_cos(seconds), [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(functions.weekday_sin(seconds), np.sin(2 * np.pi * np.array([0, 0, 2]) / 7), atol=1e-6)
    as_datetime = pd.to_datetime(seconds, unit="s")
    np.testing.assert_array_equal(functions.weekday_cos(as_datetime), functions.weekday_cos(seconds))
    assert functions.hour_sin(seconds).dtype == np.float32
