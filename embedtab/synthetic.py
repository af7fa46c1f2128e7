"""Seeded synthetic recommender data: the committed sample_data/ and larger benchmark scales.

    python -m embedtab.synthetic sample_data                      # the committed sample (~200 items)
    python -m embedtab.synthetic /tmp/big --items 5000 --users 20000 --rows-per-day 200000

Layout written:
    items.parquet          item_id, title, description, category, brand, price, image_path
    users.parquet          user_id, age (some null), gender, top_category (some null)
    interactions/day_N.parquet   user_id, item_id, timestamp (unix s), device_type, click
    images/<item_id>.jpg   small JPEGs (one missing, one corrupt, on purpose)
    next_day/              the day after, laid out as above, to copy over it (README, "Day 2"):
                           items.parquet and users.parquet grown (new ids among the old ones, as a
                           sorted export has them), images/ of the new items, and
                           interactions/day_<days+1>.parquet mixing old and new items and users

Deliberate defects, so every stage meets them: null ages, one empty description, one item whose
image file is missing, one corrupt JPEG, and "new" items that appear only on the last day.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CATEGORIES = ["shoes", "shirts", "bags", "watches", "hats", "jackets", "lamps", "mugs"]
_COLOURS = {
    "shoes": (180, 60, 40),
    "shirts": (40, 90, 180),
    "bags": (120, 80, 40),
    "watches": (160, 160, 170),
    "hats": (200, 170, 50),
    "jackets": (30, 110, 70),
    "lamps": (230, 210, 120),
    "mugs": (150, 40, 120),
}
_ADJECTIVES = [
    "classic",
    "modern",
    "vintage",
    "compact",
    "premium",
    "everyday",
    "rugged",
    "elegant",
    "lightweight",
    "handmade",
    "minimal",
    "bold",
    "soft",
    "sturdy",
    "sleek",
    "cosy",
]
_MATERIALS = ["leather", "cotton", "steel", "ceramic", "wool", "canvas", "linen", "bamboo", "denim", "glass"]
_PHRASES = [
    "Designed for daily use and built to last.",
    "A favourite among customers who value comfort.",
    "Pairs well with the rest of the collection.",
    "Easy to clean and simple to care for.",
    "Made in small batches with careful attention to detail.",
    "A thoughtful gift for friends and family.",
    "Tested in demanding conditions before release.",
    "Available while stocks last.",
]
DAY0 = 1709510400  # 2024-03-04 00:00:00 UTC, a Monday
DEVICES = ["mobile", "desktop", "tablet"]


def _items(rng: np.random.Generator, n_items: int, repeat_fraction: float) -> dict[str, list]:
    ids = np.sort(rng.choice(np.arange(100_000, 1_000_000), size=n_items, replace=False)).astype(np.int64)
    brands = [f"brand_{i:02d}" for i in range(max(4, n_items // 10))]
    cats = rng.choice(CATEGORIES, size=n_items)
    titles, descriptions = [], []
    pool: list[str] = []
    for i in range(n_items):
        adjective, material = rng.choice(_ADJECTIVES), rng.choice(_MATERIALS)
        noun = cats[i][:-2] if cats[i].endswith("hes") else cats[i][:-1]
        article = "An" if adjective[0] in "aeiou" else "A"
        titles.append(f"{adjective.title()} {material} {noun}")
        if pool and rng.random() < repeat_fraction:
            descriptions.append(pool[int(rng.integers(len(pool)))])
            continue
        sentences = rng.choice(_PHRASES, size=int(rng.integers(1, 4)), replace=False)
        code = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"), size=6))
        text = f"{article} {adjective} {noun} made of {material}. " + " ".join(sentences) + f" Reference {code}."
        descriptions.append(text)
        pool.append(text)
    return {
        "item_id": ids.tolist(),
        "title": titles,
        "description": descriptions,
        "category": cats.tolist(),
        "brand": rng.choice(brands, size=n_items).tolist(),
        "price": np.round(rng.lognormal(3.2, 0.8, size=n_items), 2).tolist(),
        "image_path": [f"images/{i}.jpg" for i in ids],
    }


def _image(rng: np.random.Generator, category: str, size: int) -> bytes:
    from PIL import Image, ImageDraw

    base = np.array(_COLOURS[category], dtype=np.float64)
    grad = np.linspace(0.6, 1.2, size)[None, :, None]
    pixels = np.clip(base[None, None, :] * grad + rng.normal(0, 12, (size, size, 3)), 0, 255)
    img = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = rng.integers(0, size - 8, size=2)
        x1, y1 = x0 + rng.integers(6, size // 2), y0 + rng.integers(6, size // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        draw.ellipse([int(x0), int(y0), int(x1), int(y1)], fill=colour)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _write(table: dict[str, list], path: Path, schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table, schema=schema), path)


def generate(
    out: str | Path,
    n_items: int = 200,
    n_users: int = 500,
    days: int = 3,
    rows_per_day: int = 1000,
    new_items: int = 15,
    image_size: int = 48,
    images: bool = True,
    repeat_fraction: float = 0.0,
    seed: int = 7,
    next_day_items: int = 6,
    next_day_users: int = 10,
) -> Path:
    """Write the data set under `out` (and its next day under out/next_day unless next_day_items
    is 0); same arguments, same data."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    items = _items(rng, n_items, repeat_fraction)
    items["description"][3] = ""  # an empty description
    _write(items, out / "items.parquet")

    if images:
        _write_images(rng, items, out / "images", image_size)
    user_ids = _write_users(rng, n_users, out / "users.parquet")
    _write_interactions(rng, items, pq.read_table(out / "users.parquet"), n_items, new_items, days, rows_per_day, out / "interactions")
    if next_day_items:
        # Its own generator: the days above stay what they were without a next day.
        _write_next_day(np.random.default_rng(seed + 1), out, items, user_ids, next_day_items, next_day_users, days, rows_per_day, images)
    return out


