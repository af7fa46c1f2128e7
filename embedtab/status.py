"""Health of an artifact directory: what is there, whether its files are intact, what is stale."""

from __future__ import annotations

from typing import Any

from embedtab.artifacts import WORK, ArtifactRecord, ArtifactStore, Manifest, legacy_layout
from embedtab.errors import UsageError
from embedtab.tables import PART_PREFIX


def row_count(record: ArtifactRecord) -> int | None:
    if record.kind == "embeddings":
        return record.rows(prefix=PART_PREFIX)
    if record.kind == "datasets":
        return record.rows()
    if record.kind == "lookups":
        return record.metadata.get("cardinality")
    return None


def health(store: ArtifactStore, record: ArtifactRecord, verify: bool = False, manifest: Manifest | None = None) -> tuple[str, list[str]]:
    """('ok' | 'pending' | 'damaged' | 'stale', reasons). Damaged files outrank staleness; with
    `verify` every file is re-hashed, else only presence and sizes are checked."""
    manifest = manifest or store.read_manifest()
    if record.key in manifest.pending:  # files mid-move: neither the old record's nor damaged
        return "pending", ["an interrupted publication; the next command that writes here finishes or rolls it back"]
    problems = store.damaged_files(record, rehash=True) if verify else store.missing_outputs(record)
    if problems:
        return "damaged", problems
    reasons = store.upstream_changes(record, manifest)
    if legacy_layout(record):
        reasons.append("written in the pre-0.2 layout, which merlin.io.Dataset cannot open; rerun its command to rewrite it")
    if reasons:
        return "stale", reasons
    return "ok", []


def collect(store: ArtifactStore, verify: bool = False) -> dict[str, Any]:
    if not store.root.exists():
        raise UsageError(f"artifact directory {store.root} does not exist (check --artifacts / EMBEDTAB_ARTIFACTS)")
    manifest = store.read_manifest()
    artifacts = []
    for record in sorted(manifest.artifacts.values(), key=lambda r: (r.kind, r.name)):
        state, reasons = health(store, record, verify, manifest)
        artifacts.append(
            {
                "kind": record.kind,
                "name": record.name,
                "rows": row_count(record),
                "health": state if not reasons else f"{state}: {'; '.join(reasons)}",
                "reasons": reasons,
                **record.model_dump(exclude={"kind", "name"}),
            }
        )
    return {
        "root": str(store.root),
        "format_version": manifest.format_version,
        "manifest": store.manifest_path.is_file(),
        "artifacts": artifacts,
        "pending": sorted(manifest.pending),
        "damaged": sum(a["health"].startswith("damaged") for a in artifacts),
        # Folders of artifact kinds that the manifest has no record of (a lost manifest, a folder
        # copied in by hand): no stage reads or replaces them without --force.
        "unrecorded": [
            {"kind": key.partition("/")[0], "name": key.partition("/")[2], "path": str(store.root / key)}
            for key in store.unrecorded(manifest)
        ],
        # Resumable encode work (kept until its artifact is published; a rerun of the same command resumes it).
        "work": [
            {"path": f"{WORK}/embeddings/{name}", "keys": keys, "artifact_recorded": f"embeddings/{name}" in manifest.artifacts}
            for name, keys in store.unfinished_work("embeddings").items()
        ],
        "reclaimable_bytes": store.reclaimable_bytes(),
        # Per categorified column of each workflow: ids held, added since the fit it replaced, moved
        # (always 0: a fit that would move one is refused, see embedtab/workflow/growth.py).
        "id_spaces": id_spaces(manifest.artifacts.values()),
        # Per model repository (embedtab export triton): the newest version, what each kept version serves.
        "exports": exports(manifest.artifacts.values()),
    }


def exports(records: Any) -> list[dict[str, Any]]:
    """Each export's versions: model -> the artifact and fingerprint it serves in that version."""
    return [
        {"name": record.name, "version": record.metadata["version"], "versions": record.metadata["versions"]}
        for record in sorted(records, key=lambda r: r.name)
        if record.kind == "exports"
    ]


def id_spaces(records: Any) -> list[dict[str, Any]]:
    """The id spaces the workflows recorded (workflows fitted by earlier releases recorded none)."""
    return [
        {"workflow": record.name, "column": column, **space}
        for record in sorted(records, key=lambda r: r.name)
        if record.kind == "workflows"
        for column, space in record.metadata.get("id_spaces", {}).items()
    ]
