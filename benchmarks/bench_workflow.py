"""Workflow benchmark: embedtab fit-workflow + transform vs the same graph with NVTabular directly.

    .venv/bin/python benchmarks/bench_workflow.py [--rows 10000000] [--rounds 2]

10M generated interaction rows (user_id, item_id, timestamp, device_type, age) in 10 parquet
files; the graph is benchmarks/configs/bench_interactions.yaml (categorify x3, time features,
normalize, fill, bucketize). Each variant runs in its own process (so peak RSS is its own),
alternating; goal: time <= 1.1x NVTabular's, peak RSS <= 4 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "bench_interactions.yaml"


def make_data(rows: int, files: int = 10, seed: int = 1) -> Path:
    out = HERE / "data" / f"interactions-{rows}"
    if out.exists() and len(list(out.glob("*.parquet"))) == files:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // files
    n_users, n_items = max(10, rows // 20), max(10, rows // 100)
    ages = rng.integers(16, 80, n_users).astype(float)
    ages[rng.random(n_users) < 0.06] = np.nan
    for f in range(files):
        users = rng.integers(0, n_users, per)
        weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
        table = pa.table(
            {
                "user_id": users.astype(np.int64),
                "item_id": rng.choice(n_items, size=per, p=weights / weights.sum()).astype(np.int64) + 100_000,
                "timestamp": (1_709_510_400 + f * 86_400 + rng.integers(0, 86_400, per)).astype(np.int64),
                "device_type": pa.array(rng.choice(["mobile", "desktop", "tablet"], size=per, p=[0.6, 0.3, 0.1])),
                "age": ages[users],
            }
        )
        pq.write_table(table, out / f"part_{f:02d}.parquet")
    return out


def run_nvtabular(data: Path, work: Path) -> None:
    """The same graph, built and run with NVTabular's Python API, as a user would without embedtab."""
    import nvtabular as nvt
    from merlin.io import Dataset
    from merlin.schema import Tags
    from nvtabular import ops

    from embedtab.workflow import functions

    cats = str(work / "cats")
    time_feats = None
    for name in ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos"):
        branch = ["timestamp"] >> ops.LambdaOp(getattr(functions, name), dtype=np.float32) >> ops.Rename(postfix=f"_{name}")
        time_feats = branch if time_feats is None else time_feats + branch
    graph = (
        (["user_id"] >> ops.Categorify(dtype="int32", out_path=cats) >> ops.AddTags([Tags.USER_ID, Tags.USER, Tags.ID]))
        + (["item_id"] >> ops.Categorify(dtype="int32", out_path=cats) >> ops.AddTags([Tags.ITEM_ID, Tags.ITEM, Tags.ID]))
        + (["device_type"] >> ops.Categorify(dtype="int32", out_path=cats) >> ops.AddTags([Tags.CONTEXT]))
        + (time_feats >> ops.AddTags([Tags.CONTEXT, Tags.CONTINUOUS]))
        + (
            ["age"]
            >> ops.Normalize(out_dtype=np.float32)
            >> ops.FillMissing(fill_val=0.0)
            >> ops.Rename(postfix="_norm")
            >> ops.AddTags([Tags.USER, Tags.CONTINUOUS])
        )
        + (
            ["age"]
            >> ops.FillMissing(fill_val=-1)
            >> ops.Bucketize([0, 18, 25, 35, 50, 65])
            >> ops.Rename(postfix="_binned")
            >> ops.Categorify(dtype="int32", out_path=cats)
            >> ops.AddTags([Tags.USER])
        )
    )
    files = sorted(str(p) for p in data.glob("*.parquet"))
    workflow = nvt.Workflow(graph)
    workflow.fit(Dataset(files, engine="parquet", cpu=True))
    workflow.save(str(work / "workflow"))
    workflow.transform(Dataset(files, engine="parquet", cpu=True)).to_parquet(str(work / "out"), out_files_per_proc=1)


def run_embedtab(data: Path, work: Path) -> None:
    from embedtab.artifacts import ArtifactStore
    from embedtab.workflow import stage

    store = ArtifactStore(work / "artifacts")
    files = [str(data / "*.parquet")]
    stage.fit(store, stage.FitOptions(str(CONFIG), files, name="bench"))
    stage.transform(store, stage.TransformOptions("bench", files, name="out"))


def child(variant: str, data: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(dir=HERE / "data") as tmp:
        start = time.perf_counter()
        (run_embedtab if variant == "embedtab" else run_nvtabular)(Path(data), Path(tmp))
        seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "variant": variant,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = make_data(args.rows)
    runs: dict[str, list[dict]] = {"nvtabular": [], "embedtab": []}
    for r in range(args.rounds):
        order = ["nvtabular", "embedtab"] if r % 2 == 0 else ["embedtab", "nvtabular"]
        for variant in order:
            out = subprocess.run([sys.executable, __file__, "_child", variant, str(data)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratios = [e["seconds"] / n["seconds"] for e, n in zip(runs["embedtab"], runs["nvtabular"])]
    result = {
        "case": "workflow",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": args.rows,
        "nvtabular_s": statistics.median(r["seconds"] for r in runs["nvtabular"]),
        "embedtab_s": statistics.median(r["seconds"] for r in runs["embedtab"]),
        "time_ratio": round(statistics.median(ratios), 3),
        "pair_ratios": [round(x, 3) for x in ratios],
        "peak_rss_mb": {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()},
        "runs": runs,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "workflow.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
