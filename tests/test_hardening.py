"""Hardening (issue 12): concurrent runs of one artifact, full disks, read-only folders, image
paths that escape the image root."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embedtab import tables
from embedtab.artifacts import ArtifactStore
from embedtab.errors import ArtifactBusy, ArtifactExists
from tests.conftest import CONFIGS

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))
WORDS = ["red", "blue", "wool", "steel", "soft", "tall", "round", "shoe", "lamp", "mug", "hat", "green"]


def texts_table(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    titles = [" ".join(rng.choice(WORDS, 6)) + f" no. {i}" for i in range(n)]
    pd.DataFrame({"item_id": np.arange(n), "title": titles}).to_parquet(path)
    return path


def start(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [EMBEDTAB, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, **kwargs
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in err and "unexpected" not in err, err
    return lines[0]


def vectors(root: Path, name: str) -> np.ndarray:
    return tables.vectors(tables.read_parts(tables.part_files(root / "embeddings" / name)))


# ----------------------------------------------------------------------------- concurrency
def test_identical_encodes_cooperate_and_conflicting_ones_are_told(tmp_path):
    root, items = tmp_path / "a", texts_table(tmp_path / "items.parquet", 400)
    same = ("encode", "text", str(items), "-c", "title", "--name", "same", "-A", str(root))
    identical = [start(*same) for _ in range(3)]
    lock = root / ".locks" / "embeddings.same"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.exists() and lock.stat().st_size):
        time.sleep(0.05)  # one of them is making it now
    conflicting = [
        start("encode", "text", str(items), "--template", template, "--name", "same", "-A", str(root))
        for template in ("{title}!", "item: {title}")
    ]
    results = [finish(p) for p in identical]
    assert [code for code, _ in results] == [0, 0, 0], [err[-500:] for _, err in results]
    assert sum("up to date" in err for _, err in results) == 2  # two waited and got what the first made
    for proc in conflicting:
        code, err = finish(proc)
        line = error_line(err)
        assert code in (1, 2), err
        assert (
            "is being made right now by pid" in line and "from other inputs or options" in line
        ) or "already exists and was made from other inputs or options (template:" in line, line
    store = ArtifactStore(root)
    assert store.get("embeddings", "same").params["template"] == "{title}"
    assert vectors(root, "same").shape == (400, 384)
    assert subprocess.run([EMBEDTAB, "status", "--verify", "-A", str(root)], capture_output=True).returncode == 0
    assert not (root / "work").exists() or not any((root / "work").rglob("*.npy"))


@pytest.mark.merlin
def test_identical_runs_of_every_other_stage_at_once_all_succeed(tmp_path, sample):
    root, items = tmp_path / "a", str(sample / "items.parquet")
    a = ("-A", str(root))
    assert subprocess.run([EMBEDTAB, "encode", "text", items, "-c", "title", "--name", "t", *a], capture_output=True).returncode == 0
    for step in (
        ["reduce", "t", "--dims", "8"],
        ["fit-workflow", str(CONFIGS / "item.yaml"), "-d", items],
        ["transform", "item", "-d", items, "-n", "features"],
        ["lookup", "-e", "t-pca8", "-w", "item", "-n", "t"],
    ):
        pair = [start(*step, *a), start(*step, *a)]
        results = [finish(p) for p in pair]
        assert [code for code, _ in results] == [0, 0], (step, [err[-400:] for _, err in results])
    status = subprocess.run([EMBEDTAB, "status", "--verify", "--json", *a], capture_output=True, text=True)
    assert status.returncode == 0 and len(json.loads(status.stdout)["artifacts"]) == 6


@contextlib.contextmanager
def held_build_lock(root: Path, key: str, fingerprint: str):
    """Another run's build lock, as `ArtifactStore.building` holds it."""
    (root / ".locks").mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".locks" / key, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(
        fd,
        json.dumps(
            {
                "pid": 4242,
                "host": "builder-7",
                "stage": "reduce fit",
                "started": "2026-11-24T10:00:00+00:00",
                "input_fingerprint": fingerprint,
            }
        ).encode(),
        0,
    )
    try:
        yield
    finally:
        os.close(fd)


def test_build_lock_rules(tmp_path):
    store = ArtifactStore(tmp_path / "a", lock_timeout=30)
    plan = store.plan("embeddings", "x", "test", {"v": 1})
    with held_build_lock(store.root, "embeddings.x", "another recipe"):
        with pytest.raises(
            ArtifactBusy,
            match=r"embeddings 'x' is being made right now by pid 4242 on builder-7 \(reduce fit, "
            r"started 2026-11-24T10:00:00\+00:00\) from other inputs or options",
        ):
            with store.building(plan):
                pass
    # Another run published in between this run's plan and its build: not written over.
    other = store.plan("embeddings", "x", "test", {"v": 2})
    with store.staging(other) as staging:
        (staging / "f").write_text("2")
        store.publish(other, staging)
    with pytest.raises(ArtifactExists, match="was just written by another run from other inputs or options"):
        with store.building(plan):
            pass
    # The same recipe made by someone else meanwhile: handed over, nothing rebuilt.
    again = store.plan("embeddings", "x", "test", {"v": 2}, force=True)
    with store.building(store.plan("embeddings", "y", "test", {"v": 2})) as made:
        assert made is None
    with store.building(again) as made:
        assert made is None  # forced: this run builds


