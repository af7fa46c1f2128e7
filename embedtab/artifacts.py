"""The artifact directory: the one module that knows its layout.

    <root>/
      manifest.json            every artifact: kind, name, params, inputs, outputs (sha256, rows), ...
      .lock                    flock-ed by a writer while it changes manifest.json or publishes
      .staging/                work in progress; a stage writes here and renames into place at the end
      work/<kind>/<name>/<key>/  resumable, shard-by-shard work of a long stage (see encode/work.py)
      embeddings/<name>/       part-*.parquet (id, embedding) + _metadata, _errors.parquet, _index.parquet,
                               _embeddings.json
      projections/<name>/      projection.npz (mean, components, ...) + projection.json
      workflows/<name>/        an NVTabular workflow directory (metadata.json, workflow.pkl, categories/)
      datasets/<name>/         transformed parquet parts + Merlin schema
      lookups/<name>/          table.parquet (cat_id, id, present, embedding) + _embeddings.npy, _lookup.json

Embeddings, lookup and dataset folders are Merlin datasets as they stand: everything beside the
data parts starts with "_" (pyarrow's discovery skips such names) and folders holding parquet
sidecars carry a `_metadata` summary of their parts (Dask reads only the files it lists), so
`merlin.io.Dataset(<folder>)` reads exactly the data rows.

Publishing is atomic: the manifest first records the publication as pending, then the staging
folder is renamed onto the artifact's path, then the record is promoted. A crash at any point
leaves either the old artifact or the new one, and the next writer finishes or rolls back the
pending step (see `_recover`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedtab import __version__
from embedtab.errors import (
    ArtifactExists,
    ArtifactNotFound,
    IntegrityError,
    LockTimeout,
    ManifestError,
    UsageError,
)
from embedtab.fingerprint import directory_files, hash_value, library_versions, sha256_file

FORMAT_VERSION = 1
KINDS = ("embeddings", "projections", "workflows", "datasets", "lookups")
MANIFEST = "manifest.json"
LOCK = ".lock"
STAGING = ".staging"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

# Files beside the data parts of an artifact (see the module docstring for why they start with "_").
PARQUET_SUMMARY = "_metadata"
EMBEDDINGS_INDEX = "_index.parquet"
EMBEDDINGS_ERRORS = "_errors.parquet"
EMBEDDINGS_INFO = "_embeddings.json"
LOOKUP_TABLE = "table.parquet"
LOOKUP_DENSE = "_embeddings.npy"
LOOKUP_INFO = "_lookup.json"
# Names the same files had before 0.2 (merlin.io could not open those folders). Still read; a rerun
# of the producing command rewrites the artifact in the current layout.
LEGACY_NAMES = {
    "embeddings": {EMBEDDINGS_INDEX: "index.parquet", EMBEDDINGS_ERRORS: "errors.parquet", EMBEDDINGS_INFO: "embeddings.json"},
    "lookups": {LOOKUP_DENSE: "embeddings.npy", LOOKUP_INFO: "lookup.json"},
}


def lookup_dense_name(source: str | None = None) -> str:
    """The dense .npy of a lookup: one table, or one per source when several are not concatenated."""
    return LOOKUP_DENSE if source is None else f"_{source}.npy"


def legacy_layout(record: "ArtifactRecord") -> bool:
    """Written before sidecar files moved out of merlin.io's way."""
    old = set(LEGACY_NAMES.get(record.kind, {}).values())
    return any(out.path in old or (record.kind == "lookups" and out.path.endswith(".npy") and not out.path.startswith("_"))
               for out in record.outputs)

# Indirection so tests can simulate a crash between the steps of a publication.
_rename = os.rename


class OutputFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str
    rows: int | None = None


class ArtifactRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    name: str
    stage: str
    status: Literal["complete"] = "complete"
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    input_fingerprint: str
    outputs: list[OutputFile]
    fingerprint: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    device: str = "cpu"
    started_at: str
    finished_at: str
    duration_s: float
    embedtab_version: str = __version__

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def rows(self, suffix: str = ".parquet", prefix: str = "") -> int:
        """Total rows of the output files matching prefix*suffix."""
        return sum(
            f.rows or 0
            for f in self.outputs
            if f.path.endswith(suffix) and Path(f.path).name.startswith(prefix)
        )


class PendingPublish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    record: ArtifactRecord
    staging: str
    trash: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: Literal[1] = FORMAT_VERSION
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)
    pending: dict[str, PendingPublish] = Field(default_factory=dict)


@dataclass
class Plan:
    """What a stage is about to make, decided before any work is done."""

    kind: str
    name: str
    stage: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    input_fingerprint: str
    existing: ArtifactRecord | None
    up_to_date: bool
    started: float = field(default_factory=time.time)
    packages: tuple[str, ...] = ()


def now_iso(ts: float | None = None) -> str:
    moment = _dt.datetime.fromtimestamp(ts if ts is not None else time.time(), _dt.timezone.utc)
    return moment.isoformat(timespec="seconds")


def check_name(name: str, what: str = "artifact name") -> str:
    if not _NAME.match(name or ""):
        raise UsageError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_', '+' or '-' (max 128, no '/')"
        )
    return name


