"""fit-workflow / transform in depth: every op against NVTabular's own API, sessions, masking,
OOV counts, Dask clusters, the trust model, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from embedtab.errors import ConfigError, DataError, UsageError
from embedtab.workflow import masking, stage
from embedtab.workflow.stage import quiet_merlin
from tests.conftest import CONFIGS, fit_id_space
from tests.workflow.test_stage import read_dataset

pytestmark = pytest.mark.merlin  # NVTabular workflows (the [merlin] extra)


@pytest.fixture(scope="module")
def rich_data(tmp_path_factory, sample):
    """Interactions joined with item attributes, with NaNs: a table every op can work on."""
    items = pd.read_parquet(sample / "items.parquet", columns=["item_id", "category", "brand", "price"])
    users = pd.read_parquet(sample / "users.parquet", columns=["user_id", "age"])
    frames = []
    for day in (1, 2):
        frame = pd.read_parquet(sample / "interactions" / f"day_{day}.parquet")
        frames.append(frame.merge(items, on="item_id", how="left").merge(users, on="user_id", how="left"))
    data = pd.concat(frames, ignore_index=True)
    data.loc[::17, "price"] = np.nan
    data["click"] = data["click"].astype("int64")
    out = tmp_path_factory.mktemp("rich")
    half = len(data) // 2
    data.iloc[:half].to_parquet(out / "part_a.parquet", index=False)
    data.iloc[half:].to_parquet(out / "part_b.parquet", index=False)
    return [str(out / "part_a.parquet"), str(out / "part_b.parquet")]


KITCHEN_SINK = {
    "name": "sink",
    "features": [
        {"columns": ["user_id"], "ops": [{"categorify": {"freq_threshold": 2, "dtype": "int64"}}, {"tags": ["user_id"]}]},
        {"columns": ["item_id"], "ops": [{"categorify": {"max_size": 50, "num_buckets": 3}}]},
        {"columns": [["category", "brand"]], "ops": [{"categorify": {"encode_type": "combo"}}]},
        {"columns": [["category", "device_type"]], "ops": [{"categorify": {"encode_type": "joint"}}]},
        {"columns": ["price"], "ops": ["fill_median", "log", "normalize"]},
        {"columns": ["age"], "ops": [{"fill_missing": {"fill_val": 30, "add_binary_cols": True}}]},
        {"columns": ["age"], "ops": ["normalize_minmax", {"rename": {"prefix": "mm_"}}]},
        {"columns": ["price"], "ops": [{"clip": {"min_value": 10, "max_value": 60}}, {"rename": {"postfix": "_clipped"}}]},
        {"columns": ["brand"], "ops": [{"hash_bucket": {"num_buckets": 7}}, {"rename": {"name": "brand_hashed"}}]},
        {"columns": ["item_id"], "ops": [{"target_encoding": {"target": "click", "kfold": 3, "p_smooth": 10}}]},
        {"columns": ["timestamp"], "ops": [{"time_features": ["hour_sin", "weekday_cos"]}, {"tags": ["context"]}]},
        {"columns": ["click"], "ops": [{"tags": ["target", "binary_classification"]}]},
    ],
}


def kitchen_sink_direct(out_path: str):
    import nvtabular as nvt
    from merlin.schema import Tags
    from nvtabular import ops

    from embedtab.workflow import functions
    from embedtab.workflow.compile import _Prefix

    time = (["timestamp"] >> ops.LambdaOp(functions.hour_sin, dtype=np.float32) >> ops.Rename(postfix="_hour_sin")) + (
        ["timestamp"] >> ops.LambdaOp(functions.weekday_cos, dtype=np.float32) >> ops.Rename(postfix="_weekday_cos")
    )
    return nvt.Workflow(
        (["user_id"] >> ops.Categorify(freq_threshold=2, dtype="int64", out_path=out_path) >> ops.AddTags([Tags.USER_ID]))
        + (["item_id"] >> ops.Categorify(max_size=50, num_buckets=3, out_path=out_path))
        + ([["category", "brand"]] >> ops.Categorify(encode_type="combo", out_path=out_path))
        + ([["category", "device_type"]] >> ops.Categorify(encode_type="joint", out_path=out_path))
        + (["price"] >> ops.FillMedian() >> ops.LogOp() >> ops.Normalize(out_dtype=np.float32))
        + (["age"] >> ops.FillMissing(fill_val=30, add_binary_cols=True))
        + (["age"] >> ops.NormalizeMinMax(out_dtype=np.float32) >> ops.Rename(f=_Prefix("mm_")))
        + (["price"] >> ops.Clip(min_value=10, max_value=60) >> ops.Rename(postfix="_clipped"))
        + (["brand"] >> ops.HashBucket(7) >> ops.Rename(name="brand_hashed"))
        + (["item_id"] >> ops.TargetEncoding("click", kfold=3, p_smooth=10, out_dtype="float32", out_path=out_path))
        + (time >> ops.AddTags([Tags.CONTEXT]))
        + (["click"] >> ops.AddTags([Tags.TARGET, Tags.BINARY_CLASSIFICATION]))
    )


def write_config(tmp_path, config, name="wf.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_every_op_equals_nvtabular_built_directly(store, rich_data, tmp_path):
    from merlin.io import Dataset

    config = write_config(tmp_path, KITCHEN_SINK)
    fitted = stage.fit(store, stage.FitOptions(config, rich_data, name="sink"))
    stage.transform(store, stage.TransformOptions("sink", rich_data, name="out"))
    ours = read_dataset(store.path("datasets", "out"))
    with quiet_merlin():
        direct = kitchen_sink_direct(str(tmp_path / "direct"))
        direct.fit(Dataset(rich_data, cpu=True))
        theirs = direct.transform(Dataset(rich_data, cpu=True)).to_ddf().compute().reset_index(drop=True)
    assert list(ours.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(ours, theirs)
    assert {"category_brand", "TE_item_id_click", "mm_age", "age_filled", "brand_hashed", "price_clipped"} <= set(ours.columns)
    assert ours["price_clipped"].dropna().between(10, 60).all()
    assert ours["brand_hashed"].between(0, 6).all()
    assert "category_brand" in fitted.record.metadata["cardinalities"]


def test_session_groupby_equals_nvtabular(store, sample, tmp_path):
    import nvtabular as nvt
    from merlin.io import Dataset
    from merlin.schema import Tags
    from nvtabular import ops

    from tests.workflow.test_stage import fitted_vocabulary

    data = [str(sample / "interactions" / "day_1.parquet")]
    fit_id_space(store, sample)
    fitted = stage.fit(store, stage.FitOptions(str(CONFIGS / "session.yaml"), data))
    result = stage.transform(store, stage.TransformOptions("session", data))
    ours = read_dataset(store.path("datasets", "session"))
    out = str(tmp_path / "direct")
    with quiet_merlin():
        vocab = {"item_id": fitted_vocabulary(store, "item", "item_id"), "device_type": fitted_vocabulary(store, "context", "device_type")}
        feats = (
            (
                ["item_id"]
                >> ops.Categorify(dtype="int64", out_path=out, vocabs={"item_id": vocab["item_id"]})
                >> ops.AddTags([Tags.ITEM_ID, Tags.ITEM])
            )
            + (
                ["device_type"]
                >> ops.Categorify(dtype="int64", out_path=out, vocabs={"device_type": vocab["device_type"]})
                >> ops.AddTags([Tags.CONTEXT])
            )
            + (["user_id"] >> ops.AddTags([Tags.USER_ID, Tags.USER]))
            + (nvt.ColumnSelector(["timestamp"]) >> ops.AddMetadata())
        )
        grouped = feats >> ops.Groupby(
            groupby_cols=["user_id"],
            sort_cols=["timestamp"],
            name_sep="-",
            aggs={"item_id": ["list", "count"], "device_type": ["list"], "timestamp": ["first"]},
        )
        direct = nvt.Workflow(
            grouped[["user_id", "timestamp-first"]]
            + (grouped[["item_id-list", "device_type-list"]] >> ops.ListSlice(-20, pad=True, pad_value=0) >> ops.AddTags([Tags.LIST]))
            + (
                grouped[["item_id-count"]]
                >> ops.LambdaOp(lambda col: col.astype("float32"), dtype=np.float32)
                >> ops.AddTags([Tags.CONTINUOUS])
            )
        )
        direct.fit(Dataset(data, cpu=True))
        theirs = direct.transform(Dataset(data, cpu=True)).to_ddf().compute().reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, theirs)
    raw = pd.read_parquet(data[0]).sort_values("timestamp", kind="stable")
    first_user = ours.iloc[0]
    assert first_user["item_id-count"] == (raw["user_id"] == first_user["user_id"]).sum()
    assert first_user["timestamp-first"] == raw.loc[raw["user_id"] == first_user["user_id"], "timestamp"].min()
    assert "item_id-count" not in fitted.record.metadata["cardinalities"]  # a count, not ids
    assert "item_id-count" not in result.record.summary["oov"]
    assert fitted.record.metadata["cardinalities"]["item_id-list"]["multi_hot"] is True
    # Transformers4Rec finds the item sequence by its tags: ITEM_ID (= item + id) and LIST; the count is a number.
    tags = {c["name"]: set(c["tags"]) for c in fitted.record.metadata["output_schema"]}
    assert {"item", "id", "list", "categorical"} <= tags["item_id-list"]
    assert "list" in tags["device_type-list"] and "id" not in tags["device_type-list"]
    assert tags["item_id-count"] == {"item", "continuous"}
    assert [n for n, t in tags.items() if {"item", "id"} <= t] == ["item_id-list"]
    # ... and sizes its inputs from a fixed list length; continuous inputs are float32; the user is tagged.
    assert {"user", "id"} <= tags["user_id"] and "categorical" not in tags["user_id"]
    for name in ("item_id-list", "device_type-list"):
        assert ours[name].map(len).eq(20).all()
        column = next(c for c in fitted.record.metadata["output_schema"] if c["name"] == name)
        assert column["value_count"] == {"min": 20, "max": 20}
    assert ours["item_id-count"].dtype == np.float32
    counts = ours["item_id-count"].astype(int)
    assert [list(row[n:]) for row, n in zip(ours["item_id-list"], counts)] == [[0] * (20 - n) for n in counts]  # padded with 0


def test_a_session_list_keeps_its_latest_entries_and_a_declared_target_keeps_its_tag(store, sample, tmp_path):
    config = {
        "features": [
            {"columns": ["item_id"], "ops": [{"categorify": {"dtype": "int64"}}, {"tags": ["item_id", "item"]}]},
            {"columns": ["click"], "ops": [{"tags": ["target", "binary_classification"]}]},
            {"columns": ["user_id"], "ops": [{"tags": ["user_id", "user"]}]},
            {"columns": ["timestamp"]},
        ],
        "groupby": {
            "by": ["user_id"],
            "sort": ["timestamp"],
            "aggs": {"item_id": ["list", "count"], "click": ["list", "sum"]},
            "max_length": 3,
            "continuous_dtype": "float64",
        },
    }
    data = [str(sample / "interactions" / "day_1.parquet")]
    fitted = stage.fit(store, stage.FitOptions(write_config(tmp_path, config, "s.yaml"), data))
    stage.transform(store, stage.TransformOptions("s", data))
    ours = read_dataset(store.path("datasets", "s")).set_index("user_id")
    raw = pd.read_parquet(data[0]).sort_values("timestamp", kind="stable")
    for user, rows in raw.groupby("user_id"):
        clicks = rows["click"].tolist()[-3:]
        assert list(ours.loc[user, "click-list"]) == clicks + [0] * (3 - len(clicks))  # the latest 3, padded
        assert ours.loc[user, "click-sum"] == rows["click"].sum()  # statistics over the whole group
    assert ours["item_id-count"].dtype == np.float64 and ours["item_id-list"].map(len).eq(3).all()
    config["groupby"]["ascending"] = False  # newest first: the latest 3 are the head
    stage.fit(store, stage.FitOptions(write_config(tmp_path, config, "d.yaml"), data))
    stage.transform(store, stage.TransformOptions("d", data))
    newest_first = read_dataset(store.path("datasets", "d")).set_index("user_id")
    for user, rows in raw.groupby("user_id"):
        clicks = rows["click"].tolist()[::-1][:3]
        assert list(newest_first.loc[user, "click-list"]) == clicks + [0] * (3 - len(clicks))
    tags = {c["name"]: set(c["tags"]) for c in fitted.record.metadata["output_schema"]}
    assert {"target", "list"} <= tags["click-list"] and {"target", "continuous"} <= tags["click-sum"]
    assert [n for n, t in tags.items() if "target" in t] == ["click-list", "click-sum"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_length": 0}, r"groupby.max_length: Input should be greater than or equal to 1"),
        ({"max_length": True}, r"groupby.max_length: Input should be a valid integer"),  # (not 1)
        ({"by": ["uid"]}, r"groupby.by: 'uid' is not an input column \(NVTabular groups by the input rows' columns\)"),
        ({"text_list": True}, r"groupby.max_length pads lists with 0, and device_type hold text: categorify them first"),
        ({"continuous_dtype": "int32"}, r"groupby.continuous_dtype: Input should be 'float32' or 'float64'"),
        # NVTabular groups by the input column: a categorify of the key would be dropped from the
        # values and kept in the schema
        ({"user_op": {"categorify": {}}}, r"groupby.by: 'user_id' is grouped on its input values, so categorify would not apply to it"),
    ],
)
def test_session_settings_that_would_mislead_a_model_are_refused(store, sample, tmp_path, change, message):
    config = yaml.safe_load((CONFIGS / "session.yaml").read_text())
    if "user_op" in change:
        group = next(g for g in config["features"] if g["columns"] == ["user_id"])
        group["ops"].insert(0, change.pop("user_op"))
    if change.pop("text_list", False):
        next(g for g in config["features"] if g["columns"] == ["device_type"])["ops"] = [{"tags": ["context"]}]
    config["groupby"].update(change)
    fit_id_space(store, sample)
    with pytest.raises(ConfigError, match=message):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), [str(sample / "interactions" / "day_1.parquet")]))
    assert not store.path("workflows", "session").exists()


def test_groupby_on_a_column_the_groups_do_not_produce(store, sample, tmp_path):
    config = yaml.safe_load((CONFIGS / "session.yaml").read_text())
    config["groupby"]["sort"] = ["ts"]
    fit_id_space(store, sample)
    with pytest.raises(
        ConfigError, match=r"groupby: ts not produced by the feature groups \(they produce item_id, device_type, user_id, timestamp\)"
    ):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), [str(sample / "interactions" / "day_1.parquet")]))


def test_unseen_categories_are_counted_as_oov(store, sample, tmp_path):
    train = [str(sample / "interactions" / f"day_{d}.parquet") for d in (1, 2)]
    valid = [str(sample / "interactions" / "day_3.parquet")]
    own = {
        "name": "own",
        "features": [{"columns": ["item_id", "gender"], "ops": ["categorify"]}],
        "joins": [{"path": str(sample / "users.parquet"), "key": "user_id", "columns": ["gender"]}],
    }
    stage.fit(store, stage.FitOptions(write_config(tmp_path, own), train))  # a vocabulary of its own, from days 1-2
    result = stage.transform(store, stage.TransformOptions("own", valid, name="valid"))
    frame = read_dataset(store.path("datasets", "valid"))
    raw = pd.read_parquet(valid[0])
    seen_items = set(pd.concat(pd.read_parquet(p) for p in train)["item_id"])
    expected = int((~raw["item_id"].isin(seen_items)).sum())
    assert expected >= 15  # the new items of the last day
    assert result.record.summary["oov"]["item_id"] == expected == int((frame["item_id"] == 2).sum())
    assert result.record.summary["null"]["gender"] == int((frame["gender"] == 1).sum())

    # The shipped config takes the catalog's vocabulary: the same new items get real ids.
    fit_id_space(store, sample)
    stage.fit(store, stage.FitOptions(str(CONFIGS / "interactions.yaml"), train))
    shared = stage.transform(store, stage.TransformOptions("interactions", valid, name="valid-shared"))
    assert shared.record.summary["oov"]["item_id"] == 0
    assert (read_dataset(store.path("datasets", "valid-shared"))["item_id"] >= 3).all()


def test_cold_start_masking_is_reproducible_recorded_and_opt_in(store, sample, tmp_path):
    train = [str(sample / "interactions" / f"day_{d}.parquet") for d in (1, 2)]
    fit_id_space(store, sample)
    stage.fit(store, stage.FitOptions(str(CONFIGS / "interactions.yaml"), train))
    plain = stage.transform(store, stage.TransformOptions("interactions", train, name="plain"))
    assert plain.record.params["mask"] is None and "masked_rows" not in plain.record.summary
    masked = stage.transform(store, stage.TransformOptions("interactions", train, name="masked", mask=True))
    # The same rows cut into five files (other partitions, other positions): the same rows masked.
    rows = pd.concat([pd.read_parquet(p) for p in train], ignore_index=True)
    resplit = []
    for index, chunk in enumerate(np.array_split(np.arange(len(rows)), 5)):
        resplit.append(str(tmp_path / f"part_{index}.parquet"))
        rows.iloc[chunk].to_parquet(resplit[-1], index=False)
    again = stage.transform(store, stage.TransformOptions("interactions", resplit, name="again", mask=True))
    a, b, p = (read_dataset(store.path("datasets", n)) for n in ("masked", "again", "plain"))
    pd.testing.assert_frame_equal(a, b)
    assert again.record.summary["masked_rows"] == masked.record.summary["masked_rows"]
    anonymous = a["user_id"] == 2  # -1 is not in the vocabulary: OOV
    counts = masked.record.summary["masked_rows"]
    assert counts[0] == int(anonymous.sum()) and 0.02 < counts[0] / len(a) < 0.09
    assert (a.loc[anonymous, ["gender", "top_category"]] == 1).all().all()  # joined features null together
    assert counts[1] == int((a["device_type"] == 2).sum()) and 0.02 < counts[1] / len(a) < 0.09
    # `ids` group: whole items lose their id, never their content key (or anything else).
    hidden = a["item_id"] == 2
    assert counts[2] == int(hidden.sum()) > 0
    assert (a["item_id_content"] == p["item_id_content"]).all() and (p["item_id"] == p["item_id_content"]).all()
    per_item = hidden.groupby(a["item_id_content"]).mean()
    assert set(per_item.unique()) == {0.0, 1.0}  # all or none of an item's rows
    assert 0.01 < per_item.mean() < 0.15
    others = [c for c in a.columns if c != "item_id"]
    pd.testing.assert_frame_equal(
        a.loc[hidden & ~anonymous & (a["device_type"] != 2), others], p.loc[hidden & ~anonymous & (a["device_type"] != 2), others]
    )
    untouched = ~anonymous & (a["device_type"] != 2) & ~hidden
    pd.testing.assert_frame_equal(a[untouched], p[untouched])
    assert masked.record.metadata["masking"]["spec"]["seed"] == 42
    assert masked.record.params["mask"]["groups"][0]["rate"] == 0.05


def test_masked_ids_are_counted_apart_from_unseen_ones(store, sample, tmp_path, capsys):
    """`oov` counts values unseen at fit time; ids the masking set to the OOV id are `masked`, per column."""
    from embedtab.cli.main import run as cli

    train = [str(sample / "interactions" / f"day_{d}.parquet") for d in (1, 2)]
    valid = str(sample / "interactions" / "day_3.parquet")  # holds items the first two days never saw
    config = {
        "name": "own",
        "features": [{"columns": ["item_id", "device_type"], "ops": ["categorify"]}],
        "masking": {
            "seed": 7,
            "groups": [
                {"ids": ["item_id"], "rate": 0.3, "by": "item_id"},
                {"columns": {"device_type": "unknown"}, "rate": 0.3},  # outside the vocabulary: OOV
                {"columns": {"device_type": "mobile"}, "rate": 0.2},
            ],
        },
    }  # inside it: a real id, not OOV
    stage.fit(store, stage.FitOptions(write_config(tmp_path, config), train))
    root = ["-A", str(store.root)]
    assert cli(["transform", "own", "-d", valid, "-n", "valid", "--mask", *root]) == 0
    err = capsys.readouterr().err
    summary = store.get("datasets", "valid").summary
    frame, raw = read_dataset(store.path("datasets", "valid")), pd.read_parquet(valid)
    hidden, unknown, mobile = masking.group_masks(raw, store.get("datasets", "valid").params["mask"])
    seen = set(pd.concat(pd.read_parquet(p) for p in train)["item_id"])
    unseen = int((~hidden & ~raw["item_id"].isin(seen)).sum())
    assert unseen > 0 and hidden.sum() > 0
    assert summary["oov"]["item_id"] == unseen and summary["masked"]["item_id"] == int(hidden.sum())
    assert int((frame["item_id"] == 2).sum()) == unseen + int(hidden.sum())
    assert summary["masked"]["device_type"] == int((unknown & ~mobile).sum()) == int((frame["device_type"] == 2).sum())
    assert summary["oov"]["device_type"] == 0
    assert summary["masked_rows"] == [int(hidden.sum()), int(unknown.sum()), int(mobile.sum())]
    assert f"unseen categories (mapped to OOV): item_id {unseen:,}" in err
    assert f"masked by --mask (set to OOV): item_id {int(hidden.sum()):,}, device_type {int((unknown & ~mobile).sum()):,}" in err

    # Without --mask nothing is masked and every OOV id is an unseen value.
    assert cli(["transform", "own", "-d", valid, "-n", "plain", *root]) == 0
    assert "masked" not in capsys.readouterr().err
    plain = store.get("datasets", "plain").summary
    assert plain["oov"]["item_id"] == int((~raw["item_id"].isin(seen)).sum()) and "masked" not in plain


def test_masking_by_entity_masks_whole_users(tmp_path):
    frame = pd.DataFrame({"user_id": np.repeat(np.arange(400), 5), "device": ["m"] * 2000})
    spec = {"seed": 3, "groups": [{"columns": {"user_id": -1, "device": "x"}, "rate": 0.25, "by": "user_id"}]}
    masked = masking.mask_partition(frame, spec)
    hit = masked["user_id"] == -1
    per_user = hit.groupby(frame["user_id"]).mean()
    assert set(per_user.unique()) == {0.0, 1.0}  # all or none of a user's rows
    assert 0.18 < per_user.mean() < 0.32
    assert (masked.loc[hit, "device"] == "x").all() and (masked.loc[~hit, "device"] == "m").all()
    pd.testing.assert_frame_equal(masked, masking.mask_partition(frame, spec))  # deterministic
    other_seed = masking.mask_partition(frame, {**spec, "seed": 4})
    assert not other_seed["user_id"].equals(masked["user_id"])
    halves = pd.concat([masking.mask_partition(frame.iloc[:1000], spec), masking.mask_partition(frame.iloc[1000:], spec)])
    pd.testing.assert_frame_equal(halves, masked)  # independent of partitioning


def test_mask_errors(store, sample, tmp_path):
    train = [str(sample / "interactions" / "day_1.parquet")]
    stage.fit(store, stage.FitOptions(str(CONFIGS / "context.yaml"), train, name="ctx"))
    with pytest.raises(UsageError, match="has no masking block"):
        stage.transform(store, stage.TransformOptions("ctx", train, mask=True))
    config = yaml.safe_load((CONFIGS / "interactions.yaml").read_text())
    config["joins"][0]["path"] = str(CONFIGS.parent / "sample_data" / "users.parquet")
    config["masking"]["groups"][0]["columns"] = {"user_id": "anonymous"}
    with pytest.raises(ConfigError, match=r"masking.groups\[0\].columns.user_id: user_id is numeric, the sentinel 'anonymous' is not"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), train))
    fit_id_space(store, sample)
    config["masking"]["groups"] = [{"ids": ["item_id", "category"], "rate": 0.1}]
    with pytest.raises(
        ConfigError, match=r"masking.groups\[0\].ids: category not a categorified output of this workflow \(those are: device_type, gender"
    ):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), train))
    config["masking"]["groups"] = [{"ids": ["item_id"], "columns": {"user_id": -1}, "rate": 0.1}]
    with pytest.raises(ConfigError, match=r"masking.groups\[0\]: .*give exactly one of columns \(input sentinels\) or ids"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), train))
    session = yaml.safe_load((CONFIGS / "session.yaml").read_text())
    session["masking"] = {"groups": [{"ids": ["item_id"], "rate": 0.1}]}
    with pytest.raises(ConfigError, match="masking ids needs one output row per input row: it cannot be combined with groupby"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, session), train))
    assert store.get("workflows", "interactions") is None


def test_fit_and_transform_on_a_dask_cluster_equal_local(store, sample, tmp_path, monkeypatch):
    from distributed import LocalCluster

    data = [str(sample / "interactions" / f"day_{d}.parquet") for d in (1, 2)]
    stage.fit(store, stage.FitOptions(str(CONFIGS / "context.yaml"), data, name="local"))
    stage.transform(store, stage.TransformOptions("local", data))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        fitted = stage.fit(
            store, stage.FitOptions(str(CONFIGS / "context.yaml"), data, name="remote", dask_scheduler=cluster.scheduler_address)
        )
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)  # the variable Dask reads
        moved = stage.transform(store, stage.TransformOptions("remote", data))
    assert fitted.record.metadata["dask"] == moved.record.metadata["dask"] == cluster.scheduler_address
    pd.testing.assert_frame_equal(read_dataset(store.path("datasets", "remote")), read_dataset(store.path("datasets", "local")))
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        stage.fit(store, stage.FitOptions(str(CONFIGS / "context.yaml"), data, name="x", dask_scheduler="tcp://127.0.0.1:1"))


def test_foreign_workflow_folder_needs_explicit_trust(store, sample, tmp_path):
    import nvtabular as nvt
    from merlin.io import Dataset
    from nvtabular import ops

    data = [str(sample / "items.parquet")]
    folder = tmp_path / "someone-elses-workflow"
    with quiet_merlin():
        wf = nvt.Workflow(["category"] >> ops.Categorify(out_path=str(tmp_path / "c")))
        wf.fit(Dataset(data, cpu=True))
        wf.save(str(folder))
    with pytest.raises(UsageError, match="did not write; loading it runs code from its workflow.pkl. Pass --trust-workflow"):
        stage.transform(store, stage.TransformOptions(str(folder), data, name="x"))
    result = stage.transform(store, stage.TransformOptions(str(folder), data, name="x", trust_workflow=True))
    assert result.record.metadata["rows"] == 200
    assert result.record.inputs["artifacts"] == []


def test_type_and_data_errors(store, sample, tmp_path):
    config = {"features": [{"columns": ["category"], "ops": ["log"]}]}
    with pytest.raises(ConfigError, match=r"features\[0\].ops\[0\]: log needs numeric columns; category is object"):
        stage.fit(store, stage.FitOptions(write_config(tmp_path, config), [str(sample / "items.parquet")]))
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(sample / "items.parquet").iloc[:0].to_parquet(empty)
    with pytest.raises(DataError, match="empty.parquet: no rows to fit on"):
        stage.fit(store, stage.FitOptions(str(CONFIGS / "item.yaml"), [str(empty)]))
    bad_join = {"joins": [{"path": "users.parquet", "on": "user_id", "columns": ["age"]}], "features": [{"columns": ["age"]}]}
    with pytest.raises(ConfigError, match="YAML reads a bare `on:` as true"):
        stage.fit(
            store, stage.FitOptions(write_config(tmp_path, yaml.safe_load(yaml.safe_dump(bad_join).replace("'on'", "on"))), [str(empty)])
        )
    assert store.records() == []
