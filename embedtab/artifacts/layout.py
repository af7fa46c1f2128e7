"""The layout of an artifact directory: the one place its folder and file names are spelled.

    <root>/
      manifest.json            every artifact: kind, name, params, inputs, outputs (sha256, rows), ...
      .lock                    flock-ed by a writer while it changes manifest.json or publishes
      .locks/<kind>.<name>     build locks: held by the run making that artifact
      .staging/                work in progress; a stage writes here and renames into place at the end
      .cache/sha256.json       sha256 of files already hashed, by their stat (see hashes.HashCache)
      work/<kind>/<name>/<key>/  resumable, shard-by-shard work of a long stage (see encode/work.py)
      embeddings/<name>/       part-*.parquet (id, embedding) + _metadata, _errors.parquet, _index.parquet,
                               _embeddings.json
      projections/<name>/      projection.npz (mean, components, ...) + projection.json
      workflows/<name>/        an NVTabular workflow directory (metadata.json, workflow.pkl, categories/)
      datasets/<name>/         transformed parquet parts + Merlin schema
      lookups/<name>/          table.parquet (cat_id, id, present, embedding) + _embeddings.npy, _lookup.json
      exports/<name>/          a Triton model repository: <model>/config.pbtxt, <model>/<version>/...
                               (embedtab.export.triton)

Embeddings, lookup and dataset folders are Merlin datasets as they stand: everything beside the
data parts starts with "_" (pyarrow's discovery skips such names) and folders holding parquet
sidecars carry a `_metadata` summary of their parts (Dask reads only the files it lists), so
`merlin.io.Dataset(<folder>)` reads exactly the data rows.
"""

from __future__ import annotations

import re
from pathlib import Path

from embedtab.errors import UsageError
from embedtab.yamlfile import shown

KINDS = ("embeddings", "projections", "workflows", "datasets", "lookups", "exports")
MANIFEST = "manifest.json"
LOCK = ".lock"
STAGING = ".staging"
BUILD_LOCKS = ".locks"  # one per artifact being made: .locks/<kind>.<name>
HASH_CACHE = ".cache/sha256.json"
WORK = "work"
WORK_SHARD = "shard-"  # work/<kind>/<name>/<key>/shard-00003.json, .npy, ... (see encode/work.py)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

# The data parts of embeddings artifacts (part-00000.parquet, ...) are named by embedtab.tables,
# which writes them and sits below this layer: tables.PART_PREFIX, tables.part_name, tables.part_files.

# Files beside the data parts of an artifact (see the module docstring for why they start with "_").
PARQUET_SUMMARY = "_metadata"
EMBEDDINGS_INDEX = "_index.parquet"
EMBEDDINGS_ERRORS = "_errors.parquet"
EMBEDDINGS_INFO = "_embeddings.json"
REDUCED_KEYS = "_source_keys.parquet"  # reduced embeddings: the source's content key per id (reduce/update.py)
LOOKUP_TABLE = "table.parquet"
LOOKUP_DENSE = "_embeddings.npy"
LOOKUP_INFO = "_lookup.json"
PROJECTION_ARRAYS = "projection.npz"
PROJECTION_INFO = "projection.json"
# Names the same files had before 0.2 (merlin.io could not open those folders). Still read; a rerun
# of the producing command rewrites the artifact in the current layout.
LEGACY_NAMES = {
    "embeddings": {EMBEDDINGS_INDEX: "index.parquet", EMBEDDINGS_ERRORS: "errors.parquet", EMBEDDINGS_INFO: "embeddings.json"},
    "lookups": {LOOKUP_DENSE: "embeddings.npy", LOOKUP_INFO: "lookup.json"},
}


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name or ""))


def check_name(name: str, what: str = "artifact name") -> str:
    if not _NAME.match(name or ""):
        raise UsageError(f"invalid {what} {shown(name)}: use letters, digits, '.', '_', '+' or '-' (max 128, no '/')")
    return name


def is_artifact_name(name: str) -> bool:
    """Whether `name` could be an artifact's (a folder named otherwise is nobody's artifact)."""
    return bool(_NAME.match(name))


def artifact_path(root: Path, kind: str, name: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}")
    return root / kind / check_name(name)


def work_path(root: Path, kind: str, name: str, key: str | None = None) -> Path:
    """Where a long stage keeps its resumable shards (kept across runs and machines)."""
    base = root / WORK / kind / check_name(name)
    return base / key if key else base


def build_lock_path(root: Path, kind: str, name: str) -> Path:
    return root / BUILD_LOCKS / f"{kind}.{name}"


def work_shard_name(shard: int, suffix: str) -> str:
    """A file of work shard `shard` in a work folder: shard-00003.npy, shard-00003.json, ..."""
    return f"{WORK_SHARD}{shard:05d}{suffix}"


def workflow_vocabulary(column: str) -> str:
    """Where a fitted NVTabular workflow keeps the vocabulary of `column` (its row number is the id)."""
    return f"categories/unique.{column}.parquet"


def workflow_vocabularies(directory: Path) -> dict[str, Path]:
    """column -> its vocabulary file, for every one a fitted workflow folder holds (named by the
    column the Categorify read, before any rename after it)."""
    prefix, suffix = workflow_vocabulary("|").split("|")
    folder = directory / Path(prefix).parent
    found = sorted(folder.glob(Path(prefix).name + "*" + suffix)) if folder.is_dir() else []
    return {path.name[len(Path(prefix).name) : -len(suffix)]: path for path in found}


def lookup_dense_name(source: str | None = None) -> str:
    """The dense .npy of a lookup: one table, or one per source when several are not concatenated."""
    return LOOKUP_DENSE if source is None else f"_{source}.npy"


def sidecar_names(kind: str, name: str) -> tuple[str, ...]:
    """The names a sidecar file may have: its current one, then its pre-0.2 one if it had another."""
    legacy = LEGACY_NAMES.get(kind, {}).get(name)
    return (name, legacy) if legacy else (name,)


def is_server_cache(kind: str, path: str) -> bool:
    """Bytecode a serving process writes beside the models of an export (Triton's Python backend
    imports each version's model.py): not embedtab's, and no damage either."""
    return kind == "exports" and "__pycache__/" in path


def is_legacy_file(kind: str, path: str) -> bool:
    """A file named as before sidecar files moved out of merlin.io's way."""
    return path in LEGACY_NAMES.get(kind, {}).values() or (kind == "lookups" and path.endswith(".npy") and not path.startswith("_"))
