"""The work folder of a resumable encode: the distinct contents to encode, split into shards that
are published one by one (work.py and distributed.py fill them, seal.py assembles them).

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab.artifacts.layout import work_shard_name
from embedtab.errors import DataError, IntegrityError
from embedtab.fingerprint import sha256_file


def _atomic_write_bytes(path: Path, writer: Callable[[Path], Any]) -> None:
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
    def open(cls, path: Path, total: int, shard_size: int) -> WorkDir:
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
        table = pa.table(
            {"work_index": pa.array([e[0] for e in errors], pa.int64()), "reason": pa.array([e[1] for e in errors], pa.string())}
        )
        _atomic_write_bytes(err_file, lambda p: pq.write_table(table, p))
        record = {
            "shard": shard,
            "rows": int(vectors.shape[0]),
            "dim": int(vectors.shape[1]),
            "errors": len(errors),
            "sha256": sha256_file(vec_file),
        }
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
