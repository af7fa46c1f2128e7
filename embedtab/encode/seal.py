"""Phase 4, seal: stream the final parts in input order from reused and new vectors, with the
index and the errors table, and publish the artifact atomically."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.artifacts import EMBEDDINGS_ERRORS, EMBEDDINGS_INDEX, EMBEDDINGS_INFO, PARQUET_SUMMARY, ArtifactStore, Made
from embedtab.encode import sources as src
from embedtab.encode.inputs import ROWS
from embedtab.encode.options import EncodeOptions
from embedtab.encode.scan import Scan
from embedtab.encode.work import check_budget
from embedtab.encode.workdir import WorkDir, copy_previous_vectors
from embedtab.errors import DataError

if TYPE_CHECKING:
    from embedtab.encode.run import EncodeRun
    from embedtab.reporting import Advance


def seal(run: EncodeRun, staging: Path) -> Made:
    """Assemble every work shard and the reused vectors into the artifact's staging folder, in
    input order (the driver publishes it). The skipped items are checked against on_error and
    max_errors before anything is written."""
    dim = run.work.verify() or (run.previous.record.metadata["dim"] if run.previous else 0)
    decode = run.work.errors()  # work index -> reason
    problems = _problems(run, decode)
    ok = _usable(run, problems)
    previous_npy = _previous_vectors(run, dim)
    n = len(run.scan.keys)
    with run.reporter.progress("writing parts", total=n, unit="items") as advance:
        count = _write_parts(run, staging, ok, dim, previous_npy, advance)
    _write_errors(run, staging, problems)
    tables.write_summary(staging, tables.part_files(staging), PARQUET_SUMMARY)
    summary = _summary(run, count, ok, len(problems), len(decode))
    metadata = _metadata(run, dim, count)
    (staging / EMBEDDINGS_INFO).write_text(json.dumps({**metadata, "summary": summary}, indent=2, default=str))
    return Made(metadata, summary, run.device)


def _problems(run: EncodeRun, decode: dict[int, str]) -> dict[int, tuple[str, str]]:
    """position -> (input, reason): the scan's unusable items and those whose content failed to decode."""
    scan, worklist = run.scan, run.worklist
    failed_work = np.zeros(len(worklist.positions), bool)
    if decode:
        failed_work[list(decode)] = True
    item_work = worklist.work_of_item
    # (nothing new to encode -- every item reused -- leaves failed_work empty)
    item_failed = (item_work >= 0) & (failed_work[np.maximum(item_work, 0)] if len(failed_work) else False)
    problems = dict(scan.problems)
    for position in np.flatnonzero(item_failed):
        problems[int(position)] = (scan.paths[int(position)].as_py() if scan.paths is not None else "", decode[int(item_work[position])])
    return problems


def _usable(run: EncodeRun, problems: dict[int, tuple[str, str]]) -> np.ndarray:
    """Per item: whether it gets a vector. Raises when the problems are more than the run allows,
    or when no item is usable (the work is cleaned: every shard is done and nothing in it is usable)."""
    options, scan = run.options, run.scan
    check_budget(len(problems), options)
    if options.on_error == "fail" and problems:
        position, (value, reason) = next(iter(sorted(problems.items())))
        raise DataError(f"{options.id_column}={scan.ids[position].as_py()}: {value}: {reason}")
    n = len(scan.keys)
    ok = np.ones(n, bool)
    ok[list(problems)] = False
    if not ok.any():
        clean_work(run.store, options.name)
        reasons = Counter(reason for _, reason in problems.values())
        raise DataError(
            f"{run.source.describe()}: none of the {n} items could be encoded "
            f"({', '.join(f'{count} {reason}' for reason, count in reasons.most_common(3))})"
        )
    return ok


def _previous_vectors(run: EncodeRun, dim: int) -> np.ndarray | None:
    """The reused artifact's vectors (memory-mapped, row = its index row), when any is reused."""
    previous = run.previous
    if previous is None or not (run.worklist.reuse_rows >= 0).any():
        return None
    parts = tables.part_files(run.store.path("embeddings", previous.record.name))
    rows = previous.record.rows(prefix=tables.PART_PREFIX)
    return np.load(copy_previous_vectors(parts, run.work.path / "previous.npy", rows, dim), mmap_mode="r")


