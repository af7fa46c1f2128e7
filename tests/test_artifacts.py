"""The artifact directory: manifest, atomic publish, crash recovery, locking, integrity."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
import time

import pytest

from embedtab.artifacts import ArtifactStore
from embedtab.errors import (
    ArtifactExists,
    ArtifactNotFound,
    IntegrityError,
    LockTimeout,
    ManifestError,
    UsageError,
)


def make(store: ArtifactStore, name: str, content: str, params: dict | None = None, force: bool = False):
    plan = store.plan("embeddings", name, "test", params or {"v": content}, force=force)
    if plan.up_to_date:
        return plan.existing, True
    with store.staging(plan) as staging:
        (staging / "data.txt").write_text(content)
        (staging / "sub").mkdir()
        (staging / "sub" / "more.txt").write_text(content * 2)
        return store.publish(plan, staging, metadata={"content": content}), False


def test_publish_records_every_file_and_cleans_staging(store):
    record, up_to_date = make(store, "a", "hello")
    assert not up_to_date
    target = store.path("embeddings", "a")
    assert (target / "data.txt").read_text() == "hello"
    paths = {o.path: o for o in record.outputs}
    assert set(paths) == {"data.txt", "sub/more.txt"}
    assert paths["data.txt"].bytes == 5
    assert len(paths["data.txt"].sha256) == 64
    assert list(store.staging_root().iterdir()) == []
    on_disk = json.loads(store.manifest_path.read_text())
    assert on_disk["artifacts"]["embeddings/a"]["fingerprint"] == record.fingerprint
    assert on_disk["pending"] == {}


def test_unchanged_inputs_are_up_to_date_changed_need_force(store):
    first, _ = make(store, "a", "one")
    again, up_to_date = make(store, "a", "one")
    assert up_to_date and again.fingerprint == first.fingerprint
    with pytest.raises(ArtifactExists, match="--force"):
        make(store, "a", "two")
    assert (store.path("embeddings", "a") / "data.txt").read_text() == "one"
    replaced, _ = make(store, "a", "two", force=True)
    assert (store.path("embeddings", "a") / "data.txt").read_text() == "two"
    assert replaced.fingerprint != first.fingerprint


def test_missing_outputs_are_rebuilt_without_force(store):
    make(store, "a", "one")
    (store.path("embeddings", "a") / "data.txt").unlink()
    _, up_to_date = make(store, "a", "one")
    assert not up_to_date
    assert (store.path("embeddings", "a") / "data.txt").read_text() == "one"


def test_failed_stage_leaves_nothing(store):
    plan = store.plan("embeddings", "a", "test", {})
    with pytest.raises(RuntimeError):
        with store.staging(plan) as staging:
            (staging / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not store.path("embeddings", "a").exists()
    assert store.get("embeddings", "a") is None
    assert list(store.staging_root().iterdir()) == []


_CRASH = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import embedtab.artifacts as artifacts
    from embedtab.artifacts import ArtifactStore

    root, crash_at = sys.argv[1], sys.argv[2]
    calls = []
    real = artifacts._rename

    def dying_rename(src, dst):
        if crash_at == f"rename{len(calls)}":
            os._exit(9)  # like kill -9: no cleanup, no finally blocks
        calls.append(1)
        real(src, dst)

    def dying_finish(*args):
        os._exit(9)

    artifacts._rename = dying_rename
    if crash_at == "finish":
        ArtifactStore._finish = dying_finish
    store = ArtifactStore(root)
    plan = store.plan("embeddings", "a", "test", {"v": "new"}, force=True)
    with store.staging(plan) as staging:
        (staging / "data.txt").write_text("new")
        store.publish(plan, staging)
    """
)


@pytest.mark.parametrize(
    "crash_at, expected",
    [
        ("rename0", "old"),  # died before moving anything
        ("rename1", "old"),  # died with the old folder moved aside and the new one not yet in place
        ("finish", "new"),  # died after the new folder moved in, before the manifest said so
    ],
)
def test_crash_mid_publish_leaves_a_whole_artifact_and_intact_manifest(tmp_path, crash_at, expected):
    root = tmp_path / "artifacts"
    make(ArtifactStore(root), "a", "old", params={"v": "old"})
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(root), crash_at], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    # The manifest on disk is valid JSON at every moment.
    assert json.loads((root / "manifest.json").read_text())["format_version"] == 1

    store = ArtifactStore(root)
    with store.lock():  # the next writer recovers
        pass
    manifest = store.read_manifest()
    assert manifest.pending == {}
    record = manifest.artifacts["embeddings/a"]
    target = store.path("embeddings", "a")
    assert (target / "data.txt").read_text() == expected
    store.verify(record)  # files and record agree
    assert [p.name for p in store.staging_root().iterdir()] == []


