"""reduce's transform: an embeddings artifact projected part by part into a staging folder (one
output part per source part), from the rows the fit kept in memory and by reading the others.

The projection is computed in blocks of BLOCK rows counted from each part's first row, with
single-threaded BLAS: a row's result then never depends on how the rows were read (kept from
the fit or read again, row group sizes) or on the number of cores. Multi-threaded BLAS splits a
product by thread count, and some CPU kernels (OpenBLAS's Prescott) round a row differently by
its place in the block, so anything else moves the last bits (measured: 52 % of values up to
5e-5 apart between 1 and 2 BLAS threads on Prescott).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import EMBEDDINGS_INFO, PARQUET_SUMMARY, ArtifactRecord, ArtifactStore
from embedtab.device import to_numpy
from embedtab.errors import DataError
from embedtab.reduce.fit import Kept
from embedtab.reduce.pca import Projection, shift_into
from embedtab.reduce.rows import Finite, Scratch, computers, id_column, readers
from embedtab.reporting import Reporter

BLOCK = tables.ROW_GROUP


def _blocks(batches: Iterator[tuple[pa.Array, np.ndarray, Path]]) -> Iterator[tuple[pa.Array, np.ndarray, Path]]:
    """The batches regrouped into BLOCK rows from each part's start (the last of a part shorter).
    Parts written by embedtab have row groups of BLOCK rows: those pass through without a copy."""
    pending: list[tuple[pa.Array, np.ndarray]] = []
    held = 0
    current: Path | None = None

    def flush(rows: int) -> tuple[pa.Array, np.ndarray, Path]:
        nonlocal pending, held
        ids = pa.concat_arrays([i for i, _ in pending]) if len(pending) > 1 else pending[0][0]
        x = np.concatenate([v for _, v in pending]) if len(pending) > 1 else pending[0][1]
        pending = [(ids.slice(rows), x[rows:])] if rows < len(x) else []
        held = len(x) - rows
        if current is None:  # (unreachable: rows are held only after a batch set `current`)
            raise RuntimeError("reduce: rows held before any part was read")
        return ids.slice(0, rows), x[:rows], current

    for ids, x, path in batches:
        if not len(x):
            continue
        if path != current and held:
            yield flush(held)
        current = path
        if not held and len(x) == BLOCK:
            yield ids, x, path
            continue
        pending.append((ids, x))
        held += len(x)
        while held >= BLOCK:
            yield flush(BLOCK)
    if held:
        yield flush(held)


def _kept_blocks(kept: Kept | None) -> Iterator[tuple[pa.Array, Any, Path, bool]]:
    """The rows the fit kept, already shifted, in blocks of BLOCK rows from each part's start."""
    if kept is None:
        return
    for path, start, count, ids in kept.parts:
        for at in range(0, count, BLOCK):
            rows = kept.rows[start + at : start + min(at + BLOCK, count)]
            yield ids.slice(at, len(rows)), rows, path, True


def _read_blocks(
    store: ArtifactStore, source: ArtifactRecord, input_dim: int, xp: Any, done: set[Path]
) -> Iterator[tuple[pa.Array, Any, Path, bool]]:
    """The parts the fit did not keep, read again, in the same blocks as the kept ones."""
    remaining = [p for p in tables.part_files(store.path(source.kind, source.name)) if p not in done]
    batches = tables.iter_embeddings(remaining, id_column(source), workers=readers(xp) if xp is np else None)
    for ids, x, path in _blocks(batches):
        if x.shape[1] != input_dim:
            raise DataError(f"embeddings {source.name!r} have {x.shape[1]} dims; the projection expects {input_dim}")
        yield ids, x, path, False


def project_parts(
    store: ArtifactStore,
    source: ArtifactRecord,
    projection: Projection,
    staging: Path,
    xp: Any,
    kept: Kept | None,
    reporter: Reporter,
    reuse: Callable[[pa.Array, np.ndarray], np.ndarray] | None = None,
) -> int:
    """Project the source into staging, one output part per source part: the parts the fit kept
    from memory, the others read again; both in the same blocks (see BLOCK). `reuse` puts back
    earlier vectors of unchanged items (update.py). Returns the rows."""
    finite = Finite(source.name)
    writer = tables.PartWriter(staging, id_column(source))
    done = {path for path, *_ in kept.parts} if kept is not None else set()
    reference = xp.asarray(projection.reference)
    scratch = Scratch(xp, projection.input_dim)

    def project(block: tuple[pa.Array, Any, Path, bool]) -> tuple[pa.Array, np.ndarray, Path, Any]:
        ids, x, path, shifted = block
        rows = x
        if not shifted:
            rows = scratch.get(len(x))
            shift_into(x, reference, rows, xp)
        out = projection.transform(rows, xp, shifted=True)
        return ids, to_numpy(out), path, None if shifted or bool(xp.isfinite(out).all()) else x

    def projected(blocks: Iterator, workers: int) -> Iterator:
        if xp is not np:
            yield from map(project, blocks)
            return
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            yield from (map(project, blocks) if workers == 1 else tables.ordered_map(project, blocks, workers=workers, ahead=workers))

    try:
        with reporter.progress("projecting", total=source.rows(prefix=tables.PART_PREFIX), unit="rows") as advance:
            # Kept blocks on every core; read ones on the cores the readers leave (one on 2 cores,
            # where one thread computing in order kept up with one reader: more was slower).
            threads = computers()
            read = _read_blocks(store, source, projection.input_dim, xp, done)
            for blocks, workers in ((_kept_blocks(kept), threads), (read, max(1, min(threads, (os.cpu_count() or 1) - readers(xp))))):
                for ids, out, path, suspect in projected(blocks, workers):
                    if suspect is not None:
                        finite.check(ids, suspect)
                    writer.write(path, ids, reuse(ids, out) if reuse is not None else out)
                    advance(len(ids))
    finally:
        writer.close()
    finite.raise_if_bad()
    if writer.rows == 0:
        raise DataError(f"embeddings {source.name!r} have no rows")
    return writer.rows


def embeddings_meta(source: ArtifactRecord, projection_name: str, projection: Projection) -> dict[str, Any]:
    """The metadata of the reduced embeddings artifact (also written beside its parts)."""
    return {
        "id_column": id_column(source),
        "id_type": source.metadata.get("id_type"),
        "dim": projection.dims,
        "projection": projection_name,
        "normalize": projection.normalize,
        "explained_variance_ratio_total": round(float(projection.explained_variance_ratio.sum()), 6),
        "source": source.name,
        "source_encoder": source.metadata.get("encoder"),  # what an update checks before reusing a vector
    }


def write_sidecars(staging: Path, meta: dict[str, Any]) -> None:
    """The embeddings' info file and parquet summary, as encode writes them, so readers of
    embeddings artifacts read reduced ones the same way."""
    (staging / EMBEDDINGS_INFO).write_text(json.dumps(meta, indent=2))
    tables.write_summary(staging, tables.part_files(staging), PARQUET_SUMMARY)
