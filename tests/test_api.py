"""The Python API (embedtab.Artifacts): the commands as methods over one artifact directory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import embedtab
from embedtab.api import Artifact, Reduced, ShardJob
from embedtab.errors import ArtifactNotFound, IntegrityError, UsageError
from tests.conftest import CONFIGS


def test_encode_and_reduce_in_python(tmp_path, sample):
    art = embedtab.Artifacts(tmp_path / "a")
    assert art.list() == [] and "0 artifacts" in repr(art)
    text = art.encode_text(sample / "items.parquet", template="{title}. {description}")
    assert isinstance(text, Artifact) and not text.up_to_date
    assert (text.kind, text.name, text.path) == ("embeddings", "text", tmp_path / "a" / "embeddings" / "text")
    frame = text.to_pandas()
    assert list(frame.columns) == ["item_id", "embedding"] and len(frame) == text.summary["items"] == 200
    vectors = text.vectors()
    assert vectors.shape == (200, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert text.errors().num_rows == 0

    again = art.encode_text([str(sample / "items.parquet")], template="{title}. {description}")
    assert again.up_to_date and again.fingerprint == text.fingerprint

    reduced = art.reduce("text", 8)
    assert isinstance(reduced, Reduced)
    assert (reduced.embeddings.name, reduced.projection.name, reduced.projection.kind) == ("text-pca8", "text-pca8", "projections")
    assert reduced.embeddings.vectors().shape == (200, 8)
    assert art.reduce("text", 8).embeddings.up_to_date
    with pytest.raises(UsageError, match="projections artifacts are not tables"):
        reduced.projection.table()

    assert [a.name for a in art.list("embeddings")] == ["text", "text-pca8"]
    assert art.get("embeddings", "text").fingerprint == text.fingerprint
    with pytest.raises(ArtifactNotFound, match="known embeddings: text, text-pca8"):
        art.get("embeddings", "nope")
    status = art.status(verify=True)
    assert status["damaged"] == 0 and len(status["artifacts"]) == 3

    # A damaged artifact is refused when read, exactly as the commands refuse it.
    part = next(text.path.glob("part-*.parquet"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="embeddings/text is damaged"):
        embedtab.Artifacts(tmp_path / "a").get("embeddings", "text").vectors()


def test_encode_options_and_shard_jobs(tmp_path, sample):
    art = embedtab.Artifacts(tmp_path / "a")
    items = pd.read_parquet(sample / "items.parquet").head(30)
    items.loc[3, "title"] = "  "
    items.to_parquet(tmp_path / "items.parquet")
    first = art.encode_text(tmp_path / "items.parquet", columns=["title"], name="t", shard="1/2", shard_size=10)
    assert isinstance(first, ShardJob) and first.missing_shards == [1]
    sealed = art.encode_text(tmp_path / "items.parquet", columns=["title"], name="t", shard="2/2", shard_size=10)
    assert isinstance(sealed, Artifact) and sealed.summary["skipped"] == 1
    assert sealed.errors().to_pylist()[0]["item_id"] == items.loc[3, "item_id"]
    with pytest.raises(TypeError, match="batchsize"):
        art.encode_text(tmp_path / "items.parquet", columns=["title"], batchsize=3)


@pytest.mark.merlin
def test_the_demo_chain_in_python(tmp_path, sample):
    art = embedtab.Artifacts(tmp_path / "a")
    art.encode_text(sample / "items.parquet", columns=["title"])
    art.reduce("text", 16)
    item = art.fit_workflow(CONFIGS / "item.yaml", data=sample / "items.parquet")
    assert item.metadata["cardinalities"]["item_id"]["cardinality"] > 200
    features = art.transform("item", data=sample / "items.parquet", name="item-features")
    assert features.table().num_rows == 200
    table = art.lookup("text-pca16", workflow="item")
    dense = table.vectors()
    assert dense.shape == (table.metadata["cardinality"], 16)
    # Row i of the lookup is the vector of the item whose categorified id is i.
    ids = features.table(["item_id"]).column("item_id").to_numpy()
    raw = pd.read_parquet(sample / "items.parquet")["item_id"].to_numpy()
    reduced = art.get("embeddings", "text-pca16").to_pandas().set_index("item_id")["embedding"]
    np.testing.assert_allclose(dense[ids], np.stack(reduced.loc[raw].to_numpy()), rtol=1e-6)
    workflow = art.workflow("item")
    assert type(workflow).__name__ == "Workflow" and "item_id" in workflow.output_schema.column_names


@pytest.mark.merlin
def test_the_readme_example_runs(tmp_path, sample, monkeypatch):
    """The notebook example in the README, run as written (from a folder holding the sample)."""
    import re

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API") : readme.index("## Sample data")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "sample_data").symlink_to(sample)
    (tmp_path / "configs").symlink_to(CONFIGS)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["emb"].vectors().shape == (200, 64)
    assert scope["table"].vectors().shape[1] == 64
    assert scope["art"].status()["damaged"] == 0


def test_wrong_types_from_python_are_usage_errors_naming_the_argument(tmp_path):
    import embedtab
    from embedtab.errors import UsageError
    from tests.conftest import SAMPLE

    art = embedtab.Artifacts(tmp_path / "a")
    items = str(SAMPLE / "items.parquet")
    for kwargs, message in (
        ({"template": ["{title}"]}, "^template: must be a Python format string"),
        ({"text_column": [b"title"]}, "^text_columns: must be a list of column names"),
        ({"text_column": ["title", " "]}, "^text_columns: a column name is empty"),
    ):
        with pytest.raises(UsageError, match=message):
            art.encode_text(items, **kwargs)
    assert not (tmp_path / "a" / "embeddings").exists()
    one = art.encode_text(items, text_column="title", limit=3)  # one column as a string
    assert one.summary["items"] == 3
