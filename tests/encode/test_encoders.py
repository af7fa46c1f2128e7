"""Encoders as plugins: the Hugging Face CLIP built-in against transformers itself, and a
third-party encoder installed by entry point, used through the CLI like a built-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from embedtab import tables
from embedtab.artifacts import ArtifactStore
from embedtab.cli.main import run as cli

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))


# ----------------------------------------------------------------------------- Hugging Face CLIP
# (the tiny_clip fixture is in tests/encode/conftest.py)
def normalized(features) -> np.ndarray:
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    out = features.detach().float().numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_hugging_face_clip_images_and_texts_equal_transformers(tmp_path, tiny_clip):
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path.name)
    titles = ["a red lamp", "blue wool hat, soft", "mug", "steel shoe no. 4", "green round lamp!"]
    pd.DataFrame({"item_id": range(5), "image_path": paths, "title": titles}).to_parquet(tmp_path / "items.parquet")
    root = tmp_path / "a"
    assert cli(["-q", "encode", "image", str(tmp_path / "items.parquet"), "-m", str(tiny_clip), "--workers", "0", "-A", str(root)]) == 0
    assert (
        cli(["-q", "encode", "text", str(tmp_path / "items.parquet"), "-c", "title", "-m", str(tiny_clip), "-b", "2", "-A", str(root)]) == 0
    )

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor, tokenizer = AutoImageProcessor.from_pretrained(tiny_clip), AutoTokenizer.from_pretrained(tiny_clip)
    with torch.inference_mode():
        pixels = processor(images=[Image.open(tmp_path / p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
        images = normalized(model.get_image_features(pixel_values=pixels))
        texts = normalized(model.get_text_features(**tokenizer(titles, padding=True, return_tensors="pt")))
    store = ArtifactStore(root)
    for name, expected in (("image", images), ("text", texts)):
        got = tables.vectors(tables.read_parts(tables.part_files(root / "embeddings" / name)))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        record = store.get("embeddings", name)
        assert record.metadata["encoder"]["encoder"] == "hf-clip" and record.metadata["dim"] == 16
    assert (
        cli(["-q", "encode", "text", str(tmp_path / "items.parquet"), "-c", "title", "-m", str(tiny_clip), "-b", "2", "-A", str(root)]) == 0
    )
    assert store.get("embeddings", "text").fingerprint == record.fingerprint  # up to date


# ----------------------------------------------------------------------------- plugins
PLUGIN = '''
import hashlib

import numpy as np

from embedtab.encode.encoders import Encoder


class HashEncoder(Encoder):
    """Deterministic toy vectors from a text's bytes; slow on purpose when TOY_DELAY is set."""

    inputs = ("text",)
    packages = ("toy-encoder",)

    def __init__(self, model, settings):
        super().__init__(model, settings)
        self.dim = int(model)

    def _embed(self, texts):
        import os, time
        time.sleep(float(os.environ.get("TOY_DELAY", "0")))
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), np.uint8)[: self.dim] for t in texts]
        return np.stack(rows).astype(np.float32) - 127.5
