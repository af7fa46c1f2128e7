"""Encode work shards as tasks on an existing Dask `distributed` cluster.

The client (the `embedtab encode` process) plans exactly as a local run does, streams each
missing work shard's texts or image paths to a task, and seals the artifact when every shard is
done. Each task encodes one shard on its worker -- which loads the model once and keeps it for
the following tasks -- and publishes it into the artifact's work folder with the same `WorkDir`
code as a local run. So workers must see the artifact directory and the inputs at the same
paths (a shared filesystem), resume after a lost worker or client is the local resume, and the
sealed artifact is the one a local run makes.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtab.device import torch_device
from embedtab.encode.encoders import resolve
from embedtab.encode.inputs import ROWS, default_workers
from embedtab.encode.protocol import Settings
from embedtab.encode.work import check_budget, stream_work_values
from embedtab.encode.workdir import WorkDir
from embedtab.errors import DataError, EmbedtabError, UsageError

if TYPE_CHECKING:
    from embedtab.encode.run import EncodeRun

_ENCODERS: dict[tuple[str, str, Settings], Any] = {}  # per worker process: the loaded model, reused by every task


@dataclass(frozen=True)
class ShardTask:
    """What a worker needs to encode one work shard (picklable, small)."""

    encoder: str  # registered name: the worker resolves it in its own registry
    model: str
    settings: Settings
    workers: int | None  # image decoding processes
    work_path: str
    shards: int
    shard_size: int
    total: int


def connect(address: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--dask-scheduler needs the distributed package: pip install 'embedtab[dask]'") from None
    try:
        return Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def worker_device(requested: str) -> str:
    """The device 'auto' means on a worker (a dask-cuda worker sees its own GPU as cuda:0)."""
    return torch_device(requested)


def _encoder(task: ShardTask) -> Any:
    key = (task.encoder, task.model, task.settings)
    if key not in _ENCODERS:
        _ENCODERS[key] = resolve(task.encoder, task.model, task.settings.inputs)(task.model, task.settings)
    return _ENCODERS[key]


def encode_shard(task: ShardTask, shard: int, values: list[Any]) -> tuple[int, int, list[tuple[int, str]], int]:
    """Runs on a worker: encode one shard and publish it. Returns (shard, rows, errors, truncated)."""
    encoder = _encoder(task)
    # Dask's worker processes are daemons, which may not start DataLoader workers of their own.
    workers = (
        0 if multiprocessing.current_process().daemon else (default_workers(task.settings.device) if task.workers is None else task.workers)
    )
    vectors, errors, truncated = ROWS[task.settings.inputs].encode(encoder, values, workers, lambda n: None)
    work = WorkDir(Path(task.work_path), task.shards, task.shard_size, task.total)
    start = work.bounds(shard)[0]
    errors = [(start + i, reason) for i, reason in errors]
    work.save(shard, vectors, errors)
    return shard, len(values), errors, truncated


def run_shards(
    client: Any, task: ShardTask, shard_values: Iterator[tuple[int, list[Any]]], advance: Any, in_flight: int
) -> Iterator[tuple[int, list[tuple[int, str]], int]]:
    """Submit the shards (at most `in_flight` waiting at once, so the client never holds the whole
    catalog) and yield (shard, errors, truncated) as they finish. A lost worker's task is rerun by
    the scheduler on another; a task that fails raises here."""
    from distributed import as_completed

    pending = as_completed(loop=client.loop)
    futures: list[Any] = []

    def submit(shard: int, values: list[Any]) -> None:
        # pure=False: a shard is work with a side effect (its files), never a cached result.
        future = client.submit(encode_shard, task, shard, values, pure=False)
        futures.append(future)
        pending.add(future)

    source = iter(shard_values)
    for shard, values in itertools.islice(source, in_flight):
        submit(shard, values)
    try:
        for future in pending:
            try:
                shard, rows, errors, truncated = future.result()
            except Exception as exc:  # noqa: BLE001 - an error on the worker, raised there
                if isinstance(exc, EmbedtabError):
                    raise
                raise DataError(f"a Dask worker failed encoding a shard: {type(exc).__name__}: {exc}") from None
            advance(rows)
            yield shard, errors, truncated
            following = next(source, None)
            if following is not None:
                submit(*following)
    finally:
        for future in futures:
            future.cancel()  # (a no-op for finished ones) an error or Ctrl-C leaves no task running


def do_work_on_dask(client: Any, run: EncodeRun, shards: list[int]) -> tuple[int, int]:
    """`work.do_work` with each shard a task on the cluster. The tasks get a `ShardTask` (what the
    worker needs, picklable), never the run: it holds the store and the reporter."""
    work, options = run.work, run.options
    task = ShardTask(run.encoder.name, run.model, run.settings, run.workers, str(work.path), work.shards, work.shard_size, work.total)
    in_flight = 2 * max(1, len(client.scheduler_info()["workers"]))
    decode_errors = truncated = 0
    todo_items = sum(work.bounds(s)[1] - work.bounds(s)[0] for s in shards)
    what = ROWS[run.source.modality].plural
    with run.reporter.progress(f"encoding {what} on Dask", total=todo_items, unit=what) as advance:
        values = stream_work_values(run.source, run.worklist.positions, shards, work, options.shard_size)
        for _shard, errors, cut in run_shards(client, task, values, advance, in_flight):
            if errors and options.on_error == "fail":
                position = int(run.worklist.positions[errors[0][0]])
                raise DataError(f"{options.id_column}={run.scan.ids[position].as_py()}: {errors[0][1]}")
            decode_errors += len(errors)
            truncated += cut
            check_budget(len(run.scan.problems) + decode_errors, options)
    return decode_errors, truncated