def _publish_many(root: str, prefix: str, count: int) -> None:
    store = ArtifactStore(root, lock_timeout=60)
    for i in range(count):
        make(store, f"{prefix}{i}", f"{prefix}-{i}")


def test_two_processes_publishing_at_once_are_both_recorded(tmp_path):
    root = str(tmp_path / "artifacts")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_publish_many, args=(root, p, 8)) for p in ("x", "y")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    store = ArtifactStore(root)
    names = {r.name for r in store.records()}
    assert names == {f"{p}{i}" for p in "xy" for i in range(8)}
    for record in store.records():
        store.verify(record)


def test_corrupted_manifest_is_a_clear_error_and_never_overwritten(store):
    make(store, "a", "one")
    store.manifest_path.write_text('{"format_version": 1, "artifacts": {')
    before = store.manifest_path.read_bytes()
    with pytest.raises(ManifestError, match=r"not valid JSON \(line 1"):
        store.read_manifest()
    with pytest.raises(ManifestError):
        make(store, "b", "two")
    assert store.manifest_path.read_bytes() == before
    assert not store.path("embeddings", "b").exists()


def test_manifest_with_wrong_structure_or_version_is_refused(store):
    store.root.mkdir(parents=True)
    store.manifest_path.write_text(json.dumps({"format_version": 1, "artifacts": {"x": {"kind": 3}}}))
    with pytest.raises(ManifestError, match="corrupted"):
        store.read_manifest()
    store.manifest_path.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ManifestError, match="format_version 99"):
        store.read_manifest()


def _edited(store, edit) -> None:
    manifest = json.loads(store.manifest_path.read_text())
    edit(manifest)
    store.manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "edit, message",
    [
        # a pending publication whose staging folder or trash lies outside .staging/: the next writer
        # would have moved or deleted it (a folder outside the artifact directory was deleted)
        (
            lambda m: m["pending"].update(
                {
                    "embeddings/zz": {
                        "record": {**m["artifacts"]["embeddings/a"], "name": "zz"},
                        "staging": "../victim",
                        "trash": ".staging/trash.abc",
                    }
                }
            ),
            r"pending.embeddings/zz.staging: .*'../victim' is not a relative path inside",
        ),
        (
            lambda m: m["pending"].update(
                {
                    "embeddings/zz": {
                        "record": {**m["artifacts"]["embeddings/a"], "name": "zz"},
                        "staging": ".staging/x",
                        "trash": "embeddings/b",
                    }
                }
            ),
            r"'embeddings/b' is not a folder directly under .staging/",
        ),
        # entries filed under another artifact's key: a command would read the other one's files
        (
            lambda m: m["artifacts"].update(
                {"embeddings/a": m["artifacts"]["embeddings/b"], "embeddings/b": m["artifacts"]["embeddings/a"]}
            ),
            r"artifacts entry 'embeddings/a' holds the record of 'embeddings/b'",
        ),
        (lambda m: m["artifacts"]["embeddings/a"].update(kind="models"), r"unknown kind 'models'"),
        (lambda m: m["artifacts"]["embeddings/a"]["outputs"][0].update(path="../../victim/f"), r"not a relative path inside"),
        (lambda m: m["artifacts"]["embeddings/a"]["outputs"][0].update(path="/etc/passwd"), r"not a relative path inside"),
    ],
)
def test_a_hand_edited_manifest_never_reaches_outside_its_records(store, tmp_path, edit, message):
    make(store, "a", "one")
    make(store, "b", "two")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "f").write_text("precious")
    _edited(store, edit)
    before = store.manifest_path.read_bytes()
    with pytest.raises(ManifestError, match=message):
        store.read_manifest()
    with pytest.raises(ManifestError):
        make(store, "c", "three")
    assert (victim / "f").read_text() == "precious" and store.manifest_path.read_bytes() == before


