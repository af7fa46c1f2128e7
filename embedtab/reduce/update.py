"""reduce's daily update: the saved projection re-applied to a grown source, never refitted.

When the source of a reduction changes (new items encoded) and the reduce command is the same, the
projection is kept: a refit would move every reduced vector, and every lookup row and model built
on them. The update republishes the projection's files unchanged (its record now names the
current source) and projects the source again with it.

Unchanged items keep yesterday's bytes. A reduced artifact records, beside its parts, the source's
content key per id (`_source_keys.parquet`, from encode's `_index.parquet`: the sha256 of the
text or image). An item whose key and encoder are the same as then gets its earlier reduced
vector copied, bit for bit; only new and changed items take the fresh projection (which, for an
unchanged vector in another block position, could differ in the last bits: see transform.py).
Sources without an index (another reduction, `apply` output) are projected in full.

`--force` refits.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedtab import tables
from embedtab.artifacts import EMBEDDINGS_INDEX, PROJECTION_ARRAYS, PROJECTION_INFO, REDUCED_KEYS, ArtifactRecord, ArtifactStore
from embedtab.errors import IntegrityError
from embedtab.reduce.rows import id_column


@dataclass
class Kept:
    """The reduction being updated: its projection (intact) and reduced embeddings, whose vectors
    are reused only if they are intact too."""

    projection: ArtifactRecord
    embeddings: ArtifactRecord
    reusable: bool = True


def kept_reduction(
    store: ArtifactStore, name: str, params: dict[str, Any], force: bool, source: ArtifactRecord, fit_record: ArtifactRecord
) -> Kept | None:
    """The earlier reduction of this name to update instead of refitting, if there is one (None
    when forced): made by the same command (params), with its projection intact, and still valid:

    * fitted on another artifact (`--fit-on OTHER`) that has not changed since: a refit would give
      the same projection, so it is re-applied (and unchanged items keep their bytes);
    * fitted on the source itself, when the source comes from `encode` with the same encoder: its
      new vectors are in the space the projection was fitted in. A source of another kind (a
      reduction, `--apply` output) has no identity for its space, so a change to it is a refit
      (`--force`, or `embedtab run`), as before. So are reductions made before updates existed.
    """
    if force:
        return None
    projection, embeddings = store.get("projections", name), store.get("embeddings", name)
    if projection is None or embeddings is None or projection.params != params or embeddings.params != params:
        return None
    if fit_record.name != source.name:
        if projection.metadata.get("fit_on", {}).get("fingerprint") != fit_record.fingerprint:
            return None
    else:
        encoder = source.metadata.get("encoder")
        if encoder is None or embeddings.metadata.get("source_encoder") != encoder:
            return None
    if store.damaged_files(projection):
        return None  # (refused or refitted by the caller: see reduce/stage.py)
    # Damaged reduced vectors (or their keys) are not reused: every row is projected again.
    return Kept(projection, embeddings, reusable=not store.damaged_files(embeddings))


def refuse_damaged_projection(store: ArtifactStore, name: str, fit_record: ArtifactRecord, force: bool) -> None:
    """A damaged projection is refitted only where the refit gives it back: fitted on what the fit
    reads today. One kept over earlier versions of its source would come back as another
    projection, moving every reduced vector, every lookup row and every model built on them."""
    projection = store.get("projections", name)
    if force or projection is None:
        return
    damaged = store.damaged_files(projection)
    if damaged and projection.metadata.get("fit_on", {}).get("fingerprint") != fit_record.fingerprint:
        raise IntegrityError(
            f"projections {name!r} is damaged ({'; '.join(damaged[:3])}) and was fitted on an earlier version of "
            f"embeddings {fit_record.name!r}: a refit would move every reduced vector. Restore it, or pass --force to refit"
        )


def copy_projection(store: ArtifactStore, kept: Kept, staging: Path) -> None:
    """The projection's files, byte for byte (verified first)."""
    directory = store.verify(kept.projection)
    for name in (PROJECTION_ARRAYS, PROJECTION_INFO):
        shutil.copyfile(directory / name, staging / name)


def write_source_keys(store: ArtifactStore, source: ArtifactRecord, staging: Path) -> None:
    """`_source_keys.parquet`: id, content key and row of every source row, when the source
    has encode's index (rows follow the source's, so a row number is also the reduced row)."""
    index = store.path(source.kind, source.name) / EMBEDDINGS_INDEX
    if not index.is_file() or EMBEDDINGS_INDEX not in {out.path for out in source.outputs}:
        return
    column = id_column(source)
    table = pq.read_table(index, columns=[column, "key", "row"])
    table = table.filter(pc.greater_equal(table.column("row"), 0))
    pq.write_table(table, staging / REDUCED_KEYS, compression="zstd")


class Reuse:
    """Yesterday's reduced vectors of the items whose content and encoder did not change."""

    def __init__(self, store: ArtifactStore, kept: Kept, source: ArtifactRecord):
        import pandas as pd

        self.index = pd.Index([])
        self.vectors = np.zeros((0, 0), np.float32)
        earlier = store.path("embeddings", kept.embeddings.name)
        today = store.path(source.kind, source.name) / EMBEDDINGS_INDEX
        keys = earlier / REDUCED_KEYS
        same_encoder = kept.embeddings.metadata.get("source_encoder") == source.metadata.get("encoder")
        if not (kept.reusable and same_encoder and keys.is_file() and today.is_file()):
            return
        column = id_column(source)
        before, now = pq.read_table(keys), pq.read_table(today, columns=[column, "key"])
        if column not in before.column_names or before.schema.field(column).type != now.schema.field(column).type:
            return  # the ids changed type (or column): nothing is the same item any more
        same = before.to_pandas().merge(now.to_pandas(), on=[column, "key"], how="inner")  # (ids are unique in an artifact)
        if same.empty:
            return
        vectors = np.concatenate([x for _, x, _ in tables.iter_embeddings(tables.part_files(earlier), column)])
        self.vectors = vectors[same["row"].to_numpy()]
        self.index = pd.Index(same[column].to_numpy())

    def __call__(self, ids: pa.Array, out: np.ndarray) -> np.ndarray:
        """The block's projected rows with every unchanged item's earlier vector put back."""
        if not len(self.index):
            return out
        position = self.index.get_indexer(ids.to_pandas())
        found = position >= 0
        if found.any():
            out = np.array(out, copy=True)
            out[found] = self.vectors[position[found]]
        return out
