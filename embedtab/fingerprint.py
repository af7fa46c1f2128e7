"""Content fingerprints: files, JSON-able values, library versions."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    """Stable JSON text: sorted keys, no whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def hash_value(value: Any) -> str:
    return sha256_bytes(canonical_json(value).encode())


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size, mtime and sha256 of one input file (the sha256 decides; the rest helps humans)."""
    stat = os.stat(path)
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256_file(path),
    }


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    return [file_fingerprint(p) for p in sorted(str(p) for p in paths)]


def library_versions(packages: Iterable[str]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def directory_files(root: Path) -> list[Path]:
    """Every regular file under root, relative to root, sorted."""
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def columns_fingerprint(paths: Iterable[str | os.PathLike], columns: Iterable[str]) -> str | None:
    """Content hash of only these columns of these tables (values, nulls and row order), so that
    an edit to a column a stage does not read (an item's description, for the item workflow)
    leaves it up to date. None when a column holds values hashed no such way (nested lists or
    structs): the caller then keeps whole-file hashes."""
    from embedtab import tables

    digest = hashlib.sha256()
    columns = sorted(set(columns))
    for path in sorted(Path(p) for p in paths):
        if not columns:  # nothing of this table is hashed
            continue
        table = tables.read_columns(path, columns)
        for column in columns:
            values = table.column(column)
            digest.update(canonical_json([path.name, column, str(values.type), len(values)]).encode())
            for chunk in values.chunks:
                if not _hash_values(chunk, digest):
                    return None
    return digest.hexdigest()


def _hash_values(chunk: Any, digest: Any) -> bool:
    """Feed one Arrow array to the digest by value. The bytes Arrow keeps under null slots are
    undefined, so nulls are hashed as a mask and their slots filled first (by hand: Arrow has no
    stable value hash to call; pandas' hash_pandas_object is several times slower here)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = chunk.type
    if pa.types.is_dictionary(kind):
        chunk, kind = chunk.cast(kind.value_type), kind.value_type
    if chunk.null_count:
        digest.update(np.packbits(chunk.is_null().to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        filled = pc.fill_null(chunk, pa.scalar("" if "string" in str(kind) else b"", kind)) if chunk.null_count else chunk
        filled = filled.cast(pa.large_binary())
        offsets = np.frombuffer(filled.buffers()[1], np.int64)[filled.offset : filled.offset + len(filled) + 1]
        digest.update(np.diff(offsets).tobytes())
        if len(offsets) and filled.buffers()[2] is not None:
            digest.update(memoryview(filled.buffers()[2])[int(offsets[0]) : int(offsets[-1])])
        return True
    if pa.types.is_temporal(kind):  # dates and times hash as their integer storage
        kind = pa.int32() if kind.bit_width == 32 else pa.int64()
        chunk = chunk.view(kind)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        filled = pc.fill_null(chunk, pa.scalar(False if pa.types.is_boolean(kind) else 0, kind)) if chunk.null_count else chunk
        digest.update(np.ascontiguousarray(filled.to_numpy(zero_copy_only=False)).tobytes())
        return True
    return False
