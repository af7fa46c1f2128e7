"""Resumable encoding work: distinct contents to encode, split into shards that are published one
by one, then assembled into the final artifact.

    work/embeddings/<name>/<key>/           key = inputs + encoder identity + reused artifact
        plan.json                           how many work shards, of what size
        shard-00003.npy                     float32 vectors of work shard 3 (atomic rename)
        shard-00003.errors.parquet          contents of shard 3 that could not be decoded
        shard-00003.json                    the record: rows, sha256 of the .npy; written last
        previous.npy                        vectors of the artifact being updated (for reuse)

A shard whose record exists is done: a rerun after a crash, a kill or Ctrl-C skips it, and
several machines (`--shard i/n`) can fill one work directory.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab.artifacts.layout import work_shard_name
from embedtab.encode.inputs import ROWS, default_workers
from embedtab.errors import DataError, IntegrityError
from embedtab.fingerprint import sha256_file

if TYPE_CHECKING:
    from embedtab.encode import sources as src
    from embedtab.encode.options import EncodeOptions


def _atomic_write_bytes(path: Path, writer) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save(path) would append ".npy" to the temporary name
        np.save(handle, np.ascontiguousarray(array, np.float32))


@dataclass
class WorkDir:
    path: Path
    shards: int
    shard_size: int
    total: int  # distinct contents to encode

    @classmethod
    def open(cls, path: Path, total: int, shard_size: int) -> "WorkDir":
        path.mkdir(parents=True, exist_ok=True)
        shards = (total + shard_size - 1) // shard_size
        plan = {"total": total, "shard_size": shard_size, "shards": shards}
        plan_file = path / "plan.json"
        if plan_file.exists():
            if json.loads(plan_file.read_text()) != plan:
                raise DataError(f"{path} holds work for another plan; remove it or pass --force")
        else:
            _atomic_write_bytes(plan_file, lambda p: p.write_text(json.dumps(plan)))
        return cls(path, shards, shard_size, total)

    def bounds(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.total)

    def _name(self, shard: int, suffix: str) -> Path:
        return self.path / work_shard_name(shard, suffix)

    def is_done(self, shard: int) -> bool:
        return self._name(shard, ".json").exists()

    def missing(self) -> list[int]:
        return [s for s in range(self.shards) if not self.is_done(s)]

    def save(self, shard: int, vectors: np.ndarray, errors: list[tuple[int, str]]) -> None:
        """Publish one shard: vectors and errors first, the record last (the record means done)."""
        start, stop = self.bounds(shard)
        assert vectors.shape[0] == stop - start
        vec_file, err_file = self._name(shard, ".npy"), self._name(shard, ".errors.parquet")
        _atomic_write_bytes(vec_file, lambda p: _save_npy(p, vectors))
        table = pa.table({"work_index": pa.array([e[0] for e in errors], pa.int64()),
                          "reason": pa.array([e[1] for e in errors], pa.string())})
        _atomic_write_bytes(err_file, lambda p: pq.write_table(table, p))
        record = {"shard": shard, "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
                  "errors": len(errors), "sha256": sha256_file(vec_file)}
        _atomic_write_bytes(self._name(shard, ".json"), lambda p: p.write_text(json.dumps(record)))

    def record(self, shard: int) -> dict[str, Any]:
        return json.loads(self._name(shard, ".json").read_text())

    def verify(self) -> int:
        """Check every shard against its record (files may have crossed machines); return the dim."""
        dims = set()
        for shard in range(self.shards):
            record = self.record(shard)
            vec_file = self._name(shard, ".npy")
            if not vec_file.exists() or sha256_file(vec_file) != record["sha256"]:
                raise IntegrityError(f"{vec_file} is missing or differs from its record; re-run that shard")
            dims.add(record["dim"])
        if len(dims) > 1:
            raise IntegrityError(f"work shards in {self.path} disagree on the embedding dim: {sorted(dims)}")
        return dims.pop() if dims else 0

    def vectors(self, shard: int) -> np.ndarray:
        return np.load(self._name(shard, ".npy"), mmap_mode="r")

    def errors(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for shard in range(self.shards):
            table = pq.read_table(self._name(shard, ".errors.parquet"))
            found.update(zip(table.column("work_index").to_pylist(), table.column("reason").to_pylist()))
        return found


def copy_previous_vectors(parts: list[Path], target: Path, rows: int, dim: int) -> Path:
    """Stream the previous artifact's vectors into one .npy (row = its index row) for random reuse."""
    from embedtab import tables

    if target.exists():
        existing = np.load(target, mmap_mode="r")
        if existing.shape == (rows, dim):
            return target
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
    try:
        tables.read_vectors(parts, out=out)
        out.flush()
        del out
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, DataError):
            raise DataError(f"the previous artifact does not match its index: {exc}") from None
        raise
    os.replace(tmp, target)
    return target


# ----------------------------------------------------------------------------- doing the work
def stream_work_values(source: src.Source, positions: np.ndarray, shards: list[int], work: WorkDir, rows: int):
    """Yield (shard, values) for the given work shards, streaming the input once, in order."""
    wanted: dict[int, tuple[int, int]] = {}
    for shard in shards:
        start, stop = work.bounds(shard)
        for j in range(start, stop):
            wanted[int(positions[j])] = (shard, j - start)
    pending: dict[int, list] = {}
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


def do_work(source, options, scan, worklist, work, shards, backend, reporter) -> tuple[int, int]:
    decode_errors = truncated = 0
    todo_items = sum(work.bounds(s)[1] - work.bounds(s)[0] for s in shards)
    rows = ROWS[source.modality]
    if rows.keeps_files:  # image paths are in the scan: every shard is known up front, one loader runs them all
        values = [(shard, scan.paths.take(pa.array(worklist.positions[slice(*work.bounds(shard))]))) for shard in shards]
    else:  # texts are not kept in memory: streamed from the input, shard by shard
        values = stream_work_values(source, worklist.positions, shards, work, options.shard_size)
    with reporter.progress(f"encoding {rows.plural}", total=todo_items, unit=rows.plural) as advance:
        for shard, (vectors, errors, cut) in rows.encode_shards(backend, values, _workers(options, backend.settings.device), advance):
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


def _workers(options: EncodeOptions, device: str = "cpu") -> int:
    workers = getattr(options, "workers", None)
    return default_workers(device) if workers is None else workers


def check_budget(errors: int, options: EncodeOptions) -> None:
    if options.max_errors is not None and errors > options.max_errors:
        raise DataError(f"{errors} items cannot be encoded, more than --max-errors {options.max_errors}; nothing was published")
