"""Phase 4, seal: stream the final parts in input order from reused and new vectors, with the
index and the errors table, and publish the artifact atomically."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.artifacts import EMBEDDINGS_ERRORS, EMBEDDINGS_INDEX, EMBEDDINGS_INFO, PARQUET_SUMMARY, ArtifactRecord, ArtifactStore
from embedtab.encode import sources as src
from embedtab.encode.inputs import ROWS
from embedtab.encode.options import EncodeOptions
from embedtab.encode.scan import Scan
from embedtab.encode.work import WorkDir, check_budget, copy_previous_vectors
from embedtab.errors import DataError


def seal(store, plan, source, options, scan, worklist, work, previous, identity, preprocess, device, started, reporter, truncated,
         model_seconds, decoded=None, load_seconds=0.0) -> ArtifactRecord:
    dim = work.verify() or (previous.record.metadata["dim"] if previous else 0)
    decode = work.errors()  # work index -> reason
    n = len(scan.keys)
    failed_work = np.zeros(len(worklist.positions), bool)
    if decode:
        failed_work[list(decode)] = True
    item_work = worklist.work_of_item
    # (nothing new to encode -- every item reused -- leaves failed_work empty)
    item_failed = (item_work >= 0) & (failed_work[np.maximum(item_work, 0)] if len(failed_work) else False)
    problems = dict(scan.problems)
    for position in np.flatnonzero(item_failed):
        problems[int(position)] = (scan.paths[int(position)].as_py() if scan.paths is not None else "", decode[int(item_work[position])])
    check_budget(len(problems), options)
    if options.on_error == "fail" and problems:
        position, (value, reason) = next(iter(sorted(problems.items())))
        raise DataError(f"{options.id_column}={scan.ids[position].as_py()}: {value}: {reason}")
    ok = np.ones(n, bool)
    ok[list(problems)] = False
    if not ok.any():
        clean_work(store, options.name)  # every shard is done and nothing in it is usable
        reasons = Counter(reason for _, reason in problems.values())
        raise DataError(f"{source.describe()}: none of the {n} items could be encoded "
                        f"({', '.join(f'{count} {reason}' for reason, count in reasons.most_common(3))})")

    previous_npy = None
    if previous is not None and (worklist.reuse_rows >= 0).any():
        parts = tables.part_files(store.path("embeddings", previous.record.name))
        previous_npy = np.load(copy_previous_vectors(parts, work.path / "previous.npy", previous.record.rows(prefix=tables.PART_PREFIX), dim), mmap_mode="r")

    id_name = options.id_column
    with store.staging(plan) as staging, reporter.progress("writing parts", total=n, unit="items") as advance:
        index_writer = _IndexWriter(staging / EMBEDDINGS_INDEX, id_name, scan.ids.type, ROWS[source.modality].keeps_files)
        row = 0
        parts = 0
        for start in range(0, n, options.shard_size):
            stop = min(start + options.shard_size, n)
            keep = np.flatnonzero(ok[start:stop]) + start
            rows_out = np.full(stop - start, -1, np.int64)
            if len(keep):
                vectors = np.empty((len(keep), dim), np.float32)
                reused = worklist.reuse_rows[keep]
                from_prev = reused >= 0
                if from_prev.any():
                    vectors[from_prev] = previous_npy[reused[from_prev]]
                new_work = item_work[keep[~from_prev]]
                vectors[~from_prev] = _gather_work(work, new_work, dim)
                tables.write_parquet(tables.embeddings_table(id_name, scan.ids.take(pa.array(keep)), vectors), staging / tables.part_name(parts))
                parts += 1
                rows_out[keep - start] = np.arange(row, row + len(keep))
                row += len(keep)
            index_writer.write(scan, start, stop, rows_out)
            advance(stop - start)
        index_writer.close()
        positions = sorted(problems)
        errors = pa.table({
            id_name: scan.ids.take(pa.array(positions, pa.int64())) if positions else pa.array([], scan.ids.type),
            "input": pa.array([problems[p][0] for p in positions], pa.string()),
            "reason": pa.array([problems[p][1] for p in positions], pa.string()),
        })
        tables.write_parquet(errors, staging / EMBEDDINGS_ERRORS)
        tables.write_summary(staging, tables.part_files(staging), PARQUET_SUMMARY)
        reused_items = int(((worklist.reuse_rows >= 0) & ok).sum())
        seconds = time.time() - started
        summary = {
            "items": n,
            "encoded": int(row - reused_items),
            "distinct_encoded": int(len(worklist.positions) - len(decode)),
            "reused": reused_items,
            "skipped": len(problems),
            "seconds": round(seconds, 3),
            "model_seconds": round(model_seconds, 3),  # the rest is loading, decoding and writing
            "load_seconds": round(load_seconds, 3),  # of that: loading the model
            "items_per_s": round(n / seconds, 1) if seconds > 0 else None,
        }
        metadata = {
            "id_column": id_name,
            "id_type": str(scan.ids.type),
            "dim": int(dim),
            "count": int(row),
            "encoder": identity,
            "model": _model_metadata(options, identity, preprocess),
            "device": device,
            "shard_size": options.shard_size,
            "truncated_texts": truncated,
            **options.metadata(),
        }
        if preprocess is not None:
            metadata["preprocess"] = preprocess
        if decoded:  # images: how many this run decoded with Pillow (cpu) and with nvJPEG (gpu)
            metadata["decoded"] = {"cpu": int(decoded.get("cpu", 0)), "gpu": int(decoded.get("gpu", 0))}
        (staging / EMBEDDINGS_INFO).write_text(json.dumps({**metadata, "summary": summary}, indent=2, default=str))
        record = store.publish(plan, staging, metadata=metadata, summary=summary, device=device)
    return record


def _model_metadata(options: EncodeOptions, identity: dict[str, Any], preprocess: Any) -> dict[str, Any]:
    from embedtab.encode.smoke import SMOKE_MODEL

    meta = {k: identity.get(k) for k in ("library", "model", "normalize", "precision")}
    if "encoder" in identity:
        meta["encoder"] = identity["encoder"]
    if options.pretrained or preprocess is not None:
        meta.update(pretrained=options.pretrained, smoke_model=identity["model"] == SMOKE_MODEL, preprocess=preprocess)
    return meta


def _gather_work(work: WorkDir, indices: np.ndarray, dim: int) -> np.ndarray:
    out = np.empty((len(indices), dim), np.float32)
    if not len(indices):
        return out
    shards = indices // work.shard_size
    for shard in np.unique(shards):
        mask = shards == shard
        vectors = work.vectors(int(shard))  # memory-mapped; dropped after the gather
        out[mask] = vectors[indices[mask] - shard * work.shard_size]
        del vectors
    return out


class _IndexWriter:
    """_index.parquet, written part by part (id, key, row; for images path, size, mtime_ns)."""

    def __init__(self, path: Path, id_name: str, id_type: pa.DataType, images: bool):
        fields = [(id_name, id_type), ("key", pa.binary(src.KEY_BYTES)), ("row", pa.int64())]
        if images:
            fields += [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())]
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.images = images

    def write(self, scan: Scan, start: int, stop: int, rows: np.ndarray) -> None:
        columns = [scan.ids.slice(start, stop - start), src.keys_to_arrow(scan.keys[start:stop]), pa.array(rows)]
        if self.images:
            columns += [scan.paths.slice(start, stop - start), pa.array(scan.sizes[start:stop]), pa.array(scan.mtimes[start:stop])]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def clean_work(store: ArtifactStore, name: str) -> None:
    shutil.rmtree(store.work_path("embeddings", name), ignore_errors=True)
