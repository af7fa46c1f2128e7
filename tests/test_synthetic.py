"""The committed sample data is exactly what the seeded generator makes, defects included."""

from __future__ import annotations

import numpy as np
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


def test_the_sample_content_carries_signal_a_model_can_learn():
    """Users lean to a category, and titles and image colours follow the item's category: what lets
    content vectors help items no one has seen yet (examples/train_with_content_lookups.py)."""
    from PIL import Image

    from embedtab.synthetic import _COLOURS, LEAN

    items = pq.read_table(SAMPLE / "items.parquet").to_pandas()
    users = pq.read_table(SAMPLE / "users.parquet").to_pandas()
    days = [pq.read_table(SAMPLE / "interactions" / f"day_{d}.parquet").to_pandas() for d in (1, 2, 3)]
    rows = days[0].merge(items[["item_id", "category"]], on="item_id").merge(users[["user_id", "top_category"]], on="user_id")
    known = rows["top_category"].notna()
    share = (rows.loc[known, "category"] == rows.loc[known, "top_category"]).mean()
    assert LEAN - 0.15 < share < LEAN + 0.1 and share > 3 / 8  # far above the 1 in 8 of no leaning
    assert all(item.category.startswith(item.title.split()[-1].lower()) for item in items.itertuples())  # "Bold wool shoe"
    for item in items.iloc[20:60].itertuples():  # the image's typical colour (not its random spots) is its category's
        typical = np.median(np.asarray(Image.open(SAMPLE / item.image_path).convert("RGB"), dtype=float).reshape(-1, 3), axis=0)
        nearest = min(_COLOURS, key=lambda c: np.linalg.norm(np.asarray(_COLOURS[c]) * 0.9 - typical))
        assert nearest == item.category, item.item_id
    released = items["item_id"].iloc[-15:]
    assert 0.2 < days[2]["item_id"].isin(released).mean() < 0.35  # the day's new items get attention
