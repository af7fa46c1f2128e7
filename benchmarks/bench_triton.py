"""Lookup latency and throughput through Triton (`embedtab export triton`, served by
scripts/tritonserver.sh on 127.0.0.1) against an in-process NumPy index of the same table, for
batches of 300 candidate ids (the reference system's retrieval size).

    .venv/bin/python benchmarks/bench_triton.py                 # demo table (203 x 64) and 1M x 64
    .venv/bin/python benchmarks/bench_triton.py --requests 500

The demo's artifacts are built (`embedtab run configs/pipeline.yaml`) under benchmarks/data/ and
exported with `embedtab export triton -l text-train`. The large case is that same exported model
with its table replaced by a seeded random 1,000,000 x 64 float32 one (what a 1M-item catalog's
lookup holds; the model code is unchanged). Each request goes over HTTP and over gRPC, one at a time
(latency) and 8 at a time (throughput: 8 HTTP connections, 8 gRPC client threads). Results: benchmarks/results/triton-lookup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = HERE / "data" / "triton"
BATCH = 300


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_repository() -> Path:
    """The demo's artifacts and their export; a 1M-row copy of the lookup model beside it."""
    root = DATA / "artifacts"
    embedtab = str(Path(sys.executable).with_name("embedtab"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([embedtab, "-q", "run", "configs/pipeline.yaml", "-A", str(root)], cwd=REPO, env=env, check=True)
    subprocess.run([embedtab, "-q", "export", "triton", "-l", "text-train", "-w", "item", "-A", str(root)], env=env, check=True)
    repository = DATA / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    shutil.copytree(root / "exports" / "triton", repository)
    big = repository / "lookup_big"
    shutil.copytree(repository / "lookup_text-train", big)
    (big / "config.pbtxt").write_text((big / "config.pbtxt").read_text().replace('name: "lookup_text-train"', 'name: "lookup_big"'))
    version = next(p for p in big.iterdir() if p.name.isdigit())
    rng = np.random.default_rng(0)
    np.save(version / "vectors.npy", rng.standard_normal((1_000_000, 64), dtype=np.float32))
    np.save(version / "present.npy", np.ones(1_000_000, bool))
    return repository


def start(repository: Path) -> tuple[subprocess.Popen, int, int]:
    import tritonclient.http as httpclient

    http, grpc = _port(), _port()
    command = ["bash", str(REPO / "scripts" / "tritonserver.sh"), str(repository), f"--http-port={http}", f"--grpc-port={grpc}"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable})
    client, started = httpclient.InferenceServerClient(f"127.0.0.1:{http}"), time.monotonic()
    while True:
        if server.poll() is not None:
            raise SystemExit("tritonserver exited before it was ready")
        try:
            if client.is_server_ready():
                return server, http, grpc
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        if time.monotonic() - started > 300:
            raise SystemExit("tritonserver not ready in 300 s")
        time.sleep(0.5)


def _infer(module, client, model: str, ids: np.ndarray) -> np.ndarray:
    tensor = module.InferInput("ids", [len(ids)], "INT64")
    tensor.set_data_from_numpy(ids)
    return client.infer(model, [tensor]).as_numpy("vectors")


def measure(model: str, rows: int, requests: int, http: int, grpc: int, table: np.ndarray | None) -> dict:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    rng = np.random.default_rng(1)
    batches = [rng.integers(3, rows, size=BATCH, dtype=np.int64) for _ in range(requests)]
    out: dict = {"model": model, "rows": rows, "batch": BATCH, "requests": requests}
    for protocol, module, address in (("http", httpclient, f"127.0.0.1:{http}"), ("grpc", grpcclient, f"127.0.0.1:{grpc}")):
        client = module.InferenceServerClient(address)
        got = _infer(module, client, model, batches[0])  # (warm-up; and the answer is checked)
        if table is not None:
            np.testing.assert_array_equal(got, table[batches[0]])
        latencies = []
        for ids in batches:
            started = time.perf_counter()
            _infer(module, client, model, ids)
            latencies.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        if protocol == "http":  # (gevent inside: its own 8 connections, not threads)
            client = module.InferenceServerClient(address, concurrency=8)
            handles = []
            for ids in batches:
                tensor = module.InferInput("ids", [len(ids)], "INT64")
                tensor.set_data_from_numpy(ids)
                handles.append(client.async_infer(model, [tensor]))
            for handle in handles:
                handle.get_result()
        else:
            clients = [module.InferenceServerClient(address) for _ in range(8)]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i, m=module, c=clients: _infer(m, c[i % 8], model, batches[i]), range(requests)))
        seconds = time.perf_counter() - started
        out[protocol] = {
            "p50_ms": round(statistics.median(latencies), 3),
            "p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "requests_per_s_8_clients": round(requests / seconds, 1),
            "ids_per_s_8_clients": round(requests * BATCH / seconds),
        }
    return out


def numpy_index(table: np.ndarray, rows: int, requests: int) -> dict:
    rng = np.random.default_rng(1)
    batches = [rng.integers(3, rows, size=BATCH, dtype=np.int64) for _ in range(requests)]
    latencies = []
    for ids in batches:
        started = time.perf_counter()
        table[ids]
        latencies.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(latencies), 4), "p99_ms": round(float(np.percentile(latencies, 99)), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    repository = build_repository()
    server, http, grpc = start(repository)
    results = {"when": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(), "cases": []}
    try:
        for model in ("lookup_text-train", "lookup_big"):
            version = next(p for p in (repository / model).iterdir() if p.name.isdigit())
            table = np.load(version / "vectors.npy")
            case = measure(model, len(table), args.requests, http, grpc, table)
            case["numpy"] = numpy_index(table, len(table), args.requests)
            case["ratio_http_p50_vs_numpy"] = round(case["http"]["p50_ms"] / case["numpy"]["p50_ms"], 1)
            results["cases"].append(case)
            print(json.dumps(case))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    out = HERE / "results" / "triton-lookup.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
