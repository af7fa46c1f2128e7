"""The artifact directory: the one module that knows its layout.

    <root>/
      manifest.json            every artifact: kind, name, params, inputs, outputs (sha256, rows), ...
      .lock                    flock-ed by a writer while it changes manifest.json or publishes
      .staging/                work in progress; a stage writes here and renames into place at the end
      .cache/sha256.json       sha256 of files already hashed, by their stat (see HashCache)
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
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from embedtab import __version__
from embedtab.errors import (
    ArtifactBusy,
    ArtifactExists,
    ArtifactNotFound,
    IntegrityError,
    LockTimeout,
    ManifestError,
    UnrecordedArtifact,
    UsageError,
)
from embedtab.fingerprint import directory_files, hash_value, library_versions, sha256_file

FORMAT_VERSION = 1
KINDS = ("embeddings", "projections", "workflows", "datasets", "lookups")
MANIFEST = "manifest.json"
LOCK = ".lock"
STAGING = ".staging"
BUILD_LOCKS = ".locks"  # one per artifact being made: .locks/<kind>.<name>
HASH_CACHE = ".cache/sha256.json"
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


def _wait_for_flock(fd: int, deadline: float, poll: float, while_busy: Callable[[], None] = lambda: None) -> bool | None:
    """Take an exclusive flock on `fd`, polling: True if it had to wait, False if not, None when
    `deadline` passed first. `while_busy` runs between tries (it may raise to give up early)."""
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return waited
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        while_busy()
        if time.monotonic() >= deadline:
            return None
        waited = True
        time.sleep(poll)


def _read_intent(fd: int) -> dict[str, Any] | None:
    """What the run holding a build lock is making (None while it has not said yet)."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_HOST = socket.gethostname()


def owner_tag() -> str:
    """Names of in-progress folders carry their writer: '@<pid>.<host>.<random>' (no '@' in artifact names)."""
    return f"@{os.getpid()}.{_HOST}."


def _dead_owner(entry: str) -> bool:
    """A staging entry whose writer ran on this host and is gone (entries of live writers, or of
    other hosts sharing the directory, are never touched)."""
    if "@" not in entry:
        return False
    pid, _, rest = entry.rpartition("@")[2].partition(".")
    host = rest.rpartition(".")[0]
    return pid.isdigit() and host == _HOST and not _pid_alive(int(pid))


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
    group: str | None = None  # artifacts published together: all of them or none


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: Literal[1] = FORMAT_VERSION
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)
    pending: dict[str, PendingPublish] = Field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """What a plan decided, in words: state is "up to date", "run" (new or forced), "stale" (its
    inputs changed, or it is damaged) or "needs --force"; why says what changed."""

    kind: str
    name: str
    state: str
    why: str = ""


