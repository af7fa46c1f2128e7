"""encode in depth: incremental reuse, one encode per distinct content, resume after a kill,
sharding across jobs, image folders, hostile inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embedtab import tables
from embedtab.artifacts import ArtifactStore
from embedtab.encode import ImageOptions, TextOptions, run_image, run_text
from embedtab.errors import ArtifactExists, DataError, UsageError
from embedtab.reporting import Reporter


class Recorder(Reporter):
    def __init__(self):
        self.messages: list[str] = []

    def info(self, message: str) -> None:
        self.messages.append(message)


# A resumed run keeps its finished shards bit for bit; what it encodes after the restart is the
# model's output for the same batches, equal to an uninterrupted run's up to float32 rounding:
# torch's CPU kernels may split a product differently in another process (thread count, load).
RESUME_TOLERANCE = 1e-6

WORDS = ["red", "blue", "green", "wool", "steel", "soft", "tall", "round", "shoe", "lamp", "mug", "hat"]


def catalog(n: int, seed: int = 0, distinct: int | None = None) -> tuple[list[int], list[str]]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) + f" item {i}" for i in range(n)]
    if distinct:
        texts = [texts[i % distinct] for i in range(n)]
    return list(range(1000, 1000 + n)), texts


def write(path: Path, ids, texts) -> str:
    pq.write_table(pa.table({"item_id": pa.array(ids, pa.int64()), "title": pa.array(texts, pa.string())}), path)
    return str(path)


def read(store: ArtifactStore, name: str) -> tuple[list, np.ndarray]:
    table = tables.read_parts(tables.part_files(store.path("embeddings", name)))
    return table.column("item_id").to_pylist(), tables.vectors(table)


def test_changed_catalog_encodes_only_new_or_changed_items(store, tmp_path, text_backend):
    ids, texts = catalog(60)
    path = write(tmp_path / "items.parquet", ids, texts)
    options = TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=16)
    first = run_text(store, options)
    assert first.record.summary["encoded"] == 60 and first.record.summary["reused"] == 0
    _, before = read(store, "t")

    # Day 2: two descriptions changed, one item removed, two added.
    texts2 = list(texts)
    texts2[3], texts2[40] = "a brand new description", "another changed one"
    ids2 = ids[:10] + ids[11:] + [5000, 5001]
    texts2 = texts2[:10] + texts2[11:] + ["fresh item one", "fresh item two"]
    write(tmp_path / "items.parquet", ids2, texts2)
    second = run_text(store, options)  # same recipe: an update, no --force needed
    summary = second.record.summary
    assert (summary["items"], summary["encoded"], summary["reused"], summary["skipped"]) == (61, 4, 57, 0)
    got_ids, after = read(store, "t")
    assert got_ids == ids2 and ids[10] not in got_ids  # same order as the input; removed id dropped
    unchanged = [i for i in range(60) if i not in (3, 10, 40)]
    position = {v: k for k, v in enumerate(got_ids)}
    np.testing.assert_array_equal(after[[position[ids[i]] for i in unchanged]], before[unchanged])  # reused exactly
    expected = text_backend.embed_batch(["a brand new description", "fresh item one"])
    np.testing.assert_allclose(after[[position[ids[3]], position[5000]]], expected, atol=1e-5)
    assert run_text(store, options).up_to_date


def test_each_distinct_text_is_encoded_once(store, tmp_path, text_backend):
    ids, texts = catalog(50, distinct=7)
    path = write(tmp_path / "items.parquet", ids, texts)
    result = run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=8))
    assert result.record.summary["distinct_encoded"] == 7 and result.record.summary["encoded"] == 50
    got_ids, vectors = read(store, "t")
    assert got_ids == ids
    np.testing.assert_allclose(vectors, text_backend.embed_batch(texts), atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[7])


_KILL_AFTER_SHARDS = """
import os, sys
import embedtab.encode.work as work
from embedtab.artifacts import ArtifactStore
from embedtab.encode import TextOptions, run_text

real_save, saved = work.WorkDir.save, []
def save(self, shard, vectors, errors):
    real_save(self, shard, vectors, errors)
    saved.append(shard)
    if len(saved) == int(sys.argv[3]):
        os.kill(os.getpid(), 9)
