"""Phase 3, work: encode the distinct new contents in this process, shard by shard, publishing each
work shard into the work folder (workdir.py) as soon as it is done. distributed.py does the same
with each shard a task on a Dask cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from embedtab.encode.inputs import ROWS, default_workers
from embedtab.encode.workdir import WorkDir  # (at run time: `work.WorkDir` is where it always was)
from embedtab.errors import DataError

if TYPE_CHECKING:
    from embedtab.encode import sources as src
    from embedtab.encode.options import EncodeOptions
    from embedtab.encode.protocol import Encoder
    from embedtab.encode.run import EncodeRun


def stream_work_values(
    source: src.Source, positions: np.ndarray, shards: list[int], work: WorkDir, rows: int
) -> Iterator[tuple[int, list[Any]]]:
    """Yield (shard, values) for the given work shards, streaming the input once, in order."""
    wanted: dict[int, tuple[int, int]] = {}
    for shard in shards:
        start, stop = work.bounds(shard)
        for j in range(start, stop):
            wanted[int(positions[j])] = (shard, j - start)
    pending: dict[int, list[Any]] = {}
    remaining = {shard: work.bounds(shard)[1] - work.bounds(shard)[0] for shard in shards}
    position = 0
    for _, values in source.batches(rows):
        for value in values:
            hit = wanted.get(position)
            position += 1
            if hit is None:
                continue
            shard, offset = hit
            pending.setdefault(shard, [None] * remaining[shard])[offset] = value
            remaining[shard] -= 1
            if remaining[shard] == 0:
                yield shard, pending.pop(shard)
    if pending:
        raise DataError("the inputs changed while encoding (items vanished); re-run")


def _image_paths(run: EncodeRun) -> pa.Array:
    """The scan's file paths (a scan of images keeps them)."""
    if run.scan.paths is None:  # (what None.take raised)
        raise AttributeError("'NoneType' object has no attribute 'take'")
    return run.scan.paths


def do_work(run: EncodeRun, shards: list[int], backend: Encoder) -> tuple[int, int]:
    """Encode these work shards in this process with the loaded encoder, publishing each one.
    Returns (items that could not be decoded, texts the model truncated)."""
    options, scan, worklist, work = run.options, run.scan, run.worklist, run.work
    decode_errors = truncated = 0
    todo_items = sum(work.bounds(s)[1] - work.bounds(s)[0] for s in shards)
    rows = ROWS[run.source.modality]
    values: Any
    if rows.keeps_files:  # image paths are in the scan: every shard is known up front, one loader runs them all
        values = [(shard, _image_paths(run).take(pa.array(worklist.positions[slice(*work.bounds(shard))]))) for shard in shards]
    else:  # texts are not kept in memory: streamed from the input, shard by shard
        values = stream_work_values(run.source, worklist.positions, shards, work, options.shard_size)
    workers = _workers(run.workers, backend.settings.device)
    with run.reporter.progress(f"encoding {rows.plural}", total=todo_items, unit=rows.plural) as advance:
        for shard, (vectors, errors, cut) in rows.encode_shards(backend, values, workers, advance, decoded=run.decoded):
            start = work.bounds(shard)[0]
            errors = [(start + i, reason) for i, reason in errors]
            if errors and options.on_error == "fail":
                position = int(worklist.positions[errors[0][0]])
                value = scan.paths[position].as_py() if scan.paths is not None else ""
                raise DataError(f"{options.id_column}={scan.ids[position].as_py()}: {value}: {errors[0][1]}")
            work.save(shard, vectors, errors)
            decode_errors += len(errors)
            truncated += cut
            check_budget(len(scan.problems) + decode_errors, options)
    return decode_errors, truncated


def _workers(asked: int | None, device: str = "cpu") -> int:
    """Image decoding processes: as asked, else the default for the device."""
    return default_workers(device) if asked is None else asked


def check_budget(errors: int, options: EncodeOptions) -> None:
    """Stop (nothing published) once more items failed than `max_errors` allows."""
    if options.max_errors is not None and errors > options.max_errors:
        raise DataError(f"{errors} items cannot be encoded, more than --max-errors {options.max_errors}; nothing was published")
