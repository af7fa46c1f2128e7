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
