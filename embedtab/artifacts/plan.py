"""Up-to-date decisions: whether a stage has work to do, and folders nobody's record covers.

A stage asks `Planner.plan` before doing any work. Unchanged inputs and intact outputs: up to
date. Changed inputs: ArtifactExists unless forced -- or, for derived artifacts, a rebuild when
only upstream data changed. Damaged inputs are refused and damaged outputs rebuilt; a folder the
manifest has no record of (`Unrecorded`) is neither read nor replaced unless forced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtab.artifacts.integrity import Integrity
from embedtab.artifacts.layout import KINDS, MANIFEST, WORK, WORK_SHARD, artifact_path, is_artifact_name
from embedtab.artifacts.manifest import ArtifactRecord, Manifest, ManifestFile, legacy_layout
from embedtab.errors import ArtifactExists, UnrecordedArtifact
from embedtab.fingerprint import hash_value

_UNRECORDED_WHY = "a lost or older manifest, or a folder copied in by hand"


@dataclass(frozen=True)
class Verdict:
    """What a plan decided, in words: state is "up to date", "run" (new or forced), "stale" (its
    inputs changed, or it is damaged) or "needs --force"; why says what changed."""

    kind: str
    name: str
    state: str
    why: str = ""


class DryRunStop(Exception):
    """Raised by `Driver.build` in a dry run: the stage planned and stops before writing."""

    def __init__(self, plan: Plan):
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

    def up_to_date_record(self) -> ArtifactRecord:
        """The existing record of an up-to-date plan (only a plan with one is ever up to date)."""
        if self.existing is None:
            raise RuntimeError(f"{self.kind} {self.name!r}: an up-to-date plan without an existing artifact")
        return self.existing


@dataclass
class RunMode:
    """How the stages of a run treat their plans: the argument of their `Driver` (`embedtab run`
    makes one per run, and one per stage of a dry run).

    In a dry run (`--dry-run`) stages plan as usual, each plan's verdict is kept in `verdicts`,
    and `Driver.build` stops the stage before it writes anything. Following inputs
    (make-like), a stage whose options are unchanged rebuilds when what it reads changed --
    fitted workflows and projections too, which on their own need --force.
    """

    dry_run: bool = False
    follow_inputs: bool = False
    verdicts: list[Verdict] = field(default_factory=list)


@dataclass
class PlanRequest:
    """What a stage asks `Planner.plan` (the arguments of `ArtifactStore.plan`, which says what each means)."""

    kind: str
    name: str
    stage: str
    params: dict[str, Any]
    input_files: list[dict[str, Any]] | None = None
    input_artifacts: list[ArtifactRecord] | None = None
    force: bool = False
    packages: tuple[str, ...] = ()
    content: Any = None
    refresh: bool = False
    refresh_ignore: tuple[str, ...] = ()
    warn: Callable[[str], None] | None = None
    read_files: list[dict[str, Any]] | None = None
    was: tuple[list[dict[str, Any]], Any] | None = None
    trusted: tuple[str, ...] = ()


class Unrecorded:
    """Folders in an artifact directory that the manifest has no record of, and work that no
    recorded artifact owns. Nothing knows what made them, so no stage reads or replaces them
    unless forced."""

    def __init__(self, root: Path, manifest: ManifestFile):
        self.root = root
        self.manifest = manifest

    def all(self, manifest: Manifest | None = None) -> list[str]:
        """kind/name of every folder (or file) in an artifact folder -- embeddings/, projections/,
        workflows/, datasets/, lookups/ -- that the manifest has no record of."""
        if manifest is None:
            manifest = self.manifest.read()
        known = set(manifest.artifacts) | set(manifest.pending)  # (a pending one is mid-move: settled by the next writer)
        found = []
        for kind in KINDS:
            folder = self.root / kind
            if folder.is_dir():
                found += [
                    f"{kind}/{entry.name}"
                    for entry in sorted(folder.iterdir())
                    if is_artifact_name(entry.name) and f"{kind}/{entry.name}" not in known
                ]
        return found

    def folder(self, kind: str, name: str) -> Path | None:
        """The artifact's path if something is there that the manifest has no record of."""
        path = artifact_path(self.root, kind, name)
        if not (path.exists() or path.is_symlink()):
            return None
        manifest = self.manifest.read()
        key = f"{kind}/{name}"
        return None if key in manifest.artifacts or key in manifest.pending else path

    def refusal(self, kind: str, name: str, what_now: str) -> UnrecordedArtifact:
        """The error refusing to read or replace the unrecorded kind/name; `what_now` says what to do."""
        others = [key for key in self.all() if key != f"{kind}/{name}"]
        also = (
            (
                f" (also unrecorded: {', '.join(others[:3])}{f' and {len(others) - 3} more' if len(others) > 3 else ''}; "
                "`embedtab status` lists them)"
            )
            if others
            else ""
        )
        return UnrecordedArtifact(
            f"{kind}/{name} is in {self.root} but {MANIFEST} has no record of it ({_UNRECORDED_WHY}); {what_now}{also}"
        )

    def unfinished_work(self, kind: str = "embeddings") -> dict[str, list[str]]:
        """name -> key folders of resumable work under work/<kind>/ (kept until their artifact is
        published): those holding at least one finished work shard (a run that failed before its
        first shard, e.g. on a model that does not load, leaves nothing worth keeping)."""
        base = self.root / WORK / kind
        found: dict[str, list[str]] = {}
        if base.is_dir():
            for folder in sorted(p for p in base.iterdir() if p.is_dir()):
                keys = sorted(p.name for p in folder.iterdir() if p.is_dir() and next(p.rglob(f"{WORK_SHARD}*.json"), None))
                if keys:
                    found[folder.name] = keys
        return found

    def check_work(self, kind: str, name: str, key: str, stage: str, force: bool = False) -> None:
        """Before a run works in work/<kind>/<name>/<key>: unfinished work there from other inputs or
        options (another key), for a name the manifest has no artifact of, is nobody's record but
        its own -- publishing would discard it. Refused unless forced. (Work of an update of a
        recorded artifact is superseded by the next update, as before.)"""
        if force or self.manifest.get(kind, name) is not None:
            return
        others = [k for k in self.unfinished_work(kind).get(name, []) if k != key]
        if others:
            raise UnrecordedArtifact(
                f"{WORK}/{kind}/{name} holds unfinished work of another {stage} run ({others[0]}: other inputs or "
                f"options) and {MANIFEST} has no {kind} {name!r}; embedtab will not discard it: rerun that command "
                "to finish it, pass --force to discard it, or choose another --name"
            )


