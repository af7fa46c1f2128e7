"""`embedtab export triton`, served by the real Triton Inference Server that nvidia-pytriton ships
(CPU), started on 127.0.0.1 by scripts/tritonserver.sh from the demo's artifacts; what it answers
over HTTP equals embedtab's own lookup tables and transform. Then versions and bad input, without
a server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from embedtab.api import Artifacts
from tests.conftest import CONFIGS, REPO, SAMPLE
from tests.workflow.test_stage import read_dataset

pytestmark = pytest.mark.merlin
pytest.importorskip("merlin.systems", reason="the [serve] extra (merlin-systems, nvidia-pytriton, tritonclient)")
pytest.importorskip("pytriton", reason="the [serve] extra")
httpclient = pytest.importorskip("tritonclient.http", reason="the [serve] extra")

SERVED = {"lookups": ["text-train", "image-train"], "workflows": ["interactions"]}  # (the demo exported all to exports/triton)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_of(demo, tmp: Path) -> Path:
    root = tmp / "artifacts"
    shutil.copytree(demo.root, root)
    return root


def embedtab(root: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("embedtab")), *args, "-A", str(root)]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.fixture(scope="module")
def served(demo, tmp_path_factory):
    """(client, artifact root) of a server on the exported repository; stopped by its pid."""
    root = copy_of(demo, tmp_path_factory.mktemp("served"))
    Artifacts(root).export_triton("served", **SERVED)
    http, grpc = free_port(), free_port()
    log = open(root.parent / "tritonserver.log", "w")
    command = [
        "bash",
        str(REPO / "scripts" / "tritonserver.sh"),
        str(root / "exports" / "served"),
        f"--http-port={http}",
        f"--grpc-port={grpc}",
    ]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHON": sys.executable})
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        deadline = time.monotonic() + 240
        while True:  # ready, or the server gone (a model that fails to load ends it): never wait blind
            assert server.poll() is None, (root.parent / "tritonserver.log").read_text()[-3000:]
            try:
                if client.is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert time.monotonic() < deadline, "tritonserver not ready in 240 s"
            time.sleep(0.5)
        yield client, root
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def ask(client, model: str, **inputs: np.ndarray):
    tensors = []
    for name, values in inputs.items():
        kind = "BYTES" if values.dtype == object else {"int64": "INT64"}[str(values.dtype)]
        tensor = httpclient.InferInput(name, list(values.shape), kind)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    return client.infer(model, tensors)


def test_every_lookup_row_is_served_for_every_id_cold_start_items_included(served):
    client, root = served
    for name in SERVED["lookups"]:
        folder = root / "lookups" / name
        table, present = np.load(folder / "_embeddings.npy"), pq.read_table(folder / "table.parquet").column("present").to_numpy()
        ids = np.arange(len(table), dtype=np.int64)  # padding, null, OOV and every catalog item
        answer = ask(client, f"lookup_{name}", ids=ids)
        np.testing.assert_array_equal(answer.as_numpy("vectors"), table)
        np.testing.assert_array_equal(answer.as_numpy("present"), present)
        assert not present[:3].any() and not answer.as_numpy("vectors")[:3].any()  # reserved ids: absent, zeros
    # the items first seen on the validation day are served their own vectors
    valid = read_dataset(root / "datasets" / "valid")
    trained = set(read_dataset(root / "datasets" / "train")["item_id_content"])
    cold = np.array(sorted(set(valid["item_id"]) - trained), dtype=np.int64)
    answer = ask(client, "lookup_text-train", ids=cold)
    assert len(cold) >= 15 and answer.as_numpy("present").all() and (np.abs(answer.as_numpy("vectors")).sum(axis=1) > 0).all()


def test_an_item_without_a_vector_is_answered_absent_and_an_id_outside_the_table_is_refused(served):
    client, root = served
    table = pq.read_table(root / "lookups" / "image-train" / "table.parquet").to_pandas()
    absent = table.loc[table["item_id"].notna() & ~table["present"], "cat_id"].to_numpy(np.int64)  # unreadable images
    answer = ask(client, "lookup_image-train", ids=absent)
    assert len(absent) >= 1 and not answer.as_numpy("present").any() and not answer.as_numpy("vectors").any()
    with pytest.raises(Exception, match=r"1 id\(s\) outside the table's 0\.\.202, e\.g\. \[99999\]"):
        ask(client, "lookup_text-train", ids=np.array([5, 99999], dtype=np.int64))


def test_the_workflow_model_transforms_raw_rows_as_embedtab_transform_does(served):
    client, root = served
    raw = pd.read_parquet(SAMPLE / "interactions" / "day_3.parquet").head(200)
    inputs = {
        c: raw[c].to_numpy().astype(object if raw[c].dtype == object else np.int64)
        for c in ("user_id", "item_id", "device_type", "timestamp")
    }
    answer = ask(client, "nvt_interactions", **inputs)
    ours = read_dataset(root / "datasets" / "valid").head(200)  # `embedtab transform interactions` of day 3
    for column in ours.columns.drop("click"):  # the target is no serving input
        np.testing.assert_array_equal(answer.as_numpy(column), ours[column].to_numpy(), err_msg=column)


def test_the_id_decoder_gives_back_the_raw_item_ids(served):
    client, root = served
    table = pq.read_table(root / "lookups" / "text-train" / "table.parquet").to_pandas()
    answer = ask(client, "decode_interactions_item_id", ids=table["cat_id"].to_numpy(np.int64))
    known = table["item_id"].notna().to_numpy()
    np.testing.assert_array_equal(answer.as_numpy("known"), known)
    np.testing.assert_array_equal(answer.as_numpy("raw")[known], table["item_id"][known].astype(np.int64).to_numpy())
    catalog = pd.read_parquet(SAMPLE / "items.parquet")["item_id"]
    assert set(answer.as_numpy("raw")[known]) == set(catalog)


def test_each_export_with_new_inputs_is_a_new_version_and_status_shows_what_each_serves(demo, tmp_path):
    root = copy_of(demo, tmp_path)
    art = Artifacts(root)
    first = art.export_triton("daily", lookups=["text-train"], workflows=["item"])
    assert first.record.metadata["version"] == 1 and art.export_triton("daily", lookups=["text-train"], workflows=["item"]).up_to_date
    refused = embedtab(root, "export", "triton", "-n", "daily", "-l", "text-train", "-w", "item", "--version", "1", "--force")
    assert refused.returncode == 2 and "already has version 1: a new version must be above it" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    # the lookup changes (another fill): version 2; version 1 of every model stays beside it
    assert (
        embedtab(root, "lookup", "-e", "text-pca64", "-w", "interactions", "-n", "text-train", "--fill", "mean", "--force").returncode == 0
    )
    second = art.export_triton("daily", lookups=["text-train"], workflows=["item"])
    repository = root / "exports" / "daily"
    assert second.record.metadata["version"] == 2
    assert sorted(p.name for p in (repository / "lookup_text-train").iterdir()) == ["1", "2", "config.pbtxt"]
    served = next(e for e in json.loads(embedtab(root, "status", "--json").stdout)["exports"] if e["name"] == "daily")["versions"]
    fingerprint = art.get("lookups", "text-train").record.fingerprint
    assert served["2"]["lookup_text-train"] == {"artifact": "lookups/text-train", "fingerprint": fingerprint}
    assert served["1"]["lookup_text-train"]["fingerprint"] != fingerprint
    assert "exports/daily version 2: nvt_item = workflows/item" in embedtab(root, "status").stdout
    np.testing.assert_array_equal(
        np.load(repository / "lookup_text-train" / "2" / "vectors.npy"), np.load(root / "lookups" / "text-train" / "_embeddings.npy")
    )
    third = embedtab(root, "export", "triton", "-n", "daily", "-l", "text-train", "-w", "item", "--keep", "1", "--version", "7", "--force")
    assert third.returncode == 0, third.stderr
    assert sorted(p.name for p in (repository / "lookup_text-train").iterdir()) == ["7", "config.pbtxt"]


def test_a_damaged_missing_or_stale_input_is_refused_in_one_line_and_nothing_is_written(demo, tmp_path):
    root = copy_of(demo, tmp_path)
    missing = embedtab(root, "export", "triton", "-n", "fresh", "-l", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    table = root / "lookups" / "image-train" / "_embeddings.npy"
    table.write_bytes(table.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    damaged = embedtab(root, "export", "triton", "-n", "fresh")
    assert damaged.returncode == 1 and "image-train" in damaged.stderr and "_embeddings.npy" in damaged.stderr
    assert len(damaged.stderr.strip().splitlines()) == 1
    assert not (root / "exports" / "fresh").exists()
    # the interactions workflow refit: its lookups now answer in an id space that is gone
    shutil.rmtree(root / "lookups" / "image-train")
    refit = embedtab(
        root, "fit-workflow", str(CONFIGS / "interactions.yaml"), "--data", str(SAMPLE / "interactions" / "day_1.parquet"), "--force"
    )
    assert refit.returncode == 0, refit.stderr
    stale = embedtab(root, "export", "triton", "-n", "fresh", "-l", "text-train")
    assert stale.returncode == 1 and "lookups/text-train is stale (" in stale.stderr and "rerun its command" in stale.stderr
    assert len(stale.stderr.strip().splitlines()) == 1 and not (root / "exports" / "fresh").exists()


def test_a_served_repository_stays_intact_and_damage_or_loss_never_carries_a_bad_version(demo, tmp_path):
    root = copy_of(demo, tmp_path)
    art, repository = Artifacts(root), root / "exports" / "one"
    art.export_triton("one", lookups=["text-train"], workflows=[])
    # Triton's Python backend writes bytecode beside each model.py: not damage, nothing new to serve
    (repository / "lookup_text-train" / "1" / "__pycache__").mkdir()
    (repository / "lookup_text-train" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\x00")
    assert embedtab(root, "status", "--verify").returncode == 0
    assert art.export_triton("one", lookups=["text-train"], workflows=[]).up_to_date
    # a damaged version is rebuilt as a new one and not carried along
    (repository / "lookup_text-train" / "1" / "present.npy").write_bytes(b"\x93NUMPY tampered")
    second = art.export_triton("one", lookups=["text-train"], workflows=[])
    assert second.record.metadata["version"] == 2 and second.record.metadata["models"]["lookup_text-train"] == [2]
    assert sorted(p.name for p in (repository / "lookup_text-train").iterdir()) == ["2", "config.pbtxt"]
    assert embedtab(root, "status", "--verify").returncode == 0
    # the folder deleted by hand: the numbers go on from the record, never back to 1
    shutil.rmtree(repository)
    assert art.export_triton("one", lookups=["text-train"], workflows=[]).record.metadata["version"] == 3


def test_model_names_are_reachable_and_a_lookup_of_several_tables_is_left_out_of_everything(demo, tmp_path):
    root = copy_of(demo, tmp_path)
    for name, extra in (("text+image", ["--concat"]), ("both", [])):
        made = embedtab(root, "lookup", "-e", "text-pca64", "-e", "image-pca16", "-w", "interactions", "-n", name, *extra)
        assert made.returncode == 0, made.stderr
    everything = embedtab(root, "export", "triton", "-n", "all")
    assert everything.returncode == 0, everything.stderr
    assert "lookups/both is not exported: it holds one table per source (built without --concat)" in everything.stderr
    models = sorted(p.name for p in (root / "exports" / "all").iterdir())
    assert "lookup_text_image" in models and not any("both" in m or "+" in m for m in models)  # ('+' is %2B to HTTP clients)
    vectors = np.load(root / "exports" / "all" / "lookup_text_image" / "1" / "vectors.npy")
    assert vectors.shape == (203, 80)
    asked = embedtab(root, "export", "triton", "-n", "some", "-l", "both")
    assert asked.returncode == 2 and "lookups/both holds one table per source" in asked.stderr
