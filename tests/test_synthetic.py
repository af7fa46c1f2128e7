"""The committed sample data is exactly what the seeded generator makes, defects included."""

from __future__ import annotations

import pyarrow.parquet as pq

from embedtab.synthetic import generate
from tests.conftest import SAMPLE


def test_committed_sample_equals_the_generator(tmp_path):
    fresh = generate(tmp_path / "s")
    tables = ["items.parquet", "users.parquet", *(f"interactions/day_{d}.parquet" for d in (1, 2, 3))]
    for rel in [*tables, "next_day/items.parquet", "next_day/users.parquet", "next_day/interactions/day_4.parquet"]:
        assert pq.read_table(fresh / rel).equals(pq.read_table(SAMPLE / rel)), rel
    for images in ("images", "next_day/images"):
        committed = sorted(p.name for p in (SAMPLE / images).iterdir())
        assert committed == sorted(p.name for p in (fresh / images).iterdir())
        for name in committed:
            assert (fresh / images / name).read_bytes() == (SAMPLE / images / name).read_bytes()
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 3_000_000


def test_sample_has_its_deliberate_defects():
    items = pq.read_table(SAMPLE / "items.parquet").to_pylist()
    assert 190 <= len(items) <= 210
    assert items[3]["description"] == ""
    assert not (SAMPLE / items[5]["image_path"]).exists()
    assert (SAMPLE / items[9]["image_path"]).stat().st_size < 1000  # truncated JPEG
    users = pq.read_table(SAMPLE / "users.parquet")
    assert users.num_rows == 500 and users.column("age").null_count > 0
    days = [pq.read_table(SAMPLE / "interactions" / f"day_{d}.parquet") for d in (1, 2, 3)]
    assert days[0].column_names == ["user_id", "item_id", "timestamp", "device_type", "click"]
    early = set(days[0].column("item_id").to_pylist()) | set(days[1].column("item_id").to_pylist())
    late_only = set(days[2].column("item_id").to_pylist()) - early
    assert len(late_only) >= 15  # new items appear only on the last day


def test_the_next_day_grows_the_sample_among_its_old_ids():
    items, grown = (pq.read_table(SAMPLE / p).to_pandas() for p in ("items.parquet", "next_day/items.parquet"))
    new = grown[~grown["item_id"].isin(items["item_id"])]
    assert len(new) == 6 and grown["item_id"].is_monotonic_increasing
    assert new.index.min() < len(items) - 1  # inserted among the old rows, not only at the end
    assert grown[grown["item_id"].isin(items["item_id"])].reset_index(drop=True).equals(items)  # the old rows unchanged
    assert all((SAMPLE / "next_day" / path).is_file() for path in new["image_path"])
    users, more = (pq.read_table(SAMPLE / p).to_pandas() for p in ("users.parquet", "next_day/users.parquet"))
    assert len(more) == len(users) + 10 and set(users["user_id"]) < set(more["user_id"])
    day4 = pq.read_table(SAMPLE / "next_day" / "interactions" / "day_4.parquet").to_pandas()
    assert day4["item_id"].isin(new["item_id"]).any() and day4["item_id"].isin(items["item_id"]).any()
    assert day4["user_id"].isin(set(more["user_id"]) - set(users["user_id"])).sum() >= 10
