"""manifest.json: the record of every artifact (ArtifactRecord), read and written atomically.

The manifest is the directory's only source of truth: a folder it has no record of is nobody's
artifact (see plan.Unrecorded), and a publication is recorded as pending before its folder moves
(see publish.py). A manifest that is not embedtab's, or of another format version, is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from embedtab.artifacts.layout import KINDS, MANIFEST, STAGING, is_legacy_file, is_valid_name
from embedtab.errors import ManifestError
from embedtab.version import __version__

FORMAT_VERSION: Final = 1
_AFRESH = "embedtab will not touch it: restore it from a backup or move it away to start afresh"


def _inside(path: str) -> str:
    """A path the manifest names must stay inside its folder: relative, without '..' (a hand-edited
    manifest must not make embedtab read, move or delete anything outside the artifact directory)."""
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts or "\\" in path or "\x00" in path:
        raise ValueError(f"{path[:80]!r} is not a relative path inside the artifact directory")
    return path


def _in_staging(path: str) -> str:
    """Staging folders and publication trash are single folders directly under .staging/."""
    parts = Path(_inside(path)).parts
    if len(parts) != 2 or parts[0] != STAGING or parts[1] in (".", ".."):
        raise ValueError(f"{path[:80]!r} is not a folder directly under {STAGING}/")
    return path


class OutputFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str
    rows: int | None = None

    _path_inside = field_validator("path")(classmethod(lambda cls, value: _inside(value)))


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

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KINDS:
            raise ValueError(f"unknown kind {value[:40]!r} (kinds: {', '.join(KINDS)})")
        return value

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"invalid artifact name {value[:40]!r}")
        return value

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    def rows(self, suffix: str = ".parquet", prefix: str = "") -> int:
        """Total rows of the output files matching prefix*suffix."""
        return sum(f.rows or 0 for f in self.outputs if f.path.endswith(suffix) and Path(f.path).name.startswith(prefix))


class PendingPublish(BaseModel):
    model_config = ConfigDict(extra="forbid")
    record: ArtifactRecord
    staging: str
    trash: str
    group: str | None = None  # artifacts published together: all of them or none

    _staging_paths = field_validator("staging", "trash")(classmethod(lambda cls, value: _in_staging(value)))


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: Literal[1] = FORMAT_VERSION
    artifacts: dict[str, ArtifactRecord] = Field(default_factory=dict)
    pending: dict[str, PendingPublish] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _keys_name_their_records(self) -> Manifest:
        """Every entry is filed under its own kind/name: a swapped or renamed key would make a
        command read another artifact's files as this one."""
        for section, entries in (("artifacts", self.artifacts), ("pending", self.pending)):
            for key, entry in entries.items():
                record = entry if isinstance(entry, ArtifactRecord) else entry.record
                if key != record.key:
                    raise ValueError(f"{section} entry {key[:60]!r} holds the record of {record.key!r}")
        return self


def legacy_layout(record: ArtifactRecord) -> bool:
    """Written before sidecar files moved out of merlin.io's way."""
    return any(is_legacy_file(record.kind, out.path) for out in record.outputs)


def now_iso(ts: float | None = None) -> str:
    moment = _dt.datetime.fromtimestamp(ts if ts is not None else time.time(), _dt.timezone.utc)
    return moment.isoformat(timespec="seconds")


def upstream_changes(record: ArtifactRecord, current: dict[str, ArtifactRecord]) -> list[str]:
    """Why a record is stale: upstream artifacts that changed or vanished since it was made."""
    reasons = []
    for up in record.inputs.get("artifacts", []):
        key = f"{up['kind']}/{up['name']}"
        now = current.get(key)
        if now is None:
            reasons.append(f"{key} no longer exists")
        elif now.fingerprint != up["fingerprint"]:
            reasons.append(f"{key} changed")
    return reasons


class ManifestFile:
    """The manifest.json of one artifact directory. Writing it is the caller's to lock."""

    def __init__(self, root: Path):
        self.root = root
        self.path = root / MANIFEST

    def read(self) -> Manifest:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Manifest()
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{self.path} is not valid JSON (byte {exc.start} is not UTF-8); {_AFRESH}") from None
        except OSError as exc:
            raise ManifestError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{self.path} is not valid JSON (line {exc.lineno}, column {exc.colno}); {_AFRESH}") from None
        self._check_header(raw)
        try:
            return Manifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ManifestError(f"{self.path} is corrupted ({where or 'top level'}: {first['msg']}); {_AFRESH}") from None

    def _check_header(self, raw: Any) -> None:
        """Refuse what is not an embedtab manifest of this format version before validating it."""
        if not isinstance(raw, dict) or "format_version" not in raw:
            raise ManifestError(f"{self.path} is not an embedtab manifest (no format_version); {_AFRESH}")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ManifestError(
                f"{self.path} has format_version {raw.get('format_version')!r}; this embedtab reads "
                f"version {FORMAT_VERSION}: upgrade embedtab or use another artifact directory"
            )
        if "artifacts" not in raw:
            raise ManifestError(f"{self.path} is not an embedtab manifest (no artifacts); {_AFRESH}")

    def write(self, manifest: Manifest) -> None:
        """Replace the manifest atomically (written beside it, fsync-ed, renamed over it)."""
        tmp = self.root / f".{MANIFEST}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as handle:
                handle.write(manifest.model_dump_json(indent=2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a full disk leaves the old manifest and nothing else
            raise
        fsync_dir(self.root)

    def records(self) -> list[ArtifactRecord]:
        return sorted(self.read().artifacts.values(), key=lambda r: (r.kind, r.name))

    def get(self, kind: str, name: str) -> ArtifactRecord | None:
        return self.read().artifacts.get(f"{kind}/{name}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