class Planner:
    """Makes the plans of one artifact directory (see `ArtifactStore.plan`)."""

    def __init__(self, root: Path, manifest: ManifestFile, integrity: Integrity, unrecorded: Unrecorded):
        self.root = root
        self.manifest = manifest
        self.integrity = integrity
        self.unrecorded = unrecorded

    def plan(self, request: PlanRequest, mode: RunMode) -> Plan:
        kind, name = request.kind, request.name
        artifact_path(self.root, kind, name)  # validates kind and name
        for record in request.input_artifacts or []:
            if record.key not in request.trusted:
                self.integrity.verify(record)  # a damaged input makes nothing up to date: it is refused, by name
        upstream = [{"kind": r.kind, "name": r.name, "fingerprint": r.fingerprint} for r in request.input_artifacts or []]
        fingerprint, earlier = self._fingerprints(request, upstream)
        files = (request.input_files or []) + (request.read_files or [])
        existing = self.manifest.get(kind, name)
        if existing is not None and earlier is not None and existing.input_fingerprint == earlier:
            fingerprint = earlier  # the same inputs, fingerprinted the earlier way
        up_to_date = False
        damaged: list[str] = []
        verdict = Verdict(kind, name, "run", "new" if existing is None else "forced" if request.force else "")
        if existing is None and self.unrecorded.folder(kind, name) is not None:
            verdict = self._replace_unrecorded(request, mode)
        if existing is not None:
            verdict, up_to_date, damaged = self._judge(request, mode, existing, fingerprint, files, upstream)
        mode.verdicts.append(verdict)
        return Plan(
            kind=kind,
            name=name,
            stage=request.stage,
            params=request.params,
            inputs={"files": files, "artifacts": upstream},
            input_fingerprint=fingerprint,
            existing=existing,
            up_to_date=up_to_date,
            packages=request.packages,
            damaged=damaged,
            force=request.force,
        )

    @staticmethod
    def _fingerprints(request: PlanRequest, upstream: list[dict[str, Any]]) -> tuple[str, str | None]:
        """The fingerprint of the request's inputs, and the one they had the earlier way (`was`), if given."""

        def fingerprint_of(files: list[dict[str, Any]], content: Any) -> str:
            return hash_value(
                {
                    "stage": request.stage,
                    "params": request.params,
                    "files": sorted(f["sha256"] for f in files),
                    "artifacts": [u["fingerprint"] for u in upstream],
                    "content": content,
                }
            )

        fingerprint = fingerprint_of(request.input_files or [], request.content)
        earlier = fingerprint_of(*request.was) if request.was is not None else None
        return fingerprint, earlier

    def _replace_unrecorded(self, request: PlanRequest, mode: RunMode) -> Verdict:
        """A folder the manifest has no record of is where the artifact would go: replaced only if forced."""
        kind, name = request.kind, request.name
        if request.force:
            return Verdict(kind, name, "run", f"forced: replaces {kind}/{name}, which {MANIFEST} has no record of")
        if mode.dry_run:
            return Verdict(kind, name, "needs --force", f"{kind}/{name} is on disk but not in {MANIFEST}")
        raise self.unrecorded.refusal(
            kind,
            name,
            "nothing tells what made it and embedtab will not replace it: "
            "pass --force to rebuild it from these inputs, move it away, "
            "or choose another --name",
        )

    def _judge(
        self,
        request: PlanRequest,
        mode: RunMode,
        existing: ArtifactRecord,
        fingerprint: str,
        files: list[dict[str, Any]],
        upstream: list[dict[str, Any]],
    ) -> tuple[Verdict, bool, list[str]]:
        """(verdict, up to date, why it is damaged) of an existing artifact."""
        kind, name, force = request.kind, request.name, request.force
        verdict = Verdict(kind, name, "run", "forced" if force else "")
        up_to_date = False
        damaged = self.integrity.missing_outputs(existing)
        same_inputs = existing.input_fingerprint == fingerprint
        if not damaged and same_inputs and not force:
            # About to call it up to date: only if every byte is what was written.
            damaged = self.integrity.damaged_files(existing)
            up_to_date = not damaged and not legacy_layout(existing)  # (an old layout is rewritten)
            verdict = Verdict(kind, name, "up to date" if up_to_date else "stale", "" if up_to_date else "written in the pre-0.2 layout")
        if damaged:
            verdict = Verdict(kind, name, "stale", f"damaged: {'; '.join(damaged[:3])}")
            if request.warn is not None and not mode.dry_run:
                request.warn(f"{kind} {name!r} is damaged ({'; '.join(damaged[:3])}); rebuilding it")
        elif not same_inputs and not force:
            differences = _differences(existing, request.params, files, upstream, request.refresh_ignore)
            if (request.refresh or mode.follow_inputs) and _same_recipe(existing.params, request.params, request.refresh_ignore):
                verdict = Verdict(kind, name, "stale", differences)
            elif mode.dry_run:
                verdict = Verdict(kind, name, "needs --force", differences)
            else:
                raise ArtifactExists(
                    f"{kind} {name!r} already exists and was made from other inputs or options "
                    f"({differences}); pass --force to replace it, or choose another --name"
                )
        return verdict, up_to_date, damaged


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differences(
    existing: ArtifactRecord,
    params: dict[str, Any],
    files: list[dict[str, Any]],
    upstream: list[dict[str, Any]],
    ignore: tuple[str, ...] = (),
) -> str:
    """What changed since the artifact was made, in a few words, for the --force refusal. Input
    files are compared by content: the same file at another path is no change."""
    changes = [
        f"{key}: {_short(existing.params.get(key))} -> {_short(params.get(key))}"
        for key in sorted(set(existing.params) | set(params))
        if key not in ignore and existing.params.get(key) != params.get(key)
    ]
    old_files = {f["sha256"]: Path(f["path"]).name for f in existing.inputs.get("files", [])}
    new_files = {f["sha256"]: Path(f["path"]).name for f in files}
    changes += [f"input {name} is new or changed" for sha, name in sorted(new_files.items(), key=lambda kv: kv[1]) if sha not in old_files]
    changes += [
        f"input {name} is no longer given"
        for sha, name in sorted(old_files.items(), key=lambda kv: kv[1])
        if sha not in new_files and name not in {new_files[s] for s in new_files if s not in old_files}
    ]
    old_up = {f"{u['kind']}/{u['name']}": u["fingerprint"] for u in existing.inputs.get("artifacts", [])}
    changes += [
        f"{key} changed"
        for key, fp in ((f"{u['kind']}/{u['name']}", u["fingerprint"]) for u in upstream)
        if key in old_up and old_up[key] != fp
    ]
    if not changes:
        return "the input data changed"
    return "; ".join(changes[:3]) + (f"; +{len(changes) - 3} more" if len(changes) > 3 else "")


def _same_recipe(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...]) -> bool:
    strip = lambda params: {k: v for k, v in params.items() if k not in ignore}  # noqa: E731
    return strip(old) == strip(new)
