"""The artifact directory: its layout, its manifest, and how stages plan, build and publish in it.

One module per job:

    layout     folder and file names, kinds, name rules -- the only place the layout is spelled
               (but for the names of data parts, which embedtab.tables writes, below this layer)
    manifest   manifest.json: ArtifactRecord and its kin, read and written atomically
    locks      the writer lock, per-artifact build locks, owner tags of work in progress
    hashes     the stat-keyed sha256 cache (.cache/sha256.json)
    integrity  an artifact's files against its record (sizes, sha256, nothing extra)
    plan       Plan, Verdict, up-to-date decisions, run modes, folders nobody's record covers
    publish    staging, atomic publication, recovery of interrupted ones, debris of dead writers
    store      ArtifactStore: one directory, composed of the above

Publishing is atomic: the manifest first records the publication as pending, then the staging
folder is renamed onto the artifact's path, then the record is promoted. A crash at any point
leaves either the old artifact or the new one, and the next writer finishes or rolls back the
pending step (see `publish.recover`).
"""

import os

from embedtab.artifacts.driver import Built, Driver, Made
from embedtab.artifacts.hashes import HashCache
from embedtab.artifacts.layout import (
    BUILD_LOCKS,
    EMBEDDINGS_ERRORS,
    EMBEDDINGS_INDEX,
    EMBEDDINGS_INFO,
    HASH_CACHE,
    KINDS,
    LEGACY_NAMES,
    LOCK,
    LOOKUP_DENSE,
    LOOKUP_INFO,
    LOOKUP_TABLE,
    MANIFEST,
    PARQUET_SUMMARY,
    PROJECTION_ARRAYS,
    PROJECTION_INFO,
    REDUCED_KEYS,
    STAGING,
    WORK,
    check_name,
    lookup_dense_name,
    workflow_vocabularies,
    workflow_vocabulary,
)
from embedtab.artifacts.locks import owner_tag
from embedtab.artifacts.manifest import (
    FORMAT_VERSION,
    ArtifactRecord,
    Manifest,
    OutputFile,
    PendingPublish,
    legacy_layout,
    now_iso,
)
from embedtab.artifacts.plan import DryRunStop, Plan, RunMode, Verdict
from embedtab.artifacts.store import ArtifactStore
from embedtab.fingerprint import sha256_file

# Seams for tests, read at call time by hashes.py and publish.py: replacing `sha256_file` counts
# the files hashed; replacing `_rename` simulates a crash between the steps of a publication.
_rename = os.rename

__all__ = [
    "BUILD_LOCKS",
    "EMBEDDINGS_ERRORS",
    "EMBEDDINGS_INDEX",
    "EMBEDDINGS_INFO",
    "FORMAT_VERSION",
    "HASH_CACHE",
    "KINDS",
    "LEGACY_NAMES",
    "LOCK",
    "LOOKUP_DENSE",
    "LOOKUP_INFO",
    "LOOKUP_TABLE",
    "MANIFEST",
    "PARQUET_SUMMARY",
    "PROJECTION_ARRAYS",
    "PROJECTION_INFO",
    "REDUCED_KEYS",
    "STAGING",
    "WORK",
    "ArtifactRecord",
    "ArtifactStore",
    "Built",
    "Driver",
    "DryRunStop",
    "HashCache",
    "Made",
    "Manifest",
    "OutputFile",
    "PendingPublish",
    "Plan",
    "RunMode",
    "Verdict",
    "check_name",
    "legacy_layout",
    "lookup_dense_name",
    "now_iso",
    "owner_tag",
    "sha256_file",
    "workflow_vocabularies",
    "workflow_vocabulary",
]