class DryRunStop(Exception):
    """Raised by `ArtifactStore.building` in a dry run: the stage planned and stops before writing."""

    def __init__(self, plan: "Plan"):
        super().__init__(f"dry run: {plan.kind} {plan.name!r} would be built")
        self.plan = plan


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
    damaged: list[str] = field(default_factory=list)  # why the existing artifact is rebuilt, if it is damaged
    force: bool = False


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
            from embedtab.bounds import seconds_from_environment

            lock_timeout = seconds_from_environment("EMBEDTAB_LOCK_TIMEOUT", 600.0, 7 * 86400)
        self.lock_timeout = lock_timeout
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._hashes = HashCache(self.root / HASH_CACHE)
        # Dry runs (`embedtab run --dry-run`): stages plan as usual, each plan's verdict is kept
        # here, and `building` stops the stage before it writes anything.
        self.dry_run = False
        self.verdicts: list[Verdict] = []
        # make-like (`embedtab run`): a stage whose options are unchanged rebuilds when what it
        # reads changed -- fitted workflows and projections too, which on their own need --force.
        self.follow_inputs = False

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
        try:
            if _wait_for_flock(fd, time.monotonic() + self.lock_timeout, 0.05) is None:
                raise LockTimeout(self._lock_holder(fd))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {_HOST}".encode(), 0)
            self._lock_fd, self._lock_depth = fd, 1
            try:
                self._recover()
                self._reclaim()
                yield
            finally:
                self._lock_fd, self._lock_depth = None, 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _lock_holder(self, fd: int) -> str:
        pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
        waited = f"for more than {self.lock_timeout:.0f}s"
        if not pid.isdigit():
            return f"{self.root} is locked by another embedtab process {waited}; wait for it or raise EMBEDTAB_LOCK_TIMEOUT"
        if host and host != _HOST:
            return (f"{self.root} is locked {waited} by pid {pid} on host {host}; wait for it "
                    "or raise EMBEDTAB_LOCK_TIMEOUT")
        if _pid_alive(int(pid)):
            return (f"{self.root} is locked {waited} by embedtab pid {pid}, which is still running; wait for it "
                    "or raise EMBEDTAB_LOCK_TIMEOUT")
        return (f"{self.root} is locked {waited}, but pid {pid} that took the lock is no longer running: a process "
                "it started (a Dask or DataLoader worker, say) still holds it; stop that process")

    def _debris(self) -> list[Path]:
        """What writers that died left behind: their staging folders, publication trash that no
        pending publication needs, half-written manifests. Only called with the lock held, or to count."""
        root = self.staging_root()
        found = [p for p in self.root.glob(f".{MANIFEST}.*.tmp")]
        if not root.is_dir():
            return found
        needed = set()
        if self.manifest_path.exists():
            needed = {Path(p.trash).name for p in self.read_manifest().pending.values()}
        for entry in root.iterdir():
            if entry.name.startswith("trash.") and entry.name not in needed:
                found.append(entry)
            elif _dead_owner(entry.name):
                found.append(entry)
        return found

    def _reclaim(self) -> None:
        for path in self._debris():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def reclaimable_bytes(self) -> int:
        total = 0
        for path in self._debris():
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            total += sum(f.stat().st_size for f in files)
        return total

    @contextlib.contextmanager
    def building(self, plan: Plan) -> Iterator[ArtifactRecord | None]:
        """Hold the artifact's build lock while making it (the store lock is only held to publish).

        A second run making the same artifact from the same inputs waits, then gets what the first
        one made (yielded: the caller reports it up to date) -- or builds, if the first failed. A
        run from other inputs or options fails at once, naming the run that holds it. And if the
        artifact changed since `plan` was made (another run published in between), this run does
        not write over it unless forced.
        """
        if self.dry_run:
            raise DryRunStop(plan)
        folder = self.root / BUILD_LOCKS
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{plan.kind}.{plan.name}", os.O_RDWR | os.O_CREAT, 0o644)
        def refuse_other_recipes() -> None:
            holder = _read_intent(fd)
            if holder and holder.get("input_fingerprint") != plan.input_fingerprint:
                raise ArtifactBusy(
                    f"{plan.kind} {plan.name!r} is being made right now by pid {holder.get('pid')} on "
                    f"{holder.get('host')} ({holder.get('stage')}, started {holder.get('started')}) from other "
                    "inputs or options; wait for it to finish, or choose another --name"
                )

        try:
            waited = _wait_for_flock(fd, time.monotonic() + self.lock_timeout, 0.2, refuse_other_recipes)
            if waited is None:
                raise LockTimeout(f"{plan.kind} {plan.name!r} has been in the making by another run for more "
                                  f"than {self.lock_timeout:.0f}s; wait for it or raise EMBEDTAB_LOCK_TIMEOUT")
            intent = {"pid": os.getpid(), "host": _HOST, "stage": plan.stage, "started": now_iso(),
                      "input_fingerprint": plan.input_fingerprint}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(intent).encode(), 0)
            try:
                now = self.get(plan.kind, plan.name)
                if waited and self.current(now, plan.input_fingerprint):
                    yield now  # the run we waited for made exactly this
                    return
                before = plan.existing.fingerprint if plan.existing else None
                if now is not None and now.fingerprint != before and not plan.force:
                    if self.current(now, plan.input_fingerprint):
                        yield now
                        return
                    raise ArtifactExists(
                        f"{plan.kind} {plan.name!r} was just written by another run from other inputs or options; "
                        "nothing was written over it: pass --force to replace it, or choose another --name"
                    )
                yield None
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the flock

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
        if not isinstance(raw, dict) or "format_version" not in raw:
            raise ManifestError(
                f"{path} is not an embedtab manifest (no format_version); embedtab will not touch it: "
                "restore it from a backup or move it away to start afresh"
            )
        if raw.get("format_version") != FORMAT_VERSION:
            raise ManifestError(
                f"{path} has format_version {raw.get('format_version')!r}; this embedtab reads "
                f"version {FORMAT_VERSION}: upgrade embedtab or use another artifact directory"
            )
        if "artifacts" not in raw:
            raise ManifestError(
                f"{path} is not an embedtab manifest (no artifacts); embedtab will not touch it: "
                "restore it from a backup or move it away to start afresh"
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
        try:
            with open(tmp, "w") as handle:
                handle.write(manifest.model_dump_json(indent=2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.manifest_path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves the old manifest and nothing else
            raise
        _fsync_dir(self.root)

    def records(self) -> list[ArtifactRecord]:
        return sorted(self.read_manifest().artifacts.values(), key=lambda r: (r.kind, r.name))

    def get(self, kind: str, name: str) -> ArtifactRecord | None:
        return self.read_manifest().artifacts.get(f"{kind}/{name}")

    def require(self, kind: str, name: str) -> ArtifactRecord:
        record = self.get(kind, name)
        if record is None and self.unrecorded_folder(kind, name) is not None:
            raise self._unrecorded_refusal(kind, name, "embedtab will not read it: rerun the command that makes it "
                                                       "with --force to rebuild it")
        if record is None:
            known = sorted(r.name for r in self.records() if r.kind == kind)
            hint = f"; known {kind}: {', '.join(known)}" if known else f"; there are no {kind} yet"
            raise ArtifactNotFound(f"no {kind} artifact named {name!r} in {self.root}{hint}")
        return record

    # ----------------------------------------------------------- unrecorded
    def unrecorded(self, manifest: Manifest | None = None) -> list[str]:
        """kind/name of every folder (or file) in an artifact folder -- embeddings/, projections/,
        workflows/, datasets/, lookups/ -- that the manifest has no record of. Nothing knows what
        made them, so no stage reads or replaces them unless forced (see `plan` and `require`)."""
        if manifest is None:
            manifest = self.read_manifest()
        known = set(manifest.artifacts) | set(manifest.pending)  # (a pending one is mid-move: settled by the next writer)
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if folder.is_dir():
                found += [f"{kind}/{entry.name}" for entry in sorted(folder.iterdir())
                          if _NAME.match(entry.name) and f"{kind}/{entry.name}" not in known]
        return found

    def unrecorded_folder(self, kind: str, name: str) -> Path | None:
        """The artifact's path if something is there that the manifest has no record of."""
        path = self.path(kind, name)
        if not (path.exists() or path.is_symlink()):
            return None
        manifest = self.read_manifest()
        key = f"{kind}/{name}"
        return None if key in manifest.artifacts or key in manifest.pending else path

    def _unrecorded_refusal(self, kind: str, name: str, what_now: str) -> UnrecordedArtifact:
        others = [key for key in self.unrecorded() if key != f"{kind}/{name}"]
        also = (f" (also unrecorded: {', '.join(others[:3])}{f' and {len(others) - 3} more' if len(others) > 3 else ''}; "
                "`embedtab status` lists them)") if others else ""
        return UnrecordedArtifact(f"{kind}/{name} is in {self.root} but {MANIFEST} has no record of it "
                                  f"({_UNRECORDED_WHY}); {what_now}{also}")

    def unfinished_work(self, kind: str = "embeddings") -> dict[str, list[str]]:
        """name -> key folders of resumable work under work/<kind>/ (kept until their artifact is
        published): those holding at least one finished work shard (a run that failed before its
        first shard, e.g. on a model that does not load, leaves nothing worth keeping)."""
        base = self.root / "work" / kind
        found: dict[str, list[str]] = {}
        if base.is_dir():
            for folder in sorted(p for p in base.iterdir() if p.is_dir()):
                keys = sorted(p.name for p in folder.iterdir() if p.is_dir() and next(p.rglob("shard-*.json"), None))
                if keys:
                    found[folder.name] = keys
        return found

    def check_work(self, kind: str, name: str, key: str, stage: str, force: bool = False) -> None:
        """Before a run works in work/<kind>/<name>/<key>: unfinished work there from other inputs or
        options (another key), for a name the manifest has no artifact of, is nobody's record but
        its own -- publishing would discard it. Refused unless forced. (Work of an update of a
        recorded artifact is superseded by the next update, as before.)"""
        if force or self.get(kind, name) is not None:
            return
        others = [k for k in self.unfinished_work(kind).get(name, []) if k != key]
        if others:
            raise UnrecordedArtifact(
                f"work/{kind}/{name} holds unfinished work of another {stage} run ({others[0]}: other inputs or "
                f"options) and {MANIFEST} has no {kind} {name!r}; embedtab will not discard it: rerun that command "
                "to finish it, pass --force to discard it, or choose another --name"
            )

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

    def _sha256(self, path: Path, rehash: bool = False) -> str:
        return self._hashes.sha256(path, rehash)

    def damaged_files(self, record: ArtifactRecord, rehash: bool = False) -> list[str]:
        """Every way the artifact's folder differs from what embedtab wrote: missing files, changed
        bytes (sha256), files it did not write. A file unchanged since it was last hashed (same
        inode, size, mtime and ctime) keeps its hash; `rehash` reads every byte again."""
        base = self.path(record.kind, record.name)
        problems = self.missing_outputs(record)
        broken = {p.split(" ")[0] for p in problems}
        for out in record.outputs:
            if out.path not in broken and self._sha256(base / out.path, rehash) != out.sha256:
                problems.append(f"{out.path} differs from what embedtab wrote (sha256)")
        self._hashes.save()
        present = {str(p) for p in directory_files(base)} if base.is_dir() else set()
        problems += [f"{extra} is not embedtab's (an extra file)" for extra in sorted(present - {o.path for o in record.outputs})]
        return problems

    def verify(self, record: ArtifactRecord) -> Path:
        """Full check before trusting an artifact's files: every sha256 matches, nothing extra."""
        problems = self.damaged_files(record)
        if problems:
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            raise IntegrityError(f"{record.key} is damaged: {'; '.join(problems[:5])}{more}; refusing to use it "
                                 "(rerun the command that made it to rebuild it)")
        return self.path(record.kind, record.name)

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
        """Made from these inputs, every file as written, in the current layout (an old one is rewritten)."""
        return (record is not None and record.input_fingerprint == input_fingerprint
                and not self.damaged_files(record) and not legacy_layout(record))

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
        self.path(kind, name)  # validates kind and name
        for record in input_artifacts or []:
            if record.key not in trusted:
                self.verify(record)  # a damaged input makes nothing up to date: it is refused, by name
        files = input_files or []
        upstream = [
            {"kind": r.kind, "name": r.name, "fingerprint": r.fingerprint} for r in input_artifacts or []
        ]

        def fingerprint_of(files: list[dict[str, Any]], content: Any) -> str:
            return hash_value({"stage": stage, "params": params, "files": sorted(f["sha256"] for f in files),
                               "artifacts": [u["fingerprint"] for u in upstream], "content": content})

        fingerprint = fingerprint_of(files, content)
        earlier = fingerprint_of(*was) if was is not None else None
        files = files + (read_files or [])
        existing = self.get(kind, name)
        if existing is not None and earlier is not None and existing.input_fingerprint == earlier:
            fingerprint = earlier  # the same inputs, fingerprinted the earlier way
        up_to_date = False
        damaged: list[str] = []
        verdict = Verdict(kind, name, "run", "new" if existing is None else "forced" if force else "")
        if existing is None and self.unrecorded_folder(kind, name) is not None:
            why = f"{kind}/{name} is on disk but not in {MANIFEST}"
            if force:
                verdict = Verdict(kind, name, "run", f"forced: replaces {kind}/{name}, which {MANIFEST} has no record of")
            elif self.dry_run:
                verdict = Verdict(kind, name, "needs --force", why)
            else:
                raise self._unrecorded_refusal(kind, name, "nothing tells what made it and embedtab will not replace it: "
                                                           "pass --force to rebuild it from these inputs, move it away, "
                                                           "or choose another --name")
        if existing is not None:
            damaged = self.missing_outputs(existing)
            same_inputs = existing.input_fingerprint == fingerprint
            if not damaged and same_inputs and not force:
                # About to call it up to date: only if every byte is what was written.
                damaged = self.damaged_files(existing)
                up_to_date = not damaged and not legacy_layout(existing)  # (an old layout is rewritten)
                verdict = Verdict(kind, name, "up to date" if up_to_date else "stale",
                                  "" if up_to_date else "written in the pre-0.2 layout")
            if damaged:
                verdict = Verdict(kind, name, "stale", f"damaged: {'; '.join(damaged[:3])}")
                if warn is not None and not self.dry_run:
                    warn(f"{kind} {name!r} is damaged ({'; '.join(damaged[:3])}); rebuilding it")
            elif not same_inputs and not force:
                differences = _differences(existing, params, files, upstream, refresh_ignore)
                if (refresh or self.follow_inputs) and _same_recipe(existing.params, params, refresh_ignore):
                    verdict = Verdict(kind, name, "stale", differences)
                elif self.dry_run:
                    verdict = Verdict(kind, name, "needs --force", differences)
                else:
                    raise ArtifactExists(
                        f"{kind} {name!r} already exists and was made from other inputs or options "
                        f"({differences}); pass --force to replace it, or choose another --name"
                    )
        self.verdicts.append(verdict)
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
            damaged=damaged,
            force=force,
        )

    # ------------------------------------------------------------- staging
    @contextlib.contextmanager
    def staging(self, plan: Plan) -> Iterator[Path]:
        """A fresh private folder inside the artifact dir; removed unless published."""
        root = self.staging_root()
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{plan.kind}.{plan.name}{owner_tag()}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def prepare(
        self,
        plan: Plan,
        staging: Path,
        metadata: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        device: str = "cpu",
    ) -> ArtifactRecord:
        """The record of a finished staging folder (every file hashed); nothing is moved yet."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # hashlib releases the GIL
            outputs = list(pool.map(lambda rel: _describe(staging, rel, self._sha256), directory_files(staging)))
        self._hashes.save()
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
        group = uuid.uuid4().hex[:12] if len(items) > 1 else None
        with self.lock():
            manifest = self.read_manifest()
            moves = []
            for record, staging in items:
                trash = self.staging_root() / f"trash.{uuid.uuid4().hex[:12]}"
                manifest.pending[record.key] = PendingPublish(
                    record=record, staging=str(staging.relative_to(self.root)),
                    trash=str(trash.relative_to(self.root)), group=group,
                )
                moves.append((self.path(record.kind, record.name), staging, trash))
            self._write_manifest(manifest)
            for target, staging, trash in moves:
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    _rename(target, trash)
                _rename(staging, target)
                _fsync_dir(target.parent)
            self._finish(manifest, [record.key for record, _ in items])

    def _finish(self, manifest: Manifest, keys: list[str]) -> None:
        pendings = [manifest.pending.pop(key) for key in keys]
        for pending in pendings:
            manifest.artifacts[pending.record.key] = pending.record
        self._write_manifest(manifest)
        for pending in pendings:
            shutil.rmtree(self.root / pending.trash, ignore_errors=True)

    def _recover(self) -> None:
        """Finish or roll back publications a crashed writer left pending (lock held). A group is
        rolled back whole if any member had not moved into place yet, else finished whole."""
        if not self.manifest_path.exists():
            return
        manifest = self.read_manifest()
        groups: dict[str, list[str]] = {}
        for key, pending in manifest.pending.items():
            groups.setdefault(pending.group or key, []).append(key)
        for keys in groups.values():
            members = [manifest.pending[k] for k in keys]
            if any((self.root / m.staging).exists() for m in members):
                for member in members:
                    self._roll_back(member)
                for key in keys:
                    manifest.pending.pop(key)
                self._write_manifest(manifest)
            else:
                self._finish(manifest, keys)

    def _roll_back(self, pending: PendingPublish) -> None:
        staging, trash = self.root / pending.staging, self.root / pending.trash
        target = self.path(pending.record.kind, pending.record.name)
        if not staging.exists() and target.exists():
            # This member had moved into place: take it out again.
            shutil.rmtree(target, ignore_errors=True)
        if trash.exists() and not target.exists():
            _rename(trash, target)  # the previous version back
        shutil.rmtree(staging, ignore_errors=True)


_UNRECORDED_WHY = "a lost or older manifest, or a folder copied in by hand"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differences(existing: ArtifactRecord, params: dict[str, Any], files: list[dict[str, Any]],
                 upstream: list[dict[str, Any]], ignore: tuple[str, ...] = ()) -> str:
    """What changed since the artifact was made, in a few words, for the --force refusal. Input
    files are compared by content: the same file at another path is no change."""
    changes = [f"{key}: {_short(existing.params.get(key))} -> {_short(params.get(key))}"
               for key in sorted(set(existing.params) | set(params))
               if key not in ignore and existing.params.get(key) != params.get(key)]
    old_files = {f["sha256"]: Path(f["path"]).name for f in existing.inputs.get("files", [])}
    new_files = {f["sha256"]: Path(f["path"]).name for f in files}
    changes += [f"input {name} is new or changed" for sha, name in sorted(new_files.items(), key=lambda kv: kv[1]) if sha not in old_files]
    changes += [f"input {name} is no longer given" for sha, name in sorted(old_files.items(), key=lambda kv: kv[1])
                if sha not in new_files and name not in {new_files[s] for s in new_files if s not in old_files}]
    old_up = {f"{u['kind']}/{u['name']}": u["fingerprint"] for u in existing.inputs.get("artifacts", [])}
    changes += [f"{key} changed" for key, fp in ((f"{u['kind']}/{u['name']}", u["fingerprint"]) for u in upstream)
                if key in old_up and old_up[key] != fp]
    if not changes:
        return "the input data changed"
    return "; ".join(changes[:3]) + (f"; +{len(changes) - 3} more" if len(changes) > 3 else "")


def _same_recipe(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...]) -> bool:
    strip = lambda params: {k: v for k, v in params.items() if k not in ignore}  # noqa: E731
    return strip(old) == strip(new)


def _describe(root: Path, rel: Path, sha256: Callable[[Path], str]) -> OutputFile:
    path = root / rel
    return OutputFile(path=str(rel), bytes=path.stat().st_size, sha256=sha256(path), rows=_row_count(path))


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
        digest = sha256_file(path)  # (outside the lock: files are hashed in parallel)
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