class ArtifactStore:
    def __init__(self, root: str | os.PathLike, lock_timeout: float | None = None):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"artifact directory {self.root} exists and is not a directory")
        if lock_timeout is None:
            lock_timeout = float(os.environ.get("EMBEDTAB_LOCK_TIMEOUT", "600"))
        self.lock_timeout = lock_timeout
        self._lock_fd: int | None = None
        self._lock_depth = 0

    # ----------------------------------------------------------------- layout
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def path(self, kind: str, name: str) -> Path:
        if kind not in KINDS:
            raise ValueError(f"unknown artifact kind {kind!r}")
        return self.root / kind / check_name(name)

    def sidecar(self, record: ArtifactRecord, name: str) -> Path | None:
        """A file beside an artifact's data parts, under its current or its pre-0.2 name; None if absent."""
        base = self.path(record.kind, record.name)
        recorded = {out.path for out in record.outputs}
        for candidate in (name, LEGACY_NAMES.get(record.kind, {}).get(name)):
            if candidate and candidate in recorded:
                return base / candidate
        return None

    def staging_root(self) -> Path:
        return self.root / STAGING

    def work_path(self, kind: str, name: str, key: str | None = None) -> Path:
        """Where a long stage keeps its resumable shards (kept across runs and machines)."""
        base = self.root / "work" / kind / check_name(name)
        return base / key if key else base

    # ------------------------------------------------------------------- lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (flock); re-entrant within one store object."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                        raise LockTimeout(
                            f"{self.root} is locked by another embedtab process (pid {holder}) "
                            f"for more than {self.lock_timeout:.0f}s; wait for it or raise "
                            "EMBEDTAB_LOCK_TIMEOUT"
                        ) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._lock_fd, self._lock_depth = fd, 1
            try:
                self._recover()
                yield
            finally:
                self._lock_fd, self._lock_depth = None, 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # --------------------------------------------------------------- manifest
    def read_manifest(self) -> Manifest:
        path = self.manifest_path
        try:
            text = path.read_text()
        except FileNotFoundError:
            return Manifest()
        except OSError as exc:
            raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}); embedtab will "
                "not touch it: restore it from a backup or move it away to start afresh"
            ) from None
        if isinstance(raw, dict) and raw.get("format_version") not in (None, FORMAT_VERSION):
            raise ManifestError(
                f"{path} has format_version {raw.get('format_version')!r}; this embedtab reads "
                f"version {FORMAT_VERSION}: upgrade embedtab or use another artifact directory"
            )
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ManifestError(
                f"{path} is corrupted ({where or 'top level'}: {first['msg']}); embedtab will not "
                "touch it: restore it from a backup or move it away to start afresh"
            ) from None

    def _write_manifest(self, manifest: Manifest) -> None:
        assert self._lock_depth, "manifest written without the lock"
        tmp = self.root / f".{MANIFEST}.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            handle.write(manifest.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.manifest_path)
        _fsync_dir(self.root)

    def records(self) -> list[ArtifactRecord]:
        return sorted(self.read_manifest().artifacts.values(), key=lambda r: (r.kind, r.name))

    def get(self, kind: str, name: str) -> ArtifactRecord | None:
        return self.read_manifest().artifacts.get(f"{kind}/{name}")

    def require(self, kind: str, name: str) -> ArtifactRecord:
        record = self.get(kind, name)
        if record is None:
            known = sorted(r.name for r in self.records() if r.kind == kind)
            hint = f"; known {kind}: {', '.join(known)}" if known else f"; there are no {kind} yet"
            raise ArtifactNotFound(f"no {kind} artifact named {name!r} in {self.root}{hint}")
        return record

    # ------------------------------------------------------------ integrity
    def missing_outputs(self, record: ArtifactRecord) -> list[str]:
        """Cheap check (existence and size) of a record's files."""
        base = self.path(record.kind, record.name)
        problems = []
        for out in record.outputs:
            file = base / out.path
            if not file.is_file():
                problems.append(f"{out.path} is missing")
            elif file.stat().st_size != out.bytes:
                problems.append(f"{out.path} changed size")
        return problems

    def verify(self, record: ArtifactRecord) -> Path:
        """Full check before trusting an artifact's files: every sha256 matches, nothing extra."""
        base = self.path(record.kind, record.name)
        expected = {o.path: o.sha256 for o in record.outputs}
        present = {str(p) for p in directory_files(base)} if base.is_dir() else set()
        for rel, digest in expected.items():
            if rel not in present:
                raise IntegrityError(f"{record.key}: {rel} is missing from {base}")
            if sha256_file(base / rel) != digest:
                raise IntegrityError(
                    f"{record.key}: {rel} differs from what embedtab wrote (sha256 mismatch); "
                    "refusing to use it"
                )
        extra = sorted(present - set(expected))
        if extra:
            raise IntegrityError(
                f"{record.key}: {base} holds files embedtab did not write: {', '.join(extra[:5])}; "
                "refusing to use it"
            )
        return base

    def upstream_changes(self, record: ArtifactRecord, manifest: Manifest | None = None) -> list[str]:
        """Why a record is stale: upstream artifacts that changed or vanished since it was made."""
        current = (manifest or self.read_manifest()).artifacts
        reasons = []
        for up in record.inputs.get("artifacts", []):
            key = f"{up['kind']}/{up['name']}"
            now = current.get(key)
            if now is None:
                reasons.append(f"{key} no longer exists")
            elif now.fingerprint != up["fingerprint"]:
                reasons.append(f"{key} changed")
        return reasons

    def current(self, record: ArtifactRecord | None, input_fingerprint: str) -> bool:
        """Made from these inputs, every file there, in the current layout (an old one is rewritten)."""
        return (record is not None and record.input_fingerprint == input_fingerprint
                and not self.missing_outputs(record) and not legacy_layout(record))

    # ------------------------------------------------------------- planning
    def plan(
        self,
        kind: str,
        name: str,
        stage: str,
        params: dict[str, Any],
        input_files: list[dict[str, Any]] | None = None,
        input_artifacts: list[ArtifactRecord] | None = None,
        force: bool = False,
        packages: tuple[str, ...] = (),
        content: Any = None,
        refresh: bool = False,
        refresh_ignore: tuple[str, ...] = (),
    ) -> Plan:
        """Decide whether work is needed. `content` is anything else that identifies the inputs.

        Unchanged inputs and intact outputs: up to date. Changed inputs: ArtifactExists unless
        force -- or, for derived artifacts (`refresh`), a rebuild when only upstream data changed
        and the parameters (except `refresh_ignore`) are the same.
        """
        self.path(kind, name)  # validates kind and name
        files = input_files or []
        upstream = [
            {"kind": r.kind, "name": r.name, "fingerprint": r.fingerprint} for r in input_artifacts or []
        ]
        fingerprint = hash_value(
            {
                "stage": stage,
                "params": params,
                "files": sorted(f["sha256"] for f in files),
                "artifacts": [u["fingerprint"] for u in upstream],
                "content": content,
            }
        )
        existing = self.get(kind, name)
        up_to_date = False
        if existing is not None and not self.missing_outputs(existing):
            if existing.input_fingerprint == fingerprint and not force:
                up_to_date = self.current(existing, fingerprint)
            elif not force and not (refresh and _same_recipe(existing.params, params, refresh_ignore)):
                raise ArtifactExists(
                    f"{kind} {name!r} already exists and was made from other inputs or options; "
                    "pass --force to replace it, or choose another --name"
                )
        return Plan(
            kind=kind,
            name=name,
            stage=stage,
            params=params,
            inputs={"files": files, "artifacts": upstream},
            input_fingerprint=fingerprint,
            existing=existing,
            up_to_date=up_to_date,
            packages=packages,
        )

    # ------------------------------------------------------------- staging
    @contextlib.contextmanager
    def staging(self, plan: Plan) -> Iterator[Path]:
        """A fresh private folder inside the artifact dir; removed unless published."""
        root = self.staging_root()
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{plan.kind}.{plan.name}.{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(
        self,
        plan: Plan,
        staging: Path,
        metadata: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> ArtifactRecord:
        """Record every file of `staging` and move it into place atomically."""
        outputs = [_describe(staging, rel) for rel in directory_files(staging)]
        finished = time.time()
        record = ArtifactRecord(
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
        target = self.path(plan.kind, plan.name)
        trash = self.staging_root() / f"trash.{uuid.uuid4().hex[:12]}"
        with self.lock():
            manifest = self.read_manifest()
            manifest.pending[record.key] = PendingPublish(
                record=record,
                staging=str(staging.relative_to(self.root)),
                trash=str(trash.relative_to(self.root)),
            )
            self._write_manifest(manifest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                _rename(target, trash)
            _rename(staging, target)
            _fsync_dir(target.parent)
            self._finish(manifest, record.key)
        return record

    def _finish(self, manifest: Manifest, key: str) -> None:
        pending = manifest.pending.pop(key)
        manifest.artifacts[key] = pending.record
        self._write_manifest(manifest)
        shutil.rmtree(self.root / pending.trash, ignore_errors=True)

    def _recover(self) -> None:
        """Finish or roll back publications a crashed writer left pending (lock held)."""
        if not self.manifest_path.exists():
            return
        manifest = self.read_manifest()
        for key, pending in list(manifest.pending.items()):
            staging, trash = self.root / pending.staging, self.root / pending.trash
            target = self.path(pending.record.kind, pending.record.name)
            if staging.exists():
                # The new folder never moved into place: put the old one back, drop the new one.
                if trash.exists() and not target.exists():
                    _rename(trash, target)
                shutil.rmtree(staging, ignore_errors=True)
                manifest.pending.pop(key)
                self._write_manifest(manifest)
            else:
                self._finish(manifest, key)


def _same_recipe(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...]) -> bool:
    strip = lambda params: {k: v for k, v in params.items() if k not in ignore}  # noqa: E731
    return strip(old) == strip(new)


def _describe(root: Path, rel: Path) -> OutputFile:
    path = root / rel
    return OutputFile(
        path=str(rel), bytes=path.stat().st_size, sha256=sha256_file(path), rows=_row_count(path)
    )


def _row_count(path: Path) -> int | None:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    if path.suffix == ".npy":
        import numpy as np

        return int(np.load(path, mmap_mode="r").shape[0])
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