def _write_parts(run: EncodeRun, staging: Path, ok: np.ndarray, dim: int, previous_npy: np.ndarray | None, advance: Advance) -> int:
    """The parts and the index, part by part in input order; returns how many vectors were written."""
    scan, worklist, id_name, size = run.scan, run.worklist, run.options.id_column, run.options.shard_size
    images = ROWS[run.source.modality].keeps_files
    index_writer = _IndexWriter(staging / EMBEDDINGS_INDEX, id_name, scan.ids.type, images)
    row = 0
    parts = 0
    n = len(scan.keys)
    for start in range(0, n, size):
        stop = min(start + size, n)
        keep = np.flatnonzero(ok[start:stop]) + start
        rows_out = np.full(stop - start, -1, np.int64)
        if len(keep):
            vectors = np.empty((len(keep), dim), np.float32)
            reused = worklist.reuse_rows[keep]
            from_prev = reused >= 0
            if from_prev.any():
                if previous_npy is None:  # (loaded whenever rows are reused: _previous_vectors)
                    raise TypeError("'NoneType' object is not subscriptable")
                vectors[from_prev] = previous_npy[reused[from_prev]]
            new_work = worklist.work_of_item[keep[~from_prev]]
            vectors[~from_prev] = _gather_work(run.work, new_work, dim)
            part = tables.embeddings_table(id_name, scan.ids.take(pa.array(keep)), vectors)
            tables.write_parquet(part, staging / tables.part_name(parts))
            parts += 1
            rows_out[keep - start] = np.arange(row, row + len(keep))
            row += len(keep)
        index_writer.write(scan, start, stop, rows_out)
        advance(stop - start)
    index_writer.close()
    return row


def _write_errors(run: EncodeRun, staging: Path, problems: dict[int, tuple[str, str]]) -> None:
    """_errors.parquet: id, input and reason of every item skipped."""
    ids = run.scan.ids
    positions = sorted(problems)
    errors = pa.table(
        {
            run.options.id_column: ids.take(pa.array(positions, pa.int64())) if positions else pa.array([], ids.type),
            "input": pa.array([problems[p][0] for p in positions], pa.string()),
            "reason": pa.array([problems[p][1] for p in positions], pa.string()),
        }
    )
    tables.write_parquet(errors, staging / EMBEDDINGS_ERRORS)


def _summary(run: EncodeRun, count: int, ok: np.ndarray, skipped: int, failed_work: int) -> dict[str, Any]:
    """The counts and times of the run (the manifest record's summary)."""
    n = len(run.scan.keys)
    reused_items = int(((run.worklist.reuse_rows >= 0) & ok).sum())
    seconds = time.time() - run.timings.started
    return {
        "items": n,
        "encoded": int(count - reused_items),
        "distinct_encoded": int(len(run.worklist.positions) - failed_work),
        "reused": reused_items,
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "model_seconds": round(run.timings.model_seconds, 3),  # the rest is loading, decoding and writing
        "load_seconds": round(run.timings.load_seconds, 3),  # of that: loading the model
        "items_per_s": round(n / seconds, 1) if seconds > 0 else None,
    }


def _metadata(run: EncodeRun, dim: int, count: int) -> dict[str, Any]:
    """What the artifact records about itself: ids, dim, encoder, device and the options that matter."""
    options, preprocess, decoded = run.options, run.preprocess, run.decoded
    metadata = {
        "id_column": options.id_column,
        "id_type": str(run.scan.ids.type),
        "dim": int(dim),
        "count": int(count),
        "encoder": run.identity,
        "model": _model_metadata(options, run.identity, preprocess),
        "device": run.device,
        "shard_size": options.shard_size,
        "truncated_texts": run.truncated,
        **options.metadata(),
    }
    if preprocess is not None:
        metadata["preprocess"] = preprocess
    if decoded:  # images: how many this run decoded with Pillow (cpu) and with nvJPEG (gpu)
        metadata["decoded"] = {"cpu": int(decoded.get("cpu", 0)), "gpu": int(decoded.get("gpu", 0))}
    return metadata


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

    def __init__(self, path: Path, id_name: str, id_type: pa.DataType, images: bool) -> None:
        fields = [(id_name, id_type), ("key", pa.binary(src.KEY_BYTES)), ("row", pa.int64())]
        if images:
            fields += [("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())]
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.images = images

    def write(self, scan: Scan, start: int, stop: int, rows: np.ndarray) -> None:
        columns = [scan.ids.slice(start, stop - start), src.keys_to_arrow(scan.keys[start:stop]), pa.array(rows)]
        if self.images:  # (a scan of images has them; what None.slice and None[...] raised)
            if scan.paths is None:
                raise AttributeError("'NoneType' object has no attribute 'slice'")
            if scan.sizes is None or scan.mtimes is None:
                raise TypeError("'NoneType' object is not subscriptable")
            columns += [scan.paths.slice(start, stop - start), pa.array(scan.sizes[start:stop]), pa.array(scan.mtimes[start:stop])]
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def clean_work(store: ArtifactStore, name: str) -> None:
    shutil.rmtree(store.work_path("embeddings", name), ignore_errors=True)