def _write_next_day(
    rng: np.random.Generator,
    out: Path,
    items: dict,
    user_ids: np.ndarray,
    n_new: int,
    n_new_users: int,
    days: int,
    rows: int,
    images: bool,
    image_size: int = 48,
) -> None:
    """out/next_day/: the catalog and users grown (sorted by id, so new ids land among the old
    ones), the new items' images, and one more day of interactions, half of them with new items
    or new users."""
    taken = set(items["item_id"])
    new_ids = [int(i) for i in rng.choice(np.array(sorted(set(range(100_000, 1_000_000)) - taken)), size=n_new, replace=False)]
    new = _items(rng, n_new, 0.0)
    new["item_id"] = new_ids
    new["image_path"] = [f"images/{i}.jpg" for i in new_ids]
    grown = {column: values + new[column] for column, values in items.items()}
    order = np.argsort(grown["item_id"], kind="stable")
    grown = {column: [values[i] for i in order] for column, values in grown.items()}
    folder = out / "next_day"
    _write(grown, folder / "items.parquet")
    if images:
        (folder / "images").mkdir(parents=True, exist_ok=True)
        for item_id, category in zip(new["item_id"], new["category"]):
            (folder / "images" / f"{item_id}.jpg").write_bytes(_image(rng, category, image_size))
    users = pq.read_table(out / "users.parquet")
    new_users = rng.choice(np.array(sorted(set(range(1, 20 * len(user_ids))) - set(user_ids.tolist()))), size=n_new_users, replace=False)
    more = pa.table(
        {
            "user_id": pa.array(new_users, pa.int64()),
            "age": pa.array(rng.integers(16, 80, size=n_new_users), pa.int64()),
            "gender": pa.array(rng.choice(["F", "M", "X"], size=n_new_users)),
            "top_category": pa.array(rng.choice(CATEGORIES, size=n_new_users)),
        }
    )
    all_users = pa.concat_tables([users, more]).sort_by("user_id")
    pq.write_table(all_users, folder / "users.parquet")
    everyone, leaning = all_users.column("user_id").to_numpy(), _leanings(rng, all_users)
    item_ids, categories = np.asarray(grown["item_id"]), _codes(grown["category"])
    who = rng.integers(0, len(everyone), size=rows)  # row -> user index
    who[: len(new_users)] = np.searchsorted(everyone, new_users)  # every new user shows up
    item_idx = _pick(rng, leaning[who], categories, np.ones(len(item_ids)))
    fresh = np.flatnonzero(rng.random(rows) < NEW_SHARE)
    item_idx[fresh] = _pick(rng, leaning[who[fresh]], categories, np.isin(item_ids, new_ids).astype(np.float64))
    _write(_day(rng, everyone[who], item_ids, item_idx, days), folder / "interactions" / f"day_{days + 1}.parquet", _SCHEMA)


