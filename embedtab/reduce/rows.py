"""How reduce goes through rows, for the fit and the transform alike: the id column, the NaN/inf
check, the threads that read and compute, and the per-thread batch buffers."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import ArtifactRecord
from embedtab.errors import DataError


def id_column(record: ArtifactRecord) -> str:
    """The id column of an embeddings artifact."""
    return record.metadata.get("id_column", "item_id")


class Finite:
    """Counts rows with NaN/inf while streaming; reports the first ids."""

    def __init__(self, name: str):
        self.name, self.bad = name, 0
        self.first: list[Any] = []

    def check(self, ids: pa.Array, x: np.ndarray) -> None:
        self.add(ids, ~np.isfinite(x).all(axis=1))

    def add(self, ids: pa.Array, bad: np.ndarray) -> None:
        """Record the rows flagged in `bad` (a boolean mask over `ids`)."""
        if bad.any():
            self.bad += int(bad.sum())
            self.first.extend(ids.filter(pa.array(bad)).to_pylist()[: 5 - len(self.first)])

    def raise_if_bad(self) -> None:
        if self.bad:
            raise DataError(f"embeddings {self.name!r}: {self.bad} rows hold NaN or inf (ids {self.first}); nothing was written")


def readers(xp: Any) -> int:
    """Threads decoding parquet: every core beside a GPU (up to 8); on the CPU half of them (the rest compute)."""
    return tables.reader_threads() if xp is not np else max(1, tables.reader_threads() // 2)


def computers() -> int:
    """Threads running the fit's BLAS products on the CPU: a core each, up to 8 (each holds a batch
    and a scratch buffer of 32 MB for 512 dims, so memory stays bounded on big machines)."""
    return max(1, min(8, os.cpu_count() or 1))


class Scratch:
    """A float32 batch buffer per thread, reused from batch to batch (no batch-sized temporaries)."""

    def __init__(self, xp: Any, dim: int):
        self.xp, self.dim, self.local = xp, dim, threading.local()

    def get(self, rows: int) -> Any:
        buffer = getattr(self.local, "buffer", None)
        if buffer is None or len(buffer) < rows:
            buffer = self.local.buffer = self.xp.empty((max(rows, tables.ROW_GROUP), self.dim), dtype=self.xp.float32)
        return buffer[:rows]


def in_order(function: Any, items: Iterator, xp: Any) -> Iterator:
    """function(item) for every item, results in order. On the CPU on a thread per core (up to 8),
    each running single-threaded BLAS beside the parquet readers: multi-threaded BLAS calls wait for
    each other between calls (a 1M x 512 Gram product took 4.3 CPU-s on 2 threads, 3.4 on one), and
    the readers take whatever core is free. On a GPU in turn (the device does the work)."""
    if xp is not np:
        yield from map(function, items)
        return
    from threadpoolctl import threadpool_limits

    threads = computers()
    with threadpool_limits(limits=1, user_api="blas"):
        yield from tables.ordered_map(function, items, workers=threads, ahead=threads)