work.WorkDir.save = save
run_text(ArtifactStore(sys.argv[1]), TextOptions(inputs=[sys.argv[2]], name="t", text_columns=["title"], shard_size=10, batch_size=4))
"""


def kept_bit_for_bit(finished: np.ndarray, vectors: np.ndarray) -> bool:
    """Every vector of the finished work shards is, bit for bit, a row of the published artifact."""
    rows = {row.tobytes() for row in vectors}
    return all(row.tobytes() in rows for row in finished)


def test_killed_run_resumes_to_an_identical_artifact(tmp_path, text_backend):
    ids, texts = catalog(45)
    path = write(tmp_path / "items.parquet", ids, texts)
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_SHARDS, str(killed), path, "2"], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    store = ArtifactStore(killed)
    assert store.get("embeddings", "t") is None and not store.path("embeddings", "t").exists()
    done = list(store.work_path("embeddings", "t").rglob("shard-*.json"))
    assert len(done) == 2
    finished = np.concatenate([np.load(p) for p in sorted(store.work_path("embeddings", "t").rglob("shard-*.npy"))])

    recorder = Recorder()
    resumed = run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=10, batch_size=4), recorder)
    assert "resuming: 2 of 5 work shards already done" in recorder.messages
    clean = ArtifactStore(tmp_path / "clean")
    run_text(clean, TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=10, batch_size=4))
    ids_a, vec_a = read(store, "t")
    ids_b, vec_b = read(clean, "t")
    assert ids_a == ids_b == ids
    assert len(finished) == 20 and kept_bit_for_bit(finished, vec_a)
    np.testing.assert_allclose(vec_a, vec_b, rtol=0, atol=RESUME_TOLERANCE)
    assert resumed.record.summary["encoded"] == 45
    assert not store.work_path("embeddings", "t").exists()  # work cleaned after publishing


def test_sigkill_and_ctrl_c_at_any_moment_via_the_cli(tmp_path):
    ids, texts = catalog(400)
    path = write(tmp_path / "items.parquet", ids, texts)
    root = tmp_path / "a"
    command = [
        str(Path(sys.executable).with_name("embedtab")),
        "-q",
        "encode",
        "text",
        path,
        "-c",
        "title",
        "--name",
        "t",
        "--shard-size",
        "40",
        "-A",
        str(root),
    ]
    work = root / "work" / "embeddings" / "t"
    for sig in (signal.SIGKILL, signal.SIGINT):
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and len(list(work.rglob("shard-*.json"))) < (1 if sig == signal.SIGKILL else 2):
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        if sig == signal.SIGINT:
            assert proc.returncode == 130 and err.strip().startswith("Error: interrupted"), err
        else:
            assert proc.returncode == -9
        assert not (root / "embeddings" / "t").exists()
    saved = np.concatenate([np.load(p) for p in sorted(work.rglob("shard-*.npy"))])
    finished = subprocess.run(command[:1] + command[2:], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resuming:" in finished.stderr
    store = ArtifactStore(root)
    got_ids, vectors = read(store, "t")
    clean = ArtifactStore(tmp_path / "clean")
    run_text(clean, TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=40))
    assert len(saved) >= 80 and kept_bit_for_bit(saved, vectors)
    np.testing.assert_allclose(vectors, read(clean, "t")[1], rtol=0, atol=RESUME_TOLERANCE)
    assert got_ids == ids


def test_sharded_jobs_fill_one_artifact_and_the_last_seals_it(tmp_path):
    ids, texts = catalog(70)
    path = write(tmp_path / "items.parquet", ids, texts)
    store = ArtifactStore(tmp_path / "a")
    opts = lambda **kw: TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=10, **kw)  # noqa: E731
    with pytest.raises(DataError, match=r"cannot seal 't': 7 of 7 work shards are missing"):
        run_text(store, opts(seal=True))
    first = run_text(store, opts(shard="1/3"))
    assert not first.sealed and first.missing_shards == [1, 2, 4, 5]
    with pytest.raises(DataError, match=r"4 of 7 work shards are missing .*run the --shard jobs first"):
        run_text(store, opts(seal=True))
    assert not run_text(store, opts(shard="3/3")).sealed
    last = run_text(store, opts(shard="2/3"))
    assert last.sealed and last.record.summary["encoded"] == 70
    clean = ArtifactStore(tmp_path / "clean")
    run_text(clean, opts())
    assert read(store, "t")[0] == ids
    np.testing.assert_allclose(read(store, "t")[1], read(clean, "t")[1], atol=1e-6)
    with pytest.raises(UsageError, match="invalid --shard '4/3'"):
        run_text(store, opts(shard="4/3"))


def test_seal_step_assembles_shards_copied_from_other_machines(tmp_path):
    """CI: each job has its own artifact dir; the final job collects their work/ folders and seals."""
    import shutil

    ids, texts = catalog(30)
    path = write(tmp_path / "items.parquet", ids, texts)
    opts = lambda **kw: TextOptions(inputs=[path], name="t", text_columns=["title"], shard_size=10, **kw)  # noqa: E731
    for job in ("1/2", "2/2"):
        machine = ArtifactStore(tmp_path / f"job{job[0]}")
        result = run_text(machine, opts(shard=job))
        assert not result.sealed
    final = ArtifactStore(tmp_path / "final")
    for job in ("1", "2"):
        shutil.copytree(tmp_path / f"job{job}" / "work", final.root / "work", dirs_exist_ok=True)
    sealed = run_text(final, opts(seal=True))
    assert sealed.sealed and read(final, "t")[0] == ids


def test_duplicate_ids_with_dedupe_keep_the_first(store, tmp_path):
    path = write(tmp_path / "items.parquet", [1, 2, 1, 3, 2], ["a", "b", "c", "d", "e"])
    result = run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"], dedupe=True))
    got_ids, _ = read(store, "t")
    assert got_ids == [1, 2, 3]
    errors = pq.read_table(store.path("embeddings", "t") / "_errors.parquet").to_pylist()
    assert [(e["item_id"], e["reason"]) for e in errors] == [
        (1, "duplicate id (first occurrence kept)"),
        (2, "duplicate id (first occurrence kept)"),
    ]
    assert result.record.summary["skipped"] == 2


def test_long_texts_are_truncated_and_counted(store, tmp_path):
    path = write(tmp_path / "items.parquet", [1, 2], ["short text", "word " * 600])
    result = run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"]))
    assert result.record.metadata["truncated_texts"] == 1


def _png(path: Path, colour) -> None:
    Image.new("RGB", (24, 24), colour).save(path)


def test_image_folder_and_incremental_image_update(store, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]):
        _png(folder / f"sku-{i}.png", colour)
    os.mkfifo(folder / "pipe.png")  # a FIFO must be skipped, not block the run
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    options = ImageOptions(inputs=[str(folder)], name="f", model="embedtab-smoke-clip", workers=0)
    first = run_image(store, options)
    table = tables.read_parts(tables.part_files(store.path("embeddings", "f")))
    assert table.column("item_id").to_pylist() == ["sku-0", "sku-1", "sku-2", "sku-3"]
    assert table.schema.field("item_id").type == pa.string()
    errors = pq.read_table(store.path("embeddings", "f") / "_errors.parquet").to_pylist()
    assert [(e["item_id"], e["reason"]) for e in errors] == [("pipe", "not a regular file")]
    assert first.record.summary["encoded"] == 4

    assert run_image(store, options).up_to_date
    time.sleep(0.01)
    _png(folder / "sku-2.png", (200, 200, 0))  # one picture changed
    second = run_image(store, options)
    assert (second.record.summary["encoded"], second.record.summary["reused"]) == (1, 3)


def test_encoding_another_source_under_a_taken_name_needs_force(store, sample, tmp_path):
    """`encode image ./photos/` with the default --name must not replace the catalog's `image` artifact."""
    run_image(store, ImageOptions(inputs=[str(sample / "items.parquet")], name="image", model="embedtab-smoke-clip", workers=0))
    before = store.get("embeddings", "image")
    folder = tmp_path / "photos"
    folder.mkdir()
    _png(folder / "a.png", (1, 2, 3))
    with pytest.raises(
        ArtifactExists,
        match=r"embeddings 'image' were encoded from tables with integer ids; this run reads the folder .*photos with string ids",
    ):
        run_image(store, ImageOptions(inputs=[str(folder)], name="image", model="embedtab-smoke-clip", workers=0))
    assert store.get("embeddings", "image") == before
    run_image(store, ImageOptions(inputs=[str(folder)], name="photos", model="embedtab-smoke-clip", workers=0))
    other = tmp_path / "other"
    other.mkdir()
    _png(other / "b.png", (3, 2, 1))
    with pytest.raises(ArtifactExists, match=r"were encoded from the folder .*photos with string ids; this run reads the folder .*other"):
        run_image(store, ImageOptions(inputs=[str(other)], name="photos", model="embedtab-smoke-clip", workers=0))
    replaced = run_image(store, ImageOptions(inputs=[str(other)], name="photos", model="embedtab-smoke-clip", workers=0, force=True))
    assert replaced.record.metadata["count"] == 1


