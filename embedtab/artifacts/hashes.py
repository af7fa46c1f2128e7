"""The stat-keyed sha256 cache of an artifact directory (.cache/sha256.json)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path


def _sha256_file(path: Path) -> str:
    # Looked up on the package at call time, not imported: tests count the files hashed by
    # replacing `embedtab.artifacts.sha256_file`.
    return sys.modules[__package__].sha256_file(path)


class HashCache:
    """sha256 of files by their stat, kept in the artifact directory across processes.

    Checking an artifact before use hashed every byte of it each time (1.3 s for 2 GB of
    embeddings, as long as reading them). A file whose device, inode, size, mtime and ctime are
    unchanged since it was hashed keeps its hash -- git trusts its index the same way. Any write
    through the file system changes ctime (which no user call can set back), so edits, copies
    over it and truncation are still caught; `embedtab status --verify` re-reads every byte.
    Like git's "racy" check, a hash taken within a second of the file's last change is not
    trusted later (timestamps are coarse); the cache is advisory: a lost or broken cache file
    only means hashing again.
    """

    RACY_NS = 1_000_000_000
    LIMIT = 50_000  # entries kept (most recently used)

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] | None = None
        self.dirty = False
        self._lock = threading.Lock()  # outputs are hashed on several threads (prepare)

    @staticmethod
    def _key(info: os.stat_result) -> str:
        return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"

    def _load(self) -> dict[str, list]:  # (called with the lock held)
        if self.entries is None:
            try:
                loaded = json.loads(self.path.read_text())
                self.entries = {k: v for k, v in loaded.items() if isinstance(v, list) and len(v) == 2} if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        return self.entries

    def sha256(self, path: Path, rehash: bool = False) -> str:
        info = path.stat()
        key = self._key(info)
        with self._lock:
            entries = self._load()
            hit = entries.pop(key, None)
            if hit is not None and not rehash and hit[1] - info.st_ctime_ns >= self.RACY_NS:
                entries[key] = hit  # (re-inserted: most recently used last)
                return hit[0]
        digest = _sha256_file(path)  # (outside the lock: files are hashed in parallel)
        with self._lock:
            entries[key] = [digest, time.time_ns()]
            self.dirty = True
        return digest

    def save(self) -> None:
        """Write the cache (merged with what other processes saved meanwhile); never raises."""
        with self._lock:
            self._save()

    def _save(self) -> None:
        if not self.dirty or self.entries is None or not self.path.parent.parent.is_dir():
            return
        try:
            self.path.parent.mkdir(exist_ok=True)
            try:
                on_disk = json.loads(self.path.read_text())
                merged = {**(on_disk if isinstance(on_disk, dict) else {}), **self.entries}
            except (OSError, ValueError):
                merged = dict(self.entries)
            merged = dict(list(merged.items())[-self.LIMIT :])
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(json.dumps(merged, separators=(",", ":")))
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            pass  # a read-only or full disk: hashing again next time is the only cost
