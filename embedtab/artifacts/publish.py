"""Staging and atomic publication, and recovery of publications a crashed writer left half done.

A stage writes into a private staging folder; `prepare` records every file of it; `commit`
records the publication as pending in the manifest, renames the staging folder onto the
artifact's path (the previous version into the trash) and promotes the record. A crash at any
point leaves either the old artifact or the new one, and the next writer (`recover`, with the
lock held) finishes or rolls back the pending step -- a group of artifacts published together
whole. What dead writers leave behind (staging folders, trash, half-written manifests) is
`debris`, which the next writer removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from embedtab.artifacts.hashes import HashCache
from embedtab.artifacts.layout import MANIFEST, STAGING, artifact_path
from embedtab.artifacts.locks import dead_owner, owner_tag
from embedtab.artifacts.manifest import ArtifactRecord, Manifest, OutputFile, PendingPublish, fsync_dir, now_iso
from embedtab.artifacts.plan import Plan
from embedtab.fingerprint import directory_files, hash_value, library_versions

Move = tuple[Path, Path, Path]  # (the artifact's path, its staging folder, where its previous version goes)


def _rename(src: Path, dst: Path) -> None:
    # Looked up on the package at call time, not imported: tests replace `embedtab.artifacts._rename`
    # to simulate a crash between the steps of a publication.
    sys.modules[__package__]._rename(src, dst)


@contextlib.contextmanager
def staging_folder(root: Path, kind: str, name: str) -> Iterator[Path]:
    """A fresh private folder under <root>/.staging, named after its writer; removed on leaving."""
    staging_root = root / STAGING
    staging_root.mkdir(parents=True, exist_ok=True)
    path = staging_root / f"{kind}.{name}{owner_tag()}{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def prepare(
    plan: Plan,
    staging: Path,
    hashes: HashCache,
    metadata: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    device: str = "cpu",
) -> ArtifactRecord:
    """The record of a finished staging folder (every file hashed); nothing is moved yet."""
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
        outputs = list(pool.map(lambda rel: _describe(staging, rel, hashes.sha256), directory_files(staging)))
    hashes.save()
    finished = time.time()
    return ArtifactRecord(
        kind=plan.kind,
        name=plan.name,
        stage=plan.stage,
        params=plan.params,
        inputs=plan.inputs,
        input_fingerprint=plan.input_fingerprint,
        outputs=outputs,
        fingerprint=hash_value([(o.path, o.sha256) for o in outputs]),
        metadata=metadata or {},
        summary=summary or {},
        versions=library_versions(("embedtab",) + plan.packages),
        device=device,
        started_at=now_iso(plan.started),
        finished_at=now_iso(finished),
        duration_s=round(finished - plan.started, 3),
    )


def _describe(root: Path, rel: Path, sha256: Callable[[Path], str]) -> OutputFile:
    path = root / rel
    return OutputFile(path=str(rel), bytes=path.stat().st_size, sha256=sha256(path), rows=_row_count(path))


def _row_count(path: Path) -> int | None:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    if path.suffix == ".npy":
        import numpy as np

        return int(np.load(path, mmap_mode="r").shape[0])
    return None


def mark_pending(root: Path, manifest: Manifest, items: list[tuple[ArtifactRecord, Path]]) -> list[Move]:
    """Record the publication of `items` as pending in `manifest` (as one group when there are
    several: all of them or none); returns the moves to make once that is written."""
    group = uuid.uuid4().hex[:12] if len(items) > 1 else None
    moves = []
    for record, staging in items:
        trash = root / STAGING / f"trash.{uuid.uuid4().hex[:12]}"
        manifest.pending[record.key] = PendingPublish(
            record=record,
            staging=str(staging.relative_to(root)),
            trash=str(trash.relative_to(root)),
            group=group,
        )
        moves.append((artifact_path(root, record.kind, record.name), staging, trash))
    return moves


def move_into_place(moves: list[Move]) -> None:
    for target, staging, trash in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            _rename(target, trash)
        _rename(staging, target)
        fsync_dir(target.parent)


def finish(root: Path, manifest: Manifest, keys: list[str], write: Callable[[Manifest], None]) -> None:
    """Promote the pending records of `keys` (moved into place) and empty their trash."""
    pendings = [manifest.pending.pop(key) for key in keys]
    for pending in pendings:
        manifest.artifacts[pending.record.key] = pending.record
    write(manifest)
    for pending in pendings:
        shutil.rmtree(root / pending.trash, ignore_errors=True)


def recover(root: Path, manifest: Manifest, write: Callable[[Manifest], None], finish: Callable[[Manifest, list[str]], None]) -> None:
    """Finish or roll back publications a crashed writer left pending (lock held). A group is
    rolled back whole if any member had not moved into place yet, else finished whole."""
    groups: dict[str, list[str]] = {}
    for key, pending in manifest.pending.items():
        groups.setdefault(pending.group or key, []).append(key)
    for keys in groups.values():
        members = [manifest.pending[k] for k in keys]
        if any((root / m.staging).exists() for m in members):
            for member in members:
                _roll_back(root, member)
            for key in keys:
                manifest.pending.pop(key)
            write(manifest)
        else:
            finish(manifest, keys)


def _roll_back(root: Path, pending: PendingPublish) -> None:
    staging, trash = root / pending.staging, root / pending.trash
    target = artifact_path(root, pending.record.kind, pending.record.name)
    if not staging.exists() and target.exists():
        # This member had moved into place: take it out again.
        shutil.rmtree(target, ignore_errors=True)
    if trash.exists() and not target.exists():
        _rename(trash, target)  # the previous version back
    shutil.rmtree(staging, ignore_errors=True)


def debris(root: Path, read_manifest: Callable[[], Manifest]) -> list[Path]:
    """What writers that died left behind: their staging folders, publication trash that no
    pending publication needs, half-written manifests. Only called with the lock held, or to count."""
    staging_root = root / STAGING
    found = [p for p in root.glob(f".{MANIFEST}.*.tmp")]
    if not staging_root.is_dir():
        return found
    needed = set()
    if (root / MANIFEST).exists():
        needed = {Path(p.trash).name for p in read_manifest().pending.values()}
    for entry in staging_root.iterdir():
        if entry.name.startswith("trash.") and entry.name not in needed:
            found.append(entry)
        elif dead_owner(entry.name):
            found.append(entry)
    return found


def reclaim(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def size_of(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(f.stat().st_size for f in files)
    return total