def test_a_manifest_that_is_not_utf8_is_refused_in_one_line(store):
    make(store, "a", "one")
    store.manifest_path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ManifestError, match=r"is not valid JSON \(byte 0 is not UTF-8\)"):
        store.read_manifest()


def test_verify_refuses_changed_and_extra_files(store):
    record, _ = make(store, "a", "one")
    target = store.path("embeddings", "a")
    store.verify(record)
    (target / "stray.pkl").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="embeddings/a is damaged: stray.pkl is not embedtab's \\(an extra file\\)"):
        store.verify(record)
    (target / "stray.pkl").unlink()
    (target / "data.txt").write_text("two")
    with pytest.raises(IntegrityError, match=r"embeddings/a is damaged: data.txt differs from what embedtab wrote \(sha256\)"):
        store.verify(record)


def _hold_lock(root: str, seconds: float, ready) -> None:
    store = ArtifactStore(root)
    with store.lock():
        ready.set()
        time.sleep(seconds)


def test_second_writer_times_out_with_a_clear_message(tmp_path):
    root = str(tmp_path / "artifacts")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(root, 3.0, ready))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(LockTimeout, match=rf"locked for more than 0s by embedtab pid {holder.pid}, which is still running"):
            with ArtifactStore(root, lock_timeout=0.3).lock():
                pass
    finally:
        holder.join(30)
    with ArtifactStore(root, lock_timeout=5).lock():  # free again
        pass


def test_names_and_lookups(store):
    with pytest.raises(UsageError, match="invalid artifact name"):
        store.path("embeddings", "../escape")
    with pytest.raises(ArtifactNotFound, match="there are no embeddings yet"):
        store.require("embeddings", "nope")
    make(store, "a", "one")
    with pytest.raises(ArtifactNotFound, match="known embeddings: a"):
        store.require("embeddings", "b")


def test_upstream_changes_make_a_record_stale(store):
    source, _ = make(store, "src", "one")
    plan = store.plan("lookups", "derived", "test", {}, input_artifacts=[source])
    with store.staging(plan) as staging:
        (staging / "x").write_text("x")
        derived = store.publish(plan, staging)
    assert store.upstream_changes(derived) == []
    make(store, "src", "two", force=True)
    assert store.upstream_changes(derived) == ["embeddings/src changed"]


def test_artifact_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        ArtifactStore(path)


def test_unchanged_files_keep_their_hash_across_processes_and_any_write_is_caught(store, monkeypatch):
    import os

    from embedtab import artifacts

    calls = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda path: calls.append(str(path)) or real(path))
    monkeypatch.setattr(artifacts.HashCache, "RACY_NS", 0)  # (files here are seconds old only)
    record, _ = make(store, "a", "one")  # hashed while publishing
    calls.clear()
    fresh = ArtifactStore(store.root)  # another process: the cache file, not memory
    fresh.verify(record)
    assert calls == []
    target = store.path("embeddings", "a") / "data.txt"
    info = target.stat()
    target.write_text("two")  # same size; mtime put back: ctime still moves
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(IntegrityError, match=r"data.txt differs from what embedtab wrote \(sha256\)"):
        ArtifactStore(store.root).verify(record)
    target.write_text("one")
    calls.clear()
    assert ArtifactStore(store.root).damaged_files(record, rehash=True) == []  # status --verify reads every byte
    assert sorted(c.rsplit("/", 1)[-1] for c in calls) == ["data.txt", "more.txt"]


def test_a_hash_taken_right_after_a_write_is_not_trusted_later(store, monkeypatch):
    from embedtab import artifacts

    record, _ = make(store, "a", "one")
    calls = []
    real = artifacts.sha256_file
    monkeypatch.setattr(artifacts, "sha256_file", lambda path: calls.append(str(path)) or real(path))
    ArtifactStore(store.root).verify(record)
    ArtifactStore(store.root).verify(record)
    data = [c for c in calls if c.endswith("data.txt")]
    assert len(data) == 2  # both within a second of the write: hashed each time
    (store.root / artifacts.HASH_CACHE).write_text("{broken")
    ArtifactStore(store.root).verify(record)  # a broken cache only means hashing again
    assert len([c for c in calls if c.endswith("data.txt")]) == 3
