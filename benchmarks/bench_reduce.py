"""reduce and lookup benchmarks, each variant in its own process so peak RSS is its own.

    .venv/bin/python benchmarks/bench_reduce.py pca          # 1M x 512 parquet -> 64 dims vs sklearn in memory
    .venv/bin/python benchmarks/bench_reduce.py pca-large    # 10M x 512 (20 GB) streaming, vs a 1M in-memory fit
    .venv/bin/python benchmarks/bench_reduce.py lookup       # 1M-item vocabulary, 1M x 64 embeddings

Goals (issue 9): pca end to end <= 1.4x sklearn's PCA(64).fit_transform on the array already in
memory (on a GPU box <= 1.2x sklearn on all cores) with peak RSS <= 0.6x sklearn's; pca-large
completes under 4 GB peak RSS with components matching an in-memory fit on a 1M sample; lookup
1M x 64 in <= 2.1 s with peak RSS <= 3x the output (.npy). Peak RSS is each child's VmHWM.
Data goes to benchmarks/data/ (git-ignored); the 10M case needs ~21 GB of free disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
LATENT = 64


def rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a
    child started by a parent that had generated the data would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _mixing(dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    return rng.normal(size=(LATENT, dim)).astype(np.float32), np.linspace(4.0, 0.5, LATENT).astype(np.float32)


def _chunk(rows: int, dim: int, seed: int) -> np.ndarray:
    """Embeddings with a 64-dim signal and isotropic noise, like real model outputs after PCA."""
    mixing, scale = _mixing(dim)
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((rows, LATENT), dtype=np.float32) * scale
    return latent @ mixing + 0.3 * rng.standard_normal((rows, dim), dtype=np.float32)


def make_store(rows: int, dim: int, part_rows: int = 100_000, with_npy: bool = False):
    """An artifact dir holding embeddings/<rows>x<dim> (and the same array as .npy for sklearn)."""
    from embedtab import tables
    from embedtab.artifacts import ArtifactStore

    root = DATA / f"reduce-{rows}x{dim}"
    store = ArtifactStore(root / "artifacts")
    name = f"e{rows}x{dim}"
    npy = root / "array.npy"
    if store.get("embeddings", name) is None:
        plan = store.plan("embeddings", name, "benchmark data", {"rows": rows, "dim": dim}, force=True)
        with store.staging(plan) as staging:
            out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, dim)) if with_npy else None
            for index, start in enumerate(range(0, rows, part_rows)):
                x = _chunk(min(part_rows, rows - start), dim, seed=index)
                ids = pa.array(np.arange(start, start + len(x), dtype=np.int64))
                tables.write_parquet(tables.embeddings_table("item_id", ids, x), staging / tables.part_name(index))
                if out is not None:
                    out[start : start + len(x)] = x
            if out is not None:
                out.flush()
                del out
            store.publish(plan, staging, metadata={"id_column": "item_id", "dim": dim})
    return store, name, npy


# ----------------------------------------------------------------------------- children
def child_embedtab_pca(rows: int, dim: int, out_name: str, memory: str) -> dict:
    from embedtab import reduce

    store, name, _ = make_store(rows, dim)
    budget = None if memory == "default" else int(memory)
    start = time.perf_counter()
    result = reduce.run(store, reduce.ReduceOptions(name, 64, name=out_name, force=True, memory=budget))
    seconds = time.perf_counter() - start
    meta = result.projection.metadata
    return {
        "variant": "embedtab",
        "seconds": round(seconds, 2),
        "peak_rss_mb": rss_mb(),
        "backend": meta["backend"],
        "device": meta.get("device"),
        "kept_in_memory": meta.get("kept_in_memory"),
        "memory": memory,
    }


def child_sklearn_pca(rows: int, dim: int, sample: int | None) -> dict:
    from sklearn.decomposition import PCA

    from embedtab.reduce import fix_signs

    _, _, npy = make_store(rows, dim, with_npy=True)
    x = np.load(npy)[:sample] if sample else np.load(npy)  # in memory before the clock starts
    start = time.perf_counter()
    model = PCA(64)
    model.fit_transform(x)
    seconds = time.perf_counter() - start
    np.save(DATA / f"sklearn-components-{rows}x{dim}.npy", fix_signs(model.components_.astype(np.float64)))
    return {"variant": "sklearn", "seconds": round(seconds, 2), "peak_rss_mb": rss_mb(), "rows": len(x)}


def child_lookup(rows: int, dim: int) -> dict:
    from embedtab import lookup

    store = _lookup_store(rows, dim)
    start = time.perf_counter()
    result = lookup.run(store, lookup.LookupOptions(["emb"], "items", "item_id", force=True))
    seconds = time.perf_counter() - start
    from embedtab.artifacts import LOOKUP_DENSE

    npy = store.path("lookups", "emb") / LOOKUP_DENSE
    return {
        "variant": "lookup",
        "seconds": round(seconds, 2),
        "peak_rss_mb": rss_mb(),
        "output_mb": round(npy.stat().st_size / 2**20, 1),
        "cardinality": result.record.metadata["cardinality"],
    }


def _lookup_store(rows: int, dim: int):
    """1M-item vocabulary (fitted Categorify) and 1M x dim embeddings for those items."""
    import pyarrow.parquet as pq

    from embedtab import tables
    from embedtab.artifacts import ArtifactStore
    from embedtab.workflow import stage

    root = DATA / f"lookup-{rows}x{dim}"
    store = ArtifactStore(root / "artifacts")
    if store.get("workflows", "items") is None:
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        ids = rng.choice(np.arange(10**6, 10**8), size=rows, replace=False).astype(np.int64)
        pq.write_table(pa.table({"item_id": ids}), root / "items.parquet")
        (root / "items.yaml").write_text("name: items\nfeatures:\n  - columns: [item_id]\n    ops: [{categorify: {dtype: int64}}]\n")
        stage.fit(store, stage.FitOptions(str(root / "items.yaml"), [str(root / "items.parquet")]))
        plan = store.plan("embeddings", "emb", "benchmark data", {"rows": rows}, force=True)
        with store.staging(plan) as staging:
            order = rng.permutation(rows)  # embeddings arrive in another order than the vocabulary
            for index, start in enumerate(range(0, rows, 100_000)):
                part = order[start : start + 100_000]
                vectors = rng.standard_normal((len(part), dim), dtype=np.float32)
                tables.write_parquet(tables.embeddings_table("item_id", pa.array(ids[part]), vectors), staging / tables.part_name(index))
            store.publish(plan, staging, metadata={"id_column": "item_id", "dim": dim})
    return store


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name: str, result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    result = {"case": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    (RESULTS / f"reduce-{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- cases
PCA_VARIANTS = {
    "embedtab": "default",
    "embedtab-stream-twice": "0",
    "embedtab-keep-750MB": str(750 * 2**20),
    "embedtab-all-kept": str(8 * 2**30),
}


def bench_pca(rounds: int) -> None:
    """sklearn on the array in memory vs embedtab reduce with its default --memory, and two
    references: --memory 0 (every row read twice) and a budget keeping every row."""
    make_store(1_000_000, 512, with_npy=True)
    variants = ["sklearn", *PCA_VARIANTS]
    runs: dict[str, list] = {v: [] for v in variants}
    for r in range(rounds):
        for variant in variants if r % 2 == 0 else variants[::-1]:  # alternate the order against drift
            if variant == "sklearn":
                runs[variant].append(run_child("sklearn", "1000000", "512", "0"))
            else:
                runs[variant].append(run_child("embedtab", "1000000", "512", "out", PCA_VARIANTS[variant]))
    t = {k: float(np.median([r["seconds"] for r in v])) for k, v in runs.items()}
    m = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    report(
        "pca",
        {
            "rows": 1_000_000,
            "dim": 512,
            "dims": 64,
            "cpus": os.cpu_count(),
            "sklearn_s": t["sklearn"],
            "embedtab_s": t["embedtab"],
            "time_ratio": round(t["embedtab"] / t["sklearn"], 3),
            "sklearn_peak_rss_mb": m["sklearn"],
            "embedtab_peak_rss_mb": m["embedtab"],
            "rss_ratio": round(m["embedtab"] / m["sklearn"], 3),
            "backend": runs["embedtab"][0]["backend"],
            "device": runs["embedtab"][0]["device"],
            "kept_in_memory": runs["embedtab"][0]["kept_in_memory"],
            "references": {
                v: {
                    "seconds": t[v],
                    "time_ratio": round(t[v] / t["sklearn"], 3),
                    "peak_rss_mb": m[v],
                    "rss_ratio": round(m[v] / m["sklearn"], 3),
                    "kept_in_memory": runs[v][0]["kept_in_memory"],
                }
                for v in PCA_VARIANTS
                if v != "embedtab"
            },
            "runs": runs,
        },
    )


def bench_pca_large(_: int) -> None:
    rows = 10_000_000
    make_store(rows, 512)  # here, so the child's peak memory is the reduce's alone
    ours = run_child("embedtab", str(rows), "512", "out", "default")
    # The in-memory reference fit: the 1M-row data set, which is the first 1M rows of the 10M one
    # (same generator, same per-part seeds).
    reference = run_child("sklearn", "1000000", "512", "0")
    from embedtab.artifacts import ArtifactStore
    from embedtab.reduce import Projection

    store = ArtifactStore(DATA / f"reduce-{rows}x512" / "artifacts")
    components = Projection.load(store.path("projections", "out")).components
    expected = np.load(DATA / "sklearn-components-1000000x512.npy")
    cosines = np.abs(np.sum(components * expected, axis=1))
    report(
        "pca-large",
        {
            "rows": rows,
            "dim": 512,
            "parquet_gb": round(sum(p.stat().st_size for p in store.path("embeddings", f"e{rows}x512").glob("*.parquet")) / 1e9, 2),
            "embedtab": ours,
            "reference_1m_sklearn": reference,
            "component_abs_cosine_min": round(float(cosines.min()), 6),
            "component_abs_cosine_median": round(float(np.median(cosines)), 6),
        },
    )


def bench_lookup(rounds: int) -> None:
    _lookup_store(1_000_000, 64)
    runs = [run_child("lookup", "1000000", "64") for _ in range(rounds)]
    best = min(runs, key=lambda r: r["seconds"])
    report(
        "lookup",
        {
            "vocabulary": 1_000_000,
            "dim": 64,
            "seconds_median": float(np.median([r["seconds"] for r in runs])),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "output_mb": best["output_mb"],
            "rss_over_output": round(max(r["peak_rss_mb"] for r in runs) / best["output_mb"], 3),
            "runs": runs,
        },
    )


CASES = {"pca": bench_pca, "pca-large": bench_pca_large, "lookup": bench_lookup}


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "_child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "embedtab":
            result = child_embedtab_pca(int(rest[0]), int(rest[1]), rest[2], rest[3])
        elif kind == "sklearn":
            result = child_sklearn_pca(int(rest[0]), int(rest[1]), int(rest[2]) or None)
        else:
            result = child_lookup(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for case in args.cases:
        CASES[case](args.rounds)


if __name__ == "__main__":
    main()