def _write_images(rng: np.random.Generator, items: dict, image_dir: Path, image_size: int) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    for idx, (item_id, cat) in enumerate(zip(items["item_id"], items["category"])):
        if idx == 5:
            continue  # this item's image file is missing
        data = _image(rng, cat, image_size)
        if idx == 9:
            data = data[: len(data) // 3]  # a truncated, corrupt JPEG
        (image_dir / f"{item_id}.jpg").write_bytes(data)


def _write_users(rng: np.random.Generator, n_users: int, path: Path) -> np.ndarray:
    user_ids = np.sort(rng.choice(np.arange(1, 10 * n_users), size=n_users, replace=False)).astype(np.int64)
    ages = rng.integers(16, 80, size=n_users).astype(object)
    ages[rng.random(n_users) < 0.06] = None  # some users never told their age
    top = rng.choice(CATEGORIES, size=n_users).astype(object)
    top[rng.random(n_users) < 0.1] = None  # users without a history have no top category
    users = {
        "user_id": user_ids.tolist(),
        "age": ages.tolist(),
        "gender": rng.choice(["F", "M", "X"], p=[0.48, 0.48, 0.04], size=n_users).tolist(),
        "top_category": top.tolist(),
    }
    _write(users, path, pa.schema([("user_id", pa.int64()), ("age", pa.int64()), ("gender", pa.string()), ("top_category", pa.string())]))
    return user_ids


_SCHEMA = pa.schema(
    [("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64()), ("device_type", pa.string()), ("click", pa.int8())]
)
LEAN = 0.8  # share of a user's interactions within the category they lean to
NEW_SHARE = 0.25  # share of the last day's interactions with the items released that day


def _codes(values: list | np.ndarray) -> np.ndarray:
    return np.array([CATEGORIES.index(v) for v in values], dtype=np.int64)


def _leanings(rng: np.random.Generator, users: pa.Table) -> np.ndarray:
    """The category (its index) each user leans to: their top_category, or a hidden one where that is null."""
    top = users.column("top_category").to_pylist()
    hidden = rng.choice(CATEGORIES, size=len(top))
    return _codes([t or h for t, h in zip(top, hidden)])


def _pick(rng: np.random.Generator, leaning: np.ndarray, categories: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One item index per row, whose user leans to category `leaning[row]`: with probability LEAN
    among the items of that category, otherwise among all; popularity-weighted either way
    (`weights`, 0 for items not on offer)."""
    picked = np.empty(len(leaning), dtype=np.int64)
    lean = np.where(rng.random(len(leaning)) < LEAN, leaning, -1)  # -1: among all items
    for code in range(-1, len(CATEGORIES)):
        rows = np.flatnonzero(lean == code)
        w = weights if code < 0 else weights * (categories == code)
        if len(rows):
            w = w if w.sum() > 0 else weights  # nothing of that category on offer
            picked[rows] = rng.choice(len(w), size=len(rows), p=w / w.sum())
    return picked


def _day(rng: np.random.Generator, users: np.ndarray, item_ids: np.ndarray, item_idx: np.ndarray, day: int) -> dict[str, list]:
    n = len(users)
    return {
        "user_id": users.tolist(),
        "item_id": item_ids[item_idx].tolist(),
        "timestamp": (DAY0 + day * 86_400 + np.sort(rng.integers(0, 86_400, size=n))).astype(np.int64).tolist(),
        "device_type": rng.choice(DEVICES, p=[0.6, 0.3, 0.1], size=n).tolist(),
        "click": (rng.random(n) < 0.3).astype(np.int8).tolist(),
    }


def _write_interactions(
    rng: np.random.Generator, items: dict, users: pa.Table, n_items: int, new_items: int, days: int, rows_per_day: int, folder: Path
) -> None:
    """Older items are more popular (Zipf-like); users lean to a category (LEAN); the last
    `new_items` are released on the last day and take NEW_SHARE of its interactions, each picked
    first by a user who leans to its category."""
    old = n_items - new_items
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    categories, item_ids = _codes(items["category"]), np.asarray(items["item_id"])
    user_ids, leaning = users.column("user_id").to_numpy(), _leanings(rng, users)
    for day in range(days):
        who = rng.integers(0, len(user_ids), size=rows_per_day)  # row -> user index
        item_idx = _pick(rng, leaning[who], categories, weights * (np.arange(n_items) < old))
        if day == days - 1 and new_items:
            fresh = np.union1d(np.arange(new_items), np.flatnonzero(rng.random(rows_per_day) < NEW_SHARE))
            item_idx[fresh] = _pick(rng, leaning[who[fresh]], categories, (np.arange(n_items) >= old).astype(np.float64))
            item_idx[:new_items] = np.arange(old, n_items)  # every new item shows up at least once ...
            for row in range(new_items):  # ... with a user who leans to its category, where there is one
                fans = np.flatnonzero(leaning == categories[old + row])
                who[row] = rng.choice(fans) if len(fans) else who[row]
        _write(_day(rng, user_ids[who], item_ids, item_idx, day), folder / f"day_{day + 1}.parquet", _SCHEMA)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output directory")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--rows-per-day", type=int, default=1000)
    parser.add_argument("--new-items", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--no-images", action="store_true")
    parser.add_argument("--repeat-fraction", type=float, default=0.0, help="share of items whose description repeats an earlier one")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--next-day-items", type=int, default=6, help="new items in next_day/ (0: no next day)")
    parser.add_argument("--next-day-users", type=int, default=10, help="new users in next_day/")
    args = parser.parse_args(argv)
    path = generate(
        args.out,
        args.items,
        args.users,
        args.days,
        args.rows_per_day,
        args.new_items,
        args.image_size,
        not args.no_images,
        args.repeat_fraction,
        args.seed,
        args.next_day_items,
        args.next_day_users,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
