"""Content fingerprints: files, JSON-able values, library versions."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

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
    """Content hash of only these columns of these tables (values and row order), so that an edit
    to a column a stage does not read (an item's description, for the item workflow) leaves it up
    to date. None when a column cannot be hashed by value (nested values): the caller then keeps
    whole-file hashes. pandas' hash_pandas_object is the value hash (stable, null-aware); Arrow
    buffers cannot be hashed directly, as the bytes under nulls are undefined."""
    import pandas as pd

    from embedtab import tables

    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        for column in sorted(set(columns)):
            values = tables.read_column(path, column)
            try:
                hashed = pd.util.hash_pandas_object(values.to_pandas(), index=False).to_numpy()
            except TypeError:  # lists or dicts in the column
                return None
            digest.update(canonical_json([path.name, column, str(values.type), len(values)]).encode())
            digest.update(hashed.tobytes())
    return digest.hexdigest()
