"""The vocabularies of a fitted workflow: which raw value has which categorified id.

NVTabular 23.08's Categorify writes each column's vocabulary to `categories/unique.<col>.parquet`;
the ids are that file's RangeIndex. Reading the file needs no NVTabular and unpickles nothing, so
both `embedtab lookup` and a workflow that shares another workflow's vocabulary read it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtab.artifacts import ArtifactRecord, ArtifactStore, workflow_vocabulary
from embedtab.errors import DataError, UsageError
from embedtab.workflow.merlin import categorify_paths, load_workflow, quiet_merlin, require_merlin


@dataclass
class Vocabulary:
    values: pa.Array  # raw ids of the vocabulary
    ids: np.ndarray  # their categorified ids
    cardinality: int


def read_unique_file(path: Path, column: str, cardinality: int) -> Vocabulary:
    """The vocabulary in a Categorify file (`categories/unique.<column>.parquet`): its values and
    ids (the file's RangeIndex, or its stored index column); null values are not vocabulary."""
    table = pq.read_table(path, columns=[column])
    meta = pq.read_schema(path).pandas_metadata or {}
    index = (meta.get("index_columns") or [None])[0]
    if isinstance(index, dict) and index.get("kind") == "range":
        ids = np.arange(index["start"], index["stop"], index.get("step", 1), dtype=np.int64)
    else:  # an index stored as a column
        name = index if isinstance(index, str) else "__index_level_0__"
        ids = pq.read_table(path, columns=[name]).column(name).to_numpy().astype(np.int64)
    values = table.column(column).combine_chunks()
    keep = values.is_valid()
    values, ids = values.filter(keep), ids[keep.to_numpy(zero_copy_only=False)]
    if len(ids) and ids.max() >= cardinality:
        raise DataError(f"{path}: holds id {ids.max()} beyond the recorded cardinality {cardinality}")
    return Vocabulary(values, ids, cardinality)


def vocabulary(store: ArtifactStore, workflow: str, column: str, trust: bool) -> tuple[Vocabulary, ArtifactRecord]:
    """The vocabulary of `column` in a fitted workflow artifact, read from its category file once the
    workflow's files are verified (`trust`: not verified); only joint or split vocabularies, which
    live elsewhere, need the workflow loaded (NVTabular)."""
    record = store.require("workflows", workflow)
    cards = record.metadata.get("cardinalities", {})
    if column not in cards:
        known = ", ".join(sorted(cards)) or "none"
        raise UsageError(f"workflow {workflow!r} has no Categorify for column {column!r} (categorified columns: {known})")
    directory = store.path("workflows", workflow) if trust else store.verify(record)
    unique = directory / workflow_vocabulary(column)
    if unique.is_file():
        return read_unique_file(unique, column, cards[column]["cardinality"]), record
    # Joint encodings or split vocabularies live elsewhere: ask the (verified) workflow itself.
    require_merlin(f"a lookup of {column!r}, whose vocabulary is not in {workflow_vocabulary(column)},")
    loaded, _ = load_workflow(store, workflow, trust=trust)
    with quiet_merlin():
        path = categorify_paths(loaded).get(column)
    if path is None or not Path(path).is_file():
        raise UsageError(f"workflow {workflow!r}: no single-column vocabulary file for {column!r}")
    return read_unique_file(Path(path), column, cards[column]["cardinality"]), record
