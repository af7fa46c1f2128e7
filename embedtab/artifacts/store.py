"""ArtifactStore: one artifact directory, as the stages use it -- a facade over the job modules
(layout, locks, manifest, hashes and integrity, plan, publish), which it composes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from embedtab.artifacts import layout, publish
from embedtab.artifacts.hashes import HashCache
from embedtab.artifacts.integrity import Integrity
from embedtab.artifacts.locks import DirectoryLock, build_lock
from embedtab.artifacts.manifest import ArtifactRecord, Manifest, ManifestFile, upstream_changes
from embedtab.artifacts.plan import Plan, Planner, PlanRequest, RunMode, Unrecorded
from embedtab.errors import ArtifactExists, ArtifactNotFound, UnrecordedArtifact, UsageError


class ArtifactStore:
    def __init__(self, root: str | os.PathLike, lock_timeout: float | None = None):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"artifact directory {self.root} exists and is not a directory")
        if lock_timeout is None:
            from embedtab.bounds import seconds_from_environment

            lock_timeout = seconds_from_environment("EMBEDTAB_LOCK_TIMEOUT", 600.0, 7 * 86400)
        self.lock_timeout = lock_timeout
        self._lock = DirectoryLock(self.root / layout.LOCK)
        self._hashes = HashCache(self.root / layout.HASH_CACHE)
        self._manifest = ManifestFile(self.root)
        self._integrity = Integrity(self.root, self._hashes)
        self._unrecorded = Unrecorded(self.root, self._manifest)
        self._planner = Planner(self.root, self._manifest, self._integrity, self._unrecorded)

    # ----------------------------------------------------------------- layout
    @property
    def manifest_path(self) -> Path:
        return self._manifest.path

    def path(self, kind: str, name: str) -> Path:
        return layout.artifact_path(self.root, kind, name)

    def sidecar(self, record: ArtifactRecord, name: str) -> Path | None:
        """A file beside an artifact's data parts, under its current or its pre-0.2 name; None if absent."""
        base = self.path(record.kind, record.name)
        recorded = {out.path for out in record.outputs}
        return next((base / candidate for candidate in layout.sidecar_names(record.kind, name) if candidate in recorded), None)

    def staging_root(self) -> Path:
        return self.root / layout.STAGING

    def work_path(self, kind: str, name: str, key: str | None = None) -> Path:
        """Where a long stage keeps its resumable shards (kept across runs and machines)."""
        return layout.work_path(self.root, kind, name, key)

    # ------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (flock); re-entrant within one store object. Taking it settles
        what crashed writers left: pending publications, then their debris."""
        with self._lock.hold(self.lock_timeout, on_acquire=self._settle):
            yield

    def _settle(self) -> None:
        self._recover()
        publish.reclaim(self._debris())

    def _debris(self) -> list[Path]:
        return publish.debris(self.root, self.read_manifest)

    def reclaimable_bytes(self) -> int:
        return publish.size_of(self._debris())

    @contextlib.contextmanager
    def building(self, plan: Plan) -> Iterator[ArtifactRecord | None]:
        """Hold the artifact's build lock while making it (the store lock is only held to publish).

        A second run making the same artifact from the same inputs waits, then gets what the first
        one made (yielded: the caller reports it up to date) -- or builds, if the first failed. A
        run from other inputs or options fails at once, naming the run that holds it. And if the
        artifact changed since `plan` was made (another run published in between), this run does
        not write over it unless forced.
        """
        path = layout.build_lock_path(self.root, plan.kind, plan.name)
        with build_lock(path, f"{plan.kind} {plan.name!r}", plan.stage, plan.input_fingerprint, self.lock_timeout) as waited:
            yield self._made_meanwhile(plan, waited)

    def _made_meanwhile(self, plan: Plan, waited: bool) -> ArtifactRecord | None:
        """What another run published of `plan`'s artifact since it was planned, if it is what this
        run would make; None if this run is to build it."""
        now = self.get(plan.kind, plan.name)
        if waited and self.current(now, plan.input_fingerprint):
            return now  # the run we waited for made exactly this
        before = plan.existing.fingerprint if plan.existing else None
        if now is not None and now.fingerprint != before and not plan.force:
            if self.current(now, plan.input_fingerprint):
                return now
            raise ArtifactExists(
                f"{plan.kind} {plan.name!r} was just written by another run from other inputs or options; "
                "nothing was written over it: pass --force to replace it, or choose another --name"
            )
        return None

    # --------------------------------------------------------------- manifest
    def read_manifest(self) -> Manifest:
        return self._manifest.read()

    def _write_manifest(self, manifest: Manifest) -> None:
        assert self._lock.depth, "manifest written without the lock"
        self._manifest.write(manifest)

    def records(self) -> list[ArtifactRecord]:
        return self._manifest.records()

    def get(self, kind: str, name: str) -> ArtifactRecord | None:
        return self._manifest.get(kind, name)

    def require(self, kind: str, name: str) -> ArtifactRecord:
        record = self.get(kind, name)
        if record is None and self.unrecorded_folder(kind, name) is not None:
            raise self._unrecorded_refusal(
                kind, name, "embedtab will not read it: rerun the command that makes it with --force to rebuild it"
            )
        if record is None:
            known = sorted(r.name for r in self.records() if r.kind == kind)
            hint = f"; known {kind}: {', '.join(known)}" if known else f"; there are no {kind} yet"
            raise ArtifactNotFound(f"no {kind} artifact named {name!r} in {self.root}{hint}")
        return record

    def upstream_changes(self, record: ArtifactRecord, manifest: Manifest | None = None) -> list[str]:
        """Why a record is stale: upstream artifacts that changed or vanished since it was made."""
        return upstream_changes(record, (manifest or self.read_manifest()).artifacts)

    # ----------------------------------------------------------- unrecorded
    def unrecorded(self, manifest: Manifest | None = None) -> list[str]:
        """kind/name of every folder in an artifact folder that the manifest has no record of."""
        return self._unrecorded.all(manifest)

    def unrecorded_folder(self, kind: str, name: str) -> Path | None:
        """The artifact's path if something is there that the manifest has no record of."""
        return self._unrecorded.folder(kind, name)

    def _unrecorded_refusal(self, kind: str, name: str, what_now: str) -> UnrecordedArtifact:
        return self._unrecorded.refusal(kind, name, what_now)

    def unfinished_work(self, kind: str = "embeddings") -> dict[str, list[str]]:
        """name -> key folders of resumable work under work/<kind>/ holding a finished work shard."""
        return self._unrecorded.unfinished_work(kind)

    def check_work(self, kind: str, name: str, key: str, stage: str, force: bool = False) -> None:
        """Refuse to work in work/<kind>/<name>/<key> over another run's unfinished, unrecorded work."""
        self._unrecorded.check_work(kind, name, key, stage, force)

    # ------------------------------------------------------------ integrity
    def missing_outputs(self, record: ArtifactRecord) -> list[str]:
        """Cheap check (existence and size) of a record's files."""
        return self._integrity.missing_outputs(record)

    def damaged_files(self, record: ArtifactRecord, rehash: bool = False) -> list[str]:
        """Missing files, changed bytes (sha256, stat-cached unless `rehash`), files embedtab did not write."""
        return self._integrity.damaged_files(record, rehash)

    def verify(self, record: ArtifactRecord) -> Path:
        """Full check before trusting an artifact's files: every sha256 matches, nothing extra."""
        return self._integrity.verify(record)

    def current(self, record: ArtifactRecord | None, input_fingerprint: str) -> bool:
        """Made from these inputs, every file as written, in the current layout (an old one is rewritten)."""
        return self._integrity.current(record, input_fingerprint)

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
        warn: Callable[[str], None] | None = None,
        read_files: list[dict[str, Any]] | None = None,
        was: tuple[list[dict[str, Any]], Any] | None = None,
        trusted: tuple[str, ...] = (),
        mode: RunMode | None = None,
    ) -> Plan:
        """Decide whether work is needed. `content` is anything else that identifies the inputs.

        Unchanged inputs and intact outputs: up to date. Changed inputs: ArtifactExists unless
        force -- or, for derived artifacts (`refresh`), a rebuild when only upstream data changed
        and the parameters (except `refresh_ignore`) are the same.

        `read_files` are recorded (provenance, and what `--force` messages name) but not
        fingerprinted: the stage fingerprints what it uses of them in `content`. `was` is the
        (files, content) an artifact of an earlier version was fingerprinted with; such an
        artifact is current too, so an upgrade does not make everything stale.

        Two checks no stage can skip, both before anything is called up to date: every input
        artifact is verified as it would be before reading it (sha256, stat-cached; IntegrityError
        naming the artifact and the file) except those whose keys the caller was told to trust
        (`trusted`: `--trust-workflow`); and a folder at the artifact's path that the manifest has
        no record of is never replaced unless forced (UnrecordedArtifact).
        """
        arguments = {key: value for key, value in locals().items() if key not in ("self", "mode")}
        return self._planner.plan(PlanRequest(**arguments), mode if mode is not None else RunMode())

    # ------------------------------------------------------------- publishing
    @contextlib.contextmanager
    def staging(self, plan: Plan) -> Iterator[Path]:
        """A fresh private folder inside the artifact dir; removed unless published."""
        with publish.staging_folder(self.root, plan.kind, plan.name) as path:
            yield path

    def prepare(
        self,
        plan: Plan,
        staging: Path,
        metadata: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> ArtifactRecord:
        """The record of a finished staging folder (every file hashed); nothing is moved yet."""
        return publish.prepare(plan, staging, self._hashes, metadata, summary, device)

    def publish(
        self,
        plan: Plan,
        staging: Path,
        metadata: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> ArtifactRecord:
        """Record every file of `staging` and move it into place atomically."""
        record = self.prepare(plan, staging, metadata, summary, device)
        self.commit([(record, staging)])
        return record

    def commit(self, items: list[tuple[ArtifactRecord, Path]]) -> None:
        """Move prepared artifacts into place: all of them or, after a crash at any point, none
        (the pending entries share a group; recovery rolls the whole group back or forward)."""
        with self.lock():
            manifest = self.read_manifest()
            moves = publish.mark_pending(self.root, manifest, items)
            self._write_manifest(manifest)
            publish.move_into_place(moves)
            self._finish(manifest, [record.key for record, _ in items])

    def _finish(self, manifest: Manifest, keys: list[str]) -> None:
        publish.finish(self.root, manifest, keys, self._write_manifest)

    def _recover(self) -> None:
        """Finish or roll back publications a crashed writer left pending (lock held)."""
        if self.manifest_path.exists():
            publish.recover(self.root, self.read_manifest(), self._write_manifest, self._finish)
