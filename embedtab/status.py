"""Health of an artifact directory: what is there, whether its files are intact, what is stale."""

from __future__ import annotations

from typing import Any

from embedtab.artifacts import ArtifactRecord, ArtifactStore, Manifest, legacy_layout
from embedtab.errors import UsageError


def row_count(record: ArtifactRecord) -> int | None:
    if record.kind == "embeddings":
        return record.rows(prefix="part-")
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
        "artifacts": artifacts,
        "pending": sorted(manifest.pending),
        "damaged": sum(a["health"].startswith("damaged") for a in artifacts),
        "reclaimable_bytes": store.reclaimable_bytes(),
    }