# ----------------------------------------------------------------------------- disks
@contextlib.contextmanager
def small_disk(path: Path, size: str = "1m"):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_is_one_line_keeps_everything_and_a_rerun_resumes(tmp_path):
    items = texts_table(tmp_path / "items.parquet", 120)
    with small_disk(tmp_path / "disk") as disk:
        root = disk / "a"
        small = texts_table(tmp_path / "small.parquet", 3)
        args = ("encode", "text", str(items), "-c", "title", "--name", "big", "--shard-size", "40", "-A", str(root))
        assert subprocess.run([EMBEDTAB, "encode", "text", str(small), "-c", "title", "--name", "kept", "-A", str(root)]).returncode == 0
        before = (root / "manifest.json").read_text()
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler = disk / "filler"
        filler.write_bytes(b"\0" * max(0, free - 100_000))  # room for one work shard (61 KB), not all three
        code, err = finish(start(*args))
        line = error_line(err)
        assert code == 1 and line.startswith("Error: the disk is full") and "a rerun resumes" in line, err
        assert (root / "manifest.json").read_text() == before
        assert not any((root / ".staging").iterdir()) if (root / ".staging").exists() else True
        assert not list(root.glob(".manifest.json.*.tmp"))
        done_shards = list((root / "work").rglob("shard-*.json"))
        assert len(done_shards) >= 1  # finished work is kept
        filler.unlink()
        code, err = finish(start(*args))
        assert code == 0 and "resuming:" in err, err
        assert vectors(root, "big").shape == (120, 384)
        assert subprocess.run([EMBEDTAB, "status", "--verify", "-A", str(root)], capture_output=True).returncode == 0


def test_file_size_limit_is_one_line(tmp_path):
    """Where no tmpfs can be mounted, a file-size limit makes writes fail just as abruptly."""
    items = texts_table(tmp_path / "items.parquet", 60)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    code, err = finish(start("encode", "text", str(items), "-c", "title", "--name", "t", "-A", str(tmp_path / "a"), preexec_fn=limit))
    line = error_line(err)
    assert code == 1 and line.startswith("Error: a file grew past this process's file-size limit (ulimit -f)"), err
    assert not (tmp_path / "a" / "embeddings" / "t").exists()


def test_read_only_artifact_directory_is_one_line_and_untouched(tmp_path):
    root, items = tmp_path / "a", texts_table(tmp_path / "items.parquet", 3)
    assert subprocess.run([EMBEDTAB, "encode", "text", str(items), "-c", "title", "--name", "t", "-A", str(root)]).returncode == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    if subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root with CAP_SYS_ADMIN)")
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], capture_output=True).returncode == 0
        code, err = finish(start("encode", "text", str(items), "-c", "title", "--name", "u", "-A", str(root)))
        line = error_line(err)
        assert code == 1 and line.startswith("Error: read-only file system"), err
        status = subprocess.run([EMBEDTAB, "status", "--verify", "-A", str(root)], capture_output=True, text=True)
        assert status.returncode == 0 and "embeddings" in status.stdout  # reading still works
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------- image root
def test_image_paths_outside_the_root_are_recorded_never_opened(tmp_path):
    root_dir, outside = tmp_path / "images", tmp_path / "elsewhere"
    root_dir.mkdir(), outside.mkdir()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(root_dir / "ok.png")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(outside / "secret.png")
    os.mkfifo(outside / "pipe.png")  # were it opened, the read would block: its reason shows it was not
    (root_dir / "link.png").symlink_to(outside / "secret.png")
    rows = [
        "ok.png",
        "../elsewhere/secret.png",
        str(outside / "secret.png"),
        "link.png",
        "../elsewhere/pipe.png",
        "../../../../../../etc/passwd",
    ]
    data = tmp_path / "catalog.parquet"
    pd.DataFrame({"item_id": range(len(rows)), "image_path": rows}).to_parquet(data)
    base = ("encode", "image", str(data), "-m", "embedtab-smoke-clip", "--workers", "0", "--image-root", str(root_dir))
    assert subprocess.run([EMBEDTAB, *base, "--name", "safe", "-A", str(tmp_path / "a")], capture_output=True).returncode == 0
    errors = pq.read_table(tmp_path / "a" / "embeddings" / "safe" / "_errors.parquet").to_pylist()
    assert [(e["item_id"], e["reason"]) for e in errors] == [(i, "outside the image root") for i in range(1, 6)]
    allowed = subprocess.run(
        [EMBEDTAB, *base, "--name", "open", "--allow-outside-root", "-A", str(tmp_path / "a")], capture_output=True, text=True
    )
    assert allowed.returncode == 0, allowed.stderr
    reasons = {e["item_id"]: e["reason"] for e in pq.read_table(tmp_path / "a" / "embeddings" / "open" / "_errors.parquet").to_pylist()}
    assert reasons == {4: "not a regular file", 5: "not an image (format not recognised)"}
    assert ArtifactStore(tmp_path / "a").get("embeddings", "open").params["allow_outside_root"] is True
    assert "allow_outside_root" not in ArtifactStore(tmp_path / "a").get("embeddings", "safe").params
