"""`embedtab lookup`: embedding tables indexed by NVTabular's categorified ids.

Row i of the table is the embedding of the item whose Categorify id is i. NVTabular 23.08 reserves
0 (padding), 1 (null) and 2..2+num_buckets-1 (out-of-vocabulary); the vocabulary follows, and its
ids are the RangeIndex of `categories/unique.<col>.parquet`. Rows with no embedding (reserved ids,
items that failed to encode) are zero-filled and flagged `present = false`.

Output (lookups/<name>/):
    table.parquet     cat_id int64, <column> (raw id; null for reserved rows), present bool, embedding
    embeddings.npy    float32 (cardinality, dim), for merlin-dataloader's EmbeddingOperator / Triton
    lookup.json       cardinality, dim, coverage, sources
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore
from embedtab.errors import DataError, UsageError
from embedtab.reduce import read_embeddings
from embedtab.reporting import SILENT, Reporter
from embedtab.workflow.stage import categorify_paths, load_workflow, quiet_merlin

NPY = "embeddings.npy"
TABLE = "table.parquet"


@dataclass
class LookupOptions:
    embeddings: str
    workflow: str
    column: str = "item_id"
    name: str | None = None
    force: bool = False
    trust_workflow: bool = False

    @property
    def output_name(self) -> str:
        return self.name or self.embeddings


@dataclass
class LookupResult:
    record: ArtifactRecord
    up_to_date: bool


def vocabulary(workflow: Any, column: str) -> tuple[pa.Array, np.ndarray, int]:
    """(raw values, their categorified ids, cardinality) for `column` of a fitted workflow."""
    import pandas as pd
    import nvtabular as nvt

    paths = categorify_paths(workflow)
    if column not in paths:
        known = ", ".join(sorted(paths)) or "none"
        raise UsageError(f"the workflow has no Categorify for column {column!r} (categorified columns: {known})")
    # The encoded id is the frame's RangeIndex, kept in the parquet's pandas metadata.
    unique = pd.read_parquet(paths[column], columns=[column])
    unique = unique[unique[column].notna()]
    cardinality = int(nvt.ops.get_embedding_sizes(workflow)[column][0])
    ids = unique.index.to_numpy(dtype=np.int64)
    if len(ids) and ids.max() >= cardinality:
        raise DataError(f"categories of {column!r} hold id {ids.max()} beyond the cardinality {cardinality}")
    return pa.array(unique[column]), ids, cardinality


def align_ids(vocab: pa.Array, emb_ids: pa.Array, column: str) -> tuple[pa.Array, pa.Array]:
    """Bring both id arrays to one type, only where that loses nothing."""
    if vocab.type == emb_ids.type:
        return vocab, emb_ids
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(vocab.type) for f in numeric) and any(f(emb_ids.type) for f in numeric):
        try:
            return vocab.cast(pa.int64()), emb_ids.cast(pa.int64())  # safe cast: fails on 3.5 or overflow
        except pa.ArrowInvalid:
            pass
    if pa.types.is_string(vocab.type) and pa.types.is_large_string(emb_ids.type) or pa.types.is_large_string(vocab.type) and pa.types.is_string(emb_ids.type):
        return vocab.cast(pa.large_string()), emb_ids.cast(pa.large_string())
    raise DataError(
        f"{column!r} ids cannot be matched: the workflow's vocabulary is {vocab.type} and the "
        f"embeddings' ids are {emb_ids.type}; re-encode with ids of the same type"
    )


def build_table(vocab: pa.Array, cat_ids: np.ndarray, cardinality: int, emb_ids: pa.Array, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, pa.Array, dict[str, Any]]:
    """Dense (cardinality, dim) matrix, present flags, raw id per row, and coverage numbers."""
    import pandas as pd

    positions = pd.Index(emb_ids.to_pandas()).get_indexer(vocab.to_pandas())  # per vocab entry: row in vectors or -1
    found = positions >= 0
    matrix = np.zeros((cardinality, vectors.shape[1]), dtype=np.float32)
    matrix[cat_ids[found]] = vectors[positions[found]]
    present = np.zeros(cardinality, dtype=bool)
    present[cat_ids[found]] = True
    raw_values = np.empty(cardinality, dtype=object)
    raw_values[cat_ids] = vocab.to_pylist()
    in_vocab = set(vocab.to_pylist())
    not_in_vocab = [v for v in emb_ids.to_pylist() if v not in in_vocab]
    coverage = {
        "vocabulary": int(len(vocab)),
        "with_embedding": int(found.sum()),
        "coverage": round(float(found.mean()) if len(vocab) else 0.0, 6),
        "missing_examples": vocab.filter(pa.array(~found)).to_pylist()[:10],
        "embeddings_not_in_vocabulary": len(not_in_vocab),
        "not_in_vocabulary_examples": not_in_vocab[:10],
    }
    return matrix, present, pa.array(raw_values.tolist(), type=vocab.type), coverage


def run(store: ArtifactStore, options: LookupOptions, reporter: Reporter = SILENT) -> LookupResult:
    emb_record = store.require("embeddings", options.embeddings)
    wf_record = store.require("workflows", options.workflow)
    params = {"embeddings": options.embeddings, "workflow": options.workflow, "column": options.column}
    plan = store.plan(
        "lookups", options.output_name, "lookup", params, input_artifacts=[wf_record, emb_record],
        force=options.force, packages=("numpy", "pyarrow", "nvtabular"), refresh=True,
    )
    if plan.up_to_date:
        return LookupResult(plan.existing, True)
    started = time.time()
    workflow, _ = load_workflow(store, options.workflow, trust=options.trust_workflow)
    with quiet_merlin():
        vocab, cat_ids, cardinality = vocabulary(workflow, options.column)
    emb_ids, vectors, _ = read_embeddings(store, emb_record)
    vocab, emb_ids = align_ids(vocab, emb_ids, options.column)
    matrix, present, raw, coverage = build_table(vocab, cat_ids, cardinality, emb_ids, vectors)
    if coverage["with_embedding"] == 0:
        raise DataError(
            f"no id of embeddings {options.embeddings!r} is in the vocabulary of {options.column!r} "
            f"(e.g. {coverage['not_in_vocabulary_examples'][:3]} vs {coverage['missing_examples'][:3]})"
        )
    dim = int(matrix.shape[1])
    metadata = {
        "column": options.column,
        "cardinality": cardinality,
        "dim": dim,
        "fill": "zeros",
        "reserved_ids": int(cardinality - len(vocab)),
        **coverage,
        "sources": {"embeddings": emb_record.fingerprint, "workflow": wf_record.fingerprint},
    }
    with store.staging(plan) as staging:
        table = pa.table({"cat_id": pa.array(np.arange(cardinality, dtype=np.int64)), options.column: raw, "present": pa.array(present)})
        table = table.append_column(tables.EMBEDDING, tables.embedding_column(matrix))
        tables.write_parquet(table, staging / TABLE)
        np.save(staging / NPY, matrix)
        (staging / "lookup.json").write_text(json.dumps(metadata, indent=2, default=str))
        record = store.publish(plan, staging, metadata=metadata, summary={"seconds": round(time.time() - started, 3)})
    if coverage["missing_examples"]:
        reporter.warn(
            f"{coverage['vocabulary'] - coverage['with_embedding']} of {coverage['vocabulary']} {options.column} values "
            f"have no embedding (zero rows, present=false), e.g. {coverage['missing_examples'][:3]}"
        )
    return LookupResult(record, False)