'''


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    """A minimal installed distribution: a module and a dist-info with the entry point."""
    site = tmp_path / "site"
    (site / "toy_encoder-0.1.dist-info").mkdir(parents=True)
    (site / "toy_encoder.py").write_text(PLUGIN)
    (site / "toy_encoder-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-encoder\nVersion: 0.1\n")
    (site / "toy_encoder-0.1.dist-info" / "entry_points.txt").write_text(
        "[embedtab.encoders]\ntoy-hash = toy_encoder:HashEncoder\nbroken = toy_encoder:NoSuchThing\n"
    )
    return site


def run_cli(site: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), **kwargs.pop("env", {})}
    return subprocess.run([EMBEDTAB, *args], capture_output=True, text=True, env=env, **kwargs)


def test_a_plugin_encoder_is_listed_and_encodes_like_a_built_in(tmp_path, plugin_site):
    listed = run_cli(plugin_site, "encoders", "--json")
    assert listed.returncode == 0, listed.stderr
    by_name = {row["name"]: row for row in json.loads(listed.stdout)}
    assert by_name["toy-hash"]["inputs"] == ["text"] and by_name["toy-hash"]["from"] == "toy-encoder 0.1"
    assert "AttributeError" in by_name["broken"]["problem"] and by_name["sentence-transformers"]["from"] == "built-in"

    n = 300
    pd.DataFrame({"item_id": np.arange(n), "title": [f"item {i} " + "x" * (i % 17) for i in range(n)]}).to_parquet(
        tmp_path / "items.parquet"
    )
    args = (
        "encode",
        "text",
        str(tmp_path / "items.parquet"),
        "-c",
        "title",
        "--encoder",
        "toy-hash",
        "-m",
        "8",
        "--shard-size",
        "20",
        "--no-normalize",
        "--json",
    )
    first = run_cli(plugin_site, *args, "-A", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    record = ArtifactStore(tmp_path / "a").get("embeddings", "text")
    vectors = tables.vectors(tables.read_parts(tables.part_files(tmp_path / "a" / "embeddings" / "text")))
    import hashlib

    expected = np.frombuffer(hashlib.sha256(b"item 5 xxxxx").digest(), np.uint8)[:8].astype(np.float32) - 127.5
    np.testing.assert_array_equal(vectors[5], expected)
    assert record.metadata["encoder"]["encoder"] == "toy-hash" and record.params["encoder"] == "toy-hash"
    assert record.metadata["encoder"]["versions"]["toy-encoder"] == "0.1"
    again = run_cli(plugin_site, *args, "-A", str(tmp_path / "a"))
    assert again.returncode == 0 and json.loads(again.stdout)["up_to_date"] is True

    # kill -9 in the middle, then rerun: it resumes, and the artifact is the uninterrupted one.
    root = tmp_path / "b"
    proc = subprocess.Popen(
        [EMBEDTAB, *args, "-A", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(plugin_site), "TOY_DELAY": "0.05"},
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list((root / "work").rglob("shard-*.json"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ArtifactStore(root).get("embeddings", "text") is None
    resumed = run_cli(plugin_site, *args, "-A", str(root))
    assert resumed.returncode == 0 and "resuming:" in resumed.stderr, resumed.stderr
    again_vectors = tables.vectors(tables.read_parts(tables.part_files(root / "embeddings" / "text")))
    np.testing.assert_array_equal(again_vectors, vectors)

    unknown = run_cli(plugin_site, "encode", "text", str(tmp_path / "items.parquet"), "-c", "title", "--encoder", "nope", "-A", str(root))
    assert unknown.returncode == 2 and "Error: --encoder: no encoder named 'nope'; installed: broken, hf-clip" in unknown.stderr
    image_only = run_cli(
        plugin_site, "encode", "image", str(tmp_path / "items.parquet"), "--encoder", "toy-hash", "-m", "8", "-A", str(root)
    )
    assert image_only.returncode == 2 and "Error: --encoder: 'toy-hash' encodes text, not image" in image_only.stderr


def test_open_clip_texts_land_in_the_space_of_its_images(tmp_path):
    import open_clip
    import torch

    from embedtab.encode.smoke import smoke_model_dir

    titles = ["a red lamp", "blue wool hat", "mug"]
    pd.DataFrame({"item_id": range(3), "title": titles}).to_parquet(tmp_path / "items.parquet")
    assert (
        cli(
            [
                "-q",
                "encode",
                "text",
                str(tmp_path / "items.parquet"),
                "-c",
                "title",
                "--encoder",
                "open-clip",
                "-m",
                "embedtab-smoke-clip",
                "-A",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{smoke_model_dir()}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{smoke_model_dir()}")
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.eval().encode_text(tokenizer(titles)).float(), dim=-1).numpy()
    got = tables.vectors(tables.read_parts(tables.part_files(tmp_path / "a" / "embeddings" / "text")))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.shape == (3, 32)  # the image tower's dim: one space


def test_the_readme_plugin_example_works(tmp_path):
    """The "Writing an encoder" example, installed as a distribution and used through the CLI."""
    import re

    import joblib
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Writing an encoder") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    site = tmp_path / "site"
    (site / "my_encoder-0.1.dist-info").mkdir(parents=True)
    (site / "my_encoder.py").write_text(code)
    (site / "my_encoder-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: my-encoder\nVersion: 0.1\n")
    (site / "my_encoder-0.1.dist-info" / "entry_points.txt").write_text("[embedtab.encoders]\ntfidf-svd = my_encoder:TfidfSvdEncoder\n")

    titles = [f"{a} {b} item" for a in ("red", "blue", "green", "wool", "steel") for b in ("lamp", "mug", "hat", "shoe")]
    pipeline = make_pipeline(TfidfVectorizer(), TruncatedSVD(n_components=4, random_state=0)).fit(titles)
    joblib.dump(pipeline, tmp_path / "model.joblib")
    pd.DataFrame({"item_id": range(len(titles)), "title": titles}).to_parquet(tmp_path / "items.parquet")

    listed = run_cli(site, "encoders", "--json")
    assert {"name": "tfidf-svd", "inputs": ["text"], "from": "my-encoder 0.1", "default_for": [], "problem": None} in json.loads(
        listed.stdout
    )
    done = run_cli(
        site,
        "encode",
        "text",
        str(tmp_path / "items.parquet"),
        "-c",
        "title",
        "--encoder",
        "tfidf-svd",
        "-m",
        str(tmp_path / "model.joblib"),
        "-A",
        str(tmp_path / "a"),
    )
    assert done.returncode == 0, done.stderr
    expected = pipeline.transform(titles)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = tables.vectors(tables.read_parts(tables.part_files(tmp_path / "a" / "embeddings" / "text")))
    np.testing.assert_allclose(got, expected, atol=1e-5)
