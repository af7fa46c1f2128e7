"""encode image: equality with open_clip, hostile files, image modes."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embedtab import tables
from embedtab.encode import ImageOptions, run_image
from embedtab.encode.images import ImageLoadError, load_rgb, to_rgb
from embedtab.errors import ModelError, UsageError


@pytest.fixture(scope="module")
def smoke_clip():
    import open_clip

    from embedtab.encode.smoke import smoke_model_dir

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{smoke_model_dir()}")
    model.eval()
    return model, preprocess


def test_image_embeddings_equal_open_clip_encode_image(store, sample, smoke_clip):
    import torch

    result = run_image(store, ImageOptions(inputs=[str(sample / "items.parquet")], name="img", model="embedtab-smoke-clip", batch_size=16))
    directory = store.path("embeddings", "img")
    table = tables.read_parts(tables.part_files(directory))
    items = pq.read_table(sample / "items.parquet").to_pylist()
    ids = table.column("item_id").to_pylist()
    # Item 5's file is missing and item 9's JPEG is truncated: both skipped, all others in order.
    skipped = {items[5]["item_id"], items[9]["item_id"]}
    assert ids == [row["item_id"] for row in items if row["item_id"] not in skipped]

    model, preprocess = smoke_clip
    by_id = {row["item_id"]: row for row in items}
    batch = torch.stack([preprocess(Image.open(sample / by_id[i]["image_path"]).convert("RGB")) for i in ids])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_image(batch), dim=-1).numpy()
    np.testing.assert_allclose(tables.vectors(table), expected, atol=1e-5, rtol=0)

    errors = pq.read_table(directory / "_errors.parquet").to_pylist()
    reasons = {e["item_id"]: e["reason"] for e in errors}
    assert reasons[items[5]["item_id"]] == "file not found"
    assert reasons[items[9]["item_id"]].startswith("corrupt image")
    assert result.record.summary["encoded"] == 198 and result.record.summary["skipped"] == 2
    model_meta = result.record.metadata["model"]
    assert model_meta["smoke_model"] is True and result.record.metadata["dim"] == 32
    assert model_meta["preprocess"]["size"] == [64, 64]


def _save(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def hostile_and_odd_images(folder):
    """(file name, bytes, expected outcome): None = encoded, else the start of the skip reason."""
    rgb = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    cases = [
        ("cmyk.jpg", _save(Image.new("CMYK", (20, 20), (0, 255, 255, 0)), "JPEG"), None),
        ("grey.png", _save(Image.new("L", (20, 20), 128)), None),
        ("palette.png", _save(rgb.convert("P")), None),
        ("alpha.png", _save(Image.new("RGBA", (20, 20), (0, 0, 0, 0))), None),
        ("sixteen.png", _save(Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16))), None),
        ("rotated.jpg", _save(rgb, "JPEG", exif=exif.tobytes()), None),
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image at all", "not an image"),
        ("truncated.jpg", _save(rgb, "JPEG")[:200], "corrupt image"),
        ("huge.png", _save(Image.new("L", (3000, 3000))), "image too large"),
    ]
    for name, data, _ in cases:
        (folder / name).write_bytes(data)
    return cases


def test_odd_modes_are_encoded_and_hostile_files_skipped(store, tmp_path):
    cases = hostile_and_odd_images(tmp_path)
    ids = list(range(len(cases))) + [len(cases)]
    paths = [c[0] for c in cases] + ["missing.jpg"]
    pq.write_table(pa.table({"item_id": ids, "image_path": paths}), tmp_path / "items.parquet")
    result = run_image(
        store, ImageOptions(inputs=[str(tmp_path / "items.parquet")], name="odd", model="embedtab-smoke-clip", max_pixels=5_000_000)
    )
    directory = store.path("embeddings", "odd")
    encoded = tables.read_parts(tables.part_files(directory)).column("item_id").to_pylist()
    reasons = {e["item_id"]: e["reason"] for e in pq.read_table(directory / "_errors.parquet").to_pylist()}
    for index, (name, _, outcome) in enumerate(cases):
        if outcome is None:
            assert index in encoded, f"{name} should be encoded, got {reasons.get(index)}"
        else:
            assert reasons[index].startswith(outcome), (name, reasons.get(index))
    assert reasons[len(cases)] == "file not found"
    assert result.record.summary["skipped"] == 5


def test_to_rgb_conversions(tmp_path):
    clear = to_rgb(Image.new("RGBA", (2, 2), (10, 20, 30, 0)))
    assert clear.mode == "RGB" and clear.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    opaque = to_rgb(Image.new("RGBA", (2, 2), (10, 20, 30, 255)))
    assert opaque.getpixel((0, 0)) == (10, 20, 30)
    sixteen = to_rgb(Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)))
    assert [sixteen.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]  # scaled, not clipped
    assert to_rgb(Image.new("CMYK", (1, 1), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "r.jpg").write_bytes(_save(Image.new("RGB", (40, 20)), "JPEG", exif=exif.tobytes()))
    assert load_rgb(tmp_path / "r.jpg").size == (20, 40)  # EXIF orientation applied


def test_load_rgb_reasons(tmp_path):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_rgb(tmp_path / "nope.jpg")
    (tmp_path / "big.png").write_bytes(_save(Image.new("L", (100, 100))))
    with pytest.raises(ImageLoadError, match=r"image too large \(100x100 = 10000 pixels > 500\)"):
        load_rgb(tmp_path / "big.png", max_pixels=500)


def test_image_option_errors(store, sample, tmp_path):
    items = str(sample / "items.parquet")
    with pytest.raises(UsageError, match="^pretrained: embedtab-smoke-clip has its own seeded weights; give no checkpoint"):
        run_image(store, ImageOptions(inputs=[items], name="i", model="embedtab-smoke-clip", pretrained="x"))
    with pytest.raises(ModelError, match="cannot load OpenCLIP model 'ViT-B-32' .*embedtab-smoke-clip"):
        run_image(store, ImageOptions(inputs=[items], name="i", model="ViT-B-32", pretrained=str(tmp_path / "none.pt")))
    with pytest.raises(ModelError, match="cannot load OpenCLIP model 'No-Such-Model'"):
        run_image(store, ImageOptions(inputs=[items], name="i", model="No-Such-Model", pretrained="x.pt"))
    with pytest.raises(
        UsageError, match="^pretrained: OpenCLIP model ViT-B-32 needs pretrained weights: .* without them the weights would be random"
    ):
        run_image(store, ImageOptions(inputs=[items], name="i", model="ViT-B-32"))
    assert store.get("embeddings", "i") is None
