"""Encode on a Dask cluster: a real distributed.LocalCluster with 2 worker processes makes the same
artifact as a local run, also when a worker is killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from embedtab import tables
from embedtab.artifacts import ArtifactStore

distributed = pytest.importorskip("distributed", reason="needs the distributed package (pip install 'embedtab[dask]')")

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))
WORDS = np.array(["red", "blue", "wool", "steel", "soft", "tall", "round", "shoe", "lamp", "mug", "hat", "green"])


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", worker_dashboard_address=":0"
        ) as local,
        distributed.Client(local) as client,
    ):
        yield local, client


def catalog(path: Path, n: int) -> Path:
    rng = np.random.default_rng(3)
    titles = [" ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) + f" no. {i}" for i in range(n)]
    titles[7] = " "  # one recorded skip, as locally
    pd.DataFrame({"item_id": np.arange(n) * 3, "title": titles}).to_parquet(path)
    return path


def encode(items: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EMBEDTAB, "encode", "text", str(items), "-c", "title", "--name", "t", "--shard-size", "40", "-A", str(root), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def contents(root: Path) -> tuple:
    folder = root / "embeddings" / "t"
    data = tables.read_parts(tables.part_files(folder))
    errors = pq.read_table(folder / "_errors.parquet").to_pylist()
    index = pq.read_table(folder / "_index.parquet").drop_columns(["row"]).to_pylist()
    return data.column("item_id").to_pylist(), tables.vectors(data), errors, index


def same_artifact(a: Path, b: Path) -> None:
    ids_a, vec_a, err_a, idx_a = contents(a)
    ids_b, vec_b, err_b, idx_b = contents(b)
    assert ids_a == ids_b and err_a == err_b and idx_a == idx_b
    np.testing.assert_allclose(vec_a, vec_b, atol=2e-6)  # the same model on the same CPU, other processes
    rec_a, rec_b = ArtifactStore(a).get("embeddings", "t"), ArtifactStore(b).get("embeddings", "t")
    assert rec_a.input_fingerprint == rec_b.input_fingerprint and rec_a.summary["items"] == rec_b.summary["items"]


def test_a_dask_run_makes_the_local_artifact_even_when_a_worker_dies(tmp_path, cluster):
    local_cluster, client = cluster
    items = catalog(tmp_path / "items.parquet", 800)
    local = encode(items, tmp_path / "local")
    assert local.returncode == 0, local.stderr

    on_dask = encode(items, tmp_path / "dask", "--dask-scheduler", local_cluster.scheduler_address)
    assert on_dask.returncode == 0, on_dask.stderr
    assert "encoding on the Dask cluster at" in on_dask.stderr and "(2 workers, cpu)" in on_dask.stderr
    same_artifact(tmp_path / "local", tmp_path / "dask")
    # Each worker loaded the model once, however many shards it encoded.
    loaded = client.run(lambda: len(__import__("embedtab.encode.distributed", fromlist=["_ENCODERS"])._ENCODERS))
    assert sorted(loaded.values()) == [1, 1]

    # Kill one worker (kill -9) while shards are being encoded: the scheduler hands its task to the
    # other worker (the nanny restarts the dead one), and the artifact is the same.
    root = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DASK_SCHEDULER_ADDRESS": local_cluster.scheduler_address}
    proc = subprocess.Popen(
        [EMBEDTAB, "encode", "text", str(items), "-c", "title", "--name", "t", "--shard-size", "40", "-A", str(root)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and len(list((root / "work").rglob("shard-*.json"))) < 2:
        time.sleep(0.02)
    victim = next(iter(client.run(os.getpid).values()))
    assert proc.poll() is None and len(list((root / "work").rglob("shard-*.json"))) < 20  # mid-run
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    same_artifact(tmp_path / "local", root)
    assert victim not in client.run(os.getpid).values()  # it did die (and was replaced)


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    items = catalog(tmp_path / "items.parquet", 20)
    result = encode(items, tmp_path / "a", "--dask-scheduler", "tcp://127.0.0.1:9")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")
    assert not (tmp_path / "a" / "embeddings" / "t").exists()