def test_image_workers_give_the_same_vectors(store, sample):
    items = [str(sample / "items.parquet")]
    run_image(store, ImageOptions(inputs=items, name="w0", model="embedtab-smoke-clip", workers=0, batch_size=16))
    run_image(store, ImageOptions(inputs=items, name="w2", model="embedtab-smoke-clip", workers=2, batch_size=16))
    np.testing.assert_array_equal(read(store, "w0")[1], read(store, "w2")[1])


def test_artifact_in_the_pre_0_2_layout_is_read_reported_and_rewritten(store, tmp_path):
    """0.1 wrote index.parquet, errors.parquet and embeddings.json beside the parts (merlin.io read them as data)."""
    import json

    from embedtab.artifacts import EMBEDDINGS_INDEX, LEGACY_NAMES
    from embedtab.status import health

    ids, texts = catalog(30)
    texts[3] = ""  # one skipped item, so errors.parquet has a row
    options = TextOptions(inputs=[write(tmp_path / "items.parquet", ids, texts)], name="t", text_columns=["title"])
    run_text(store, options)
    _, vectors = read(store, "t")
    directory = store.path("embeddings", "t")
    manifest = json.loads(store.manifest_path.read_text())
    record = manifest["artifacts"]["embeddings/t"]
    (directory / "_metadata").unlink()
    for new, old in LEGACY_NAMES["embeddings"].items():
        (directory / new).rename(directory / old)
    record["outputs"] = [
        {**o, "path": LEGACY_NAMES["embeddings"].get(o["path"], o["path"])} for o in record["outputs"] if o["path"] != "_metadata"
    ]
    store.manifest_path.write_text(json.dumps(manifest))

    old = store.get("embeddings", "t")
    assert store.sidecar(old, EMBEDDINGS_INDEX) == directory / "index.parquet"
    state, reasons = health(store, old)
    assert state == "stale" and "pre-0.2 layout" in reasons[0]
    again = run_text(store, options)  # same inputs: rewritten, every vector reused from the old index
    assert not again.up_to_date and (again.record.summary["encoded"], again.record.summary["reused"]) == (0, 29)
    assert sorted(p.name for p in directory.iterdir()) == [
        "_embeddings.json",
        "_errors.parquet",
        "_index.parquet",
        "_metadata",
        "part-00000.parquet",
    ]
    np.testing.assert_array_equal(read(store, "t")[1], vectors)
    assert health(store, again.record) == ("ok", [])
    assert run_text(store, options).up_to_date


def test_catalog_that_only_lost_items_reuses_everything(store, tmp_path):
    """Nothing new to encode (it crashed with IndexError in 0.1)."""
    ids, texts = catalog(20)
    path = write(tmp_path / "items.parquet", ids, texts)
    run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"]))
    kept, before = read(store, "t")
    write(tmp_path / "items.parquet", ids[5:], texts[5:])
    shrunk = run_text(store, TextOptions(inputs=[path], name="t", text_columns=["title"]))
    assert (shrunk.record.summary["encoded"], shrunk.record.summary["reused"]) == (0, 15)
    after_ids, after = read(store, "t")
    assert after_ids == kept[5:]
    np.testing.assert_array_equal(after, before[5:])
